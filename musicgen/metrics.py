"""Metrics for piano rolls and next-frame models: plain numpy functions over plain arrays.

A roll is a float array (T, 128): rows are time steps (4 per beat), columns are MIDI pitches,
values are velocity/127 in [0, 1] and 0 means silent. A next-frame model gives, for every frame
t >= 1 of a piece, the probability that each pitch sounds at t given frames < t: an array
(T - 1, 128) of probabilities. :func:`evaluate` scores such a predictor against the pieces
themselves; :class:`CopyLast` and :class:`PitchPrior` are the baselines any model must beat.

Units: ``nll`` is in nats per frame (summed over the 128 pitches of a frame, averaged over
frames); ``mae`` is per cell (one pitch at one step); everything counted "per step" is per row.
A ratio whose denominator is 0 (a score with nothing to count, a statistic of a silent roll) is
undefined and is NaN everywhere here, never a made-up 0 or 1; means over many rolls ignore NaN.
Where a well-known library defines a statistic, it has that library's name and definition (cited
at the function). Nothing here imports TensorFlow or Ray, and every dict returned holds only Python
ints, floats (NaN included: ``json.dumps`` writes it as ``NaN``), lists and ``None``.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable

import numpy as np

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logs, so the NLL stays finite.
EPS = 1e-7


def _roll(roll, name: str = "roll") -> np.ndarray:
    a = np.asarray(roll)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (steps, pitches), not shape {a.shape}")
    return a


def binarize(roll: np.ndarray) -> np.ndarray:
    """Which cells sound: a bool array of the roll's shape, ``roll > 0``."""
    return np.asarray(roll) > 0


def _ratio(num, den) -> float:
    """``num / den`` as a Python float; NaN when ``den`` is 0 (undefined)."""
    return float(num / den) if den else math.nan


# --------------------------------------------------------------------------------------------
# Frame-level scores
# --------------------------------------------------------------------------------------------
class FrameScores:
    """Accumulates frame-level scores of predicted probabilities over many pieces.

    Call :meth:`add` once per piece (or per batch) and :meth:`result` at the end; counts are
    summed over all frames of all pieces before any ratio is taken (micro-averaging), so a long
    piece weighs more than a short one.
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)
        self.nll_sum = 0.0  # nats, summed over cells
        self.frames = 0
        self.tp = self.fp = self.fn = 0
        self.abs_err_sum = 0.0  # sum of |p - y| over cells
        self.cells = 0

    def add(self, probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray | None = None) -> "FrameScores":
        """Add frames: ``probs`` (N, 128) in [0, 1], ``targets`` (N, 128), binary (``> 0`` = on).

        Per frame the NLL is the sum over pitches of the Bernoulli cross-entropy
        ``-[y log p + (1 - y) log(1 - p)]`` in nats, with p clipped to [1e-7, 1 - 1e-7]. A pitch
        is predicted on when ``p >= threshold``, or where ``predicted`` (N, 128) is on if given
        (a model whose ``probs`` are conditionals on the target frame's other notes, like the
        NADE head's, decides a frame otherwise). Returns self.
        """
        p = _roll(probs, "probs").astype(np.float64)
        y = binarize(_roll(targets, "targets"))
        if p.shape != y.shape:
            raise ValueError(f"probs {p.shape} and targets {y.shape} differ in shape")
        if np.isnan(p).any():
            raise ValueError("probs contain NaN")
        pc = np.clip(p, EPS, 1.0 - EPS)
        self.nll_sum += float(-np.log(np.where(y, pc, 1.0 - pc)).sum())
        self.frames += p.shape[0]
        on = p >= self.threshold if predicted is None else binarize(_roll(predicted, "predicted"))
        self.tp += int(np.count_nonzero(on & y))
        self.fp += int(np.count_nonzero(on & ~y))
        self.fn += int(np.count_nonzero(~on & y))
        self.abs_err_sum += float(np.abs(p - y).sum())
        self.cells += p.size
        return self

    def merge(self, other: "FrameScores") -> "FrameScores":
        """Add another accumulator's counts into this one (e.g. from parallel workers); returns self."""
        self.nll_sum += other.nll_sum
        self.frames += other.frames
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.abs_err_sum += other.abs_err_sum
        self.cells += other.cells
        return self

    def result(self) -> dict:
        """The scores as a dict of Python floats.

        - ``nll``: mean negative log-likelihood, nats per frame (NaN if no frames).
        - ``accuracy``: Bay et al. (2009) frame-level accuracy TP / (TP + FP + FN), with TP, FP,
          FN summed over all frames of all pieces; NaN when TP + FP + FN == 0 (nothing sounded
          and nothing was predicted).
        - ``precision`` TP / (TP + FP), ``recall`` TP / (TP + FN), ``f1`` 2TP / (2TP + FP + FN);
          each is NaN when its denominator is 0.
        - ``mae``: mean |p - y| over all cells (pitch x frame), the study's metric. On sparse
          rolls it rewards predicting silence, so read it next to ``nll`` and ``accuracy``.
        - ``frames``: number of frames scored (int); ``tp``, ``fp``, ``fn`` (ints).
        """
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "nll": _ratio(self.nll_sum, self.frames),
            "accuracy": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "mae": _ratio(self.abs_err_sum, self.cells),
            "frames": int(self.frames),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
        }


