"""Tests of musicgen.generate: reading a prompt on a run's grid, extending it, the argument check.

The extender here is a stand-in (its continuation is given), so the tests need neither Ray nor a
trained run; tests/test_train.py extends with a trained run and tests/test_golden.py pins its bytes.
"""
from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from musicgen import generate, lstm
from musicgen.errors import ArgumentError, MidiError, PromptTooLong
from musicgen.midi import read_midi

try:
    from tests.midi_factory import in_meter, make_midi, off, on, tempo, timesig
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from midi_factory import in_meter, make_midi, off, on, tempo, timesig

INFO = {"steps_per_beat": 4}


def prompt_bytes(beats: int = 2) -> bytes:
    """A prompt at 100 bpm in 3/4: C4 for ``beats`` beats (480 ticks per beat)."""
    return make_midi([[(0, tempo(100)), (0, timesig(3, 4)), (0, on(60, 100)), (480 * beats, off(60))]])


class FixedExtender:
    """An extender whose continuation is given; records what it was asked."""

    def __init__(self, continuation: np.ndarray):
        self.continuation, self.calls = continuation, []

    def extend(self, roll, steps, temperature=1.0, seeds=0, time_signatures=None):
        self.calls.append((roll, steps, temperature, seeds, time_signatures))
        return self.continuation[:steps]


def continuation(steps: int) -> np.ndarray:
    out = np.zeros((steps, 128), np.float32)
    out[::2, 64] = 0.5
    return out


def midi_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


# --- read_prompt ---------------------------------------------------------------------------------

def test_read_prompt_reads_on_the_runs_grid():
    data = prompt_bytes(2)
    assert generate.read_prompt(data, {"steps_per_beat": 4}).roll.shape == (8, 128)
    assert generate.read_prompt(data, {"steps_per_beat": 2}).roll.shape == (4, 128)
    assert generate.read_prompt(data, {}).roll.shape == (8, 128)  # a run without the field: 4 per beat
    piece = generate.read_prompt(data, INFO, name="p")
    assert piece.tempos == [(0, 100.0)] and piece.time_signatures == [(0, 3, 4)]


def test_a_prompt_without_notes_is_a_midi_error_naming_it():
    silent = make_midi([[(0, tempo(120)), (960, off(60))]])
    with pytest.raises(MidiError, match="^upload x: the prompt has no notes$"):
        generate.read_prompt(silent, INFO, name="upload x")


@pytest.mark.parametrize("limit, steps", [(7, 8),  # the notes' last row is over: read_midi's second check
                                          (3, 8)])  # the file's end is far over: its first, before any roll
def test_a_prompt_over_max_steps_says_its_steps_and_the_limit(limit, steps):
    with pytest.raises(PromptTooLong) as e:
        generate.read_prompt(prompt_bytes(2), INFO, name="long", max_steps=limit)
    assert isinstance(e.value, MidiError)
    assert (e.value.source, e.value.steps, e.value.limit) == ("long", steps, limit)
    assert str(e.value) == f"long: roll would be {steps} steps long, more than max_steps={limit}"
    assert generate.read_prompt(prompt_bytes(2), INFO, max_steps=8).roll.shape == (8, 128)


def test_a_huge_delta_time_is_too_long_with_its_exact_steps():
    # 2**60 ticks: more than a float holds exactly; the steps are still counted exactly.
    data = make_midi([[(0, on(60)), (2**60, off(60))]], ticks_per_beat=1)
    with pytest.raises(PromptTooLong) as e:
        read_midi(data, 4, name="huge")
    assert e.value.steps == 2**62 and e.value.limit > 0


# --- extend_piece and continue_piece -------------------------------------------------------------

