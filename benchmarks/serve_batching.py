"""Benchmark: extend requests per second with and without batching, over real HTTP on 127.0.0.1.

    python -m musicgen_serve.bench RUN_LSTM [--prompt PROMPT.mid] [--concurrency 16] [--requests 64]
                                   [--steps 64] [--rounds 3] [--out results.json]

Deploys the application twice side by side on a local Ray (or RAY_ADDRESS), at /unbatched with
``max_batch_size=1`` (every request generated on its own, one row per step, as ``musicgen
extend``) and at /batched with ``max_batch_size=--concurrency``, one replica each. After a
warm-up it sends ``--requests`` POST /v1/extend requests (one prompt, seeds 0..N-1) from
``--concurrency`` client threads to each, alternating the two ``--rounds`` times (ABBAAB...) so
that a change in the machine's load hits both alike. Prints the median requests/s over the rounds,
p50/p99 latency over all requests and the mean batch size per mode, and writes JSON with ``--out``.
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
            "_latencies": latencies, "_bytes": {i: r[1] for i, r in enumerate(results)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m musicgen_serve.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained LSTM run (folder or s3://)")
    p.add_argument("--prompt", help="prompt MIDI file (default: a built-in four-bar cadence, 64 steps)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=64, help="requests per mode and round")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-wait", type=float, default=0.01, help="batch_wait_timeout_s of the batched mode")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved by each replica")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    from ray import serve

    from musicgen.runtime import ensure_ray

    from .runner import application, pick_port, settings_for

    port = args.port or pick_port()
    prompt = _prompt_bytes(args.prompt)
    ensure_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    modes = {"unbatched": 1, "batched": args.concurrency}
    rounds: dict[str, list] = {m: [] for m in modes}
    outputs = {}
    try:
        for mode, batch in modes.items():
            settings = settings_for([args.run], [], max_batch_size=batch,
                                    batch_wait_timeout_s=args.batch_wait if batch > 1 else 0.0)
            app = application(settings, num_cpus=args.num_cpus, max_ongoing_requests=max(64, 2 * args.concurrency))
            serve.run(app, name=f"bench-{mode}", route_prefix=f"/{mode}")
        for r in range(args.rounds):
            for mode in (modes if r % 2 == 0 else reversed(list(modes))):
                res = measure(f"http://127.0.0.1:{port}/{mode}", prompt, args.requests, args.concurrency, args.steps)
                outputs.setdefault(mode, res.pop("_bytes"))
                rounds[mode].append(res)
                print(f"round {r + 1} {mode:>9}: {res['requests_per_s']:.2f} req/s, p50 {res['p50_s']:.2f} s, "
                      f"p99 {res['p99_s']:.2f} s, mean batch {res['mean_batch']}", flush=True)
    finally:
        serve.shutdown()
    summary = {}
    for mode, rs in rounds.items():
        latencies = np.concatenate([r["_latencies"] for r in rs])
        summary[mode] = {"requests_per_s": round(float(np.median([r["requests_per_s"] for r in rs])), 2),
                         "p50_s": round(float(np.percentile(latencies, 50)), 3),
                         "p99_s": round(float(np.percentile(latencies, 99)), 3),
                         "mean_batch": round(float(np.mean([r["mean_batch"] for r in rs])), 2),
                         "rounds": [{k: v for k, v in r.items() if k != "_latencies"} for r in rs]}
    same = outputs["unbatched"] == outputs["batched"]
    speedup = summary["batched"]["requests_per_s"] / summary["unbatched"]["requests_per_s"]
    for mode, m in summary.items():
        print(f"{mode:>9}: {m['requests_per_s']:.2f} req/s (median of {args.rounds}), p50 {m['p50_s']:.2f} s, "
              f"p99 {m['p99_s']:.2f} s, mean batch {m['mean_batch']}")
    print(f"  speedup: {speedup:.2f}x; same bytes batched and unbatched: {same}")
    result = {**summary, "speedup": round(speedup, 2), "same_bytes_batched_and_unbatched": same,
              "run": args.run, "prompt": args.prompt or "built-in 64-step cadence", "steps": args.steps,
              "concurrency": args.concurrency, "requests_per_round": args.requests, "batch_wait_s": args.batch_wait,
              "cpus": os.cpu_count(), "load_average_after": os.getloadavg()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