def evaluate(predict_fn: Callable[[np.ndarray], np.ndarray], rolls: Iterable[np.ndarray],
             threshold: float = 0.5, decide_fn: Callable[[np.ndarray], np.ndarray] | None = None,
             positions: Iterable[np.ndarray] | None = None) -> dict:
    """Score a next-frame predictor over pieces; returns :meth:`FrameScores.result`.

    ``predict_fn(roll)`` must return probabilities (T - 1, 128) for frames 1..T-1 of a (T, 128)
    roll, each computed from earlier frames only (for a joint model: each pitch's conditional
    given the earlier frames and the target frame's pitches before it, whose cross-entropy is the
    frame's exact NLL); the targets are ``binarize(roll[1:])``. ``decide_fn(roll)``, if given,
    returns the predicted frames (T - 1, 128) that accuracy, precision, recall and F1 count;
    otherwise a pitch is predicted where its probability reaches ``threshold``.
    ``positions``, one per roll (its steps' bar positions, ``musicgen.dataset.Record.positions``),
    are passed on: ``predict_fn(roll, positions)``, ``decide_fn(roll, positions)``.
    Pieces shorter than 2 frames have nothing to predict and are skipped.
    """
    scores = FrameScores(threshold)
    given = positions is not None
    for roll, pos in zip(rolls, positions if given else itertools.repeat(None)):
        roll = _roll(roll)
        if roll.shape[0] < 2:
            continue
        extra = (pos,) if given else ()
        probs = np.asarray(predict_fn(roll, *extra))
        if probs.shape != (roll.shape[0] - 1, roll.shape[1]):
            raise ValueError(f"predictor returned shape {probs.shape} for a roll of shape {roll.shape}; "
                             f"expected {(roll.shape[0] - 1, roll.shape[1])}")
        scores.add(probs, roll[1:], None if decide_fn is None else decide_fn(roll, *extra))
    return scores.result()


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
class CopyLast:
    """First-order baseline: each pitch follows a two-state Markov chain fitted on training rolls.

    Per pitch it counts, over all consecutive frame pairs (t-1, t) of the training rolls,
    ``P(on at t | on at t-1)`` and ``P(on at t | off at t-1)`` with Laplace (add-one) smoothing:
    ``(count(on at t and s at t-1) + 1) / (count(s at t-1) + 2)`` for s in {on, off}, so a state
    never seen gives 0.5. :meth:`predict` looks up the previous frame's state of each pitch.
    Thresholded at 0.5 its prediction for a pitch equals the previous frame whenever
    ``P(on|on) >= 0.5 > P(on|off)`` -- true for any pitch whose notes last longer than one step
    on average and that is silent most of the time -- i.e. it "holds the last chord".
    """

    def __init__(self):
        self.p_on_on: np.ndarray | None = None
        self.p_on_off: np.ndarray | None = None

    def fit(self, rolls: Iterable[np.ndarray]) -> "CopyLast":
        """Count transitions over every training roll (T, 128); returns self."""
        on_on = on_prev = off_on = off_prev = None
        for roll in rolls:
            b = binarize(_roll(roll))
            if on_on is None:
                on_on = np.zeros(b.shape[1], np.int64)
                on_prev, off_on, off_prev = (np.zeros_like(on_on) for _ in range(3))
            elif b.shape[1] != on_on.shape[0]:
                raise ValueError(f"rolls differ in width: {b.shape[1]} vs {on_on.shape[0]}")
            prev, nxt = b[:-1], b[1:]
            on_prev += prev.sum(0)
            off_prev += (~prev).sum(0)
            on_on += (prev & nxt).sum(0)
            off_on += (~prev & nxt).sum(0)
        if on_on is None:
            raise ValueError("CopyLast.fit needs at least one roll")
        self.p_on_on = (on_on + 1) / (on_prev + 2)
        self.p_on_off = (off_on + 1) / (off_prev + 2)
        return self

    def predict(self, roll: np.ndarray) -> np.ndarray:
        """Probabilities (T - 1, 128) float32 for frames 1..T-1 of ``roll`` from each previous frame."""
        if self.p_on_on is None:
            raise RuntimeError("CopyLast is not fitted; call fit(rolls) first")
        b = binarize(_roll(roll))
        if b.shape[1] != self.p_on_on.shape[0]:
            raise ValueError(f"roll has {b.shape[1]} pitches, fitted on {self.p_on_on.shape[0]}")
        return np.where(b[:-1], self.p_on_on, self.p_on_off).astype(np.float32)


