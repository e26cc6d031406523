"""Tests of musicgen.midi: MIDI files <-> piano rolls, each rule with a hand-built file."""
from __future__ import annotations

import io
import time

import mido
import numpy as np
import pytest

from musicgen.errors import MidiError
from musicgen.midi import (MAX_STEPS, Piece, bar_positions, check_roll, midi_to_roll, read_midi, roll_notes,
                           roll_to_midi)

try:
    from tests.midi_factory import (end, in_meter, make_midi, make_midifile, messages, off, on, on0, pedal, raw_midi,
                                    smpte_division, tempo, timesig, to_bytes)
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from midi_factory import (end, in_meter, make_midi, make_midifile, messages, off, on, on0, pedal, raw_midi,
                              smpte_division, tempo, timesig, to_bytes)


# ------------------------------------------------------------------------------------------ helpers

def v(velocity: int) -> np.float32:
    """The roll value of a MIDI velocity."""
    return np.float32(velocity) / np.float32(127)


def expected_roll(n_rows: int, *notes) -> np.ndarray:
    """A (n_rows, 128) float32 roll with notes (first_row, end_row_exclusive, pitch, velocity)."""
    roll = np.zeros((n_rows, 128), dtype=np.float32)
    for r0, r1, pitch, vel in notes:
        roll[r0:r1, pitch] = v(vel)
    return roll


def assert_roll(got, expected):
    """Exact shape, dtype and sounding cells; values equal to float32 precision."""
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    sounding_got, sounding_exp = np.argwhere(got > 0), np.argwhere(expected > 0)
    assert np.array_equal(sounding_got, sounding_exp), (
        f"sounding cells differ:\n got      {sounding_got.tolist()}\n expected {sounding_exp.tolist()}")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def cells(roll, pitch):
    """{row: velocity} of one pitch column (velocity recovered as round(value * 127))."""
    col = roll[:, pitch]
    return {int(r): int(round(float(col[r]) * 127)) for r in np.nonzero(col)[0]}


# ------------------------------------------------------------------------------ 1. the time grid

def test_grid_whole_beats_and_values():
    data = make_midi([[(0, on(60, 100)), (480, off(60)), (480, on(64, 64)), (960, off(64)),
                       (960, on(67, 1)), (1440, off(67)), (1440, on(72, 127)), (1920, off(72))]])
    roll = midi_to_roll(data, 4)
    assert roll.dtype == np.float32 and roll.shape == (16, 128)
    assert_roll(roll, expected_roll(16, (0, 4, 60, 100), (4, 8, 64, 64), (8, 12, 67, 1), (12, 16, 72, 127)))
    assert roll[0, 60] == pytest.approx(100 / 127)
    assert roll[12, 72] == pytest.approx(1.0)
    assert roll[8, 67] == pytest.approx(1 / 127)


def test_grid_rounds_half_steps_up():
    # q=480, s=4: one row is 120 ticks. tick 60 -> 0.5 -> row 1; 300 -> 2.5 -> 3 (round half *up*,
    # not to even); 59 -> 0.49 -> 0; 181 -> 1.51 -> 2; 180 -> 1.5 -> 2.
    data = make_midi([[(60, on(60, 100)), (300, off(60)),
                       (59, on(62, 90)), (181, off(62)),
                       (180, on(64, 80)), (420, off(64)),  # 1.5 -> 2 .. 3.5 -> 4: rows 2, 3
                       (960, end())]])
    roll = midi_to_roll(data, 4)
    assert_roll(roll, expected_roll(8, (1, 3, 60, 100), (0, 2, 62, 90), (2, 4, 64, 80)))


def test_grid_half_steps_with_three_steps_per_beat():
    # q=480, s=3: one row is 160 ticks; tick 80 -> 0.5 -> 1, 400 -> 2.5 -> 3, 79 -> 0.49 -> 0.
    data = make_midi([[(80, on(60)), (400, off(60)), (79, on(61, 50)), (81, off(61)), (960, end())]])
    roll = midi_to_roll(data, 3)
    assert_roll(roll, expected_roll(6, (1, 3, 60, 100), (0, 1, 61, 50)))


def test_very_short_notes_get_one_row():
    data = make_midi([[(10, on(60, 100)), (20, off(60)),  # rows 0.08 .. 0.17 -> row 0
                       (50, on(62, 90)), (70, off(62)),  # 0.42 -> 0 .. 0.58 -> 1: row 0
                       (60, on(64, 80)), (60, off(64)),  # zero length at 0.5 -> row 1
                       (250, on(65, 70)), (290, off(65)),  # 2.08 -> 2 .. 2.42 -> 2: row 2
                       (480, end())]])
    roll = midi_to_roll(data, 4)
    assert_roll(roll, expected_roll(4, (0, 1, 60, 100), (0, 1, 62, 90), (1, 2, 64, 80), (2, 3, 65, 70)))


