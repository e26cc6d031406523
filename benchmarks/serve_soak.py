"""Soak: the Serve application under load, bad input and a replica killed, on 127.0.0.1.

    python benchmarks/serve_soak.py RUN_LSTM RUN_VAE [--requests 1000] [--concurrency 32]
                                    [--bad 0.3] [--replicas 2] [--kill-at 0.3] [--out soak.json]

Deploys the application (``--replicas`` replicas) on a local Ray and sends ``--requests``
requests from ``--concurrency`` client threads, a fraction ``--bad`` of them malformed, in an
order fixed by ``--seed``:

* good: POST /v1/extend (a chorale-like prompt, 1-64 steps, temperature 0.5-1.5, a seed) or, one
  in six, POST /v1/generate ``{"n": 1}``; the answer must be 200 with a MIDI file mido parses;
* bad, in turn: not MIDI, truncated MIDI, an oversized upload (2 MB), a prompt over the length
  limit, steps out of range, temperature nan, an unknown model, bad JSON to /v1/generate, and
  n out of range; the answer must be a 4xx JSON ``{"error": ...}``.

The application has two deployments of ``--replicas`` replicas each: the ingress (``musicgen``)
and the models (``models``). When ``--kill-at`` of the requests have been sent, one replica of
``--kill`` (default: the models) is killed with SIGKILL; Serve's controller notices and starts
another, and the ingress retries the requests that were running on it. The script records when
the replacement is up again (both deployments back to ``--replicas`` running replicas) and counts
the errors in that window apart. The RSS of Serve's processes (proxy, controller, replicas) is
sampled every second.

Bounded in time: no request is sent after ``--time-limit`` seconds. Prints a summary and writes
JSON with ``--out``; exits 1 if a bad request got a 5xx or a good one failed (in the restart
window or not).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

BAD_KINDS = ("not_midi", "truncated", "oversized", "too_long", "steps", "temperature", "model", "bad_json", "n")


def multipart(prompt: bytes, fields: dict, filename: str = "p.mid"):
    b = uuid.uuid4().hex
    body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{b}\r\nContent-Disposition: form-data; name="midi"; filename="{filename}"\r\n'
             f'Content-Type: audio/midi\r\n\r\n').encode() + prompt + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def midi_file(roll) -> bytes:
    from musicgen.midi import roll_to_midi

    buf = io.BytesIO()
    roll_to_midi(roll, 4).save(file=buf)
    return buf.getvalue()


def prompts() -> list[bytes]:
    """Three prompts: chords, an arpeggio, a melody over a bass (16-96 steps)."""
    rng = np.random.default_rng(0)
    out = []
    for steps in (16, 48, 96):
        roll = np.zeros((steps, 128), np.float32)
        for t in range(0, steps, 4):
            roll[t:t + 3, 48 + rng.integers(0, 24, 3)] = 0.6
        out.append(midi_file(roll))
    return out


def plan(n: int, bad: float, seed: int, good_prompts: list[bytes], long_prompt: bytes):
    """(kind, method path, body, content type) of every request, in order."""
    rng = np.random.default_rng(seed)
    bad_at = set(rng.choice(n, int(round(n * bad)), replace=False).tolist())
    out, k = [], 0
    for i in range(n):
        prompt = good_prompts[i % len(good_prompts)]
        if i not in bad_at:
            if rng.random() < 1 / 6:
                out.append(("good_generate", "/v1/generate", json.dumps({"n": 1, "seed": i}).encode(), "application/json"))
            else:
                fields = {"steps": int(rng.integers(1, 65)), "temperature": round(float(rng.uniform(0.5, 1.5)), 2), "seed": i}
                out.append(("good_extend", "/v1/extend", *multipart(prompt, fields)))
            continue
        kind = BAD_KINDS[k % len(BAD_KINDS)]
        k += 1
        if kind == "not_midi":
            req = ("/v1/extend", *multipart(b"this is not a MIDI file" * 10, {"steps": 8}))
        elif kind == "truncated":
            req = ("/v1/extend", *multipart(prompt[:len(prompt) // 2], {"steps": 8}))
        elif kind == "oversized":
            req = ("/v1/extend", *multipart(b"MThd" + os.urandom(2 << 20), {"steps": 8}))
        elif kind == "too_long":
            req = ("/v1/extend", *multipart(long_prompt, {"steps": 8}))
        elif kind == "steps":
            req = ("/v1/extend", *multipart(prompt, {"steps": [0, -3, 10 ** 7, "many"][k % 4]}))
        elif kind == "temperature":
            req = ("/v1/extend", *multipart(prompt, {"temperature": ["nan", "inf", "0", "-1"][k % 4]}))
        elif kind == "model":
            req = ("/v1/extend", *multipart(prompt, {"model": ["nope", "../../etc/passwd", "s3://b/run"][k % 3]}))
        elif kind == "bad_json":
            req = ("/v1/generate", [b"{not json", b"[]", b'{"n": "x"}', b"\xff\xfe"][k % 4], "application/json")
        else:
            req = ("/v1/generate", json.dumps({"n": [0, 10 ** 6][k % 2]}).encode(), "application/json")
        out.append((f"bad_{kind}", *req))
    return out


def send(base: str, path: str, body: bytes, ctype: str, timeout: float = 300):
    """(status or None, body, error text)."""
    req = urllib.request.Request(base + path, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), None
    except urllib.error.HTTPError as e:
        return e.code, e.read(), None
    except Exception as e:  # connection reset, refused, timeout
        return None, b"", f"{type(e).__name__}: {e}"[:200]


def check(kind: str, status, body: bytes, error) -> str | None:
    """None if the answer is right for this kind of request, else what was wrong."""
    import mido

    if error:
        return error
    if kind.startswith("good"):
        if status != 200:
            return f"status {status}: {body[:120]!r}"
        try:
            mid = mido.MidiFile(file=io.BytesIO(body))
            if not any(len(t) for t in mid.tracks):
                return "empty MIDI"
        except Exception as e:
            return f"not MIDI ({type(e).__name__})"
        return None
    if not (400 <= status < 500):
        return f"status {status}: {body[:120]!r}"
    try:
        assert isinstance(json.loads(body)["error"], str)
    except Exception:
        return f"status {status} without a JSON error: {body[:120]!r}"
    return None


def serve_processes() -> dict[str, int]:
    """name -> pid of Serve's processes (controller, proxy, replicas) of the Ray this script
    started: its descendants, whatever else runs on the machine."""
    import psutil

    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for kind in ("ServeController", "ProxyActor", "ServeReplica"):
            if title.startswith(f"ray::{kind}"):
                if kind == "ServeReplica":  # ray::ServeReplica:APP:DEPLOYMENT
                    kind += ":" + title.split()[0].rsplit(":", 1)[-1].split(".")[0]  # not the method it runs
                out[f"{kind}-{proc.pid}"] = proc.pid
    return out


class MemorySampler(threading.Thread):
    def __init__(self, period: float = 1.0):
        super().__init__(daemon=True)
        self.period, self.samples, self.pids, self.stop = period, [], {}, threading.Event()

    def run(self):
        import psutil

        last_refresh = 0.0
        while not self.stop.is_set():
            now = time.time()
            if now - last_refresh > 5:  # replicas come and go
                try:
                    self.pids = serve_processes()
                except Exception:
                    pass
                last_refresh = now
            row = {"t": now}
            for name, pid in self.pids.items():
                try:
                    row[name] = psutil.Process(pid).memory_info().rss >> 20
                except psutil.Error:
                    pass
            self.samples.append(row)
            self.stop.wait(self.period)


def running_replicas(app: str) -> int:
    from ray import serve

    st = serve.status().applications.get(app)
    if st is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in st.deployments.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lstm_run")
    p.add_argument("vae_run")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--bad", type=float, default=0.3, help="fraction of malformed requests")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--num-cpus", type=float, default=0.5, help="CPUs reserved per replica")
    p.add_argument("--kill-at", type=float, default=0.3, help="kill a replica after this fraction of requests (<0: never)")
    p.add_argument("--kill", choices=["models", "musicgen"], default="models",
                   help="the deployment whose replica is killed: the models (default) or the ingress")
    p.add_argument("--time-limit", type=float, default=900, help="seconds; no request is sent after this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    from ray import serve

    from musicgen_serve.runner import pick_port, start

    port = pick_port()
    base = start([args.lstm_run], [args.vae_run], "127.0.0.1", port, replicas=args.replicas, num_cpus=args.num_cpus,
                 name="soak")
    good = prompts()
    roll = np.zeros((5000, 128), np.float32)
    roll[:, 60] = 0.6
    requests = plan(args.requests, args.bad, args.seed, good, midi_file(roll))
    for kind, path, body, ctype in requests[:4]:  # warm-up, not counted
        send(base, path, body, ctype)
    sampler = MemorySampler()
    sampler.start()
    time.sleep(2)

    results = [None] * len(requests)
    sent = [0]
    lock = threading.Lock()
    kill = {"at_request": int(args.kill_at * len(requests)) if args.kill_at >= 0 else None}
    t0 = time.time()

    def one(i):
        if time.time() - t0 > args.time_limit:
            return
        with lock:
            sent[0] += 1
            do_kill = sent[0] == kill["at_request"]
        if do_kill:
            threading.Thread(target=kill_replica, daemon=True).start()
        kind, path, body, ctype = requests[i]
        start_t = time.time()
        status, data, error = send(base, path, body, ctype)
        results[i] = {"kind": kind, "t0": start_t - t0, "t1": time.time() - t0, "status": status,
                      "problem": check(kind, status, data, error)}

    def kill_replica():
        victims = {n: pid for n, pid in serve_processes().items() if n.startswith(f"ServeReplica:{args.kill}-")}
        name, pid = sorted(victims.items())[0]
        kill.update(t=time.time() - t0, victim=name, pid=pid)
        os.kill(pid, signal.SIGKILL)
        print(f"killed {name} (pid {pid}) at {kill['t']:.1f} s", flush=True)
        time.sleep(1.0)
        while running_replicas("soak") < 2 * args.replicas or \
                len([n for n in serve_processes() if n.startswith("ServeReplica")]) < 2 * args.replicas:
            time.sleep(0.5)
        kill["back_t"] = time.time() - t0
        print(f"replicas back to {args.replicas} at {kill['back_t']:.1f} s", flush=True)

    try:
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(len(requests))))
        wall = time.time() - t0
        deadline = time.time() + 120
        while "t" in kill and "back_t" not in kill and time.time() < deadline:
            time.sleep(1)
        time.sleep(2)
    finally:
        sampler.stop.set()
        sampler.join(5)
        serve.shutdown()

    done = [r for r in results if r is not None]
    window = (kill.get("t", float("inf")), kill.get("back_t", float("inf")))

    def in_window(r):
        return r["t1"] >= window[0] and r["t0"] <= window[1]

    by_kind: dict[str, dict] = {}
    for r in done:
        k = by_kind.setdefault(r["kind"], {"n": 0, "ok": 0, "5xx": 0, "failed": 0, "failed_in_restart_window": 0})
        k["n"] += 1
        k["5xx"] += bool(r["status"] and r["status"] >= 500)
        if r["problem"] is None:
            k["ok"] += 1
        elif in_window(r):
            k["failed_in_restart_window"] += 1
        else:
            k["failed"] += 1
    problems = [r for r in done if r["problem"]]
    five_xx_bad = sum(v["5xx"] for k, v in by_kind.items() if k.startswith("bad"))
    good = [r for r in done if r["kind"].startswith("good")]
    good_ok = sum(r["problem"] is None for r in good)
    failed_outside = sum(v["failed"] for v in by_kind.values())
    lat = np.array([r["t1"] - r["t0"] for r in good if r["problem"] is None])

    memory = {}
    samples = sampler.samples
    names = sorted({k for s in samples for k in s if k != "t"})
    for name in names:
        series = [(s["t"] - t0, s[name]) for s in samples if name in s]
        if len(series) >= 2:
            quarters = [series[int(q * (len(series) - 1))][1] for q in (0, 0.25, 0.5, 0.75, 1)]
            memory[name] = {"first_mb": series[0][1], "last_mb": series[-1][1], "max_mb": max(v for _, v in series),
                            "quarters_mb": quarters,
                            "from_s": round(series[0][0], 1), "to_s": round(series[-1][0], 1)}
    result = {"requests_sent": len(done), "requests_planned": len(requests), "concurrency": args.concurrency,
              "bad_fraction": args.bad, "replicas": args.replicas, "wall_s": round(wall, 1),
              "requests_per_s": round(len(done) / wall, 2), "good": len(good), "good_ok": good_ok,
              "good_p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
              "good_p99_s": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
              "bad_5xx": five_xx_bad, "all_5xx": sum(v["5xx"] for v in by_kind.values()),
              "failed_outside_restart_window": failed_outside,
              "kill": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in kill.items()},
              "restart_window_s": round(window[1] - window[0], 1) if "back_t" in kill else None,
              "by_kind": by_kind, "memory_mb": memory,
              "problems": [{k: r[k] for k in ("kind", "t0", "status", "problem")} for r in problems[:30]],
              "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    print(json.dumps({k: v for k, v in result.items() if k not in ("by_kind", "problems", "memory_mb")}, indent=1))
    for kind, v in sorted(by_kind.items()):
        print(f"  {kind:>16}: {v}")
    for name, m in memory.items():
        print(f"  RSS {name:>28}: {' -> '.join(map(str, m['quarters_mb']))} MB at 0/25/50/75/100% "
              f"(max {m['max_mb']}), {m['from_s']}-{m['to_s']} s")
    for r in problems[:10]:
        print(f"  problem: {r['kind']} at {r['t0']:.1f} s: {r['problem']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 1 if five_xx_bad or len(good) - good_ok else 0


if __name__ == "__main__":
    sys.exit(main())