def test_extend_piece_is_the_prompt_then_the_continuation_with_the_prompts_tempo_map():
    piece = generate.read_prompt(prompt_bytes(2), INFO)
    extender = FixedExtender(continuation(12))
    roll, mid = generate.extend_piece(extender, INFO, piece, 12, temperature=0.7, seed=5)
    assert extender.calls == [(piece.roll, 12, 0.7, 5, [(0, 3, 4)])]  # the prompt's meter goes on
    np.testing.assert_array_equal(roll, np.concatenate([piece.roll, continuation(12)]))
    back = read_midi(midi_bytes(mid), 4)
    np.testing.assert_array_equal(back.roll > 0, roll > 0)
    assert back.tempos == piece.tempos and back.time_signatures == piece.time_signatures


def test_continue_piece_gives_extend_pieces_bytes():
    """Serve samples on its models deployment and writes the MIDI with continue_piece: the bytes
    must be extend_piece's, as for ``musicgen extend``."""
    piece = generate.read_prompt(prompt_bytes(3), {"steps_per_beat": 2})
    info = {"steps_per_beat": 2}
    roll, mid = generate.extend_piece(FixedExtender(continuation(9)), info, piece, 9)
    roll2, mid2 = generate.continue_piece(info, piece, continuation(9))
    np.testing.assert_array_equal(roll, roll2)
    assert midi_bytes(mid) == midi_bytes(mid2)


@pytest.mark.parametrize("steps, temperature, field", [(0, 1.0, "steps"), (lstm.MAX_STEPS + 1, 1.0, "steps"),
                                                       (2.0, 1.0, "steps"), ("8", 1.0, "steps"),
                                                       (8, 0, "temperature"), (8, float("nan"), "temperature"),
                                                       (8, float("inf"), "temperature"), (8, 10.5, "temperature")])
def test_extend_piece_checks_its_arguments_before_sampling(steps, temperature, field):
    piece = generate.read_prompt(prompt_bytes(2), INFO)
    extender = FixedExtender(continuation(8))
    with pytest.raises(ArgumentError) as e:
        generate.extend_piece(extender, INFO, piece, steps, temperature)
    given = steps if field == "steps" else temperature
    assert e.value.field == field and e.value.value is given and str(e.value).startswith(f"{field} must be ")
    assert extender.calls == []


def test_the_argument_check_is_the_generation_engines():
    """One check for ``musicgen extend``, /v1/extend and the engine: musicgen.lstm's."""
    assert generate.check_extend_args is lstm.check_extend_args
    lstm.check_extend_args(1, 10)
    lstm.check_extend_args(np.int64(lstm.MAX_STEPS), 0.01)


# --- the meter: bar positions the engine feeds ---------------------------------------------------

def recording_extender(steps_per_beat):
    """An untrained LSTM Extender on a grid of ``steps_per_beat`` that records every step's inputs."""
    from musicgen.config import LSTMConfig

    class Recording(lstm.Extender):
        def step(self, x, state):
            self.fed.append(np.array(x))
            return super().step(x, state)

    cfg = LSTMConfig(layers=1, units=8, window=8, dropout=0.0, position=True, steps_per_bar=16)
    ext = Recording(cfg, steps_per_beat=steps_per_beat)
    ext.fed = []
    return ext


def fed_positions(ext) -> np.ndarray:
    """The position column of each step's one row (-1: none), prompt then continuation."""
    pos = np.concatenate(ext.fed)[:, 128:]
    assert (pos.sum(1) <= 1).all()
    return np.where(pos.any(1), pos.argmax(1), -1)