class PitchPrior:
    """Zeroth-order baseline: each pitch is on with its training frequency, the same at every frame.

    The frequency is Laplace-smoothed over all frames of all training rolls:
    ``(frames where the pitch sounds + 1) / (frames + 2)``.
    """

    def __init__(self):
        self.p_on: np.ndarray | None = None

    def fit(self, rolls: Iterable[np.ndarray]) -> "PitchPrior":
        """Count sounding frames per pitch over every training roll (T, 128); returns self."""
        on = None
        frames = 0
        for roll in rolls:
            b = binarize(_roll(roll))
            if on is None:
                on = np.zeros(b.shape[1], np.int64)
            elif b.shape[1] != on.shape[0]:
                raise ValueError(f"rolls differ in width: {b.shape[1]} vs {on.shape[0]}")
            on += b.sum(0)
            frames += b.shape[0]
        if on is None:
            raise ValueError("PitchPrior.fit needs at least one roll")
        self.p_on = (on + 1) / (frames + 2)
        return self

    def predict(self, roll: np.ndarray) -> np.ndarray:
        """Probabilities (T - 1, 128) float32 for frames 1..T-1: the fitted frequencies in every row."""
        if self.p_on is None:
            raise RuntimeError("PitchPrior is not fitted; call fit(rolls) first")
        roll = _roll(roll)
        if roll.shape[1] != self.p_on.shape[0]:
            raise ValueError(f"roll has {roll.shape[1]} pitches, fitted on {self.p_on.shape[0]}")
        return np.tile(self.p_on.astype(np.float32), (max(roll.shape[0] - 1, 0), 1))


# --------------------------------------------------------------------------------------------
# Statistics of rolls (real or generated)
# --------------------------------------------------------------------------------------------
def onsets(roll: np.ndarray) -> np.ndarray:
    """Bool array of the roll's shape, True where a note starts.

    A note is a run of consecutive non-zero cells of one pitch, so a repeated note with no silent
    step in between counts once (a roll does not mark re-attacks).
    """
    b = binarize(_roll(roll))
    out = b.copy()
    out[1:] &= ~b[:-1]
    return out


def pitch_class_histogram(roll: np.ndarray) -> np.ndarray:
    """Counts of sounding cells per pitch class (column index mod 12; 0 = C), float64 (12,)."""
    b = binarize(_roll(roll))
    per_pitch = b.sum(0)
    hist = np.zeros(12, np.float64)
    np.add.at(hist, np.arange(b.shape[1]) % 12, per_pitch)
    return hist


def pitch_class_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two pitch-class histograms (12 counts each, :func:`pitch_class_histogram`): in
    [0, 1] for counts; NaN if either is all zero (a silent roll has no direction)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return _ratio(a @ b, np.linalg.norm(a) * np.linalg.norm(b))


def _fractions(hist: np.ndarray) -> list[float]:
    """A histogram as fractions of its total (NaN each if it is all zero)."""
    total = hist.sum()
    return [_ratio(x, total) for x in hist]


