"""Benchmark: extend requests per second with and without batching, over real HTTP on 127.0.0.1.

    python -m musicgen_serve.bench RUN_LSTM [--prompt PROMPT.mid] [--concurrency 16] [--requests 64] [--steps 32]

Deploys the application twice on a local Ray (or RAY_ADDRESS), once with ``max_batch_size=1``
(every request generated on its own) and once with ``max_batch_size=--concurrency``, and sends
the same ``--requests`` POST /v1/extend requests (one prompt, seeds 0..N-1) from ``--concurrency``
client threads, after a warm-up round. Prints requests/s, p50/p99 latency and the mean batch size
per mode, checks that a request's bytes do not depend on batching, and writes JSON with
``--out``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
import urllib.request
import uuid

import numpy as np


def _prompt_bytes(path: str | None) -> bytes:
    if path:
        with open(path, "rb") as f:
            return f.read()
    import io

    from musicgen.midi import roll_to_midi

    roll = np.zeros((64, 128), np.float32)  # four bars of a I-IV-V-I cadence, whole-note chords
    for bar, chord in enumerate([(48, 64, 67, 72), (53, 65, 69, 72), (55, 62, 67, 71), (48, 64, 67, 72)]):
        roll[bar * 16:(bar + 1) * 16 - 1, list(chord)] = 80 / 127
    buf = io.BytesIO()
    roll_to_midi(roll, 4).save(file=buf)
    return buf.getvalue()


def _post(url: str, prompt: bytes, fields: dict) -> tuple[float, bytes, int]:
    b = uuid.uuid4().hex
    body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{b}\r\nContent-Disposition: form-data; name="midi"; filename="p.mid"\r\n'
             f'Content-Type: audio/midi\r\n\r\n').encode() + prompt + f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        data = r.read()
        batch = int(r.headers.get("X-Batch-Size", "1"))
    return time.perf_counter() - start, data, batch


def measure(base: str, prompt: bytes, requests: int, concurrency: int, steps: int) -> dict:
    url = base + "/v1/extend"

    def one(i):
        return _post(url, prompt, {"steps": steps, "seed": i})

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: the model's first calls are slow
        start = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    latencies = np.array([r[0] for r in results])
    return {"requests": requests, "concurrency": concurrency, "steps": steps, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 3),
            "p50_s": round(float(np.percentile(latencies, 50)), 3),
            "p99_s": round(float(np.percentile(latencies, 99)), 3),
            "mean_batch": round(float(np.mean([r[2] for r in results])), 2),
            "_bytes": {i: r[1] for i, r in enumerate(results)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m musicgen_serve.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained LSTM run (folder or s3://)")
    p.add_argument("--prompt", help="prompt MIDI file (default: a built-in four-bar cadence)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--batch-wait", type=float, default=0.01, help="batch_wait_timeout_s of the batched mode")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved by the replica")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    import socket

    from ray import serve

    from musicgen.runtime import ensure_ray

    from .runner import application, settings_for

    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    prompt = _prompt_bytes(args.prompt)
    ensure_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for mode, batch in (("unbatched", 1), ("batched", args.concurrency)):
            settings = settings_for([args.run], [], max_batch_size=batch,
                                    batch_wait_timeout_s=args.batch_wait if batch > 1 else 0.0)
            serve.run(application(settings, num_cpus=args.num_cpus, max_ongoing_requests=max(64, 2 * args.concurrency)),
                      name="musicgen-bench", route_prefix="/")
            results[mode] = measure(base, prompt, args.requests, args.concurrency, args.steps)
            print(f"{mode:>9}: {results[mode]['requests_per_s']:.2f} req/s, p50 {results[mode]['p50_s']:.2f} s, "
                  f"p99 {results[mode]['p99_s']:.2f} s, mean batch {results[mode]['mean_batch']}", flush=True)
    finally:
        serve.shutdown()
    same = results["unbatched"].pop("_bytes") == results["batched"].pop("_bytes")
    speedup = results["batched"]["requests_per_s"] / results["unbatched"]["requests_per_s"]
    summary = {**results, "speedup": round(speedup, 2), "same_bytes_batched_and_unbatched": same,
               "run": args.run, "prompt": args.prompt or "built-in 64-step cadence", "batch_wait_s": args.batch_wait,
               "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(f"  speedup: {speedup:.2f}x (target >= 3x); same bytes batched and unbatched: {same}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
