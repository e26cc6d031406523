"""Where an LSTM's frame accuracy is won and lost next to ``copy_last``, note by note.

    python benchmarks/accuracy_errors.py RUN DATASET [--split test]

Scores every frame of the split as ``musicgen evaluate`` does (the NADE head decides a frame
pitch by pitch, each pitch on when its conditional reaches 0.5; the factorized head thresholds its
probabilities at 0.5) and counts true positives, false positives and false negatives by what the
note does: ``held`` (it sounded in the frame before) or ``new``, on a quarter note's first step
(``beat``) or inside one; the same for ``last_frame``, the frame before copied (what ``evaluate``'s
fitted ``copy_last`` decides for every pitch it saw held in training), which gets every held note
right and no new one. The rows say which of the net's decisions cost it accuracy where copying
the last frame does better (a Bach-trained net on other music: notes held through a beat let go,
new notes guessed on beats).
With ``--draws K`` the NADE head decides by its marginals instead: a pitch is on where it sounds
in at least ``--share`` of K frames drawn at temperature 1 from the true frames before
(``Extender.draw_next``, seeds 0..K-1), the rule the factorized head's thresholded probabilities
follow; the greedy pitch-by-pitch decision is a guess at the most likely frame, which is not the
frame with the most notes likely to sound.
Prints one JSON object.
"""
import argparse
import json

import numpy as np

from musicgen.dataset import iter_records
from musicgen.evaluate import decider
from musicgen.generate import load_extender

KINDS = ("held_on_beat", "held_inside_beat", "new_on_beat", "new_inside_beat")


def counts(guess: np.ndarray, truth: np.ndarray, prev: np.ndarray, beat: np.ndarray) -> dict:
    """{kind: [tp, fp, fn]} of boolean frames ``guess`` against ``truth`` (T, 128), each note
    sorted by ``prev`` (T, 128: sounding in the frame before) and ``beat`` (T,: a beat's first step)."""
    beat = beat[:, None]
    masks = (prev & beat, prev & ~beat, ~prev & beat, ~prev & ~beat)
    return {k: [int((guess & truth & m).sum()), int((guess & ~truth & m).sum()), int((~guess & truth & m).sum())]
            for k, m in zip(KINDS, masks)}


def by_draws(ext, roll: np.ndarray, positions, draws: int, share: float) -> np.ndarray:
    """Frames (T-1, 128), on where a pitch sounds in at least ``share`` of ``draws`` next frames
    drawn from the true past (seeds 0..draws-1)."""
    total = sum(ext.draw_next(roll, seed=s, positions=positions) for s in range(draws))
    return total >= share * draws


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--draws", type=int, default=0, help="decide by the share of this many draws (NADE)")
    ap.add_argument("--share", type=float, default=0.5, help="with --draws: on in at least this share")
    args = ap.parse_args(argv)
    ext, info = load_extender(args.run)
    decide = decider(ext, 0.5)
    if args.draws:
        decide = lambda roll, positions: by_draws(ext, roll, positions, args.draws, args.share)  # noqa: E731
    per_beat = info.get("steps_per_beat") or 0
    totals = {name: {k: [0, 0, 0] for k in KINDS} for name in ("model", "last_frame")}
    for record in iter_records(args.data, args.split):
        roll = (record.roll > 0).astype(np.float32)
        positions = np.asarray(ext.positions(len(roll), record.time_signatures))
        guess = (decide(roll, positions=positions) if decide else ext.predict_next(roll, positions=positions) >= 0.5) > 0
        truth, prev = roll[1:] > 0, roll[:-1] > 0
        beat = (positions[1:] >= 0) & (positions[1:] % per_beat == 0) if per_beat else np.zeros(len(truth), bool)
        for name, g in (("model", guess), ("last_frame", prev)):
            for k, (tp, fp, fn) in counts(g, truth, prev, beat).items():
                totals[name][k] = [a + b for a, b in zip(totals[name][k], (tp, fp, fn))]
    for scores in totals.values():
        tp, fp, fn = (sum(v[i] for v in scores.values()) for i in range(3))
        scores["accuracy"] = round(tp / max(1, tp + fp + fn), 5)
    out = {"run": args.run, "data": args.data, "split": args.split, "draws": args.draws,
           "share": args.share if args.draws else None, "kinds": "[tp, fp, fn]", **totals}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
