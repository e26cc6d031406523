"""Several extend requests continued in one batched, stateful LSTM generation.

:func:`extend_batch` gives every job the same continuation whatever it is batched with (same
request and seed, same bytes):

* each prompt is primed alone (``Extender.extend`` left-pads shorter prompts of a batch with
  silence, and the LSTM state after silence + prompt is not the state after the prompt alone;
  priming is compute-bound anyway, batching it saves nothing);
* the generation steps run batched, one ``Extender.step`` (numpy on the trained weights) per step
  for all jobs, each job with its own random generator (``numpy.random.default_rng(seed)``), its
  own temperature and its own number of steps (the batch runs to the longest; shorter jobs are
  cut). The step always runs on a multiple of :data:`STEP_ROWS` rows, padded with silent rows:
  BLAS sums a row's dot products in another order for a single row (gemv) or a few rows (small
  kernels) than for a full block, and the last-bit difference can flip a sampled note. With
  every batch on full blocks a row's arithmetic does not depend on its batch mates
  (tests/test_serve.py checks it). This needs single-threaded BLAS (OPENBLAS_NUM_THREADS=1, which
  the deployment sets): threads would split the rows into small blocks again;
* sampling and note velocity are musicgen.lstm's own (``_sample``, ``_mean_velocity``).

``musicgen extend`` steps one row at a time, so its result equals a batching server's up to such
last-bit differences (a sampled note flips with probability ~1e-7 per cell per step); a server
that does not batch (``max_batch_size=1``) steps one row too and gives exactly its bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_ROWS = 16


@dataclass
class ExtendJob:
    """One request: a prompt roll (T, 128), the steps to add, temperature and seed."""

    roll: np.ndarray
    steps: int
    temperature: float = 1.0
    seed: int = 0


def padded_rows(n: int, block: int = STEP_ROWS) -> int:
    """Rows the step runs on for ``n`` jobs: a positive multiple of ``block``."""
    return max(1, -(-n // block)) * block


def extend_batch(extender, jobs: list[ExtendJob], block: int = STEP_ROWS) -> list[np.ndarray]:
    """Continuations, (job.steps, 128) float32 each, of all ``jobs`` generated together.

    ``block=1`` (no padding) is for a deployment that never batches: every step then has one row,
    as in ``musicgen extend``, whose result it equals exactly.
    """
    from musicgen.lstm import _mean_velocity, _sample, features, n_features

    if not jobs:
        return []
    cfg = extender.cfg
    n, rows = len(jobs), padded_rows(len(jobs), block)
    frames = [(np.asarray(j.roll) > 0).astype(np.float32) for j in jobs]
    state = extender.zero_state(rows)
    p_next = np.zeros((n, 128), np.float32)

    # Prime: every prompt alone, to its end.
    for i, f in enumerate(frames):
        x = features(f, 0, cfg)[None] if len(f) else np.zeros((1, 1, n_features(cfg)), np.float32)
        probs, primed = extender._run(x, extender.zero_state(1))
        p_next[i] = probs[0, -1]
        for s, p in zip(state, primed):
            s[i] = p[0]

    # Generate: one step for the whole (padded) batch at a time.
    steps = max(j.steps for j in jobs)
    rngs = [np.random.default_rng(j.seed) for j in jobs]
    velocity = np.array([_mean_velocity(j.roll) for j in jobs], np.float32)
    out = np.zeros((n, steps, 128), np.float32)
    step_x = np.zeros((rows, n_features(cfg)), np.float32)
    for t in range(steps):
        frame = np.stack([_sample(p_next[i], jobs[i].temperature, rngs[i]) for i in range(n)])
        out[:, t] = frame * velocity[:, None]
        if t == steps - 1:
            break
        step_x[:n] = np.stack([features(frame[i:i + 1], len(frames[i]) + t, cfg)[0] for i in range(n)])
        probs, state = extender.step(step_x, state)
        p_next = probs[:n]
    return [out[i, :j.steps] for i, j in enumerate(jobs)]
