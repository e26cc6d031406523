"""Incremental (stateful) LSTM generation vs re-running a window per generated step.

    python benchmarks/generation.py [--preset paper] [--steps 256] [--rows 16]

Prints steps/s of both ways at the preset's size (untrained weights: speed does not depend on
them), with the BLAS threads and the load average, and the rows x steps/s of ``--rows`` prompts
continued together (one batched step for all; the NADE head samples a frame pitch by pitch for
all rows at once). The window way is the factorized head's only (the study's net). The study's way re-runs the whole 256-step
window through the network (compiled Keras) for every new step; musicgen's ``Extender`` primes the
prompt once, then carries the LSTM state and feeds one frame per step (numpy: one fused matmul per
layer). Incremental steps/s exclude priming the prompt (timed apart); the best of ``--repeats``
runs of each is kept, which is what a loaded machine lets through.
"""
import argparse
import os
import time

# Single-threaded BLAS unless told otherwise (OPENBLAS_NUM_THREADS=2 ... to compare): set before
# numpy loads OpenBLAS. On a loaded 2-core machine two BLAS threads spin against other processes
# and a step runs ~10x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from musicgen import lstm  # noqa: E402
from musicgen.config import preset  # noqa: E402


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=int, default=256, help="steps generated incrementally (default: one window)")
    p.add_argument("--window-steps", type=int, default=6, help="steps to time for the window way")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=16, help="prompts continued together (default 16)")
    args = p.parse_args()
    cfg = preset("lstm", args.preset)
    model = lstm.build_model(cfg)
    ext = lstm.Extender.from_training_model(cfg, model)
    rng = np.random.default_rng(0)
    prompt = (rng.random((cfg.window, 128)) < 0.05).astype(np.float32) * 0.7
    load_before = os.getloadavg()

    ext.extend(prompt[:4], 2, seeds=0)  # warm-up
    prime = best(lambda: ext.prime([prompt]), args.repeats)
    total = best(lambda: ext.extend(prompt, args.steps, seeds=0), args.repeats)
    incremental = args.steps / max(total - prime, 1e-9)
    prompts = [prompt] * args.rows
    seeds = list(range(args.rows))
    prime_rows = best(lambda: ext.prime(prompts), args.repeats)
    total_rows = best(lambda: ext.extend(prompts, args.steps, seeds=seeds), args.repeats)
    rows_rate = args.rows * args.steps / max(total_rows - prime_rows, 1e-9)

    from musicgen.keras import tf

    print(f"preset {args.preset}: {cfg.layers} x LSTM {cfg.units}, {cfg.head} head, window {cfg.window}, "
          f"{model.count_params():,} parameters")
    print(f"BLAS threads (OPENBLAS_NUM_THREADS): {os.environ.get('OPENBLAS_NUM_THREADS', 'unset (all cores)')}; "
          f"TensorFlow intra-op threads: {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    print(f"incremental (state carried): {incremental:8.1f} steps/s "
          f"(priming the {cfg.window}-step prompt once: {prime:.2f} s; with it: {args.steps / total:.1f} steps/s)")
    print(f"{args.rows} rows together:          {rows_rate:8.1f} row-steps/s ({rows_rate / incremental:.1f}x one row)")
    if cfg.head != "factorized":
        print(f"load average before {', '.join(f'{v:.1f}' for v in load_before)}; "
              f"after {', '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
        return

    window = tf.function(lambda x: model(x, training=False))  # compiled too: a fair comparison
    frames = (prompt > 0).astype(np.float32)
    window(lstm.features(frames[-cfg.window:], 0, cfg)[None])  # warm-up

    def windowed_run():
        nonlocal frames
        for i in range(args.window_steps):  # the study's way: the last `window` frames, every step
            p_next = window(lstm.features(frames[-cfg.window:], i, cfg)[None]).numpy()[0, -1]
            frames = np.concatenate([frames, (rng.random(128) < p_next)[None].astype(np.float32)])

    windowed = args.window_steps / best(windowed_run, args.repeats)
    print(f"re-running the window:       {windowed:8.2f} steps/s")
    print(f"speed-up: {incremental / windowed:.0f}x")
    print(f"load average before {', '.join(f'{v:.1f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
