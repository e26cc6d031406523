"""Starting the Serve application on a local (or given) Ray: what ``musicgen serve`` calls."""
from __future__ import annotations

import os
import signal
import threading

from musicgen import storage
from musicgen.errors import DataError

APP_NAME = "musicgen"


def _as_list(runs) -> list[str]:
    if runs is None:
        return []
    if isinstance(runs, (str, os.PathLike)):
        return [os.fspath(runs)]
    return [os.fspath(r) for r in runs]


def _absolute(spec):
    from .registry import RunSpec

    # Replicas are other processes with another working directory: give them absolute paths.
    path = spec.path if storage.is_s3(spec.path) else os.path.abspath(spec.path)
    return RunSpec(spec.kind, path, spec.id)


def pick_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port that is free now, from 20000-32767: outside Linux's ephemeral range (32768-60999),
    which outgoing connections take ports from while Serve's proxy starts, and Ray's worker ports
    (10002-19999). For tests and benchmarks; a service is given its --port."""
    import random
    import socket

    for _ in range(tries):
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise DataError(f"no free port on {host} in 20000-32767")


def _check_port_free(host: str, port: int) -> None:
    """DataError now, rather than a proxy failing its health checks later, if host:port is taken."""
    import socket

    if not 1 <= port <= 65535:
        raise DataError(f"--port must be in 1..65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise DataError(f"--host {host!r}: {e.strerror or e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise DataError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from None


def settings_for(lstm_runs, vae_runs, **limits):
    """Checked :class:`musicgen_serve.app.Settings` for these runs (PATH or ID=PATH each); DataError with a
    one-line message for a missing run, a run of the wrong kind, a duplicate id or a bad limit."""
    from pydantic import ValidationError

    from .app import Settings
    from .registry import assign_ids, check_run, parse_spec

    specs = [parse_spec(r, "lstm") for r in _as_list(lstm_runs)] + [parse_spec(r, "vae") for r in _as_list(vae_runs)]
    if not specs:
        raise DataError("give at least one trained run (an lstm run to extend, a vae run to generate)")
    specs = [_absolute(s) for s in assign_ids(specs)]
    for s in specs:
        check_run(s)
    try:
        return Settings(lstm=[f"{s.id}={s.path}" for s in specs if s.kind == "lstm"],
                        vae=[f"{s.id}={s.path}" for s in specs if s.kind == "vae"],
                        **{k: v for k, v in limits.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        raise DataError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def application(settings, *, replicas: int | str = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
                max_ongoing_requests: int | None = None, autoscaling: dict | None = None):
    """The bound Serve application for ``settings``: the models deployment with these options
    (CPUs and GPUs per replica), and an ingress with as many replicas (no CPU reserved)."""
    from .app import REPLICA_ENV, bind

    actor = {"num_cpus": num_cpus, "runtime_env": {"env_vars": dict(REPLICA_ENV)}}
    if num_gpus:
        actor["num_gpus"] = num_gpus
    scale = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
    common = {"max_ongoing_requests": max(max_ongoing_requests or 64, settings.max_batch_size), **scale}
    return bind(settings, ingress=common, models={**common, "ray_actor_options": actor})


def start(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, *, ray_address: str | None = None,
          replicas: int | str = 1, num_cpus: float = 1.0, num_gpus: float = 0.0, max_ongoing_requests: int | None = None,
          autoscaling: dict | None = None, name: str = APP_NAME, **limits) -> str:
    """Deploy the application on Ray (``ensure_ray``: RAY_ADDRESS or a local Ray) with its HTTP
    proxy on ``host:port``; returns the base URL once the replicas have loaded their models.

    ``limits`` are :class:`musicgen_serve.app.Settings` fields (max_upload_bytes, max_steps, max_n,
    timeout_s, max_batch_size, ...).
    """
    settings = settings_for(lstm_runs, vae_runs, **limits)
    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        _check_port_free(host, int(port))

    from ray import serve

    from musicgen.runtime import ensure_ray

    ensure_ray(ray_address)
    serve.start(http_options={"host": host, "port": int(port)})
    app = application(settings, replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus,
                      max_ongoing_requests=max_ongoing_requests, autoscaling=autoscaling)
    serve.run(app, name=name, route_prefix="/")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def run(lstm_runs, vae_runs=(), host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Start the application (see :func:`start`) and block until Ctrl-C or SIGTERM; then shut
    Serve down. ``musicgen serve RUN_LSTM RUN_VAE [--host] [--port]`` calls this."""
    from ray import serve

    url = start(lstm_runs, vae_runs, host, port, **options)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    print(f"musicgen serve: {url}/ (API docs {url}/docs); Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        try:
            serve.shutdown()
        except Exception:
            pass
