"""Metrics for piano rolls and next-frame models: plain numpy functions over plain arrays.

A roll is a float array (T, 128): rows are time steps (4 per beat), columns are MIDI pitches,
values are velocity/127 in [0, 1] and 0 means silent. A next-frame model gives, for every frame
t >= 1 of a piece, the probability that each pitch sounds at t given frames < t: an array
(T - 1, 128) of probabilities. :func:`evaluate` scores such a predictor against the pieces
themselves; :class:`CopyLast` and :class:`PitchPrior` are the baselines any model must beat.

Units: ``nll`` is in nats per frame (summed over the 128 pitches of a frame, averaged over
frames); ``mae`` is per cell (one pitch at one step); everything counted "per step" is per row.
Nothing here imports TensorFlow or Ray, and every dict returned holds only Python ints, floats,
lists and ``None``, so it can go straight to ``json.dumps``.
"""
from __future__ import annotations

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

    def add(self, probs: np.ndarray, targets: np.ndarray) -> "FrameScores":
        """Add frames: ``probs`` (N, 128) in [0, 1], ``targets`` (N, 128), binary (``> 0`` = on).

        Per frame the NLL is the sum over pitches of the Bernoulli cross-entropy
        ``-[y log p + (1 - y) log(1 - p)]`` in nats, with p clipped to [1e-7, 1 - 1e-7]. A pitch
        is predicted on when ``p >= threshold``. Returns self.
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
        on = p >= self.threshold
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
          FN summed over all frames of all pieces; 1.0 when TP + FP + FN == 0 (nothing sounded
          and nothing was predicted: nothing was got wrong).
        - ``precision`` TP / (TP + FP), ``recall`` TP / (TP + FN), ``f1`` 2TP / (2TP + FP + FN);
          each is 1.0 when its denominator is 0, for the same reason.
        - ``mae``: mean |p - y| over all cells (pitch x frame), the study's metric. On sparse
          rolls it rewards predicting silence, so read it next to ``nll`` and ``accuracy``.
        - ``frames``: number of frames scored (int); ``tp``, ``fp``, ``fn`` (ints).
        """
        tp, fp, fn = self.tp, self.fp, self.fn

        def ratio(num, den):
            return float(num / den) if den else 1.0

        return {
            "nll": self.nll_sum / self.frames if self.frames else math.nan,
            "accuracy": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "mae": self.abs_err_sum / self.cells if self.cells else math.nan,
            "frames": int(self.frames),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
        }


def evaluate(predict_fn: Callable[[np.ndarray], np.ndarray], rolls: Iterable[np.ndarray],
             threshold: float = 0.5) -> dict:
    """Score a next-frame predictor over pieces; returns :meth:`FrameScores.result`.

    ``predict_fn(roll)`` must return probabilities (T - 1, 128) for frames 1..T-1 of a (T, 128)
    roll, each computed from earlier frames only; the targets are ``binarize(roll[1:])``.
    Pieces shorter than 2 frames have nothing to predict and are skipped.
    """
    scores = FrameScores(threshold)
    for roll in rolls:
        roll = _roll(roll)
        if roll.shape[0] < 2:
            continue
        probs = np.asarray(predict_fn(roll))
        if probs.shape != (roll.shape[0] - 1, roll.shape[1]):
            raise ValueError(f"predictor returned shape {probs.shape} for a roll of shape {roll.shape}; "
                             f"expected {(roll.shape[0] - 1, roll.shape[1])}")
        scores.add(probs, roll[1:])
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


