"""musicgen_serve.batching: continuous batching over musicgen's generation engine (no HTTP, no Ray).

The batcher only schedules (admission at a step, cancellation); the rows and the batched step are
musicgen.lstm.engine's, so every job must come out bit for bit as Extender.extend makes it alone.
"""
import time

import numpy as np
import pytest

from musicgen.config import LSTMConfig

CFG = LSTMConfig(layers=2, units=64, window=16, dropout=0.0, steps_per_bar=16)


def extender():
    from musicgen.lstm import Extender, build_model

    return Extender.from_training_model(CFG, build_model(CFG))


def random_rolls(seed, lengths):
    rng = np.random.default_rng(seed)
    return [(rng.random((length, 128)) < 0.04).astype(np.float32) * 0.7 for length in lengths]


def extend_batch(extender, jobs, block):
    """Continuations of ``jobs`` (ExtendJob) generated together by Extender.extend on ``block`` rows."""
    return extender.extend([j.roll for j in jobs], [j.steps for j in jobs], [j.temperature for j in jobs],
                           [j.seed for j in jobs], block=block)


def test_a_job_continues_the_same_whatever_its_batch_mates():
    """Prompts of other lengths, temperatures, step counts, and batches of 1, 3 and 17 jobs leave
    a job's continuation bit for bit unchanged, with the block exact_block measures (for this
    process's BLAS threads; replicas run it single-threaded)."""
    from musicgen_serve.batching import BLOCKS, ExtendJob, exact_block, padded_rows

    ext = extender()
    block = exact_block(ext, 17)
    assert block in BLOCKS and exact_block(ext, 1) == 1
    rolls = random_rolls(0, (40, 7, 40, 65, 1))
    job = ExtendJob(rolls[0], 30, 1.3, 11)
    alone = extend_batch(ext, [job], block)[0]
    assert alone.shape == (30, 128) and alone.any()
    # Unpadded (a server that never batches) it is musicgen's own Extender.extend, bit for bit.
    assert np.array_equal(extend_batch(ext, [job], 1)[0], ext.extend(job.roll, 30, 1.3, 11))
    mates = [ExtendJob(r, 10 + 7 * i, 0.5 + 0.4 * i, i) for i, r in enumerate(rolls[1:])]
    assert np.array_equal(extend_batch(ext, [mates[0], job, mates[1]], block)[1], alone)
    many = extend_batch(ext, [*(mates * 4)[:16], job], block)
    assert np.array_equal(many[16], alone) and padded_rows(17, block) % block == 0
    for got, m in zip(many, (mates * 4)[:16]):
        assert got.shape == (m.steps, 128)


@pytest.mark.parametrize("xla", [False, True])
def test_continuous_batching_gives_each_job_its_own_continuation(xla, monkeypatch):
    """Jobs that join a running generation at different steps, more jobs than rows (a queue), and
    a cancelled job: every finished job is bit for bit what it gets alone on the same block; one
    row is musicgen's own Extender.extend. With numpy's and with XLA's batched step (lstm/step.py)."""
    from musicgen.lstm import step
    from musicgen_serve.batching import ExtendJob, StepBatcher

    if xla:
        monkeypatch.setattr(step, "XLA_MIN_WEIGHTS", 0)

    ext = extender()
    rolls = random_rolls(1, (40, 7, 65, 1, 0))
    jobs = [ExtendJob(r, 10 + 23 * i, 0.5 + 0.3 * i, i) for i, r in enumerate(rolls)] * 2
    batcher = StepBatcher(ext, 3)
    try:
        slow = batcher.submit(ExtendJob(rolls[0], 100_000, 1.0, 99))  # tens of seconds
        futures = []
        for job in jobs:  # staggered: jobs join while others are halfway
            futures.append(batcher.submit(job))
            time.sleep(0.002)
        assert slow.cancel()  # as a timed-out request: its row is freed at the next step
        results = [f.result(timeout=120) for f in futures]
        deadline = time.monotonic() + 5
        while batcher.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.running == 0, "the cancelled job still runs"
    finally:
        batcher.close()
    assert (ext.net.batched is not None) == xla
    for job, (cont, mean_rows) in zip(jobs, results):
        assert cont.shape == (job.steps, 128) and 1 <= mean_rows <= 3
        assert np.array_equal(cont, extend_batch(ext, [job], batcher.block)[0])
    assert max(m for _, m in results) > 1, "the jobs never shared a step"
    one = StepBatcher(ext, 1)
    try:
        assert one.block == 1
        assert np.array_equal(one.submit(jobs[2]).result(timeout=60)[0],
                              ext.extend(jobs[2].roll, jobs[2].steps, jobs[2].temperature, jobs[2].seed))
    finally:
        one.close()


