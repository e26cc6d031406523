"""Where an LSTM's continuations clash: the clashes sorted by how their notes came, over several seed sets.

    python benchmarks/clash_kinds.py RUN DATASET [--split test] [--sets 4]

The continuations of ``musicgen evaluate``'s ``music`` section (the first 64 steps of the first
32 pieces long enough, continued by 64 at temperature 1; ``musicgen.evaluate.continuations``)
with ``--sets`` seed sets (set k: seeds 32k .. 32k + 31; set 0 is ``evaluate``'s), and the same
steps each drawn from the true frames before them (``next_frame``). A frame *clashes* when two of
its pitch classes are a semitone apart (``musicgen.metrics.clash_share``); each clashing frame
gets one kind, by how the notes of its clashing pitch classes relate to the frame before:
``held_on`` (a clash both of whose pitch classes were already sounding by the same pitches),
else ``beside_held`` (a pitch starts a semitone from a held one), else ``together`` (both
start in this frame). Shares are of sounding frames, pooled over the pieces, next to the real
music's; ``ratio``: all clashes over the real share (``clash_ratio``). ``by_quarter``: the
clash share of the continuations and of the real music in each quarter of their steps (pooled
over the seed sets): do a continuation's clashes grow as it goes? ``episodes``: each clash as
an *episode*, one pair of pitches a semitone apart in pitch class (1, 11, 13, 23, ... semitones)
sounding together over consecutive frames, pooled over the seed sets: episodes per 100 sounding
frames, their mean length in steps, the share by length (1, 2, 3, 4 or more steps), the share
that start on a beat (a step whose bar position is a multiple of the grid's steps per beat), and
those a beat or longer per 100 sounding frames and by the step of the beat they start on.
``held_clash_goes_on``: by the step of the beat, [how often, share]: a clash pair sounding at the
step before keeps its lower pitch, and its upper pitch goes on too, in the continuations, in the
real music, and as the net's conditional on the real music (``teacher_forced``, the net reading
the true frames): a net that lets a clash go in Bach's own context but holds it in its own
continuations holds what its slips led to.
``by_beat``: the clash share of the frames on a beat and of those between beats, for the
continuations, the frames drawn from the true past and the real music, pooled over the seed sets.
Prints one JSON object.
"""
import argparse
import json

import numpy as np

from musicgen.dataset import iter_records
from musicgen.evaluate import _long_enough, continuations, music_steps
from musicgen.generate import load_extender
from musicgen.metrics import pooled_clash_share

KINDS = ("together", "beside_held", "held_on")
_LOW, _HIGH = np.nonzero(np.triu((np.subtract.outer(np.arange(128), np.arange(128)) % 12 == 11)
                                 | (np.subtract.outer(np.arange(128), np.arange(128)) % 12 == 1), 1))


