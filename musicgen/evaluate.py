"""Held-out evaluation of a trained run against baselines fitted on the train split.

LSTM: next-frame ``nll`` (nats per frame), Bay et al.'s frame ``accuracy``, ``f1``, the study's
``mae``, next to the ``copy_last`` and ``pitch_prior`` baselines. VAE: reconstruction error,
active latent units, and statistics of prior samples next to the corpus's.
"""
from __future__ import annotations

import numpy as np

from .dataset import load_rolls, read_manifest
from .errors import DataError
from .metrics import CopyLast, PitchPrior, compare_to_corpus, evaluate, sample_stats
from .run import Run


def evaluate_run(run: str, data: str, split: str = "test", threshold: float = 0.5, samples: int = 32,
                 seed: int = 0) -> dict:
    """Evaluate ``run`` on ``split`` of dataset ``data``; a JSON-ready dict."""
    trained = Run(run)
    info = trained.info()
    manifest = read_manifest(data)
    if manifest.get("steps_per_beat") != info.get("steps_per_beat") or manifest.get("width", 128) != info.get("width", 128) \
            or manifest.get("steps_per_second") != info.get("steps_per_second"):
        raise DataError(f"{data}: its grid ({manifest.get('steps_per_beat')} steps per beat, "
                        f"{manifest.get('steps_per_second')} per second, width {manifest.get('width')}) differs "
                        f"from the model's ({info.get('steps_per_beat')}, {info.get('steps_per_second')}, "
                        f"{info.get('width')})")
    rolls = list(load_rolls(data, split).values())
    if not rolls:
        raise DataError(f"{data}: the {split} split is empty")
    kind, cfg, _, model = trained.load()  # after the checks: a bad dataset fails before the weights load
    result = {"kind": kind, "run": run, "data": data, "split": split, "pieces": len(rolls)}
    if kind == "lstm":
        result.update(_lstm(cfg, model, data, info, rolls, threshold))
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


def _lstm(cfg, model, data, info, rolls, threshold) -> dict:
    from .lstm import Extender

    extender = Extender.from_training_model(cfg, model)
    scores = _rounded(evaluate(extender.predict_next, rolls, threshold))
    # A test-only dataset (other music, --split 0,0,1) has no train split: the baselines then learn
    # from what the model learned from.
    has_train = read_manifest(data).get("counts", {}).get("train", 0) > 0
    out = {**scores, "threshold": threshold, **baselines(data if has_train else info["data"], rolls, threshold)}
    out["nll_vs_copy_last"] = round(scores["nll"] / out["copy_last"]["nll"], 4)
    return out


def _vae(cfg, model, info, rolls, samples, seed) -> dict:
    """Reconstruction of the split's images, active units, and ``samples`` prior samples (``seed``)
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
    out = {"images": int(len(x)), "reconstruction": _rounded(generator.reconstruction_error(x)),
           "active_units": int(generator.active_units(x)), "latent": cfg.latent,
           "threshold": float(generator.threshold), "decoding": cfg.decoding,
           "non_empty": int(sum(bool(g.any()) for g in generated)),
           "samples": _rounded(sample_stats(generated)), "corpus": _rounded(sample_stats(corpus)),
           "comparison": _rounded(comparison)}
    if cfg.decoding != "threshold":
        other = compare_to_corpus(generator.generate(samples, seed=seed, decoding="threshold"), corpus)
        out["threshold_decoding"] = {"all_in_range": other["all_in_range"],
                                     **{k: {"samples": round(v["samples"], 5), "in_range": v["in_range"]}
                                        for k, v in other["stats"].items()}}
    return out


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
