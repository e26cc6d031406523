"""Held-out evaluation of a trained run against baselines fitted on the train split.

LSTM: next-frame ``nll`` (nats per frame), Bay et al.'s frame ``accuracy``, ``f1``, the study's
``mae``, next to the ``copy_last`` and ``pitch_prior`` baselines; and ``music``: what a listener
notices in seeded continuations of held-out prompts (semitone clashes, polyphony, staying in the
prompt's key), next to the same of the real continuations. VAE: reconstruction error, active
latent units, and statistics of prior samples next to the corpus's.
"""
from __future__ import annotations

import math

import numpy as np

from .dataset import iter_records, load_rolls, read_manifest
from .errors import ArgumentError, DataError
from .metrics import (CopyLast, PitchPrior, compare_to_corpus, continuation_stats, defined_mean, evaluate,
                      pooled_clash_share, sample_stats)
from .run import Run

#: Prompt and continuation of the ``music`` section: 4 bars of 4/4 each (16 beats).
MUSIC_BEATS = 16
#: Beats per second of a grid in seconds (prepare --steps-per-second): its nominal 120 bpm.
NOMINAL_BEATS_PER_SECOND = 2.0


def evaluate_run(run: str, data: str, split: str = "test", threshold: float = 0.5, samples: int = 32,
                 seed: int = 0, prompts: int = 32) -> dict:
    """Evaluate ``run`` on ``split`` of dataset ``data``; a JSON-ready dict. An LSTM continues up to
    ``prompts`` held-out prompts for its ``music`` section (:func:`music`); a VAE draws ``samples``
    prior samples with ``seed``."""
    if isinstance(prompts, bool) or not isinstance(prompts, (int, np.integer)) or prompts < 0:
        raise ArgumentError("prompts", prompts, "a whole number >= 0")
    trained = Run(run)
    info = trained.info()
    manifest = read_manifest(data)
    if manifest.get("steps_per_beat") != info.get("steps_per_beat") or manifest.get("width", 128) != info.get("width", 128) \
            or manifest.get("steps_per_second") != info.get("steps_per_second"):
        raise DataError(f"{data}: its grid ({manifest.get('steps_per_beat')} steps per beat, "
                        f"{manifest.get('steps_per_second')} per second, width {manifest.get('width')}) differs "
                        f"from the model's ({info.get('steps_per_beat')}, {info.get('steps_per_second')}, "
                        f"{info.get('width')})")
    records = list(iter_records(data, split))
    if not records:
        raise DataError(f"{data}: the {split} split is empty")
    rolls = [r.roll for r in records]
    kind, cfg, _, model = trained.load()  # after the checks: a bad dataset fails before the weights load
    result = {"kind": kind, "run": run, "data": data, "split": split, "pieces": len(rolls)}
    if kind == "lstm":
        result.update(_lstm(cfg, model, data, info, records, threshold, prompts))
    else:
        result.update(_vae(cfg, model, info, rolls, samples, seed))
    return result


def baselines(train_data: str, rolls, threshold: float = 0.5) -> dict:
    """``copy_last`` and ``pitch_prior`` fitted on the train split of ``train_data``, scored on ``rolls``."""
    train = list(load_rolls(train_data, "train").values())
    if not train:
        raise DataError(f"{train_data}: baselines need a train split")
    return {"baselines_fitted_on": train_data,
            "copy_last": _rounded(evaluate(CopyLast().fit(train).predict, rolls, threshold)),
            "pitch_prior": _rounded(evaluate(PitchPrior().fit(train).predict, rolls, threshold))}


def _lstm(cfg, model, data, info, records, threshold, prompts) -> dict:
    from .generate import bar_grid
    from .lstm import Extender

    extender = Extender.from_training_model(cfg, model, **bar_grid(info))
    rolls = [r.roll for r in records]
    positions = [extender.positions(len(r.roll), r.time_signatures) for r in records]  # as it was trained
    scores = _rounded(evaluate(extender.predict_next, rolls, threshold, decide_fn=decider(extender, threshold),
                               positions=positions))
    # A test-only dataset (other music, --split 0,0,1) has no train split: the baselines then learn
    # from what the model learned from.
    has_train = read_manifest(data).get("counts", {}).get("train", 0) > 0
    out = {**scores, "threshold": threshold, **baselines(data if has_train else info["data"], rolls, threshold)}
    out["nll_vs_copy_last"] = round(scores["nll"] / out["copy_last"]["nll"], 4)
    out["music"] = music(extender, rolls, music_steps(info), prompts, [r.time_signatures for r in records])
    return out


