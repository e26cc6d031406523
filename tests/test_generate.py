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
    from tests.midi_factory import make_midi, off, on, tempo, timesig
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from midi_factory import make_midi, off, on, tempo, timesig

INFO = {"steps_per_beat": 4}


def prompt_bytes(beats: int = 2) -> bytes:
    """A prompt at 100 bpm in 3/4: C4 for ``beats`` beats (480 ticks per beat)."""
    return make_midi([[(0, tempo(100)), (0, timesig(3, 4)), (0, on(60, 100)), (480 * beats, off(60))]])


class FixedExtender:
    """An extender whose continuation is given; records what it was asked."""

    def __init__(self, continuation: np.ndarray):
        self.continuation, self.calls = continuation, []

    def extend(self, roll, steps, temperature=1.0, seeds=0):
        self.calls.append((roll, steps, temperature, seeds))
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
    assert extender.calls == [(piece.roll, 12, 0.7, 5)]
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
