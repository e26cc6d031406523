"""Seconds per training step of the LSTM presets on a dataset's real windows.

    python benchmarks/train_step.py DATASET [--presets joint,factorized] [--batches 10]

Builds each preset's net (``musicgen.lstm``), takes the first ``--batches`` batches of windows of
the train split (``lstm.val_arrays``: untransposed, as validation cuts them), runs one batch to
compile, then times ``fit`` over the batches and ``predict`` over the same windows, in this
process (no Ray). The joint head's cost depends on the music: its NADE computes its hidden units
once per stretch of pitches between two sounding or changed ones (``Nade.hidden_inputs``), so a
dataset with fuller frames costs more. Prints one JSON line per preset, with the 1-minute load
average (the machine may be shared).
"""
import argparse
import json
import os
import time

from musicgen.config import preset
from musicgen.dataset import load_rolls


def step_seconds(name: str, rolls: list, batches: int) -> dict:
    from musicgen import lstm

    cfg = preset("lstm", name)
    model = lstm.compile_model(lstm.build_model(cfg), cfg)
    n = cfg.batch_size * batches
    x, y, w = (a[:n] for a in lstm.val_arrays(rolls, cfg))
    if len(x) < n:
        raise SystemExit(f"the train split has {len(x)} windows of {cfg.window} steps, {n} needed")
    model.fit(x[:cfg.batch_size], y[:cfg.batch_size], sample_weight=w[:cfg.batch_size],
              batch_size=cfg.batch_size, epochs=1, verbose=0)  # compiles
    start = time.perf_counter()
    model.fit(x, y, sample_weight=w, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=False)
    train = (time.perf_counter() - start) / batches
    start = time.perf_counter()
    model.predict(x, batch_size=cfg.batch_size, verbose=0)
    return {"preset": name, "batch": [cfg.batch_size, cfg.window], "train_s_per_batch": round(train, 3),
            "predict_s_per_batch": round((time.perf_counter() - start) / batches, 3),
            "load_1min": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a prepared musicgen dataset (folder or s3://)")
    ap.add_argument("--presets", default="joint,factorized")
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args()
    if args.batches < 1:
        ap.error("--batches must be at least 1")
    rolls = list(load_rolls(args.dataset, "train").values())
    for name in args.presets.split(","):
        print(json.dumps(step_seconds(name, rolls, args.batches)), flush=True)


if __name__ == "__main__":
    main()