def sample_stats(rolls: Iterable[np.ndarray]) -> dict:
    """Summary statistics of a set of rolls, JSON-serialisable.

    Step counts are pooled over all pieces:

    - ``pieces``: number of rolls; ``steps``: total steps.
    - ``empty_fraction``: fraction of rolls with no sounding cell.
    - ``notes_per_step``: note onsets (see :func:`onsets`) per step.
    - ``polyphony``: mean number of sounding pitches over steps where at least one sounds (muspy's
      ``polyphony``, :func:`roll_stats`, over all pieces' steps together).
    - ``silence_fraction``: fraction of steps where nothing sounds.
    - ``pitch_range``: mean over non-empty pieces of (highest - lowest sounding pitch), semitones;
      ``pitch_min``/``pitch_max``: lowest/highest sounding MIDI pitch overall (``None`` if none).
    - ``pitch_class_histogram``: 12 fractions of sounding cells per pitch class (C first), summing
      to 1.
    - ``mean_velocity``: mean value of sounding cells, in velocity/127 units.

    A ratio over an empty set (no pieces, no steps, no sounding cells, no non-empty piece) is NaN.
    """
    pieces = empty = steps = onset_count = sounding_steps = sounding_cells = 0
    velocity_sum = 0.0
    ranges: list[int] = []
    pmin = pmax = None
    hist = np.zeros(12, np.float64)
    for roll in rolls:
        roll = _roll(roll)
        b = binarize(roll)
        pieces += 1
        steps += b.shape[0]
        per_step = b.sum(1)
        sounding_steps += int(np.count_nonzero(per_step))
        n = int(per_step.sum())
        sounding_cells += n
        if n == 0:
            empty += 1
            continue
        onset_count += int(onsets(roll).sum())
        velocity_sum += float(np.asarray(roll, np.float64)[b].sum())
        cols = np.flatnonzero(b.any(0))
        lo, hi = int(cols[0]), int(cols[-1])
        ranges.append(hi - lo)
        pmin = lo if pmin is None else min(pmin, lo)
        pmax = hi if pmax is None else max(pmax, hi)
        hist += pitch_class_histogram(roll)
    return {
        "pieces": pieces,
        "steps": steps,
        "empty_fraction": _ratio(empty, pieces),
        "notes_per_step": _ratio(onset_count, steps),
        "polyphony": _ratio(sounding_cells, sounding_steps),
        "silence_fraction": _ratio(steps - sounding_steps, steps),
        "pitch_range": _ratio(sum(ranges), len(ranges)),
        "pitch_min": pmin,
        "pitch_max": pmax,
        "pitch_class_histogram": _fractions(hist),
        "mean_velocity": _ratio(velocity_sum, sounding_cells),
    }


#: The statistics :func:`roll_stats` gives for one roll (one VAE image, one generated piece) and
#: :func:`compare_to_corpus` compares between samples and corpus.
ROLL_STATS = ("notes_per_step", "polyphony", "silence_fraction", "pitch_range", "n_pitch_classes_used",
              "scale_consistency", "pitch_class_similarity")

#: Pitch classes of a major scale (C D E F G A B). Its 12 rotations are the 12 major scales and
#: also the 12 natural minor scales (a minor scale is its relative major's collection), so the
#: best of the 12 is the best of muspy's 24 major and minor scales.
_DIATONIC = np.zeros(12)
_DIATONIC[[0, 2, 4, 5, 7, 9, 11]] = 1


def roll_stats(roll: np.ndarray, reference_histogram: np.ndarray | None = None) -> dict:
    """Statistics of one roll (T, W), as Python floats; NaN where undefined (a silent roll).

    Four are muspy's (Dong et al., "MusPy", ISMIR 2020; ``muspy/metrics/metrics.py``), computed on
    the roll, where a note is a run of sounding cells of one pitch (:func:`onsets`):

    - ``polyphony``: mean number of sounding pitches over the steps where at least one sounds
      (``muspy.polyphony``; NaN if none does);
    - ``pitch_range``: highest - lowest sounding pitch, semitones (``muspy.pitch_range``; NaN for a
      silent roll, where muspy returns 0, which would read as "one pitch");
    - ``n_pitch_classes_used``: how many of the 12 pitch classes sound (``muspy.n_pitch_classes_used``;
      0 for a silent roll);
    - ``scale_consistency``: the largest fraction of *notes* whose pitch class lies in one major or
      minor scale (``muspy.scale_consistency``, after Mogren's C-RNN-GAN, 2016): 1.0 for music in
      one key without accidentals, about 7/12 for pitch classes spread evenly (NaN if no note).

    And three of musicgen's own:

    - ``notes_per_step``: note onsets per step;
    - ``silence_fraction``: fraction of steps where nothing sounds;
    - ``pitch_class_similarity``: :func:`pitch_class_cosine` of the roll's pitch-class histogram
      (sounding cells) with ``reference_histogram`` (e.g. the corpus's, pooled), or ``None``
      without one (NaN if the roll is silent).
    """
    b = binarize(_roll(roll))
    per_step = b.sum(1)
    sounding = int(np.count_nonzero(per_step))
    cols = np.flatnonzero(b.any(0))
    note_onsets = onsets(b)
    notes = pitch_class_histogram(note_onsets)  # notes per pitch class
    out = {"notes_per_step": _ratio(note_onsets.sum(), b.shape[0]),
           "polyphony": _ratio(per_step.sum(), sounding),
           "silence_fraction": _ratio(b.shape[0] - sounding, b.shape[0]),
           "pitch_range": float(cols[-1] - cols[0]) if len(cols) else math.nan,
           "n_pitch_classes_used": float(np.count_nonzero(notes)),
           "scale_consistency": _ratio(max(np.roll(_DIATONIC, k) @ notes for k in range(12)), notes.sum()),
           "pitch_class_similarity": None}
    if reference_histogram is not None:
        out["pitch_class_similarity"] = pitch_class_cosine(pitch_class_histogram(b), reference_histogram)
    return out


