"""Benchmark: /v1/extend requests per second with and without batching, and where the time goes.

    python benchmarks/serve_batching.py RUN_LSTM [--prompt PROMPT.mid] [--concurrency 16]
                                        [--requests 64] [--steps N] [--rounds 3] [--out results.json]

Three measurements, one after the other:

1. **Model only** (this process, no HTTP): ``--concurrency`` jobs (the prompt, ``--steps`` steps,
   seeds 0..C-1) generated one at a time (a ``StepBatcher`` of one row, as an unbatched replica
   runs) and then together (a ``StepBatcher`` of ``--concurrency`` rows), best of 3 each.
   Also checks that each job's continuation is the same both ways.
2. **Overhead**: one request at a time with ``steps=1`` to the unbatched deployment: the time of
   HTTP, Serve's proxy, reading the prompt, priming it and writing the MIDI, i.e. what batching
   cannot save.
3. **HTTP**: the application deployed twice side by side on a local Ray (or RAY_ADDRESS), at
   /unbatched with ``max_batch_size=1`` and at /batched with ``max_batch_size=--concurrency``, one
   replica each. After a warm-up, ``--requests`` POST /v1/extend requests (seeds 0..N-1) from
   ``--concurrency`` client threads to each, alternating ``--rounds`` times (ABBAAB...) so that a
   change in the machine's load hits both alike. Median requests/s over the rounds, p50/p99
   latency over all requests, mean batch size, and the mean time a request spent in generation
   (``X-Generation-Seconds``: waiting for its batch plus generating it).

``--steps`` defaults to one window of the run (64 steps for ``tiny``, 256 for ``paper``). The
clients run in this process, on the same machine as the server: their CPU time is counted.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import sys
import time
import urllib.request
import uuid

# Single-threaded BLAS, as in the replicas (set before numpy loads it): this process's model-only
# figures are then comparable, and two BLAS threads spinning on a loaded 2-core machine cost
# far more than they bring.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402


def prompt_bytes(path: str | None = None) -> bytes:
    """The prompt MIDI file: ``path``, or four bars of a I-IV-V-I cadence (64 steps)."""
    if path:
        with open(path, "rb") as f:
            return f.read()
    from musicgen.midi import roll_to_midi

    roll = np.zeros((64, 128), np.float32)
    for bar, chord in enumerate([(48, 64, 67, 72), (53, 65, 69, 72), (55, 62, 67, 71), (48, 64, 67, 72)]):
        roll[bar * 16:(bar + 1) * 16 - 1, list(chord)] = 80 / 127
    buf = io.BytesIO()
    roll_to_midi(roll, 4).save(file=buf)
    return buf.getvalue()


def post_extend(url: str, prompt: bytes, fields: dict, timeout: float = 600):
    """(seconds, body, headers) of one multipart POST /v1/extend."""
    b = uuid.uuid4().hex
    body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{b}\r\nContent-Disposition: form-data; name="midi"; filename="p.mid"\r\n'
             f'Content-Type: audio/midi\r\n\r\n').encode() + prompt + f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = r.read()
        return time.perf_counter() - start, data, r.headers


def model_only(run: str, prompt: bytes, jobs: int, steps: int, max_batch: int, repeats: int = 3) -> dict:
    from musicgen.generate import load_extender, read_prompt
    from musicgen_serve.batching import ExtendJob, StepBatcher

    ext, info = load_extender(run)
    roll = read_prompt(prompt, info).roll
    batch = [ExtendJob(roll, steps, 1.0, seed) for seed in range(jobs)]
    alone_b, together_b = StepBatcher(ext, 1), StepBatcher(ext, max_batch)  # as the two replicas run

    def run_all(batcher):
        futures = [batcher.submit(j) for j in batch]
        return [f.result()[0] for f in futures]

    try:
        run_all(together_b)  # warm-up
        t_alone = t_together = float("inf")
        for _ in range(repeats):  # interleaved, best of each: what a loaded machine lets through
            t = time.perf_counter()
            alone = run_all(alone_b)
            t_alone = min(t_alone, time.perf_counter() - t)
            t = time.perf_counter()
            together = run_all(together_b)
            t_together = min(t_together, time.perf_counter() - t)
    finally:
        alone_b.close()
        together_b.close()
    same = sum(np.array_equal(a, b) for a, b in zip(alone, together))
    return {"jobs": jobs, "steps": steps, "prompt_steps": len(roll), "block": together_b.block,
            "one_at_a_time_jobs_per_s": round(jobs / t_alone, 2), "batched_jobs_per_s": round(jobs / t_together, 2),
            "speedup": round(t_alone / t_together, 2), "same_continuation": f"{same}/{jobs}"}


def measure(base: str, prompt: bytes, requests: int, concurrency: int, steps: int, warm: bool = True) -> dict:
    url = base + "/v1/extend"

    def one(i):
        return post_extend(url, prompt, {"steps": steps, "seed": i})

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        if warm:
            list(pool.map(one, range(concurrency)))
        start = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    latencies = np.array([r[0] for r in results])
    return {"requests": requests, "concurrency": concurrency, "steps": steps, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 3),
            "p50_s": round(float(np.percentile(latencies, 50)), 3),
            "p99_s": round(float(np.percentile(latencies, 99)), 3),
            "mean_batch": round(float(np.mean([float(r[2]["X-Batch-Size"]) for r in results])), 2),
            "mean_generation_s": round(float(np.mean([float(r[2]["X-Generation-Seconds"]) for r in results])), 3),
            "_latencies": latencies, "_bytes": {i: r[1] for i, r in enumerate(results)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained LSTM run (folder or s3://)")
    p.add_argument("--prompt", help="prompt MIDI file (default: a built-in four-bar cadence, 64 steps)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=64, help="requests per mode and round")
    p.add_argument("--steps", type=int, help="steps per request (default: the run's window)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-wait", type=float, default=0.01, help="batch_wait_timeout_s of the batched mode")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved by each replica")
    p.add_argument("--skip-model-only", action="store_true")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    from ray import serve

    from musicgen.run import Run
    from musicgen.runtime import ensure_ray
    from musicgen_serve.runner import application, pick_port, settings_for

    steps = args.steps or Run(args.run).info()["config"]["window"]
    prompt = prompt_bytes(args.prompt)
    result = {"run": args.run, "prompt": args.prompt or "built-in 64-step cadence", "steps": steps,
              "concurrency": args.concurrency, "requests_per_round": args.requests, "batch_wait_s": args.batch_wait,
              "cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    print(f"steps {steps}, concurrency {args.concurrency}, load average {os.getloadavg()}", flush=True)
    if not args.skip_model_only:
        result["model_only"] = m = model_only(args.run, prompt, args.concurrency, steps, args.concurrency)
        print(f"model only: {m['one_at_a_time_jobs_per_s']} jobs/s one at a time, {m['batched_jobs_per_s']} batched "
              f"(block {m['block']}): {m['speedup']}x; same continuation {m['same_continuation']}", flush=True)

    port = args.port or pick_port()
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
        base = f"http://127.0.0.1:{port}"
        o = measure(base + "/unbatched", prompt, 16, 1, 1)
        result["overhead"] = {k: o[k] for k in ("p50_s", "p99_s", "mean_generation_s")}
        print(f"overhead (steps=1, one at a time): p50 {o['p50_s'] * 1e3:.0f} ms, of which generation "
              f"{o['mean_generation_s'] * 1e3:.0f} ms", flush=True)
        for r in range(args.rounds):
            for mode in (modes if r % 2 == 0 else reversed(list(modes))):
                res = measure(f"{base}/{mode}", prompt, args.requests, args.concurrency, steps)
                outputs.setdefault(mode, res.pop("_bytes"))
                rounds[mode].append(res)
                print(f"round {r + 1} {mode:>9}: {res['requests_per_s']:.2f} req/s, p50 {res['p50_s']:.2f} s, "
                      f"p99 {res['p99_s']:.2f} s, mean batch {res['mean_batch']}, "
                      f"generation {res['mean_generation_s']:.3f} s/request, load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        serve.shutdown()
    for mode, rs in rounds.items():
        latencies = np.concatenate([r["_latencies"] for r in rs])
        result[mode] = {"requests_per_s": round(float(np.median([r["requests_per_s"] for r in rs])), 2),
                        "p50_s": round(float(np.percentile(latencies, 50)), 3),
                        "p99_s": round(float(np.percentile(latencies, 99)), 3),
                        "mean_batch": round(float(np.mean([r["mean_batch"] for r in rs])), 2),
                        "rounds": [{k: v for k, v in r.items() if k != "_latencies"} for r in rs]}
    same = sum(outputs["unbatched"][i] == outputs["batched"][i] for i in outputs["batched"])
    speedup = result["batched"]["requests_per_s"] / result["unbatched"]["requests_per_s"]
    for mode in modes:
        m = result[mode]
        print(f"{mode:>9}: {m['requests_per_s']:.2f} req/s (median of {args.rounds}), p50 {m['p50_s']:.2f} s, "
              f"p99 {m['p99_s']:.2f} s, mean batch {m['mean_batch']}")
    print(f"  speedup: {speedup:.2f}x; same MIDI batched and unbatched: {same}/{len(outputs['batched'])}")
    result.update(speedup=round(speedup, 2), same_midi_batched_and_unbatched=f"{same}/{len(outputs['batched'])}",
                  load_average_after=os.getloadavg())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
