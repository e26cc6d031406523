"""Extend requests continued together: continuous batching over the LSTM's incremental step.

:class:`StepBatcher` owns one model's generation thread. Every step it runs all the jobs it holds
through one batched :meth:`Extender.step <musicgen.lstm.Extender.step>` and samples each job's
next frame; a job joins at the next step boundary after it arrives (its state zero, fed its prompt
one frame per step, then its own samples) and leaves as soon as it has its steps, so a request
never waits for a batch that started before it, and a batch never waits to fill. (Gathering
requests, then running the batch to its end, left requests that arrived during a long generation
waiting for all of it: on a quiet machine the batches held 5 of 16 requests on average and lost to
no batching.)

Every job gets the same continuation whatever it is batched with, and the same as
``Extender.extend`` gives it alone on the same block: each job has its own
random generator, temperature and number of steps, its prompt is fed from a zero state at its own
position in the bar, and the step runs on a multiple of a block of rows, padded with silent rows.
A matmul sums a row's dot products in another order for one row (gemv) or a few rows (other
kernels) than for a larger block, and a last-bit difference can flip a sampled note;
:func:`exact_block` finds, per model at start-up, the smallest block with which every row gets the
same bits whatever the number of rows and its place among them (on this project's 2-core AMD
machine: 2 rows). This needs single-threaded maths (OPENBLAS_NUM_THREADS=1 and
TF_NUM_INTRAOP_THREADS=1, which the deployment sets): threads split the rows into other blocks.

A batcher of one row (``max_batch_size=1``, no batching) steps one row (``block=1``, numpy's
gemv, the fastest way to run one request) and gives exactly the bytes of ``musicgen extend``;
between the two, results are equal up to last-bit differences (a sampled note flips with
probability ~1e-7 per cell per step).
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("ray.serve")

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


class _Row:
    """A job inside a :class:`StepBatcher`: its prompt, what it has sampled, its random stream."""

    def __init__(self, job: ExtendJob, future: concurrent.futures.Future):
        from musicgen.lstm import mean_velocity

        self.future = future
        frames = np.asarray(job.roll) > 0
        self.prompt = frames if len(frames) else np.zeros((1, 128), bool)  # empty: one silent frame
        self.steps, self.temperature = int(job.steps), float(job.temperature)
        self.velocity = np.float32(mean_velocity(job.roll))
        self.rng = np.random.default_rng(int(job.seed))
        self.out = np.zeros((self.steps, 128), np.float32)
        self.frame = np.zeros(128, np.float32)  # the last sampled frame, the next input
        self.k = 0  # steps this row has been through: its prompt first, then its samples
        self.done = 0  # frames sampled
        self.rows_seen = 0  # sum over its steps of the rows stepped with it (for the mean batch)

    def input(self) -> np.ndarray:
        return self.prompt[self.k] if self.k < len(self.prompt) else self.frame

    def uniforms(self) -> np.ndarray:
        """The uniforms of its next frame: its generator's stream in chunks, as Extender.extend draws it."""
        from musicgen.lstm import RANDOM_CHUNK

        if self.done % RANDOM_CHUNK == 0:
            self._u = self.rng.random((min(RANDOM_CHUNK, self.steps - self.done), 128))
        return self._u[self.done % RANDOM_CHUNK]


class StepBatcher:
    """Continuous batching of extend jobs on one :class:`~musicgen.lstm.Extender` (see the module).

    :meth:`submit` queues a job and returns a :class:`concurrent.futures.Future` of
    ``(continuation (steps, 128) float32, mean rows per step it was generated with)``; cancelling
    the future drops the job at the next step. At most ``max_rows`` jobs run at once; the rest wait
    in order of arrival. One daemon thread runs the steps (numpy and TensorFlow release the GIL).
    """

    def __init__(self, extender, max_rows: int = STEP_ROWS, block: int | None = None, name: str = "lstm"):
        from musicgen.lstm import n_features

        self.extender, self.max_rows = extender, max(1, int(max_rows))
        self.block = block if block is not None else exact_block(extender, self.max_rows)
        size = padded_rows(self.max_rows, self.block)
        self._state = extender.zero_state(size)
        self._x = np.zeros((size, n_features(extender.cfg)), np.float32)
        self._rows: list[_Row] = []
        self._queue: collections.deque[_Row] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"musicgen-steps-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: ExtendJob) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        row = _Row(job, future)  # validates here, in the caller's thread
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(row)
            self._wake.notify()
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    @property
    def running(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._rows or self._queue or self._closed):
                    self._wake.wait()
                if self._closed:
                    for row in [*self._rows, *self._queue]:
                        row.future.cancel()
                    return
                while self._queue and len(self._rows) < self.max_rows:
                    row = self._queue.popleft()
                    if not row.future.cancelled():
                        for s in self._state:  # a job starts from a zero state, as when primed alone
                            s[len(self._rows)] = 0
                        self._rows.append(row)
            try:
                self._step()
            except Exception as e:  # a bug or out of memory: fail these jobs, keep serving
                logger.exception("musicgen serve: a batched LSTM step failed")
                for row in self._rows:
                    _settle(row.future, exception=e)
                self._rows.clear()

    def _step(self) -> None:
        from musicgen.lstm import sample_frames, set_inputs

        rows, cfg = self._rows, self.extender.cfg
        n = len(rows)
        m = padded_rows(n, self.block)
        self._x[n:m] = 0  # padding rows: silence (their results are never read)
        set_inputs(self._x, np.stack([r.input() for r in rows]), np.array([r.k for r in rows]), cfg)
        probs, state = self.extender.step(self._x[:m], [s[:m] for s in self._state])
        for s, new in zip(self._state, state):
            s[:m] = new
        sampling = [i for i, r in enumerate(rows) if r.k >= len(r.prompt) - 1]  # its prompt is all in
        if sampling:
            frames = sample_frames(probs[sampling], np.stack([rows[i].uniforms() for i in sampling]),
                                   np.array([rows[i].temperature for i in sampling]))
            for i, frame in zip(sampling, frames):
                r = rows[i]
                r.out[r.done] = frame * r.velocity
                r.frame, r.done = frame, r.done + 1
        for r in rows:
            r.k += 1
            r.rows_seen += n
        # Finished or cancelled rows leave; the last row moves into a freed slot (rows are
        # independent, whatever their place: exact_block checks it).
        for i in range(n - 1, -1, -1):
            r = rows[i]
            if r.done == r.steps or r.future.cancelled():
                if r.done == r.steps:
                    _settle(r.future, result=(r.out, r.rows_seen / r.k))
                last = len(rows) - 1
                if i != last:
                    rows[i] = rows[last]
                    for s in self._state:
                        s[i] = s[last]
                rows.pop()


def _settle(future: concurrent.futures.Future, result=None, exception=None) -> None:
    try:  # a future cancelled meanwhile (its request timed out) takes nothing
        future.set_exception(exception) if exception is not None else future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