@pytest.mark.parametrize("q,s", [(480, 4), (480, 3), (96, 4), (96, 12), (10080, 4), (100, 3), (7, 2), (1024, 24)])
def test_grid_rule_random_notes(q, s):
    """Random non-overlapping notes (one per pitch) land exactly where the rule says."""
    rng = np.random.default_rng(q * 100 + s)
    events, expect = [], []
    end_tick = 0
    for pitch in rng.choice(128, size=40, replace=False):
        a = int(rng.integers(0, 20 * q))
        b = a + int(rng.integers(0, 3 * q))
        vel = int(rng.integers(1, 128))
        events += [(a, on(int(pitch), vel)), (b, off(int(pitch)))]
        r0 = (2 * a * s + q) // (2 * q)  # round half up, in integers
        r1 = max(r0 + 1, (2 * b * s + q) // (2 * q))
        expect.append((r0, r1, int(pitch), vel))
        end_tick = max(end_tick, b)
    n_rows = max(max(e[1] for e in expect), (2 * end_tick * s + q) // (2 * q))
    roll = midi_to_roll(make_midi([events], ticks_per_beat=q), s)
    assert_roll(roll, expected_roll(n_rows, *expect))


# ---------------------------------------------------------------- 2. tracks and channels merged

def test_tracks_and_channels_are_merged():
    data = make_midi([
        [(0, on(60, 100, channel=0)), (480, off(60, channel=0))],
        [(240, on(64, 80, channel=1)), (720, off(64, channel=1)), (960, end())],
    ])
    roll = midi_to_roll(data, 4)
    assert_roll(roll, expected_roll(8, (0, 4, 60, 100), (2, 6, 64, 80)))


def test_overlap_of_one_pitch_on_two_channels_louder_wins():
    data = make_midi([
        [(0, on(67, 50, channel=0)), (960, off(67, channel=0))],
        [(480, on(67, 110, channel=3)), (720, off(67, channel=3))],
    ])
    roll = midi_to_roll(data, 4)
    assert cells(roll, 67) == {0: 50, 1: 50, 2: 50, 3: 50, 4: 110, 5: 110, 6: 50, 7: 50}


def test_overlap_louder_first_still_wins():
    # Format 0, one track, two channels; the loud note comes first, the quiet one sits inside it.
    data = make_midi([[(0, on(70, 120, channel=0)), (240, on(70, 30, channel=1)),
                       (480, off(70, channel=1)), (960, off(70, channel=0))]], type=0)
    roll = midi_to_roll(data, 4)
    assert cells(roll, 70) == {r: 120 for r in range(8)}


def test_note_off_on_another_channel_does_not_end_a_note():
    data = make_midi([[(0, on(60, 50, channel=0)), (0, on(60, 100, channel=1)),
                       (240, off(60, channel=1)), (960, off(60, channel=0))]], type=0)
    roll = midi_to_roll(data, 4)
    assert cells(roll, 60) == {0: 100, 1: 100, **{r: 50 for r in range(2, 8)}}


def test_note_off_on_another_track_does_not_end_a_note():
    data = make_midi([
        [(0, on(60, 50)), (960, off(60))],
        [(0, on(60, 100)), (240, off(60))],
    ])
    roll = midi_to_roll(data, 4)
    assert cells(roll, 60) == {0: 100, 1: 100, **{r: 50 for r in range(2, 8)}}


# ------------------------------------------------------------------------------------- 3. drums

def test_drums_left_out_by_default_and_included_on_request():
    data = make_midi([[(0, on(36, 100, channel=9)), (480, off(36, channel=9)),
                       (0, on(60, 90, channel=0)), (480, off(60, channel=0)),
                       (480, on(38, 70, channel=9)), (960, off(38, channel=9))]], type=0)
    assert_roll(midi_to_roll(data, 4), expected_roll(8, (0, 4, 60, 90)))
    assert_roll(midi_to_roll(data, 4, drums=True),
                expected_roll(8, (0, 4, 60, 90), (0, 4, 36, 100), (4, 8, 38, 70)))


def test_drums_only_file_is_silent_but_keeps_its_length():
    data = make_midi([[(0, on(36, 100, channel=9)), (480, off(36, channel=9))]])
    assert_roll(midi_to_roll(data, 4), np.zeros((4, 128), np.float32))
    assert read_midi(data, 4).notes == 0
    assert read_midi(data, 4, drums=True).notes == 1


def test_channel_index_10_is_not_drums():
    data = make_midi([[(0, on(36, 100, channel=10)), (480, off(36, channel=10))]])
    assert_roll(midi_to_roll(data, 4), expected_roll(4, (0, 4, 36, 100)))


# ------------------------------------------------------------------------ 4. velocity 0 note-on

def test_note_on_velocity_zero_is_a_note_off():
    data = make_midi([[(0, on(60, 100)), (480, on0(60)), (960, end())]])
    assert_roll(midi_to_roll(data, 4), expected_roll(8, (0, 4, 60, 100)))
    assert read_midi(data, 4).notes == 1


def test_note_on_velocity_zero_with_nothing_sounding_is_ignored():
    data = make_midi([[(0, on0(60)), (480, on(60, 90)), (960, on0(60)), (1440, on0(60)), (1920, end())]])
    assert_roll(midi_to_roll(data, 4), expected_roll(16, (4, 8, 60, 90)))


# ------------------------------------------------------------ 5. overlaps, re-strikes, legato, strays

def test_restrike_ends_old_note_and_starts_new_with_its_velocity():
    data = make_midi([[(0, on(60, 100)), (480, on(60, 50)), (960, off(60)), (1440, end())]])
    piece = read_midi(data, 4)
    assert cells(piece.roll, 60) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 50, 5: 50, 6: 50, 7: 50}
    assert piece.roll.shape == (12, 128)
    assert piece.notes == 2


def test_restrike_at_same_velocity_is_a_held_note_in_the_roll():
    data = make_midi([[(0, on(60, 100)), (480, on(60, 100)), (960, off(60)), (1440, end())]])
    piece = read_midi(data, 4)
    assert cells(piece.roll, 60) == {r: 100 for r in range(8)}
    assert piece.notes == 2


def test_legato_on_new_then_off_old_at_one_tick_keeps_new_note():
    # A sequencer's legato repeat: at tick 480 "note_on 60" (new) then "note_off 60" (the old one).
    data = make_midi([[(0, on(60, 100)), (480, on(60, 50)), (480, off(60)), (960, off(60)), (1440, end())]])
    roll = midi_to_roll(data, 4)
    assert cells(roll, 60) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 50, 5: 50, 6: 50, 7: 50}
    assert roll.shape == (12, 128)


def test_legato_with_velocity_zero_note_on_as_the_off():
    data = make_midi([[(0, on(60, 100)), (480, on(60, 50)), (480, on0(60)), (960, on0(60)), (1440, end())]])
    assert cells(midi_to_roll(data, 4), 60) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 50, 5: 50, 6: 50, 7: 50}


def test_off_then_on_at_one_tick_is_two_notes():
    data = make_midi([[(0, on(60, 100)), (480, off(60)), (480, on(60, 50)), (960, off(60)), (1440, end())]])
    piece = read_midi(data, 4)
    assert cells(piece.roll, 60) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 50, 5: 50, 6: 50, 7: 50}
    assert piece.notes == 2


def test_restrike_without_same_tick_off_later_off_ends_new_note():
    # on, on (re-strike at 480), off at 720 ends the new note; the second off at 960 is stray.
    data = make_midi([[(0, on(60, 100)), (480, on(60, 50)), (720, off(60)), (960, off(60)), (1440, end())]])
    assert cells(midi_to_roll(data, 4), 60) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 50, 5: 50}


def test_stray_note_off_is_ignored():
    data = make_midi([[(0, off(62)), (240, off(60)), (480, on(62, 90)), (960, off(62)),
                       (1200, off(62)), (1440, end())]])
    piece = read_midi(data, 4)
    assert_roll(piece.roll, expected_roll(12, (4, 8, 62, 90)))
    assert piece.notes == 1


# ------------------------------------------------------------------------------ 6. end of the file

def test_note_never_switched_off_ends_at_end_of_longest_track():
    data = make_midi([
        [(0, on(60, 100)), (480, end())],  # never switched off; this track ends at 480
        [(0, on(64, 80)), (240, off(64)), (1920, end())],  # the longest track ends at 1920
    ])
    roll = midi_to_roll(data, 4)
    assert_roll(roll, expected_roll(16, (0, 16, 60, 100), (0, 2, 64, 80)))


def test_note_never_switched_off_format_0():
    data = make_midi([[(240, on(60, 100)), (1000, end())]], type=0)  # 1000 ticks -> 8.33 -> 8 rows
    assert_roll(midi_to_roll(data, 4), expected_roll(8, (2, 8, 60, 100)))


def test_note_never_switched_off_at_the_very_end_gets_one_row():
    data = make_midi([[(0, on(60, 100)), (480, off(60)), (480, on(64, 90))]])  # on at the last tick
    assert_roll(midi_to_roll(data, 4), expected_roll(5, (0, 4, 60, 100), (4, 5, 64, 90)))