def decider(extender, threshold: float):
    """The frames an LSTM predicts (``Extender.predict_frames``: the NADE head decides a frame
    pitch by pitch), or None for the factorized head, whose probabilities are thresholded."""
    if extender.cfg.head == "factorized":
        return None
    return lambda roll, positions=None: extender.predict_frames(roll, threshold, positions=positions)


def music_steps(info: dict) -> int:
    """Steps of :data:`MUSIC_BEATS` beats on a run's grid (``info`` of :meth:`Run.info`): 64 at 4
    steps per beat, 16 on JSB Chorales' quarter-note grid; on a grid in seconds, at its nominal tempo."""
    per_beat = info.get("steps_per_beat") or info["steps_per_second"] / NOMINAL_BEATS_PER_SECOND
    return max(1, round(MUSIC_BEATS * per_beat))


def held_out_pairs(rolls, steps: int, prompts: int | None = None) -> tuple[list, list]:
    """(prompts, real continuations) of the first ``prompts`` (None: all) of ``rolls`` that are at
    least ``2 * steps`` long: each piece's first ``steps`` frames and the ``steps`` that follow."""
    pieces = [rolls[i] for i in _long_enough(rolls, steps, prompts)]
    return [r[:steps] for r in pieces], [r[steps:2 * steps] for r in pieces]


def _long_enough(rolls, steps: int, prompts: int | None) -> list[int]:
    return [i for i, r in enumerate(rolls) if len(r) >= 2 * steps][:prompts]


def music(extender, rolls, steps: int, prompts: int = 32, time_signatures=None) -> dict:
    """Continuations of held-out prompts next to the real ones (:func:`continuation_stats`).

    The first ``prompts`` of ``rolls`` (in order) at least ``2 * steps`` long each give a prompt,
    their first ``steps`` frames, and a real continuation, the ``steps`` frames that follow
    (:func:`held_out_pairs`); ``extender`` continues the prompts together by ``steps`` at
    temperature 1 with seeds 0, 1, ... (the same result on every call), each in its piece's meter
    (``time_signatures``, one list per roll; None: 4/4). With no piece long enough,
    ``pairs`` is 0 and every statistic NaN. Returns ``prompt_steps``, ``continuation_steps``,
    ``temperature`` and the statistics, with ``next_frame_clash_ratio``: the clash share of the
    continuation's frames each drawn from the true frames before it
    (:meth:`~musicgen.lstm.Extender.draw_next`, seeds as above), over the real one.
    """
    heads, made, truths, nexts = continuations(extender, rolls, steps, prompts, time_signatures)
    return {"prompt_steps": steps, "continuation_steps": steps, "temperature": 1.0,
            **_rounded(continuation_stats(heads, made, truths, nexts))}


def continuations(extender, rolls, steps: int, prompts: int = 32, time_signatures=None, first_seed: int = 0):
    """(prompts, continuations, real continuations, next frames) of :func:`music`, the draws
    seeded ``first_seed``, ``first_seed + 1``, ... (``evaluate``'s: 0)."""
    heads, truths = held_out_pairs(rolls, steps, prompts)
    meters = [None] * len(heads)
    if time_signatures is not None:  # a prompt's meter: the time signatures of its own steps
        meters = [[m for m in time_signatures[i] if m[0] < steps] for i in _long_enough(rolls, steps, prompts)]
    seeds = list(range(first_seed, first_seed + len(heads)))
    made = extender.extend(heads, steps, temperature=1.0, seeds=seeds, time_signatures=meters) if heads else []
    # The same frames drawn one at a time from the true past: the clashes of the net's frames
    # alone, without those its own slips lead to in a continuation.
    nexts = [extender.draw_next(np.concatenate([h, t]), seed, extender.positions(2 * steps, m))[steps - 1:]
             for seed, h, t, m in zip(seeds, heads, truths, meters)]
    return heads, made, truths, nexts