def test_a_prompt_in_three_four_continues_in_three_four():
    piece = generate.read_prompt(prompt_bytes(5), INFO)  # 3/4: 20 steps
    ext = recording_extender(4)
    roll, mid = generate.extend_piece(ext, INFO, piece, 30, seed=1)
    np.testing.assert_array_equal(fed_positions(ext), np.arange(20 + 30 - 1) % 12)  # bars of 12 steps
    assert read_midi(midi_bytes(mid), 4).time_signatures == [(0, 3, 4)]
    # A prompt that changes meter continues in its last one: 4/4 for 4 beats, then 6/8.
    changing = generate.read_prompt(in_meter([(0, 4, 4), (4, 6, 8)], 6), INFO)
    ext = recording_extender(4)
    generate.extend_piece(ext, INFO, changing, 20)
    np.testing.assert_array_equal(fed_positions(ext), [*range(16), *(np.arange(8 + 20 - 1) % 12)])
    # Without a time signature: 4/4 on the run's grid (2 steps per beat: bars of 8 steps).
    ext = recording_extender(2)
    generate.extend_piece(ext, {"steps_per_beat": 2}, generate.read_prompt(in_meter([], 3), {"steps_per_beat": 2}), 9)
    np.testing.assert_array_equal(fed_positions(ext), np.arange(6 + 9 - 1) % 8)
    # A grid in seconds has no beat: no position at all.
    ext = recording_extender(None)
    ext.extend(piece.roll, 5, time_signatures=piece.time_signatures)
    assert (fed_positions(ext) == -1).all()


def test_scoring_reads_the_pieces_positions_and_defaults_to_four_four_on_the_runs_grid():
    ext = recording_extender(4)
    roll = (np.random.default_rng(0).random((40, 128)) < 0.05).astype(np.float32)
    three_four = ext.positions(40, [(0, 3, 4)])
    np.testing.assert_array_equal(three_four, np.arange(40) % 12)
    default = ext.predict_next(roll, chunk=7)
    # other chunks: other matmul shapes, whose rounding oneDNN may choose differently under load
    # (6e-8 seen); another meter moves the probabilities by far more
    np.testing.assert_allclose(default, ext.predict_next(roll, positions=np.arange(40) % 16), rtol=0, atol=1e-6)
    waltz = ext.predict_next(roll, positions=three_four)
    assert not np.array_equal(default, waltz)
    x = lstm.features(roll[:-1], 0, ext.cfg, three_four)
    np.testing.assert_allclose(waltz, ext.model.predict([x[None], *ext.zero_state()], verbose=0)[0][0], atol=1e-6)


def test_a_run_is_extended_with_the_bar_positions_it_was_trained_on(tmp_path):
    """A run says whether its LSTM read each piece's meter (model/config.json ``bar_positions``);
    one that does not (every run before time signatures were read) counts steps from the start,
    so its continuations stay byte for byte what they were."""
    import json
    import shutil

    from dataclasses import replace

    from musicgen.config import LSTMConfig
    try:
        from tests.run_factory import random_rolls, write_dataset, write_run
    except ImportError:
        from run_factory import random_rolls, write_dataset, write_run

    data = write_dataset(str(tmp_path / "ds"), {"train": random_rolls(2)}, steps_per_beat=2)
    cfg = LSTMConfig(layers=1, units=8, window=8, dropout=0.0, position=True, steps_per_bar=16)
    write_run(str(tmp_path / "steps"), "lstm", replace(cfg, meter=False), data, tmp_path)
    steps, info = generate.load_extender(str(tmp_path / "steps"))
    assert info["bar_positions"] == "steps" and not steps.meter
    np.testing.assert_array_equal(steps.positions(30, [(0, 3, 4)]), np.arange(30))
    shutil.copytree(tmp_path / "steps", tmp_path / "old")  # a run from before: no bar_positions at all
    config = tmp_path / "old" / "model" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "bar_positions"}))
    old, info = generate.load_extender(str(tmp_path / "old"))
    assert "bar_positions" not in info and not old.meter
    np.testing.assert_array_equal(old.positions(30, [(0, 3, 4)]), np.arange(30))
    write_run(str(tmp_path / "new"), "lstm", cfg, data, tmp_path)
    new, info = generate.load_extender(str(tmp_path / "new"))
    assert info["bar_positions"] == generate.METER_POSITIONS and new.meter and new.steps_per_beat == 2
    np.testing.assert_array_equal(new.positions(30, [(0, 3, 4)]), np.arange(30) % 6)  # 3/4 on 2 per beat
    assert generate.bar_grid({"steps_per_beat": None, "steps_per_second": 50, "bar_positions": "meter"}) == \
        {"steps_per_beat": None, "meter": True}
