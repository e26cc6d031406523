"""The real music's side of ``musicgen evaluate``'s ``music`` section, per split of a corpus.

    python benchmarks/music_stats.py musicgen-demo/dataset                   # a prepared dataset
    python benchmarks/music_stats.py tests/data/poly/JSB_Chorales.mat        # a benchmark's .mat file

For every split: the semitone-clash share (:func:`musicgen.metrics.clash_share`), polyphony and
silence pooled over all frames of all pieces, and the same over the real continuations that
``evaluate`` cuts (:func:`musicgen.evaluate.held_out_pairs`: frames [S, 2S) of every piece at least
2S long, S = 16 beats on the grid, :func:`musicgen.evaluate.music_steps`), with their pitch-class
similarity to the prompts. A model's ``clash_ratio`` is over the real continuations of its
evaluated split (the first ``--prompts`` of them); the whole-split figures say how typical those are.
Prints one JSON object.
"""
import argparse
import json
import os

import numpy as np

from musicgen.evaluate import held_out_pairs, music_steps
from musicgen.metrics import clash_share, continuation_stats, sample_stats


def splits_of(source: str) -> tuple[dict, dict]:
    """({split: rolls}, grid) of a prepared dataset or a polyphonic benchmark's .mat file."""
    if source.endswith(".mat"):
        from musicgen.poly import dataset_info, frames_to_roll, load_mat

        name = os.path.splitext(os.path.basename(source))[0]
        rolls = {s: [frames_to_roll(f) for f in pieces] for s, pieces in load_mat(name, source).items()}
        return rolls, {"steps_per_beat": dataset_info(name).steps_per_beat}
    from musicgen.dataset import load_rolls, read_manifest

    manifest = read_manifest(source)
    rolls = {s: list(load_rolls(source, s).values()) for s in ("train", "val", "test")}
    return rolls, {k: manifest.get(k) for k in ("steps_per_beat", "steps_per_second")}


def split_stats(rolls: list, steps: int) -> dict:
    pooled = sample_stats(rolls)
    prompts, truths = held_out_pairs(rolls, steps)
    real = continuation_stats(prompts, truths, truths)["real"]
    return {"pieces": len(rolls), "frames": pooled["steps"],
            "clash_share": round(clash_share(np.concatenate(rolls)), 4),  # per frame, so pooling = concatenating
            "polyphony": round(pooled["polyphony"], 3), "silence_fraction": round(pooled["silence_fraction"], 4),
            "continuations": {"pairs": len(truths), **{k: round(v, 4) for k, v in real.items()}}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("source", help="a prepared dataset, or NAME.mat of a polyphonic benchmark")
    args = p.parse_args()
    rolls, grid = splits_of(args.source)
    steps = music_steps(grid)
    out = {"source": args.source, **grid, "continuation_steps": steps,
           "splits": {s: split_stats(r, steps) for s, r in rolls.items() if r}}
    out["all"] = split_stats([r for rs in rolls.values() for r in rs], steps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