def test_trailing_silence_is_kept_from_end_of_track():
    data = make_midi([[(0, on(60, 100)), (480, off(60)), (1920, end())]])
    assert_roll(midi_to_roll(data, 4), expected_roll(16, (0, 4, 60, 100)))


# ------------------------------------------------------------------------ 7. tempo and time signature

NOTES = [(0, on(60, 100)), (480, off(60)), (960, on(64, 90)), (1920, off(64)), (2400, on(67, 80)), (2880, off(67))]


def test_tempo_changes_do_not_move_notes():
    plain = make_midi([NOTES])
    with_tempi = make_midi([NOTES + [(0, tempo(100)), (960, tempo(60)), (1200, tempo(200)), (2500, tempo(33))]])
    assert_roll(midi_to_roll(with_tempi, 4), midi_to_roll(plain, 4))
    assert_roll(midi_to_roll(with_tempi, 4),
                expected_roll(24, (0, 4, 60, 100), (8, 16, 64, 90), (20, 24, 67, 80)))


def test_tempo_map_and_time_signatures_in_rows():
    data = make_midi([
        [(0, tempo(100)), (960, tempo(60)), (0, timesig(3, 4)), (1920, timesig(6, 8)), (2880, end())],
        NOTES,
    ])
    piece = read_midi(data, 4)
    assert isinstance(piece, Piece)
    assert piece.steps_per_beat == 4
    assert [(r, pytest.approx(b)) for r, b in piece.tempos] == [(0, 100.0), (8, 60.0)]
    assert [r for r, _ in piece.tempos] == [0, 8]
    assert piece.time_signatures == [(0, 3, 4), (16, 6, 8)]
    piece2 = read_midi(data, 2)
    assert [r for r, _ in piece2.tempos] == [0, 4]
    assert piece2.time_signatures == [(0, 3, 4), (8, 6, 8)]
    piece_ticks = read_midi(data, None)
    assert [r for r, _ in piece_ticks.tempos] == [0, 960]
    assert piece_ticks.time_signatures == [(0, 3, 4), (1920, 6, 8)]


def test_default_tempo_is_120_and_no_time_signature():
    piece = read_midi(make_midi([NOTES]), 4)
    assert piece.tempos == [(0, 120.0)]
    assert piece.time_signatures == []


def test_tempo_after_start_keeps_default_120_at_row_0():
    piece = read_midi(make_midi([NOTES + [(960, tempo(90))]]), 4)
    assert [r for r, _ in piece.tempos] == [0, 8]
    assert piece.tempos[0][1] == pytest.approx(120.0)
    assert piece.tempos[1][1] == pytest.approx(90.0, abs=1e-3)


def test_repeated_tempo_drops_out_and_last_at_one_row_wins():
    data = make_midi([NOTES + [(0, tempo(100)), (480, tempo(100)), (960, tempo(80)), (961, tempo(70))]])
    piece = read_midi(data, 4)
    assert [r for r, _ in piece.tempos] == [0, 8]
    assert piece.tempos[0][1] == pytest.approx(100.0)
    assert piece.tempos[1][1] == pytest.approx(70.0, abs=1e-3)


def test_bar_positions_follow_the_pieces_time_signatures_on_its_grid():
    """A bar of n/d is n x steps_per_beat x 4 / d steps, restarted at every change; none: 4/4."""
    three_four = read_midi(in_meter([(0, 3, 4)], 6), 4)
    np.testing.assert_array_equal(bar_positions(4, three_four.time_signatures, 30), np.arange(30) % 12)
    six_eight = read_midi(in_meter([(0, 6, 8)], 6), 2)  # 6 eighths on an eighth-note grid: 6 steps
    np.testing.assert_array_equal(bar_positions(2, six_eight.time_signatures, 14), np.arange(14) % 6)
    # 4/4 for two bars, then 3/4 from beat 8, then 6/8 from beat 10.5: the 3/4 bar is cut short
    change = read_midi(in_meter([(0, 4, 4), (8, 3, 4), (10.5, 6, 8)], 16), 2)
    assert change.time_signatures == [(0, 4, 4), (16, 3, 4), (21, 6, 8)]
    np.testing.assert_array_equal(bar_positions(2, change.time_signatures, 30),
                                  [*range(8), *range(8), 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0, 1, 2])
    plain = read_midi(in_meter([], 3), 1)  # no time signature: MIDI's 4/4
    assert plain.time_signatures == []
    np.testing.assert_array_equal(bar_positions(1, plain.time_signatures, 9), [0, 1, 2, 3, 0, 1, 2, 3, 0])
    # A bar of a fractional number of steps is laid exactly: 7/8 at 1 step per beat is 3.5 steps.
    np.testing.assert_array_equal(bar_positions(1, [(0, 7, 8)], 8), [0, 1, 2, 3, 0, 1, 2, 0])
    # A grid without beats (seconds, ticks): no position at all.
    np.testing.assert_array_equal(bar_positions(None, [(0, 3, 4)], 3), [-1, -1, -1])
    # A time signature no bar can have (a corrupt file) is dropped on reading.
    odd = read_midi(make_midi([[(0, timesig(3, 4)), (0, on(60)), (960, timesig(0, 4)), (1920, off(60))]]), 4)
    assert odd.time_signatures == [(0, 3, 4)]


def test_roll_to_midi_writes_tempo_map_and_time_signatures():
    roll = expected_roll(32, (0, 4, 60, 100), (8, 16, 64, 90))
    mid = roll_to_midi(roll, 4, tempos=[(0, 100.0), (8, 60.0)], time_signatures=[(0, 3, 4), (16, 6, 8)])
    assert mid.type == 0 and len(mid.tracks) == 1 and mid.ticks_per_beat == 480
    tempos = [(t, m.tempo) for t, m in messages(mid, {"set_tempo"})]
    assert tempos == [(0, 600000), (960, 1000000)]
    sigs = [(t, m.numerator, m.denominator) for t, m in messages(mid, {"time_signature"})]
    assert sigs == [(0, 3, 4), (1920, 6, 8)]
    # written to bytes and read back: the same maps and roll
    back = read_midi(to_bytes(mid), 4)
    assert back.tempos == [(0, 100.0), (8, 60.0)]
    assert back.time_signatures == [(0, 3, 4), (16, 6, 8)]
    assert_roll(back.roll, roll)


def test_roll_to_midi_single_bpm():
    mid = roll_to_midi(expected_roll(8, (0, 4, 60, 100)), 4, bpm=90)
    assert [(t, m.tempo) for t, m in messages(mid, {"set_tempo"})] == [(0, mido.bpm2tempo(90))]
    assert messages(mid, {"time_signature"}) == []


def test_piece_tempo_map_survives_a_round_trip():
    data = make_midi([[(0, tempo(100)), (960, tempo(60)), (0, timesig(3, 4)), (1920, timesig(6, 8))], NOTES])
    piece = read_midi(data, 4)
    mid = roll_to_midi(piece.roll, 4, tempos=piece.tempos, time_signatures=piece.time_signatures)
    back = read_midi(to_bytes(mid), 4)
    assert back.tempos == piece.tempos
    assert back.time_signatures == piece.time_signatures
    assert_roll(back.roll, piece.roll)


