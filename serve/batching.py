"""Extend requests continued together: continuous batching over the LSTM's incremental step.

:class:`StepBatcher` owns one model's generation thread and only schedules: it admits a waiting
job as a :class:`~musicgen.lstm.engine.Row` of a :class:`~musicgen.lstm.engine.Batch` at the next
step boundary after it arrives, drops it when it has its steps or its request gave up (a cancelled
future: a timed-out request), and hands back its continuation. The rows, their random streams,
their prompts fed one frame per step from a zero state, and the batched step are musicgen's
generation engine (``musicgen.lstm.engine``), the same code ``musicgen extend`` generates through.
So a request never waits for a batch that started before it, and a batch never waits to fill.
(Gathering requests, then running the batch to its end, left requests that arrived during a long
generation waiting for all of it: on a quiet machine the batches held 5 of 16 requests on average
and lost to no batching.)

Every job gets the same continuation whatever it is batched with, and the same as
``Extender.extend`` gives it alone on the same block: the step runs on a multiple of a block of
rows, padded with silent rows, and :func:`~musicgen.lstm.engine.exact_block` finds, per model at
start-up, the smallest block with which every row gets the same bits whatever the number of rows
and its place among them (on this project's 2-core AMD machine: 2 rows). This needs
single-threaded maths (OPENBLAS_NUM_THREADS=1 and TF_NUM_INTRAOP_THREADS=1, which the deployment
sets): threads split the rows into other blocks.

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

from musicgen.lstm import BLOCKS, STEP_ROWS, Batch, Row, exact_block, padded_rows

logger = logging.getLogger("ray.serve")

__all__ = ["BLOCKS", "STEP_ROWS", "ExtendJob", "StepBatcher", "exact_block", "padded_rows"]


@dataclass
class ExtendJob:
    """One request: a prompt roll (T, 128), the steps to add, temperature, seed, and the prompt's
    time signatures ((row, num, den); None: 4/4), whose meter the continuation keeps."""

    roll: np.ndarray
    steps: int
    temperature: float = 1.0
    seed: int = 0
    time_signatures: list | None = None


class StepBatcher:
    """Continuous batching of extend jobs on one :class:`~musicgen.lstm.Extender` (see the module).

    :meth:`submit` queues a job and returns a :class:`concurrent.futures.Future` of
    ``(continuation (steps, 128) float32, mean rows per step it was generated with)``; cancelling
    the future drops the job at the next step. At most ``max_rows`` jobs run at once; the rest wait
    in order of arrival. One daemon thread runs the steps (numpy and TensorFlow release the GIL).
    """

    def __init__(self, extender, max_rows: int = STEP_ROWS, block: int | None = None, name: str = "lstm"):
        self.extender, self.max_rows = extender, max(1, int(max_rows))
        self.block = block if block is not None else exact_block(extender, self.max_rows)
        self._batch = Batch(extender, self.max_rows, self.block)
        self._futures: dict[Row, concurrent.futures.Future] = {}  # the running rows' requests
        self._queue: collections.deque[tuple[Row, concurrent.futures.Future]] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"musicgen-steps-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: ExtendJob) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        row = self.extender.row(job.roll, job.steps, job.temperature, job.seed,  # in the caller's thread
                                time_signatures=job.time_signatures)
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append((row, future))
            self._wake.notify()
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    @property
    def running(self) -> int:
        return len(self._batch.rows)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._batch.rows or self._queue or self._closed):
                    self._wake.wait()
                if self._closed:
                    for future in [*self._futures.values(), *(f for _, f in self._queue)]:
                        future.cancel()
                    return
                self._admit()
            try:
                self._batch.step()
            except Exception as e:  # a bug or out of memory: fail these jobs, keep serving
                logger.exception("musicgen serve: a batched LSTM step failed")
                while self._batch.rows:
                    _settle(self._futures.pop(self._batch.drop(len(self._batch.rows) - 1)), exception=e)
            self._retire()

    def _admit(self) -> None:
        """Waiting jobs join at this step boundary, in order of arrival, while there is room."""
        while self._queue and len(self._batch.rows) < self.max_rows:
            row, future = self._queue.popleft()
            if not future.cancelled():
                self._batch.admit(row)
                self._futures[row] = future

    def _retire(self) -> None:
        """Finished or cancelled rows leave (from the end, as drop moves the last row forward)."""
        rows = self._batch.rows
        for i in range(len(rows) - 1, -1, -1):
            row = rows[i]
            future = self._futures[row]
            if row.finished or future.cancelled():
                self._batch.drop(i)
                del self._futures[row]
                if row.finished:
                    _settle(future, result=(row.out, row.rows_seen / row.k))


def _settle(future: concurrent.futures.Future, result=None, exception=None) -> None:
    try:  # a future cancelled meanwhile (its request timed out) takes nothing
        future.set_exception(exception) if exception is not None else future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
