"""Small prepared datasets and trained runs made by hand in tests, without Ray.

:func:`write_dataset` writes rolls as a prepared dataset (Parquet shards and a manifest, as
``musicgen prepare`` does); :func:`write_run` writes a run through :meth:`musicgen.run.Run.save`
from a model's weights, as ``musicgen train`` does at its end.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pyarrow.fs as pafs

from musicgen.dataset import SHARD_DIR, SPLITS, encode_roll, read_manifest, write_manifest, write_shard
from musicgen.run import WEIGHTS, Run, model_module

EPOCHS = [{"epoch": 1, "loss": 0.5, "val_loss": 0.6, "val_nll": 30.0},
          {"epoch": 2, "loss": 0.4, "val_loss": 0.55, "val_nll": 28.0}]


def random_rolls(n: int, steps: int = 96, seed: int = 0) -> list[np.ndarray]:
    """``n`` rolls of held chords: 4-step notes of 3 pitches in 48-72, velocity 80/127."""
    rng = np.random.default_rng(seed)
    rolls = []
    for _ in range(n):
        roll = np.zeros((steps, 128), np.float32)
        for t in range(0, steps, 4):
            roll[t:t + 4, rng.choice(np.arange(48, 72), 3, replace=False)] = np.float32(80 / 127)
        rolls.append(roll)
    return rolls


def write_dataset(dest: str, rolls: dict[str, list[np.ndarray]], steps_per_beat: int = 4) -> str:
    """A prepared dataset at ``dest`` of ``rolls`` by split ({'train': [...], ...})."""
    pieces, shards = [], []
    for split in SPLITS:
        rows = [{"id": f"{split}-{i}", "source": f"{split}-{i}.mid", "split": split, "steps": len(r),
                 "width": r.shape[1], "notes": int((np.diff(r > 0, axis=0, prepend=0) > 0).sum()),
                 "tempo_rows": [0], "tempo_bpm": [120.0], "roll": encode_roll(r)}
                for i, r in enumerate(rolls.get(split, []))]
        if rows:
            shard = f"{SHARD_DIR}/{split}-00000.parquet"
            shards.append(write_shard(dest, shard, rows))
            pieces += [{k: row[k] for k in ("id", "source", "split", "steps", "notes")} | {"shard": shard}
                       for row in rows]
    write_manifest(dest, {"format": 1, "steps_per_beat": steps_per_beat, "width": 128,
                          "counts": {s: len(rolls.get(s, [])) for s in SPLITS}, "shards": shards,
                          "pieces": pieces, "skipped": []})
    return dest


def write_run(out: str, kind: str, cfg, data: str, scratch, *, seed: int = 0, threshold: float | None = None,
              directions: dict | None = None):
    """A run at ``out`` (a folder or s3://) of a freshly built ``kind`` model (weights drawn with
    ``seed``) on dataset ``data``, written as training writes one from its checkpoint (made in the
    local folder ``scratch``); returns (the Keras model, the metrics)."""
    from musicgen.keras import tf

    tf.keras.utils.set_random_seed(seed)
    model = model_module(kind).build_model(cfg)
    checkpoint = os.path.join(scratch, f"checkpoint-{kind}-{seed}")
    os.makedirs(checkpoint, exist_ok=True)
    model.save_weights(os.path.join(checkpoint, WEIGHTS))
    with open(os.path.join(checkpoint, "state.json"), "w") as f:
        json.dump({"epoch": 1, "kind": kind}, f)
    metrics = Run(out).save(SimpleNamespace(path=checkpoint, filesystem=pafs.LocalFileSystem()), kind=kind,
                            cfg=cfg, manifest=read_manifest(data), data=data, epochs=EPOCHS, best=EPOCHS[-1],
                            workers=1, plan={"steps_per_epoch": 4, "val_steps": 1}, threshold=threshold,
                            directions=directions)
    return model, metrics
