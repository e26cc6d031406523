"""Several extend requests continued in one batched, stateful LSTM generation.

:func:`extend_batch` gives every job exactly the continuation that
``extender.extend(job.roll, job.steps, job.temperature, job.seed)`` gives it alone, whatever it is
batched with:

* each prompt is primed without padding: prompts of the same length are primed together, others
  apart (``Extender.extend`` left-pads shorter prompts with silence, and the LSTM state after
  silence + prompt is not the state after the prompt alone, so its result would depend on the
  batch mates' lengths);
* the generation steps then run batched, one network call per step for all jobs, each job with
  its own random generator (``numpy.random.default_rng(seed)``), its own temperature, and its own
  number of steps (the batch runs to the longest; shorter jobs are cut);
* the per-step sampling and the note velocity are musicgen.lstm's own (``_sample``,
  ``_mean_velocity``), so the server gives the same bytes as ``musicgen extend`` with that seed.

Batch-size independence of the network itself (a row's output does not depend on the other rows)
holds for TensorFlow's CPU kernels (tests/test_serve.py checks it); GPU kernels may differ in the
last bits between batch sizes, which can, rarely, flip a sampled note.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass
class ExtendJob:
    """One request: a prompt roll (T, 128), the steps to add, temperature and seed."""

    roll: np.ndarray
    steps: int
    temperature: float = 1.0
    seed: int = 0


def extend_batch(extender, jobs: list[ExtendJob]) -> list[np.ndarray]:
    """Continuations, (job.steps, 128) float32 each, of all ``jobs`` generated together."""
    from musicgen.lstm import _mean_velocity, _sample, features, n_features

    if not jobs:
        return []
    cfg = extender.cfg
    n = len(jobs)
    frames = [(np.asarray(j.roll) > 0).astype(np.float32) for j in jobs]
    lengths = [len(f) for f in frames]
    state = extender.zero_state(n)
    p_next = np.zeros((n, 128), np.float32)

    # Prime: every prompt to its end, prompts of equal length in one call.
    by_length = defaultdict(list)
    for i, length in enumerate(lengths):
        by_length[length].append(i)
    for length, rows in by_length.items():
        if length:
            x = np.stack([features(frames[i], 0, cfg) for i in rows])
        else:  # as Extender.extend: one silent frame
            x = np.zeros((len(rows), 1, n_features(cfg)), np.float32)
        probs, primed = extender._run(x, extender.zero_state(len(rows)))
        p_next[rows] = probs[:, -1]
        for s, p in zip(state, primed):
            s[rows] = p

    # Generate: one network call per step for the whole batch.
    steps = max(j.steps for j in jobs)
    rngs = [np.random.default_rng(j.seed) for j in jobs]
    velocity = np.array([_mean_velocity(j.roll) for j in jobs], np.float32)
    out = np.zeros((n, steps, 128), np.float32)
    for t in range(steps):
        frame = np.stack([_sample(p_next[i], jobs[i].temperature, rngs[i]) for i in range(n)])
        out[:, t] = frame * velocity[:, None]
        if t == steps - 1:
            break
        step_x = np.stack([features(frame[i:i + 1], lengths[i] + t, cfg) for i in range(n)])
        probs, state = extender._run(step_x, state)
        p_next = probs[:, -1]
    return [out[i, :j.steps] for i, j in enumerate(jobs)]