# --------------------------------------------------------------------------------- 8. sustain pedal

def test_sustain_pedal_ignored_by_default_and_honoured_on_request():
    data = make_midi([[(0, pedal(True)), (0, on(60, 100)), (480, off(60)), (1440, pedal(False)), (1920, end())]])
    assert_roll(midi_to_roll(data, 4), expected_roll(16, (0, 4, 60, 100)))
    assert_roll(midi_to_roll(data, 4, sustain=True), expected_roll(16, (0, 12, 60, 100)))


def test_sustain_only_extends_notes_released_while_pedal_is_down():
    data = make_midi([[
        (0, on(62, 90)), (240, off(62)),  # released before the pedal goes down: unchanged
        (480, pedal(True)),
        (480, on(60, 100)), (720, off(60)),  # released under the pedal: until pedal up at 1440
        (0, on(64, 80)), (1680, off(64)),  # still held at pedal up: ends at its own off
        (1440, pedal(False)),
        (1440, on(65, 70)), (1560, off(65)),  # struck after pedal up: unchanged
        (1920, end()),
    ]])
    roll = midi_to_roll(data, 4, sustain=True)
    assert_roll(roll, expected_roll(16, (0, 2, 62, 90), (4, 12, 60, 100), (0, 14, 64, 80), (12, 13, 65, 70)))


def test_sustain_threshold_is_64():
    def file(value):
        return make_midi([[(0, pedal(True, value=value)), (0, on(60, 100)), (480, off(60)),
                           (960, pedal(False)), (1920, end())]])

    assert cells(midi_to_roll(file(63), 4, sustain=True), 60) == {r: 100 for r in range(4)}
    assert cells(midi_to_roll(file(64), 4, sustain=True), 60) == {r: 100 for r in range(8)}


def test_sustain_pedal_is_per_channel():
    data = make_midi([[(0, pedal(True, channel=1)), (0, on(60, 100, channel=0)), (480, off(60, channel=0)),
                       (0, on(64, 90, channel=1)), (480, off(64, channel=1)),
                       (1440, pedal(False, channel=1)), (1920, end())]], type=0)
    roll = midi_to_roll(data, 4, sustain=True)
    assert_roll(roll, expected_roll(16, (0, 4, 60, 100), (0, 12, 64, 90)))


def test_restrike_during_pedal():
    data = make_midi([[(0, pedal(True)), (0, on(60, 100)), (480, off(60)),
                       (960, on(60, 50)), (1200, off(60)),  # struck again under the pedal
                       (1920, pedal(False)), (2400, end())]])
    roll = midi_to_roll(data, 4, sustain=True)
    assert cells(roll, 60) == {**{r: 100 for r in range(8)}, **{r: 50 for r in range(8, 16)}}
    assert roll.shape == (20, 128)
    assert read_midi(data, 4, sustain=True).notes == 2


def test_pedal_held_to_the_end_sustains_to_the_end():
    data = make_midi([[(0, pedal(True)), (0, on(60, 100)), (480, off(60)), (1920, end())]])
    assert cells(midi_to_roll(data, 4, sustain=True), 60) == {r: 100 for r in range(16)}


# ------------------------------------------------------------------------------------------ 9. SMPTE

def test_smpte_division_header_bytes():
    division = smpte_division(25, 40)
    assert division == -(25 << 8) + 40
    data = make_midi([[(0, on(60)), (1000, off(60))]], ticks_per_beat=division)
    assert data[12:14] == b"\xe7\x28"
    assert mido.MidiFile(file=io.BytesIO(data)).ticks_per_beat == division


def test_smpte_time_on_the_grid_at_nominal_120_bpm():
    # 25 fps x 40 ticks/frame = 1000 ticks per second; at the nominal 120 bpm a beat is 500 ticks.
    data = make_midi([[(0, tempo(60)),  # ignored: SMPTE time is in seconds
                       (0, on(60, 100)), (1000, off(60)),  # 1 s = 2 beats = 8 rows
                       (250, on(64, 80)), (500, off(64)),  # 0.25 .. 0.5 s = rows 2, 3
                       (1000, end())]], ticks_per_beat=smpte_division(25, 40))
    piece = read_midi(data, 4)
    assert_roll(piece.roll, expected_roll(8, (0, 8, 60, 100), (2, 4, 64, 80)))
    assert piece.tempos == [(0, 120.0)]


def test_smpte_30_fps_and_29_97_drop_frame():
    # 30 fps x 80 = 2400 ticks/s: a beat (0.5 s) is 1200 ticks.
    data = make_midi([[(0, on(60, 100)), (2400, off(60))]], ticks_per_beat=smpte_division(30, 80))
    assert_roll(midi_to_roll(data, 4), expected_roll(8, (0, 8, 60, 100)))
    # "29" means 29.97 fps: x 100 = 2997 ticks/s, a beat is 1498.5 ticks.
    data = make_midi([[(0, on(60, 100)), (2997, off(60)), (2997, on(62, 90)), (2997 + 749, off(62))]],
                     ticks_per_beat=smpte_division(29, 100))
    assert_roll(midi_to_roll(data, 4), expected_roll(10, (0, 8, 60, 100), (8, 10, 62, 90)))


def test_smpte_with_zero_ticks_per_frame_is_an_error():
    data = make_midi([[(0, on(60)), (1000, off(60))]], ticks_per_beat=smpte_division(25, 0))
    assert data[12:14] == b"\xe7\x00"
    with pytest.raises(MidiError, match="smpte.mid"):
        read_midi(data, 4, name="smpte.mid")


# ---------------------------------------------------------------------------------------- 10. formats

TWO_TRACKS = [
    [(0, on(60, 100)), (480, off(60)), (960, end())],
    [(0, tempo(90)), (0, on(64, 80)), (480, off(64)), (480, end())],
]


def test_format_0():
    data = make_midi([[(0, on(60, 100, channel=0)), (480, off(60, channel=0)),
                       (240, on(64, 80, channel=5)), (720, off(64, channel=5))]], type=0)
    assert mido.MidiFile(file=io.BytesIO(data)).type == 0
    assert_roll(midi_to_roll(data, 4), expected_roll(6, (0, 4, 60, 100), (2, 6, 64, 80)))


def test_format_1_plays_tracks_together():
    piece = read_midi(make_midi(TWO_TRACKS, type=1), 4)
    assert_roll(piece.roll, expected_roll(8, (0, 4, 60, 100), (0, 4, 64, 80)))
    assert [r for r, _ in piece.tempos] == [0]
    assert piece.tempos[0][1] == pytest.approx(90.0, abs=1e-3)


def test_format_2_plays_tracks_one_after_another():
    data = make_midi(TWO_TRACKS, type=2)
    assert mido.MidiFile(file=io.BytesIO(data)).type == 2
    piece = read_midi(data, 4)
    assert_roll(piece.roll, expected_roll(12, (0, 4, 60, 100), (8, 12, 64, 80)))
    assert [r for r, _ in piece.tempos] == [0, 8]  # the second sequence's tempo starts at its start
    assert piece.tempos[1][1] == pytest.approx(90.0, abs=1e-3)