def _spread(values: np.ndarray, percentiles: tuple[float, float]) -> dict:
    """Mean, std, percentiles of ``values`` over the entries where they are defined (not NaN)."""
    v = values[~np.isnan(values)]
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "low": math.nan, "median": math.nan, "high": math.nan,
                "defined": 0}
    low, median, high = (float(x) for x in np.percentile(v, [percentiles[0], 50, percentiles[1]]))
    return {"mean": float(v.mean()), "std": float(v.std()), "low": low, "median": median, "high": high,
            "defined": int(len(v))}


def compare_to_corpus(samples: Iterable[np.ndarray], corpus: Iterable[np.ndarray],
                      percentiles: tuple[float, float] = (10, 90)) -> dict:
    """Side by side: each :data:`ROLL_STATS` statistic of ``samples`` next to its range over ``corpus``.

    Both are lists of rolls of the same size (e.g. generated VAE images and the corpus's images).
    Every statistic is computed per roll (:func:`roll_stats`; ``pitch_class_similarity`` against the
    corpus's pooled pitch-class histogram). The corpus's *range* of a statistic is the
    ``percentiles`` (default the 10th and 90th) of its per-roll values; a statistic of the samples is
    *in range* when their mean over rolls lies inside it (bounds included). Returns::

        {"percentiles": [10, 90], "samples": n, "corpus": m, "all_in_range": bool,
         "stats": {name: {"samples": mean, "samples_std": std, "samples_defined": k,
                          "corpus_mean": mean, "corpus_low": p10, "corpus_median": p50,
                          "corpus_high": p90, "in_range": bool}},
         "pitch_class_histogram": {"samples": [12 fractions], "corpus": [12], "cosine": c}}

    Means, stds and percentiles are over the rolls where a statistic is defined (``samples_defined``
    of the ``samples`` rolls): a silent sample has no polyphony or pitch range, but it still counts
    in ``notes_per_step`` (0) and ``silence_fraction`` (1.0), so it pulls those out of range
    instead of being left out. A statistic defined for no sample is NaN and not in range.
    """
    samples, corpus = [_roll(r) for r in samples], [_roll(r) for r in corpus]
    if not corpus:
        raise ValueError("compare_to_corpus needs at least one corpus roll")
    lo, hi = (float(p) for p in percentiles)
    ref = sum(pitch_class_histogram(r) for r in corpus)
    per_corpus = [roll_stats(r, ref) for r in corpus]
    per_sample = [roll_stats(r, ref) for r in samples]
    stats = {}
    for name in ROLL_STATS:
        c = _spread(np.array([s[name] for s in per_corpus], np.float64), (lo, hi))
        v = _spread(np.array([s[name] for s in per_sample], np.float64), (lo, hi))
        stats[name] = {"samples": v["mean"], "samples_std": v["std"], "samples_defined": v["defined"],
                       "corpus_mean": c["mean"], "corpus_low": c["low"], "corpus_median": c["median"],
                       "corpus_high": c["high"], "in_range": bool(c["low"] <= v["mean"] <= c["high"])}
    hs = sum((pitch_class_histogram(r) for r in samples), np.zeros(12))
    return {"percentiles": [lo, hi], "samples": len(samples), "corpus": len(corpus),
            "all_in_range": all(s["in_range"] for s in stats.values()), "stats": stats,
            "pitch_class_histogram": {"samples": _fractions(hs), "corpus": _fractions(ref),
                                      "cosine": pitch_class_cosine(hs, ref)}}


