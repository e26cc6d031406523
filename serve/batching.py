"""Several extend requests continued in one batched, stateful LSTM generation.

:func:`extend_batch` gives every job the same continuation whatever it is batched with (same
request and seed, same bytes):

* each prompt is primed alone (``Extender.extend`` left-pads shorter prompts of a batch with
  silence, and the LSTM state after silence + prompt is not the state after the prompt alone;
  priming is compute-bound anyway, batching it saves nothing);
* the generation steps run batched, one ``Extender.step`` (numpy on the trained weights) per step
  for all jobs, each job with its own random generator (``numpy.random.default_rng(seed)``), its
  own temperature and its own number of steps (the batch runs to the longest; shorter jobs are
  cut). The step runs on a multiple of a block of rows, padded with silent rows: BLAS sums a
  row's dot products in another order for a single row (gemv) or a few rows (other kernels) than
  for a larger block, and a last-bit difference can flip a sampled note. :func:`exact_block`
  finds, per model at start-up, the smallest block with which every row gets the same bits
  whatever the batch size and its place in the batch (on this project's 2-core AMD machine: 2 rows
  for the tiny preset, 8 for the paper preset). This needs single-threaded BLAS
  (OPENBLAS_NUM_THREADS=1, which the deployment sets): threads would split the rows into other
  blocks;
* sampling and note velocity are musicgen.lstm's own (``_sample``, ``_mean_velocity``).

``musicgen extend`` steps one row at a time, so its result equals a batching server's up to such
last-bit differences (a sampled note flips with probability ~1e-7 per cell per step); a server
that does not batch (``max_batch_size=1``) steps one row too and gives exactly its bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_ROWS = 16  # the block when none is measured
BLOCKS = (1, 2, 4, 8, 16, 32)  # candidates of exact_block


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


def exact_block(extender, max_jobs: int, seed: int = 0) -> int:
    """Smallest block of :data:`BLOCKS` with which ``extender.step`` gives a row the same bits in
    every batch of 1..``max_jobs`` jobs padded to whole blocks, wherever the row sits.

    The order of a BLAS kernel's sums depends on the shapes and the thread count, not on the data,
    so random inputs show any difference (with overwhelming probability).
    """
    from musicgen.lstm import n_features

    if max_jobs <= 1:
        return 1
    rng = np.random.default_rng(seed)
    for block in BLOCKS:
        top = padded_rows(max_jobs, block)
        x = (rng.random((top, n_features(extender.cfg))) < 0.1).astype(np.float32)
        state = [(rng.standard_normal(s.shape) * 0.5).astype(np.float32) for s in extender.zero_state(top)]
        ref = extender.step(x, state)
        flipped = extender.step(x[::-1], [s[::-1] for s in state])
        same = all(np.array_equal(a[::-1], b) for a, b in zip([flipped[0], *flipped[1]], [ref[0], *ref[1]]))
        for m in range(block, top, block):
            if not same:
                break
            p, st = extender.step(x[:m], [s[:m] for s in state])
            same = all(np.array_equal(a, b[:m]) for a, b in zip([p, *st], [ref[0], *ref[1]]))
        if same:
            return block
    return STEP_ROWS


def extend_batch(extender, jobs: list[ExtendJob], block: int = STEP_ROWS) -> list[np.ndarray]:
    """Continuations, (job.steps, 128) float32 each, of all ``jobs`` generated together.

    The step runs on a multiple of ``block`` rows (see :func:`exact_block`). ``block=1`` (no
    padding) is for a deployment that never batches: every step then has one row, as in
    ``musicgen extend``, whose result it equals exactly.
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
