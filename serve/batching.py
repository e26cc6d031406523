"""Several extend requests continued in one batched, stateful LSTM generation.

:func:`extend_batch` hands a batch of jobs to ``Extender.extend``, which primes and generates
them together (one numpy step for all rows per time step) and gives every job the same
continuation whatever it is batched with: prompts are primed right-aligned with each row's state
held at zero until its own prompt starts, each job has its own random generator, temperature and
number of steps (the batch runs to the longest), and the step runs on a multiple of a block of
rows, padded with silent rows. BLAS sums a row's dot products in another order for a single row
(gemv) or a few rows (other kernels) than for a larger block, and a last-bit difference can flip a
sampled note. :func:`exact_block` finds, per model at start-up, the smallest block with which every
row gets the same bits whatever the batch size and its place in the batch (on this project's 2-core
AMD machine: 2 rows for the tiny preset, 8 for the paper preset). This needs single-threaded
BLAS (OPENBLAS_NUM_THREADS=1, which the deployment sets): threads would split the rows into other
blocks.

A batching replica pads every step to its model's block, a lone request included, so a request
gets the same bytes whatever it is batched with. A replica that does not batch
(``max_batch_size=1``) steps one row (``block=1``, numpy's gemv, the fastest way to run one
request), as ``musicgen extend`` does, and gives exactly its bytes; between the two, results are
equal up to such last-bit differences (a sampled note flips with probability ~1e-7 per cell per
step).
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
    """Continuations, (job.steps, 128) float32 each, of all ``jobs`` generated together, the step
    on a multiple of ``block`` rows (see :func:`exact_block`)."""
    if not jobs:
        return []
    return extender.extend([j.roll for j in jobs], [j.steps for j in jobs], [j.temperature for j in jobs],
                           [j.seed for j in jobs], block=block)