def format_comparison(comparison: dict) -> str:
    """:func:`compare_to_corpus`'s result as a Markdown table (statistic, samples, corpus range, in range)."""
    lo, hi = (int(p) if float(p).is_integer() else p for p in comparison["percentiles"])
    lines = [f"| statistic (per roll) | samples (mean) | corpus p{lo} | corpus median "
             f"| corpus p{hi} | in range |", "|---|---:|---:|---:|---:|---|"]
    for name, s in comparison["stats"].items():
        lines.append(f"| {name} | {s['samples']:.3f} | {s['corpus_low']:.3f} | {s['corpus_median']:.3f} | "
                     f"{s['corpus_high']:.3f} | {'yes' if s['in_range'] else 'no'} |")
    return "\n".join(lines)


def change_rate(prompt: np.ndarray, continuation: np.ndarray) -> float:
    """Fraction of continuation steps whose set of sounding pitches differs from the previous step's.

    ``prompt`` is the prompt's last frame (W,) or the whole prompt roll (T, W), of which the last
    row is used; the first continuation step is compared with it. 0.0 means the continuation
    just holds the prompt's last chord; an empty continuation gives NaN.
    """
    last = np.asarray(prompt)
    if last.ndim == 2:
        if last.shape[0] == 0:
            raise ValueError("prompt roll has no frames")
        last = last[-1]
    if last.ndim != 1:
        raise ValueError(f"prompt must be a frame (W,) or a roll (T, W), not shape {last.shape}")
    cont = binarize(_roll(continuation, "continuation"))
    if cont.shape[1] != last.shape[0]:
        raise ValueError(f"prompt has {last.shape[0]} pitches, continuation {cont.shape[1]}")
    seq = np.vstack([binarize(last)[None], cont])
    return _ratio((seq[1:] != seq[:-1]).any(1).sum(), cont.shape[0])