def episodes(frames: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """(length, step of the beat it starts on) of each clash episode of bool ``frames`` (T, 128):
    a pair of pitches a semitone apart in pitch class sounding together over consecutive frames;
    ``phase`` (T,) each frame's step of its beat (0: on the beat). An array (episodes, 2)."""
    both = np.pad(frames[:, _LOW] & frames[:, _HIGH], ((1, 1), (0, 0))).astype(np.int8)
    edges = np.diff(both, axis=0).T  # per pair, +1 where an episode starts, -1 after it ends
    _, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return np.stack([ends - starts, phase[starts]], 1)


def episode_stats(found: list, sounding: int, per_beat: int) -> dict:
    """Pooled figures of :func:`episodes` arrays over ``sounding`` sounding frames, on a grid of
    ``per_beat`` steps a beat: ``long_by_start``, the episodes of a beat or longer by the step of
    the beat they start on (Bach's clashes are passing notes an eighth long)."""
    e = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    n = max(1, len(e))
    bins = {str(k): round(float(np.mean(np.minimum(e[:, 0], 4) == k)) if len(e) else 0.0, 3) for k in (1, 2, 3)}
    long = e[e[:, 0] >= per_beat, 1]
    return {"per_100_frames": round(100 * len(e) / max(1, sounding), 2),
            "mean_length": round(float(e[:, 0].sum() / n), 2),
            "share_by_length": bins | {"4+": round(float(np.mean(e[:, 0] >= 4)) if len(e) else 0.0, 3)},
            "share_on_beat": round(float(np.sum(e[:, 1] == 0) / n), 3),
            "long_per_100_frames": round(100 * len(long) / max(1, sounding), 2),
            "long_by_start": [int(np.sum(long == k)) for k in range(per_beat)]}


def held_clash_counts(frames: np.ndarray, phase: np.ndarray, per_beat: int, probs=None) -> np.ndarray:
    """(per_beat, 2): by the step of the beat, how often a clash pair of bool ``frames`` (T + 1,
    128; the first is the frame before) sounding at step t - 1 keeps its lower pitch at t, and how
    often its upper pitch goes on too (with ``probs`` (T, 128), a net's conditionals of frames 1..T:
    their sum for the upper pitch instead). ``phase`` (T,): each step's step of its beat."""
    t, pair = np.nonzero(frames[:-1, _LOW] & frames[:-1, _HIGH] & frames[1:, _LOW])
    goes_on = frames[1:][t, _HIGH[pair]] if probs is None else probs[t, _HIGH[pair]]
    out = np.zeros((per_beat, 2))
    np.add.at(out, (phase[t], 0), 1)
    np.add.at(out, (phase[t], 1), goes_on)
    return out


def kind_counts(frames: np.ndarray, before: np.ndarray) -> np.ndarray:
    """[together, beside_held, held_on, sounding] frame counts of bool frames (T, 128), each
    frame's notes sorted by ``before`` (T, 128: the frame before each)."""
    def classes(notes):  # (T, 12): pitch classes sounding by these notes
        return np.stack([notes[:, c::12].any(1) for c in range(12)], 1)

    held, new = classes(frames & before), classes(frames & ~before)
    on = held | new
    pair = on & np.roll(on, -1, axis=1)  # classes c and c + 1 both sound
    both_held = (pair & held & np.roll(held, -1, axis=1)).any(1)
    beside = (pair & ((held & np.roll(new, -1, axis=1)) | (new & np.roll(held, -1, axis=1)))).any(1)
    clash = pair.any(1)
    return np.array([(clash & ~both_held & ~beside).sum(), (beside & ~both_held).sum(), both_held.sum(),
                     on.any(1).sum()], np.int64)


def pooled(rolls, befores) -> np.ndarray:
    """:func:`kind_counts` summed over pairs of (frames, the frame before each)."""
    return sum(kind_counts(r > 0, b > 0) for r, b in zip(rolls, befores))


def shares(counts: np.ndarray, real: np.ndarray | None = None) -> dict:
    out = {k: round(float(c / max(1, counts[3])), 4) for k, c in zip(KINDS, counts)}
    out["all"] = round(float(counts[:3].sum() / max(1, counts[3])), 4)
    if real is not None:
        out["ratio"] = round(out["all"] / max(1e-12, float(real[:3].sum() / max(1, real[3]))), 3)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--sets", type=int, default=4)
    args = ap.parse_args(argv)
    if args.sets < 1:
        ap.error(f"--sets must be at least 1, not {args.sets}")
    ext, info = load_extender(args.run)
    records = list(iter_records(args.data, args.split))
    rolls, meters = [r.roll for r in records], [r.time_signatures for r in records]
    steps = music_steps(info)
    out = {"run": args.run, "data": args.data, "split": args.split, "sets": []}
    quarters = np.zeros((2, 4, 4), np.int64)  # [continuations, real][quarter][kind counts]
    per_beat = info.get("steps_per_beat")
    prompt_meters = [[m for m in meters[i] if m[0] < steps] for i in _long_enough(rolls, steps, 32)]
    phases = [ext.positions(2 * steps, meter)[steps:] % (per_beat or 1) for meter in prompt_meters]
    beats = [phase == 0 for phase in phases]
    found = {"continuations": [], "real": []}
    sounding = dict.fromkeys(found, 0)
    beat_frames = {side: ([], []) for side in ("continuations", "next_frame", "real")}  # (on, between)
    held = {side: np.zeros((per_beat or 1, 2)) for side in ("continuations", "real", "teacher_forced")}
    for k in range(args.sets):
        heads, made, truths, nexts = continuations(ext, rolls, steps, 32, meters, first_seed=32 * k)
        # the frame before each: the prompt's last, then the continuation's own (or the true past's)
        real = pooled(truths, [np.concatenate([h[-1:], t[:-1]]) for h, t in zip(heads, truths)])
        cont = pooled(made, [np.concatenate([h[-1:], m[:-1]]) for h, m in zip(heads, made)])
        nxt = pooled(nexts, [np.concatenate([h[-1:], t[:-1]]) for h, t in zip(heads, truths)])
        for side, rolls_ in enumerate((made, truths)):
            for h, r in zip(heads, rolls_):
                full = np.concatenate([h[-1:], r]) > 0
                for q, part in enumerate(np.array_split(np.arange(1, len(full)), 4)):
                    quarters[side, q] += kind_counts(full[part], full[part - 1])
        out["real"] = shares(real)
        for side, rolls_ in (("continuations", made), ("real", truths if k == 0 else [])):
            found[side] += [episodes(r > 0, phase) for r, phase in zip(rolls_, phases)]
            sounding[side] += sum(int((r > 0).any(1).sum()) for r in rolls_)
        for side, rolls_ in (("continuations", made), ("real", truths if k == 0 else [])):
            for h, r, phase in zip(heads, rolls_, phases):
                held[side] += held_clash_counts(np.concatenate([h[-1:], r]) > 0, phase, per_beat or 1)
        for h, r, phase, meter in zip(heads, truths if k == 0 else [], phases, prompt_meters):
            probs = ext.predict_next(np.concatenate([h, r]), ext.positions(2 * steps, meter))[steps - 1:]
            held["teacher_forced"] += held_clash_counts(np.concatenate([h[-1:], r]) > 0, phase, per_beat or 1, probs)
        for side, rolls_ in (("continuations", made), ("next_frame", nexts), ("real", truths if k == 0 else [])):
            for r, b in zip(rolls_, beats):
                beat_frames[side][0].append(r[b])
                beat_frames[side][1].append(r[~b])
        out["sets"].append({"first_seed": 32 * k, "continuations": shares(cont, real), "next_frame": shares(nxt, real)})
        print(f"set {k}: continuations {out['sets'][-1]['continuations']}, next frame {out['sets'][-1]['next_frame']}",
              flush=True)
    for side in ("continuations", "next_frame"):
        out["mean_" + side] = {key: round(float(np.mean([s[side][key] for s in out["sets"]])), 4)
                               for key in (*KINDS, "all", "ratio")}
    out["by_quarter"] = {side: [shares(c)["all"] for c in q] for side, q in zip(("continuations", "real"), quarters)}
    out["by_beat"] = {side: {"on_beat": round(pooled_clash_share(on), 4), "between": round(pooled_clash_share(off), 4)}
                      for side, (on, off) in beat_frames.items()} if per_beat else None
    out["episodes"] = {side: episode_stats(found[side], sounding[side], per_beat or 1)
                       | ({} if per_beat else {"share_on_beat": None, "long_by_start": None}) for side in found}
    out["held_clash_goes_on"] = {side: [[int(n), round(on / max(1, n), 3)] for n, on in c] for side, c in held.items()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