# ----------------------------------------------------------------------------- 11. one row per tick

def test_steps_per_beat_none_gives_one_row_per_tick():
    data = make_midi([[(10, on(60, 100)), (25, off(60)), (12, on(61, 90)), (12, off(61)), (30, end())]],
                     ticks_per_beat=96)
    piece = read_midi(data, None)
    assert piece.steps_per_beat is None
    assert_roll(piece.roll, expected_roll(30, (10, 25, 60, 100), (12, 13, 61, 90)))


def test_roll_to_midi_steps_per_beat_none_one_tick_per_row():
    roll = expected_roll(30, (10, 25, 60, 100))
    mid = roll_to_midi(roll, None)
    notes = [(t, m.type, m.note) for t, m in messages(mid, {"note_on", "note_off"})]
    assert notes == [(10, "note_on", 60), (25, "note_off", 60)]
    assert_roll(midi_to_roll(to_bytes(mid), None), roll)


# -------------------------------------------------------------------------------------- 12. round trip

def random_grid_roll(rng, n_rows: int, n_pitches: int = 24, trailing: int = 0) -> np.ndarray:
    """A roll of runs (velocity 1..127, sometimes changing mid-run) on random pitches."""
    vel = np.zeros((n_rows + trailing, 128), dtype=np.int64)
    for pitch in rng.choice(128, size=n_pitches, replace=False):
        row = int(rng.integers(0, 4))
        while row < n_rows:
            length = int(rng.integers(1, 9))
            vel[row:min(row + length, n_rows), pitch] = rng.integers(1, 128)
            row += length + int(rng.integers(0, 5))  # gap 0 = adjacent note, possibly a new velocity
    return vel.astype(np.float32) / np.float32(127)


@pytest.mark.parametrize("s", [1, 2, 4, 12])
@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_rolls(s, seed):
    rng = np.random.default_rng(1000 * s + seed)
    roll = random_grid_roll(rng, n_rows=int(rng.integers(10, 120)), trailing=int(rng.integers(0, 7)))
    mid = roll_to_midi(roll, s)
    back_direct = midi_to_roll(mid, s)
    back = midi_to_roll(to_bytes(mid), s)
    for got in (back_direct, back):
        assert got.dtype == np.float32 and got.shape == roll.shape  # trailing silence kept
        assert np.abs(got - roll).max() <= 1 / 127
        assert np.array_equal(np.rint(got * 127), np.rint(roll * 127))


@pytest.mark.parametrize("s,ticks_per_beat", [(None, 480), (4, 96), (12, 96), (3, 480), (8, 10080)])
def test_round_trip_other_resolutions(s, ticks_per_beat):
    roll = random_grid_roll(np.random.default_rng(7), n_rows=64, trailing=3)
    back = midi_to_roll(to_bytes(roll_to_midi(roll, s, ticks_per_beat=ticks_per_beat)), s)
    assert back.shape == roll.shape
    assert np.array_equal(np.rint(back * 127), np.rint(roll * 127))


def test_round_trip_off_grid_values_within_velocity_rounding():
    roll = np.zeros((8, 128), np.float32)
    roll[0:3, 60] = 0.5  # 63.5 -> velocity 64
    roll[3:8, 61] = 0.001  # tiny but sounding: velocity 1
    roll[:, 62] = np.linspace(0.1, 1.0, 8)  # a crescendo: a new note every row
    back = midi_to_roll(roll_to_midi(roll, 4), 4)
    assert back.shape == roll.shape
    assert np.abs(back - roll).max() <= 1 / 127
    assert np.array_equal(back > 0, roll > 0)


def test_round_trip_trailing_silence():
    roll = expected_roll(20, (0, 2, 60, 100))
    mid = roll_to_midi(roll, 4)
    assert messages(mid, {"end_of_track"})[-1][0] == 20 * 120
    assert_roll(midi_to_roll(to_bytes(mid), 4), roll)


@pytest.mark.parametrize("n_rows", [0, 1, 10])
def test_round_trip_silent_rolls(n_rows):
    roll = np.zeros((n_rows, 128), np.float32)
    mid = roll_to_midi(roll, 4)
    assert messages(mid, {"note_on", "note_off"}) == []
    back = midi_to_roll(to_bytes(mid), 4)
    assert back.dtype == np.float32 and back.shape == (n_rows, 128)
    assert not back.any()


def test_round_trip_note_at_last_row_and_full_range():
    roll = np.zeros((5, 128), np.float32)
    roll[4, 0] = v(127)
    roll[4, 127] = v(1)
    roll[:, 64] = v(64)
    assert_roll(midi_to_roll(roll_to_midi(roll, 4), 4), roll)


# ------------------------------------------------------------- 13. roll_to_midi notes and messages

def test_roll_to_midi_value_change_inside_run_starts_a_new_note():
    roll = expected_roll(6, (0, 2, 60, 100), (2, 4, 60, 50), (0, 4, 64, 90))
    mid = roll_to_midi(roll, 4)
    notes = [(t, m.type, m.note, m.velocity, m.channel) for t, m in messages(mid, {"note_on", "note_off"})]
    assert notes == [
        (0, "note_on", 60, 100, 0),
        (0, "note_on", 64, 90, 0),
        (240, "note_off", 60, 0, 0),  # the old note ends before the new one starts
        (240, "note_on", 60, 50, 0),
        (480, "note_off", 60, 0, 0),
        (480, "note_off", 64, 0, 0),
    ]
    assert messages(mid, {"end_of_track"})[-1][0] == 720
    assert [(t, m.program) for t, m in messages(mid, {"program_change"})] == [(0, 0)]


def test_roll_to_midi_program_and_ticks_per_beat():
    mid = roll_to_midi(expected_roll(4, (1, 3, 60, 100)), 2, ticks_per_beat=96, program=40)
    assert mid.ticks_per_beat == 96
    assert [(t, m.program) for t, m in messages(mid, {"program_change"})] == [(0, 40)]
    assert [(t, m.type) for t, m in messages(mid, {"note_on", "note_off"})] == [(48, "note_on"), (144, "note_off")]


def test_roll_notes():
    roll = expected_roll(6, (0, 2, 60, 100), (2, 4, 60, 50), (5, 6, 60, 50), (1, 6, 0, 127))
    assert roll_notes(roll).tolist() == [[1, 6, 0, 127], [0, 2, 60, 100], [2, 4, 60, 50], [5, 6, 60, 50]]
    assert roll_notes(np.zeros((0, 128), np.float32)).shape == (0, 4)


# ------------------------------------------------------------------------------------------ 14. sources