def pitch_class_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`pitch_class_cosine` of two rolls' pitch-class histograms (sounding cells per class):
    near 1 when both use the same pitch classes in similar proportions (e.g. the same key); NaN if
    either is silent."""
    return pitch_class_cosine(pitch_class_histogram(a), pitch_class_histogram(b))


def active_units(z_mean: np.ndarray, threshold: float = 0.01) -> int:
    """Number of latent dimensions that are used (Burda et al., 2016).

    ``z_mean`` (N, latent) holds E[z | x] for N data points (the encoder's means); a dimension is
    active when the variance of its mean across the data (population variance) exceeds
    ``threshold``.
    """
    z = np.asarray(z_mean, np.float64)
    if z.ndim != 2:
        raise ValueError(f"z_mean must be 2-D (N, latent), not shape {z.shape}")
    if z.shape[0] == 0:
        return 0
    return int(np.count_nonzero(z.var(axis=0) > threshold))


# --------------------------------------------------------------------------------------------
# Continuations: what a listener notices, next to the real music
# --------------------------------------------------------------------------------------------
def _pitch_classes(roll: np.ndarray) -> np.ndarray:
    """Which pitch classes sound in each frame: bool (T, 12), column c = classes of columns ``c mod 12``
    (0 = C), as in :func:`pitch_class_histogram`."""
    b = binarize(_roll(roll))
    out = np.zeros((b.shape[0], 12), bool)
    for c in range(min(12, b.shape[1])):
        out[:, c] = b[:, c::12].any(1)
    return out


def _clash_counts(roll: np.ndarray) -> tuple[int, int]:
    """(frames holding a semitone clash, sounding frames) of one roll; see :func:`clash_share`."""
    pcs = _pitch_classes(roll)
    clashing = (pcs & np.roll(pcs, -1, axis=1)).any(1)  # classes p and p + 1 (mod 12) together
    return int(np.count_nonzero(clashing)), int(np.count_nonzero(pcs.any(1)))


def clash_share(roll: np.ndarray) -> float:
    """The share of sounding frames that hold a semitone clash; NaN if no frame sounds.

    A frame *sounds* when at least one pitch sounds in it. It holds a *clash* when two of its pitch
    classes are a semitone apart: classes p and (p + 1) mod 12 both sound, for some p (pitch class
    = MIDI pitch mod 12). Octaves do not matter: C4 with C#4, with C#6 or with B5 all clash (a minor
    second, minor ninth or major seventh between the notes), and so does a major seventh chord
    (C E G B); a C major triad, a dominant seventh chord (G B D F) and a single pitch do not. The
    share is (frames with a clash) / (sounding frames), in [0, 1]. Sampling the pitches of a frame
    independently tends to mix the notes of two neighbouring chords, which shows here first.
    """
    clashing, sounding = _clash_counts(roll)
    return _ratio(clashing, sounding)


def pooled_clash_share(rolls) -> float:
    """:func:`clash_share` pooled over the frames of all ``rolls``: sounding frames with a semitone
    clash / sounding frames (NaN if none sounds)."""
    counts = np.array([_clash_counts(r) for r in rolls], np.int64).reshape(-1, 2).sum(0)
    return _ratio(counts[0], counts[1])


def defined_mean(values) -> float:
    """Mean of the values that are defined (not NaN); NaN if none is."""
    v = np.asarray(list(values), np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def _continuation_side(prompts: list[np.ndarray], continuations: list[np.ndarray]) -> dict:
    """:func:`continuation_stats` of one side (the model's or the real continuations)."""
    pooled = sample_stats(continuations)
    return {"clash_share": pooled_clash_share(continuations),
            "polyphony": pooled["polyphony"],
            "silence_fraction": pooled["silence_fraction"],
            "notes_per_step": pooled["notes_per_step"],
            "prompt_similarity": defined_mean(pitch_class_similarity(p, c) for p, c in zip(prompts, continuations)),
            "change_rate": defined_mean(change_rate(p, c) for p, c in zip(prompts, continuations)),
            "frames": int(pooled["steps"]),
            "sounding_frames": int(sum(np.count_nonzero(binarize(c).any(1)) for c in continuations))}


def continuation_stats(prompts, continuations, truths, next_frames=None) -> dict:
    """What a listener notices in continuations of prompts, next to the same of the real music.

    ``prompts[i]`` is a prompt roll, ``continuations[i]`` the model's continuation of it and
    ``truths[i]`` the frames that really follow the prompt in its piece (held-out music). For each
    side, ``model`` and ``real``:

    - ``clash_share``: :func:`clash_share` pooled over the frames of all continuations (sounding
      frames with a semitone clash / sounding frames);
    - ``polyphony``: pitches sounding per sounding frame, pooled (muspy's ``polyphony``, as in
      :func:`sample_stats`); ``silence_fraction`` and ``notes_per_step``, pooled likewise (a side
      that falls silent has few clashes for the wrong reason);
    - ``prompt_similarity``: mean over pairs of :func:`pitch_class_similarity` of continuation and
      prompt (does it stay in the prompt's key?); ``change_rate``: mean over pairs of
      :func:`change_rate` (does it move, or hold one chord?); both skip undefined (NaN) pairs;
    - ``frames``, ``sounding_frames``: what the pooled shares count.

    And ``clash_ratio``: the model's clash share / the real one (1.0: as many clashes as the music;
    NaN when the real music has none or no sounding frame), and ``pairs``. NaN where undefined.
    With ``next_frames`` (one roll per pair: the model's frames each drawn given the true frames
    before it), ``next_frame_clash_ratio``: their pooled clash share / the real one.
    """
    prompts, continuations, truths = ([_roll(r, name) for r in rolls] for rolls, name in
                                      ((prompts, "prompt"), (continuations, "continuation"), (truths, "truth")))
    if not len(prompts) == len(continuations) == len(truths):
        raise ValueError(f"{len(prompts)} prompts, {len(continuations)} continuations and {len(truths)} truths: "
                         "one of each per pair")
    model, real = _continuation_side(prompts, continuations), _continuation_side(prompts, truths)
    out = {"pairs": len(prompts), "model": model, "real": real,
           "clash_ratio": _ratio(model["clash_share"], real["clash_share"])}
    if next_frames is not None:
        next_frames = [_roll(r, "next frames") for r in next_frames]
        if len(next_frames) != len(prompts):
            raise ValueError(f"{len(next_frames)} rolls of next frames for {len(prompts)} pairs: one per pair")
        out["next_frame_clash_ratio"] = _ratio(pooled_clash_share(next_frames), real["clash_share"])
    return out
