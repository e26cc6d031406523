"""Incremental (stateful) LSTM generation vs re-running a window per generated step.

    python benchmarks/generation.py [--preset paper] [--steps 64]

Prints steps/s of both ways at the preset's size (untrained weights: speed does not depend on
them). The study's way re-runs the whole 256-step window through the network for every new step;
musicgen's Extender carries the LSTM state and feeds one frame per step.
"""
import argparse
import time

import numpy as np

from musicgen import lstm
from musicgen.config import preset


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--window-steps", type=int, default=6, help="steps to time for the window way")
    args = p.parse_args()
    cfg = preset("lstm", args.preset)
    model = lstm.build_model(cfg)
    ext = lstm.Extender.from_training_model(cfg, model)
    rng = np.random.default_rng(0)
    prompt = (rng.random((cfg.window, 128)) < 0.05).astype(np.float32) * 0.7

    ext.extend(prompt, 2, seeds=0)  # warm-up: graph tracing
    t = time.perf_counter()
    ext.extend(prompt, args.steps, seeds=0)
    incremental = args.steps / (time.perf_counter() - t)

    from musicgen.keras import tf

    window = tf.function(lambda x: model(x, training=False))  # compiled too: a fair comparison
    frames = (prompt > 0).astype(np.float32)
    window(lstm.features(frames[-cfg.window:], 0, cfg)[None])  # warm-up
    t = time.perf_counter()
    for i in range(args.window_steps):  # the study's way: the last `window` frames, every step
        p_next = window(lstm.features(frames[-cfg.window:], i, cfg)[None]).numpy()[0, -1]
        frames = np.concatenate([frames, (rng.random(128) < p_next)[None].astype(np.float32)])
    windowed = args.window_steps / (time.perf_counter() - t)

    print(f"preset {args.preset}: {cfg.layers} x LSTM {cfg.units}, window {cfg.window}, "
          f"{model.count_params():,} parameters")
    print(f"incremental (state carried): {incremental:8.1f} steps/s")
    print(f"re-running the window:       {windowed:8.2f} steps/s")
    print(f"speed-up: {incremental / windowed:.0f}x")


if __name__ == "__main__":
    main()