def test_a_served_job_continues_its_prompts_meter():
    """The prompt's time signatures ride with the job: the batcher's row is Extender.extend's in
    that meter (3/4 here), not the 4/4 one."""
    from musicgen_serve.batching import ExtendJob, StepBatcher

    ext = extender()
    fed = []

    class Recording:  # the extender, recording the bar position each step is fed
        def __getattr__(self, name):
            return getattr(ext, name)

        def step(self, x, state):
            fed.append(int(x[0, 128:].argmax()))
            return ext.step(x, state)

    roll = random_rolls(2, (30,))[0]
    batcher = StepBatcher(Recording(), 1)
    try:
        served = batcher.submit(ExtendJob(roll, 40, 1.0, 3, [(0, 3, 4)])).result(timeout=60)[0]
    finally:
        batcher.close()
    assert np.array_equal(served, ext.extend(roll, 40, 1.0, 3, time_signatures=[(0, 3, 4)]))
    # 3/4 at 4 steps per beat: bars of 12 steps, through the prompt (30 steps) and the continuation
    # (an untrained net's samples may not show the position: a third of draws gave the same notes)
    assert fed[:69] == [t % 12 for t in range(69)]


def test_engine_rows_joining_and_leaving_midway_come_out_as_alone():
    """The schedule the batcher makes, stepped by hand (no thread, so the same every run): rows
    admitted at other steps, a row dropped halfway (a cancelled request) whose slot the last row
    takes, a row admitted into the freed slot. Each finished row is its lone continuation."""
    from musicgen.lstm import Batch, Row, exact_block

    ext = extender()
    block = exact_block(ext, 4)
    rolls = random_rolls(2, (12, 3, 30, 1, 9))
    specs = [(rolls[i], 15 + 4 * i, 0.6 + 0.2 * i, 20 + i) for i in range(5)]
    rows = [Row(*s) for s in specs]
    batch = Batch(ext, 4, block)
    cancelled = Row(rolls[2], 500, 1.0, 7)
    batch.admit(cancelled)
    waiting = [(0, rows[0]), (0, rows[1]), (5, rows[2]), (9, rows[3]), (10, rows[4])]  # (earliest step, row)
    for t in range(200):
        while waiting and waiting[0][0] <= t and len(batch.rows) < 4:  # rows[4] waits for a free slot
            batch.admit(waiting.pop(0)[1])
        if t == 12:  # dropped while rows after it run: the last one moves into its slot
            assert batch.drop(batch.rows.index(cancelled)) is cancelled
        batch.step()
        for i in range(len(batch.rows) - 1, -1, -1):
            if batch.rows[i].finished:
                batch.drop(i)
    assert all(r.finished for r in rows) and not batch.rows
    for row, (roll, steps, temp, seed) in zip(rows, specs):
        assert np.array_equal(row.out, ext.extend([roll], steps, temp, seed, block=block)[0])
        assert np.array_equal(row.out, ext.extend(roll, steps, temp, seed)) or block > 1
        assert 1 <= row.rows_seen / row.k <= 4
    assert max(r.rows_seen / r.k for r in rows) > 2, "the rows never shared steps"
    full = Batch(ext, 1, block)
    full.admit(Row(rolls[0], 1))
    with pytest.raises(ValueError, match="taken or out of range"):  # its state has no room for more
        full.admit(Row(rolls[1], 1))
