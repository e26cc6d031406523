"""The main job on the embedded default: the Bach demo corpus, end to end, on a local Ray.

Writes under one folder::

    bach/            the chorales as MIDI (musicgen corpus bach)
    dataset/         Parquet shards + manifest.json (musicgen prepare)
    png/             piano rolls of a few pieces, one per split and an overview
    summary.json     the dataset's figures; summary.md says the same for people
"""
from __future__ import annotations

import json
import os

from .corpus import write_corpus
from .dataset import SPLITS, iter_records
from .plot import plot_roll, plot_rolls
from .prepare import PrepareConfig, prepare, summary


def run_demo(out: str, limit: int | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    print(f"[1/3] corpus -> {out}/bach")
    write_corpus("bach", os.path.join(out, "bach"), limit=limit)
    print(f"[2/3] prepare -> {out}/dataset")
    dataset = os.path.join(out, "dataset")
    manifest = prepare(os.path.join(out, "bach"), dataset, PrepareConfig(overwrite=True))
    text = summary(manifest)
    print(text)

    print(f"[3/3] pictures -> {out}/png")
    png = os.path.join(out, "png")
    os.makedirs(png, exist_ok=True)
    spb = manifest["steps_per_beat"]
    shown = {}
    for split in SPLITS:
        for record in iter_records(dataset, split):
            plot_roll(record.roll, os.path.join(png, f"{split}-{record.id}.png"), steps_per_beat=spb,
                      title=f"{record.id} ({split})")
            shown[f"{record.id} ({split})"] = record.roll
            break
    for record in iter_records(dataset, "train"):
        if len(shown) >= 6:
            break
        shown.setdefault(f"{record.id} (train)", record.roll)
    plot_rolls(shown, os.path.join(png, "overview.png"), steps_per_beat=spb)

    result = {"dataset": {k: manifest[k] for k in ("counts", "splits", "bytes", "steps_per_beat")}}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("# musicgen demo\n\n## Dataset\n\n" + "\n".join(f"- {line}" for line in text.splitlines()) + "\n")
    print(f"done: {out}/summary.md, {out}/png/")
    return result