def _vae(cfg, model, info, rolls, samples, seed) -> dict:
    """Reconstruction of the split's images, their negative ELBO, active units, and ``samples`` prior samples (``seed``)
    next to the split's images: pooled ``samples``/``corpus`` statistics (:func:`sample_stats`) and
    ``comparison`` (:func:`compare_to_corpus`: each per-image statistic's sample mean against the
    corpus's 10th-90th percentile range), for the run's decoding; ``threshold_decoding`` is the
    comparison's sample means and verdicts with the threshold decoding instead, for reference."""
    from .vae import Generator, images

    generator = Generator(cfg, model, threshold=info.get("threshold", 0.5))  # chosen on val at training's end
    x = np.concatenate([images(r, cfg) for r in rolls])
    generated = generator.generate(samples, seed=seed)
    corpus = [img[..., 0] for img in x]
    comparison = compare_to_corpus(generated, corpus)
    clashes = {"samples": pooled_clash_share(generated), "corpus": pooled_clash_share(corpus)}
    out = {"images": int(len(x)), "reconstruction": _rounded(generator.reconstruction_error(x)),
           "elbo": _rounded(generator.elbo(x, seed)),
           "active_units": int(generator.active_units(x)), "latent": cfg.latent,
           "threshold": float(generator.threshold),
           "decoding": "ancestral" if generator.autoregressive else cfg.decoding,
           "non_empty": int(sum(bool(g.any()) for g in generated)),
           "samples": _rounded(sample_stats(generated)), "corpus": _rounded(sample_stats(corpus)),
           "comparison": _rounded(comparison),
           "clash_share": _rounded({**clashes, "ratio": clashes["samples"] / clashes["corpus"]
                                     if clashes["corpus"] > 0 else math.nan})}
    out.update(_latent_space(generator, x, corpus, samples, seed))
    if cfg.decoding != "threshold" and not generator.autoregressive:
        other = compare_to_corpus(generator.generate(samples, seed=seed, decoding="threshold"), corpus)
        out["threshold_decoding"] = {"all_in_range": other["all_in_range"],
                                     **{k: {"samples": round(v["samples"], 5), "in_range": v["in_range"]}
                                        for k, v in other["stats"].items()}}
    return out


def _latent_space(generator, x: np.ndarray, corpus: list, samples: int, seed: int, pairs: int = 10,
                  steps: int = 8) -> dict:
    """What the latent space gives, on the split's images ``x``:

    - ``interpolation``: ``pairs`` pairs of images (drawn with ``seed``), ``steps`` pieces each
      from A to B (:meth:`~musicgen.vae.Generator.interpolate`): whether every intermediate piece's
      statistics lie in the corpus's range (:func:`compare_to_corpus` of the intermediates), and
      the pitch-class-histogram distance to B (1 - cosine) along the way, mean per step, with the
      share of pairs where it never rises from A to B;
    - ``attributes``: each attribute's latent direction on these images (top quarter's mean code
      minus bottom quarter's), its norm, and the attribute's mean over ``samples`` prior samples
      moved -1, 0 and +1 along it (same seeds).
    """
    from .metrics import pitch_class_cosine, pitch_class_histogram
    from .vae import image_attributes

    rng = np.random.default_rng([seed, 2])
    chosen = [rng.choice(len(x), 2, replace=False) for _ in range(pairs)] if len(x) >= 2 else []
    paths = [generator.interpolate(x[i, ..., 0], x[j, ..., 0], steps, seed=seed) for i, j in chosen]
    distances = np.array([[1 - pitch_class_cosine(pitch_class_histogram(p), pitch_class_histogram(x[j, ..., 0]))
                           for p in path] for path, (_, j) in zip(paths, chosen)]).reshape(-1, steps)
    between = [p for path in paths for p in path[1:-1]]
    interpolation = {"pairs": len(paths), "steps": steps,
                     "all_in_range": compare_to_corpus(between, corpus)["all_in_range"] if between else None,
                     "distance_to_b": [defined_mean(c) for c in distances.T],
                     "monotonic_share": float(np.mean([bool(np.all(np.diff(d) <= 1e-9)) for d in distances]))
                     if len(distances) else math.nan}
    directions = generator.attribute_directions(x)
    attributes = {}
    for name, direction in directions.items():
        generator.directions[name] = direction
        means = {f"{a:+d}": float(np.nanmean(image_attributes(np.stack(
            generator.generate(samples, seed=seed, attributes={name: a})))[name])) for a in (-1, 0, 1)}
        attributes[name] = {"norm": float(np.linalg.norm(direction)), "samples_moved": means,
                            "direction": [round(float(v), 4) for v in direction]}
    return {"interpolation": _rounded(interpolation), "attributes": _rounded(attributes)}


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_rounded(v) for v in d]
    if isinstance(d, (float, np.floating)):
        return round(float(d), 5)
    if isinstance(d, np.integer):
        return int(d)
    return d