def sample_stats(rolls: Iterable[np.ndarray]) -> dict:
    """Summary statistics of a set of rolls, JSON-serialisable.

    Step counts are pooled over all pieces:

    - ``pieces``: number of rolls; ``steps``: total steps.
    - ``empty_fraction``: fraction of rolls with no sounding cell.
    - ``notes_per_step``: note onsets (see :func:`onsets`) per step.
    - ``polyphony``: mean number of sounding pitches over steps where at least one sounds.
    - ``silence_fraction``: fraction of steps where nothing sounds.
    - ``pitch_range``: mean over non-empty pieces of (highest - lowest sounding pitch), semitones;
      ``pitch_min``/``pitch_max``: lowest/highest sounding MIDI pitch overall (``None`` if none).
    - ``pitch_class_histogram``: 12 fractions of sounding cells per pitch class (C first), summing
      to 1 (all 0 if nothing sounds).
    - ``mean_velocity``: mean value of sounding cells, in velocity/127 units (0 if nothing sounds).

    Ratios over an empty set (no pieces, no steps, no sounding cells) are 0.0.
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

    def ratio(num, den):
        return float(num / den) if den else 0.0

    return {
        "pieces": pieces,
        "steps": steps,
        "empty_fraction": ratio(empty, pieces),
        "notes_per_step": ratio(onset_count, steps),
        "polyphony": ratio(sounding_cells, sounding_steps),
        "silence_fraction": ratio(steps - sounding_steps, steps),
        "pitch_range": float(np.mean(ranges)) if ranges else 0.0,
        "pitch_min": pmin,
        "pitch_max": pmax,
        "pitch_class_histogram": [float(x) for x in (hist / hist.sum() if hist.sum() else hist)],
        "mean_velocity": ratio(velocity_sum, sounding_cells),
    }


#: The statistics :func:`roll_stats` gives for one roll (one VAE image, one generated piece) and
#: :func:`compare_to_corpus` compares between samples and corpus.
ROLL_STATS = ("notes_per_step", "polyphony", "silence_fraction", "pitch_range", "pitch_classes",
              "scale_fit", "pitch_class_similarity")

#: Pitch classes of a major scale (C D E F G A B); its 12 rotations are the 12 diatonic collections
#: (a minor key's natural scale is the relative major's).
_DIATONIC = np.zeros(12)
_DIATONIC[[0, 2, 4, 5, 7, 9, 11]] = 1


def roll_stats(roll: np.ndarray, reference_histogram: np.ndarray | None = None) -> dict:
    """Statistics of one roll (T, W), as Python floats:

    - ``notes_per_step``: note onsets (:func:`onsets`) per step;
    - ``polyphony``: mean sounding pitches over the steps where something sounds (0 if none);
    - ``silence_fraction``: fraction of steps where nothing sounds;
    - ``pitch_range``: highest - lowest sounding pitch, semitones (0 if silent);
    - ``pitch_classes``: how many of the 12 pitch classes sound at all;
    - ``scale_fit``: the largest fraction of sounding cells inside one diatonic scale (the best of
      the 12 major-scale rotations): key-independent, 1.0 for music in one key without accidentals,
      about 7/12 for pitch classes spread evenly (0 if silent);
    - ``pitch_class_similarity``: cosine of the roll's pitch-class histogram with
      ``reference_histogram`` (e.g. the corpus's, pooled; :func:`pitch_class_histogram`), or
      ``None`` without one (0 if the roll is silent).
    """
    b = binarize(_roll(roll))
    per_step = b.sum(1)
    steps = max(b.shape[0], 1)
    sounding = int(np.count_nonzero(per_step))
    cols = np.flatnonzero(b.any(0))
    hist = pitch_class_histogram(b)
    total = hist.sum()
    out = {"notes_per_step": float(onsets(b).sum() / steps),
           "polyphony": float(per_step.sum() / sounding) if sounding else 0.0,
           "silence_fraction": float(1 - sounding / steps),
           "pitch_range": float(cols[-1] - cols[0]) if len(cols) else 0.0,
           "pitch_classes": float(np.count_nonzero(hist)),
           "scale_fit": float(max(np.roll(_DIATONIC, k) @ hist for k in range(12)) / total) if total else 0.0,
           "pitch_class_similarity": None}
    if reference_histogram is not None:
        ref = np.asarray(reference_histogram, np.float64)
        norm = np.linalg.norm(hist) * np.linalg.norm(ref)
        out["pitch_class_similarity"] = float(hist @ ref / norm) if norm else 0.0
    return out


def compare_to_corpus(samples: Iterable[np.ndarray], corpus: Iterable[np.ndarray],
                      percentiles: tuple[float, float] = (10, 90)) -> dict:
    """Side by side: each :data:`ROLL_STATS` statistic of ``samples`` next to its range over ``corpus``.

    Both are lists of rolls of the same size (e.g. generated VAE images and the corpus's images).
    Every statistic is computed per roll (:func:`roll_stats`; ``pitch_class_similarity`` against the
    corpus's pooled pitch-class histogram). The corpus's *range* of a statistic is the
    ``percentiles`` (default the 10th and 90th) of its per-roll values; a statistic of the samples is
    *in range* when their mean over rolls lies inside it (bounds included). Returns::

        {"percentiles": [10, 90], "samples": n, "corpus": m, "all_in_range": bool,
         "stats": {name: {"samples": mean, "samples_std": std, "corpus_mean": mean,
                          "corpus_low": p10, "corpus_median": p50, "corpus_high": p90,
                          "in_range": bool}},
         "pitch_class_histogram": {"samples": [12 fractions], "corpus": [12], "cosine": c}}

    Silent sample rolls count with their statistics (0 notes, silence 1.0, ...), so they pull the
    means out of range instead of being left out.
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
        c = np.array([s[name] for s in per_corpus], np.float64)
        v = np.array([s[name] for s in per_sample], np.float64)
        low, median, high = (float(x) for x in np.percentile(c, [lo, 50, hi]))
        mean = float(v.mean()) if len(v) else math.nan
        stats[name] = {"samples": mean, "samples_std": float(v.std()) if len(v) else math.nan,
                       "corpus_mean": float(c.mean()), "corpus_low": low, "corpus_median": median,
                       "corpus_high": high, "in_range": bool(low <= mean <= high)}
    hs = sum((pitch_class_histogram(r) for r in samples), np.zeros(12))

    def unit(h):
        return h / h.sum() if h.sum() else h

    norm = np.linalg.norm(hs) * np.linalg.norm(ref)
    return {"percentiles": [lo, hi], "samples": len(samples), "corpus": len(corpus),
            "all_in_range": all(s["in_range"] for s in stats.values()), "stats": stats,
            "pitch_class_histogram": {"samples": [float(x) for x in unit(hs)],
                                      "corpus": [float(x) for x in unit(ref)],
                                      "cosine": float(hs @ ref / norm) if norm else 0.0}}


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
    just holds the prompt's last chord; an empty continuation gives 0.0.
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
    if cont.shape[0] == 0:
        return 0.0
    seq = np.vstack([binarize(last)[None], cont])
    return float((seq[1:] != seq[:-1]).any(1).mean())


def pitch_class_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in [0, 1] of two rolls' pitch-class histograms (sounding cells per class).

    Near 1 when both use the same pitch classes in similar proportions (e.g. the same key);
    1.0 if both are silent, 0.0 if exactly one is.
    """
    ha, hb = pitch_class_histogram(a), pitch_class_histogram(b)
    na, nb = np.linalg.norm(ha), np.linalg.norm(hb)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(ha @ hb / (na * nb))


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
