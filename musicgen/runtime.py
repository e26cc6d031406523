"""Starting (or joining) Ray for the commands that need it, and keeping the terminal quiet.

By default a terminal shows musicgen's own progress only: TensorFlow's start-up lines (CUDA stub,
oneDNN, CPU features), which every process that loads it would print again, Ray workers included,
are hidden. ``MUSICGEN_VERBOSE=1`` (``musicgen --verbose``) shows everything.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys

#: The environment variable that shows every library's output.
VERBOSE = "MUSICGEN_VERBOSE"

#: Read by TensorFlow when it loads, so it must be in the environment before that, in every process.
#: 2: errors only. TF_ENABLE_ONEDNN_OPTS is left alone: turning oneDNN off would change the numbers,
#: not only the message that says so.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}

#: Run by every worker of a local Ray that musicgen starts, before any task (Ray's runtime_env).
WORKER_SETUP_HOOK = "musicgen.runtime.quiet_tensorflow"


def verbose() -> bool:
    """Whether to show every library's output (``MUSICGEN_VERBOSE`` set to anything but 0/false/no)."""
    return os.environ.get(VERBOSE, "").strip().lower() not in ("", "0", "false", "no")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up lines off this process's terminal, unless :func:`verbose`.

    Sets :data:`QUIET_ENV` (not over the user's values) and makes the first ``import tensorflow``
    (whoever does it: musicgen, or Ray Train's TensorFlow integration) run with stderr sent to
    /dev/null. The level alone is not enough: TensorFlow >= 2.19 logs through absl before
    ``absl::InitializeLog()``, which writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says
    (https://github.com/tensorflow/tensorflow/issues/100442). Must run before TensorFlow is imported;
    afterwards it only sets the variables.
    """
    if verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 (C++ code writes there, not to ``sys.stderr``) to /dev/null for a while."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that runs its import quietly."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def __getattr__(self, name):  # anything else a loader offers (resources, source), as it is
        return getattr(self.loader, name)

    def exec_module(self, module):
        with _stderr_to_devnull():
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit") logs too
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # its Python warnings (absl)


_context = None  # what ray.init() returned in this process (see dashboard_url)


def ensure_ray(address: str | None = None, quiet: bool = True, worker_output: bool | None = None):
    """Connect to the Ray cluster at ``address`` / ``RAY_ADDRESS``, or start a local one.

    Inside ``ray job submit`` RAY_ADDRESS is set and the job joins its cluster; on a laptop the
    program starts its own Ray and stops it at exit. ``quiet`` keeps Ray's own logs to errors;
    ``worker_output`` shows what the workers print (default: when not quiet; otherwise it stays in
    Ray's log files). :func:`verbose` shows both. A local Ray's workers hide TensorFlow's start-up
    lines (:func:`quiet_tensorflow`) unless verbose. The first call decides for the whole process.
    """
    import ray

    if ray.is_initialized():
        return ray
    quiet = quiet and not verbose()
    worker_output = verbose() or (not quiet if worker_output is None else worker_output)
    if quiet:
        for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = address in (None, "local")
    runtime_env = {"env_vars": dict(QUIET_ENV), "worker_process_setup_hook": WORKER_SETUP_HOOK} \
        if local and not verbose() else None
    global _context
    _context = ray.init(
        address=address,
        # a local Ray started here skips the dashboard (~0.4 GB, seconds of start-up) unless asked
        include_dashboard=None if not local else bool(os.environ.get("MUSICGEN_DASHBOARD")),
        logging_level=logging.ERROR if quiet else logging.INFO,
        log_to_driver=worker_output, configure_logging=True, runtime_env=runtime_env)
    return ray


def dashboard_url() -> str | None:
    """The dashboard's address (``http://host:port``) of the Ray that :func:`ensure_ray` started or
    joined; None if it has no dashboard, or Ray was started elsewhere in this process."""
    url = getattr(_context, "dashboard_url", None)
    return f"http://{url.removeprefix('http://')}" if url else None


def quiet_data_context():
    """Ray Data without its own progress bars and banners (musicgen shows one bar per job)."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its banners, not our errors
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # same input -> same shards, byte for byte
    for attr in ("enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    return ctx