def test_sources_give_the_same_roll(tmp_path):
    data = make_midi([[(0, on(60, 100)), (480, off(60))], [(240, on(64, 80)), (960, off(64))]])
    path = tmp_path / "song.mid"
    path.write_bytes(data)
    expected = expected_roll(8, (0, 4, 60, 100), (2, 8, 64, 80))
    for src in (str(path), path, data, bytearray(data), memoryview(data), mido.MidiFile(str(path)),
                mido.MidiFile(file=io.BytesIO(data)), io.BytesIO(data)):
        assert_roll(midi_to_roll(src, 4), expected)


def test_unsupported_source_type():
    with pytest.raises(TypeError):
        midi_to_roll(12345, 4)


# ------------------------------------------------------------------------------------------ 15. errors

def test_nonexistent_path(tmp_path):
    path = tmp_path / "missing.mid"
    for src in (path, str(path)):
        with pytest.raises(MidiError) as err:
            midi_to_roll(src)
        assert isinstance(err.value, ValueError)
        assert str(path) in str(err.value)


def test_directory(tmp_path):
    with pytest.raises(MidiError) as err:
        midi_to_roll(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a MIDI file\n" * 10)
    with pytest.raises(MidiError) as err:
        midi_to_roll(path)
    assert "notes.txt" in str(err.value)


@pytest.mark.parametrize("cut", [1, 5, 10, 13, 20, -1, -4])
def test_truncated_file(tmp_path, cut):
    data = make_midi([NOTES])
    path = tmp_path / "cut.mid"
    path.write_bytes(data[:cut])
    with pytest.raises(MidiError) as err:
        midi_to_roll(path)
    assert "cut.mid" in str(err.value)
    with pytest.raises(MidiError, match="given-name"):
        midi_to_roll(data[:cut], name="given-name")


def test_empty_bytes():
    with pytest.raises(MidiError) as err:
        midi_to_roll(b"")
    assert "<bytes>" in str(err.value)
    with pytest.raises(MidiError, match="empty.mid"):
        midi_to_roll(b"", name="empty.mid")


def test_zero_ticks_per_beat(tmp_path):
    data = make_midi([NOTES], ticks_per_beat=0)
    assert data[12:14] == b"\x00\x00"
    path = tmp_path / "zero.mid"
    path.write_bytes(data)
    with pytest.raises(MidiError, match="zero.mid"):
        midi_to_roll(path)


def test_name_overrides_path_in_errors(tmp_path):
    with pytest.raises(MidiError) as err:
        midi_to_roll(tmp_path / "missing.mid", name="my song")
    assert "my song" in str(err.value)
    assert err.value.source == "my song"


def test_roll_longer_than_max_steps(tmp_path):
    # a delta time of 2**28 - 1 ticks (the largest four-byte one): 2.24M rows at q=480, s=4
    data = make_midi([[(0, on(60)), (0x0FFFFFFF, off(60))]])
    path = tmp_path / "long.mid"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(MidiError, match="long.mid"):
        midi_to_roll(path, 4)
    assert time.perf_counter() - t0 < 1.0
    assert (0x0FFFFFFF * 4 + 240) // 480 > MAX_STEPS


def test_max_steps_argument():
    data = make_midi([[(0, on(60)), (960, off(60))]])  # 8 rows
    assert midi_to_roll(data, 4, max_steps=8).shape == (8, 128)
    with pytest.raises(MidiError, match="tiny"):
        midi_to_roll(data, 4, max_steps=7, name="tiny")


@pytest.mark.parametrize("n_bytes", [8, 9, 10, 12, 40])
def test_absurd_delta_time_is_a_midi_error(n_bytes):
    # A corrupt variable-length delta of many 0xFF bytes claims 2**56 .. 2**287 ticks; mido reads it
    # as a Python int. It must give a MidiError naming the file, not an overflow.
    delta = b"\xff" * n_bytes + b"\x7f"
    for track in (b"\x00\x90\x3c\x64" + delta + b"\x80\x3c\x00" + b"\x00\xff\x2f\x00",  # note on, off
                  b"\x00\x90\x3c\x64" + delta + b"\xff\x2f\x00",  # never switched off
                  delta + b"\xff\x2f\x00"):  # no notes at all, just a long silence
        for s in (4, None):
            with pytest.raises(MidiError, match="absurd.mid"):
                midi_to_roll(raw_midi(track), s, name="absurd.mid")


def test_zero_tempo_is_a_roll_or_a_midi_error():
    # set_tempo with 0 microseconds per beat is meaningless; it must not crash the reader.
    data = make_midi([[(0, mido.MetaMessage("set_tempo", tempo=0)), (0, on(60)), (480, off(60))]])
    try:
        piece = read_midi(data, 4, name="zero-tempo.mid")
    except MidiError as e:
        assert "zero-tempo.mid" in str(e)
    else:
        assert_roll(piece.roll, expected_roll(4, (0, 4, 60, 100)))
        assert all(np.isfinite(b) and b > 0 for _, b in piece.tempos)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4"])
def test_bad_steps_per_beat_reading(bad):
    data = make_midi([NOTES])
    with pytest.raises(ValueError, match="steps_per_beat"):
        midi_to_roll(data, bad)
    with pytest.raises(ValueError, match="steps_per_beat"):
        read_midi(data, bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_steps_per_beat_writing(bad):
    with pytest.raises(ValueError, match="steps_per_beat"):
        roll_to_midi(expected_roll(4, (0, 4, 60, 100)), bad)


@pytest.mark.parametrize("bad", [0, -480, 40000])
def test_bad_ticks_per_beat_writing(bad):
    # 0 would write a file with every event at tick 0 and a header this reader rejects; a header
    # holds a 15-bit positive division, so 40000 cannot be written either.
    with pytest.raises(ValueError, match="ticks_per_beat"):
        roll_to_midi(expected_roll(4, (0, 4, 60, 100)), 4, ticks_per_beat=bad)


@pytest.mark.parametrize("bad_bpm", [0, -120, float("nan"), float("inf")])
def test_bad_bpm(bad_bpm):
    with pytest.raises(ValueError, match="bpm"):
        roll_to_midi(expected_roll(4, (0, 4, 60, 100)), 4, bpm=bad_bpm)


def bad_rolls():
    ok = np.zeros((4, 128), np.float32)
    nan, inf, big, neg = ok.copy(), ok.copy(), ok.copy(), ok.copy()
    nan[1, 60] = np.nan
    inf[1, 60] = np.inf
    big[1, 60] = 1.01
    neg[1, 60] = -0.5
    return {
        "1d": np.zeros(128, np.float32),
        "127 columns": np.zeros((4, 127), np.float32),
        "129 columns": np.zeros((4, 129), np.float32),
        "3d": np.zeros((2, 4, 128), np.float32),
        "nan": nan, "inf": inf, "above 1": big, "negative": neg,
        "strings": np.full((4, 128), "x"),
    }


@pytest.mark.parametrize("case", list(bad_rolls()))
def test_bad_rolls(case):
    roll = bad_rolls()[case]
    with pytest.raises(ValueError, match="roll"):
        check_roll(roll)
    with pytest.raises(ValueError, match="roll"):
        roll_to_midi(roll, 4)
    with pytest.raises(ValueError, match="generated"):
        check_roll(roll, "generated")


def test_check_roll_accepts_and_converts():
    assert check_roll(np.zeros((3, 128), np.float64)).dtype == np.float32
    assert check_roll(np.ones((3, 128), bool)).dtype == np.float32
    assert check_roll(np.zeros((0, 128))).shape == (0, 128)
    assert check_roll([[0.0] * 128, [1.0] * 128]).shape == (2, 128)


# -------------------------------------------------------------------------------------------- 16. fuzz

CHORALES = ["bach/bwv66.6", "bach/bwv7.7", "bach/bwv26.6", "bach/bwv38.6", "bach/bwv269"]
# flip/truncate/duplicate/delete/mixed mostly break the chunk structure (-> MidiError); the last three
# keep it intact (data bytes stay < 0x80, track lengths are fixed up) so that weird but readable
# events (odd delta times, notes, velocities, pedal, meta lengths) reach the roll builder.
FUZZ_KINDS = ["flip", "truncate", "duplicate", "delete", "mixed", "flip7", "splice", "splice+flip7"]
CASES_PER_FILE_AND_KIND = 8  # 5 chorales x 8 kinds x 8 = 320 cases


def split_chunks(data: bytes):
    """(name, body) of each chunk of a well-formed file (the header chunk first)."""
    chunks, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        chunks.append((data[pos:pos + 4], bytearray(data[pos + 8:pos + 8 + size])))
        pos += 8 + size
    return chunks


def join_chunks(chunks) -> bytes:
    return b"".join(name + len(body).to_bytes(4, "big") + bytes(body) for name, body in chunks)


@pytest.fixture(scope="session")
def chorale_bytes(tmp_path_factory):
    """Real MIDI files: five Bach chorales written by music21 (its corpus ships with it)."""
    corpus = pytest.importorskip("music21.corpus")
    folder = tmp_path_factory.mktemp("chorales")
    out = []
    for name in CHORALES:
        path = folder / (name.replace("/", "_") + ".mid")
        corpus.parse(name).write("midi", fp=str(path))
        out.append(path.read_bytes())
    return out


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    n = len(b)
    if kind == "flip":  # overwrite 1-8 bytes at random positions with random values
        for pos in rng.integers(0, n, size=int(rng.integers(1, 9))):
            b[pos] = int(rng.integers(0, 256))
    elif kind == "truncate":
        b = b[:int(rng.integers(0, n))]
    elif kind == "duplicate":
        i = int(rng.integers(0, n))
        j = min(n, i + int(rng.integers(1, 64)))
        k = int(rng.integers(0, n))
        b[k:k] = b[i:j]
    elif kind == "delete":
        i = int(rng.integers(0, n))
        del b[i:i + int(rng.integers(1, 64))]
    elif kind == "mixed":  # two or three of the above
        for sub in rng.choice(FUZZ_KINDS[:4], size=int(rng.integers(2, 4))):
            b = bytearray(mutate(bytes(b), str(sub), rng))
            if not b:
                break
    elif kind == "flip7":  # 1-4 track bytes (not the header) get random values below 0x80
        for pos in rng.integers(14, n, size=int(rng.integers(1, 5))):
            if b[pos] < 0x80:
                b[pos] = int(rng.integers(0, 128))
    elif kind == "splice":  # delete or duplicate a range inside one track, fix its length
        chunks = split_chunks(data)
        t = int(rng.integers(1, len(chunks)))
        body = chunks[t][1]
        i = int(rng.integers(0, len(body)))
        j = min(len(body), i + int(rng.integers(1, 24)))
        if rng.random() < 0.5:
            del body[i:j]
        else:
            body[i:i] = body[i:j]
        b = bytearray(join_chunks(chunks))
    else:  # splice+flip7
        b = bytearray(mutate(mutate(data, "splice", rng), "flip7", rng))
    return bytes(b)


def test_chorales_read(chorale_bytes):
    for data in chorale_bytes:
        piece = read_midi(data, 4)
        assert piece.roll.shape[0] > 16 and piece.notes > 20
        assert piece.roll.max() > 0
        assert piece.time_signatures  # music21 writes one


def fast_path_differs(data: bytes, sustain: bool) -> str | None:
    """What is wrong if read_midi's fast path reads ``data`` otherwise than mido does."""
    from musicgen.midi import _events, _fast_events

    fast = _fast_events(data, sustain)
    if fast is None:  # left to mido
        return None
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        return f"the fast path read a file mido refuses ({type(e).__name__}: {e})"
    events = _events(mid, sustain)
    if fast[:2] != (mid.ticks_per_beat, events):
        return "the fast path read other events than mido"
    if fast[2] != sum(e[3] == 1 for e in events[0]):  # musicgen.midi._NOTE_ON
        return "the fast path counted other note-ons than mido's events hold"
    division, (kept, tempos, sigs, end), ons = _fast_events(data, sustain, keep=False)
    if (division, kept, tempos, sigs, end, ons) != (fast[0], [], *fast[1][1:], fast[2]):
        return "counting without keeping events read otherwise than reading them"
    return None


def test_fast_path_reads_real_files_as_mido_does(chorale_bytes):
    """read_midi parses plain files itself (mido's message objects are most of its time) and
    leaves the rest to mido: on real files it must take the fast path and agree with mido."""
    from musicgen.midi import _fast_events

    for data in chorale_bytes:
        for sustain in (False, True):
            assert _fast_events(data, sustain) is not None
            assert fast_path_differs(data, sustain) is None
    # Running status (note-ons without their status byte), a sysex and a text meta message.
    track = (b"\x00\x90\x3c\x40" b"\x10\x3e\x40" b"\x00\xf0\x03\x7e\x01\xf7" b"\x00\xff\x01\x02hi"
             b"\x10\x80\x3c\x00" b"\x00\x3e\x00" b"\x00\xff\x2f\x00")
    data = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk" + len(track).to_bytes(4, "big") + track
    assert _fast_events(data, False) is not None and fast_path_differs(data, False) is None
    assert read_midi(data, 4).notes == 2
    # What the fast path leaves to mido: running status after a sysex, a system message.
    for odd in (b"\x00\xf0\x01\xf7\x00\x3c", b"\x00\xf8"):
        bad = track[:-4] + odd + track[-4:]
        assert _fast_events(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk" + len(bad).to_bytes(4, "big") + bad,
                            False) is None


@pytest.mark.parametrize("kind", FUZZ_KINDS)
@pytest.mark.parametrize("which", range(len(CHORALES)))
def test_fuzz_gives_roll_or_midi_error(chorale_bytes, which, kind):
    rng = np.random.default_rng([which, FUZZ_KINDS.index(kind)])
    failures = []
    for case in range(CASES_PER_FILE_AND_KIND):
        data = mutate(chorale_bytes[which], kind, rng)
        options = [{}, {"drums": True}, {"sustain": True}, {"steps_per_beat": 12}][case % 4]
        name = f"fuzz-{which}-{kind}-{case}.mid"
        problem = fast_path_differs(data, options.get("sustain", False))
        if problem:
            failures.append((case, problem))
        t0 = time.perf_counter()
        try:
            roll = midi_to_roll(data, **options, name=name)
        except MidiError as e:
            if name not in str(e):
                failures.append((case, f"MidiError without the name: {e}"))
        except Exception as e:  # noqa: BLE001 - any other exception type is the failure we look for
            failures.append((case, f"{type(e).__name__}: {e}"))
        else:
            if not (isinstance(roll, np.ndarray) and roll.dtype == np.float32 and roll.ndim == 2
                    and roll.shape[1] == 128 and (roll.size == 0 or (roll.min() >= 0 and roll.max() <= 1))):
                failures.append((case, f"bad roll {getattr(roll, 'dtype', None)} {getattr(roll, 'shape', None)}"))
        elapsed = time.perf_counter() - t0
        if elapsed >= 1.0:
            failures.append((case, f"took {elapsed:.2f} s"))
    assert not failures, failures


# --- a grid in seconds (performance MIDI) ---------------------------------------------------------

def _performance() -> bytes:
    """A pianist's take: 120 bpm for a second, then 60 bpm (one beat per second from tick 960),
    off-grid onsets, a velocity per note and the sustain pedal; the conductor track holds the tempi.
    In seconds: A 0.000-0.250, B 0.5385-1.500 (tick 517), C from 1.7083, its key released at 1.9167
    while the pedal (down at 1.8125) holds it until 2.500, D 2.2604-2.3021 under the pedal too."""
    from midi_factory import make_midi, on, off, pedal, tempo

    conductor = [(0, tempo(120)), (960, tempo(60))]
    piano = [(0, on(60, 71)), (240, off(60)), (517, on(64, 90)), (1200, off(64)),
             (1300, on(67, 55)), (1350, pedal(True)), (1400, off(67)), (1565, on(72, 40)), (1585, off(72)),
             (1680, pedal(False)), (1700, off(72))]
    return make_midi([conductor, piano])


def test_seconds_grid_puts_rows_at_real_time_and_sustains():
    data = _performance()
    piece = read_midi(data, steps_per_second=100, sustain=True)
    assert piece.steps_per_beat is None and piece.steps_per_second == 100
    assert piece.tempos == [(0, 120.0)]  # the tempo map is spent on the grid
    notes = {(p, s, e, v) for s, e, p, v in roll_notes(piece.roll).tolist()}
    # rows = round(seconds * 100): A 0-25, B round(53.85)=54 to 150, C 171 to the pedal's 250,
    # D round(226.04)=226, its key up at 230 under the pedal, so it holds to 250 too
    assert notes == {(60, 0, 25, 71), (64, 54, 150, 90), (67, 171, 250, 55), (72, 226, 250, 40)}
    assert len(piece.roll) == 254  # the file ends at tick 1700: 1 + 740/480 = 2.5417 s
    dry = read_midi(data, steps_per_second=100)
    assert {(p, s, e) for s, e, p, v in roll_notes(dry.roll).tolist()} == {
        (60, 0, 25), (64, 54, 150), (67, 171, 192), (72, 226, 230)}
    # a grid in beats would have put B at beat 1.077 -> row 4 of 4 per beat, and C after the
    # tempo change at 4 * 1300/480 = row 11: the two grids differ where the tempo changes
    beats = read_midi(data, 4)
    assert beats.roll[11, 67] > 0 and beats.steps_per_second is None


def test_seconds_grid_round_trip_writes_the_same_seconds():
    piece = read_midi(_performance(), steps_per_second=100, sustain=True)
    mid = roll_to_midi(piece.roll, steps_per_second=100)
    back = read_midi(to_bytes(mid), steps_per_second=100)
    np.testing.assert_array_equal(back.roll, piece.roll)
    # note-ons and note-offs fall at row / 100 seconds, as a player (mido's clock) hears them
    now, heard = 0.0, []
    for msg in mid:
        now += msg.time
        if msg.type in ("note_on", "note_off"):
            heard.append((round(now, 6), msg.type == "note_on" and msg.velocity > 0, msg.note))
    expected = sorted([(s / 100, True, p) for s, e, p, v in roll_notes(piece.roll).tolist()] +
                      [(e / 100, False, p) for s, e, p, v in roll_notes(piece.roll).tolist()])
    assert sorted(heard) == sorted((round(t, 6), o, p) for t, o, p in expected)
    # random off-grid performances survive too, at several resolutions
    rng = np.random.default_rng(0)
    for n in (50, 100, 250):
        roll = np.zeros((400, 128), np.float32)
        for _ in range(60):
            s, p = rng.integers(0, 390), rng.integers(21, 109)
            roll[s:s + rng.integers(1, 10), p] = rng.integers(1, 128) / 127
        np.testing.assert_allclose(read_midi(to_bytes(roll_to_midi(roll, steps_per_second=n)),
                                             steps_per_second=n).roll, roll, atol=0.5 / 127)
    with pytest.raises(ValueError, match="steps_per_second"):
        read_midi(_performance(), steps_per_second=0)
    fine = read_midi(to_bytes(roll_to_midi(piece.roll, steps_per_second=100)), steps_per_second=2000)
    assert fine.roll.shape[0] == 20 * piece.roll.shape[0]  # exact ticks: 1 ms rows, 20 per row of 10 ms
    with pytest.raises(ValueError, match="ticks_per_beat"):  # no MIDI file has ticks that fine
        roll_to_midi(piece.roll, steps_per_second=100_000)


def test_seconds_grid_extend_writes_back_on_the_runs_grid():
    from musicgen.generate import extend_piece, grid, read_prompt

    class Held:  # continues with one held C: the test is about time, not music
        def extend(self, roll, steps, temperature, seeds, time_signatures=None):
            out = np.zeros((steps, 128), np.float32)
            out[:, 48] = 64 / 127
            return out

    info = {"steps_per_beat": None, "steps_per_second": 100}
    assert grid(info) == {"steps_per_beat": None, "steps_per_second": 100}
    assert grid({"steps_per_beat": 8}) == {"steps_per_beat": 8}
    piece = read_prompt(_performance(), info)
    roll, mid = extend_piece(Held(), info, piece, 30)
    assert len(roll) == 254 + 30
    np.testing.assert_array_equal(read_midi(to_bytes(mid), steps_per_second=100).roll, roll)
    now, starts = 0.0, {}
    for msg in mid:
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            starts.setdefault(msg.note, now)
    assert starts[64] == pytest.approx(0.54) and starts[48] == pytest.approx(2.54)  # seconds, as played


def test_max_notes_refuses_a_note_storm_before_pairing_it():
    from midi_factory import million_notes

    data = million_notes(1000)
    assert read_midi(data, max_notes=1000).notes == 1000
    with pytest.raises(MidiError, match=r"more than max_notes=999 notes \(1000\)"):
        read_midi(data, max_notes=999)
    mid = mido.MidiFile(file=io.BytesIO(data))  # mido's path (a MidiFile given) counts the same
    with pytest.raises(MidiError, match="max_notes=999"):
        read_midi(mid, max_notes=999)
