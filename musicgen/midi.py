"""MIDI files <-> piano rolls.

A piano roll is a float32 array of shape (T, 128): rows are time steps, columns are MIDI pitches
0-127, a cell is the velocity of the note sounding there divided by 127 (0 = silence).

Time grid. With ``steps_per_beat=s`` rows are s steps per quarter note (beat). A note sounding from
tick a to tick b in a file of q ticks per beat fills rows ``round(a*s/q)`` up to
``max(that + 1, round(b*s/q)) - 1`` (round half up), so a note never vanishes and tempo changes do
not move notes: the grid is in beats. ``steps_per_beat=None`` gives one row per MIDI tick, the
representation of the study musicgen starts from.

Decisions for what real files contain (each has a hand-built file in tests/test_midi.py):

* All tracks and channels are merged onto one roll; where notes overlap on one cell the louder wins.
  Drums (channel 10, index 9) are left out unless ``drums=True``.
* A note-on of velocity 0 is a note-off.
* A note-on for a pitch already sounding on the same track and channel re-strikes it, as a piano
  key does: the sounding note ends there and a new one starts. A note-off at the very tick of such a
  re-strike belongs to the old note (sequencers write "on new, off old" for legato repeats), so the
  new note keeps sounding. A note-off with nothing sounding is ignored.
* Notes never switched off end at the end of the file (the last event of the longest track).
* Tempo and time-signature changes are kept in ``Piece.tempos`` / ``Piece.time_signatures`` (in
  rows) so that :func:`roll_to_midi` can restore them. A time signature that no bar can have
  (numerator 0, a denominator above :data:`MAX_DENOMINATOR`: a corrupt file) is dropped. A piece
  without one is in 4/4, as the MIDI standard says; :func:`bar_positions` places every step in
  its bar.
* Sustain pedal (CC64 >= 64 is down) is ignored by default; with ``sustain=True`` a note released
  while the pedal of its channel is down keeps sounding until the pedal goes up (or the key is
  struck again).
* SMPTE time division (frames per second x ticks per frame) has no beats: time in seconds is put on
  the grid at a nominal 120 bpm (one beat = 0.5 s) and the tempo map says 120 bpm.
* Performances (a pianist recorded on a MIDI keyboard: one nominal tempo, expressive timing) have
  no beat grid to speak of. ``steps_per_second=N`` puts rows at N per second of real time instead:
  a note from s0 to s1 seconds (through the file's tempo map) fills rows ``round(s0*N)`` up to
  ``max(that + 1, round(s1*N)) - 1``. The tempo map is then spent: ``Piece.tempos`` says a
  nominal 120 bpm, and :func:`roll_to_midi` with the same ``steps_per_second`` writes row r at r/N
  seconds.
* Format 0 and 1 files play their tracks together; format 2 tracks are independent sequences and
  are played one after another.
* In the roll a re-strike at the same velocity is indistinguishable from a held note: a roll cannot
  say more than "which pitches sound how loud at each step".

Reading is mido's: a plain file's channel messages are decoded straight from its bytes (what
mido's checked message objects would say, 5x faster), its meta messages by mido, and any file out
of the ordinary (truncated or odd chunks, running status after a sysex, system messages) by
``mido.MidiFile``, whose errors become :class:`MidiError`.
"""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain

import mido
import numpy as np
from mido.midifiles.meta import build_meta_message

from .errors import MidiError, PromptTooLong

#: Largest roll, in rows, that :func:`read_midi` builds unless told otherwise: 2**21 rows of 128
#: float32 cells is 1 GiB. A corrupt delta time can claim days of silence; this stops it early.
MAX_STEPS = 1 << 21
DRUM_CHANNEL = 9
SMPTE_NOMINAL_BPM = 120.0
#: The meter of a piece before (or without) a time signature: MIDI's default, 4/4.
DEFAULT_METER = (4, 4)
#: Largest time-signature denominator kept (a 1/256 note); MIDI could say 2**255.
MAX_DENOMINATOR = 256

_NOTE_ON, _NOTE_OFF, _PEDAL = 1, 0, 2
#: Meta message types whose decoding cannot fail and that read_midi does not use (text, lyrics,
#: names, markers, end of track): the fast reader skips them instead of asking mido.
_PLAIN_META = frozenset([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x2F])
_MAX_MESSAGE_BYTES = 1_000_000  # mido's MAX_MESSAGE_LENGTH


@dataclass
class Piece:
    """A piano roll with the timing facts needed to write it back faithfully."""

    roll: np.ndarray  # (T, 128) float32 in [0, 1]
    steps_per_beat: int | None
    tempos: list[tuple[int, float]] = field(default_factory=lambda: [(0, 120.0)])  # (row, bpm)
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)  # (row, num, den)
    notes: int = 0  # notes in the source (before merging on the grid)
    steps_per_second: float | None = None  # set: rows are a grid in seconds (steps_per_beat is None)


def _source_name(src, name):
    if name is not None:
        return str(name)
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, mido.MidiFile):
        return src.filename or "<MidiFile>"
    return "<bytes>"


def _read_bytes(src, name) -> bytes:
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            return bytes(src)
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                return f.read()
        if hasattr(src, "read"):
            return src.read()
    except FileNotFoundError:
        raise MidiError(name, "no such file") from None
    except IsADirectoryError:
        raise MidiError(name, "is a directory, not a MIDI file") from None
    except OSError as e:
        raise MidiError(name, f"cannot be read ({e})") from None
    raise TypeError(f"midi source must be a path, bytes or mido.MidiFile, not {type(src).__name__}")


def _open(data: bytes, name) -> mido.MidiFile:
    try:
        return mido.MidiFile(file=io.BytesIO(data))
    except EOFError:
        raise MidiError(name, "not a readable MIDI file (ends early: truncated?)") from None
    except Exception as e:  # mido raises OSError, ValueError, KeyError, ... on malformed bytes
        raise MidiError(name, f"not a readable MIDI file ({e or type(e).__name__})") from None


def _fast_events(data: bytes, sustain: bool, keep: bool = True):
    """``(ticks_per_beat, _events(mido.MidiFile(file=data)), note-ons)`` without building mido's
    message objects, which is most of the time mido takes to read a file (~5 us a message); or None
    for anything but a plain file: a truncated or odd chunk, running status after a sysex, system
    messages, data bytes over 127... mido then reads it and raises what it raises. Meta messages
    are decoded by mido itself (but for text and end of track, which cannot fail and say nothing
    read here). ``keep=False`` keeps no event, only counts the note-ons (a first look at a file
    that may hold too many). tests/test_midi.py checks that both give the same on real and on
    mutated files.
    """
    n = len(data)
    if n < 14 or data[:4] != b"MThd":
        return None
    size = int.from_bytes(data[4:8], "big")
    if size < 6 or 8 + size > n:
        return None
    ftype, ntracks, division = struct.unpack(">hhh", data[8:14])
    pos, offset, end = 8 + size, 0, 0
    out = ([], [], [], [0])
    for t in range(ntracks):
        if data[pos:pos + 4] != b"MTrk" or pos + 8 > n:
            return None
        stop = pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
        if stop > n:
            return None
        tick = _fast_track(data, pos + 8, stop, t, offset, sustain, out, keep)
        if tick is None:
            return None
        pos, end = stop, max(end, tick)
        if ftype == 2:
            offset = tick
    events, tempos, sigs, (ons,) = out
    events.sort()
    tempos.sort(key=lambda x: x[0])
    sigs.sort(key=lambda x: x[0])
    return division, (events, tempos, sigs, end), ons


def _fast_track(data: bytes, pos: int, stop: int, t: int, tick: int, sustain: bool, out, keep: bool):
    """Decode one track's bytes ``data[pos:stop]`` (track number ``t``, starting at ``tick``) into
    ``out`` = (events, tempos, time signatures, [note-ons so far]) as :func:`_fast_events` does;
    returns the track's last tick, or None for anything left to mido. Without ``keep`` note and
    pedal events are only counted."""
    events, tempos, sigs, ons = out
    append, count = events.append, ons[0]
    i, last = 0, None
    while pos < stop:
        b = data[pos]
        if b < 0x80:  # most delta times are one or two bytes
            delta, pos = b, pos + 1
        elif pos + 1 < stop and data[pos + 1] < 0x80:
            delta, pos = (b & 0x7F) << 7 | data[pos + 1], pos + 2
        else:
            delta, pos = _varlen(data, pos, stop)
        tick += delta
        if pos >= stop:
            return None
        status = data[pos]
        if status < 0x80:  # running status: this byte is the first data byte
            if last is None or last >= 0xF0:
                return None
            status = last
        else:
            pos += 1
        if status < 0xF0:  # a channel message
            last = status
            kind, two = status & 0xF0, status & 0xE0 != 0xC0  # program change, aftertouch: one byte
            if pos + 1 + two > stop:
                return None
            d1, d2 = data[pos], data[pos + 1] if two else 0
            if d1 > 127 or d2 > 127:
                return None
            pos += 1 + two
            if kind == 0x90:
                if d2:
                    count += 1
                if keep:
                    append((tick, t, i, _NOTE_ON if d2 else _NOTE_OFF, status & 0x0F, d1, d2))
            elif kind == 0x80:
                if keep:
                    append((tick, t, i, _NOTE_OFF, status & 0x0F, d1, 0))
            elif kind == 0xB0 and d1 == 64 and sustain and keep:
                append((tick, t, i, _PEDAL, status & 0x0F, 0, d2))
        elif status in (0xFF, 0xF0, 0xF7):  # meta message or sysex
            if status == 0xFF:
                if pos >= stop:
                    return None
                meta_type, pos = data[pos], pos + 1
            else:
                last = status  # as mido does
            length, pos = _varlen(data, pos, stop)
            if length > _MAX_MESSAGE_BYTES or pos + length > stop:
                return None
            body, pos = data[pos:pos + length], pos + length
            if status != 0xFF:
                if max(body[1 if body[:1] == b"\xf0" else 0:len(body) - (body[-1:] == b"\xf7")], default=0) > 127:
                    return None  # mido refuses a sysex data byte over 127
            elif meta_type not in _PLAIN_META:
                try:
                    msg = build_meta_message(meta_type, list(body), delta)
                except Exception:
                    return None
                if msg.type == "set_tempo" and msg.tempo > 0:
                    tempos.append((tick, msg.tempo))
                elif msg.type == "time_signature":
                    sigs.append((tick, msg.numerator, msg.denominator))
        else:  # system common and real-time messages: rare in files, left to mido
            return None
        i += 1
    ons[0] = count
    return tick


def _varlen(data: bytes, pos: int, stop: int) -> tuple[int, int]:
    """(value, position after it) of the variable-length number at ``pos``; a number that runs
    past ``stop`` gives a position past it (``stop + 1``), which the caller's checks refuse."""
    value = 0
    while pos < stop:
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos
    return value, stop + 1


def _events(mid: mido.MidiFile, sustain: bool):
    """Note, pedal, tempo and time-signature events of all tracks, in ticks, in playing order."""
    events, tempos, sigs = [], [], []
    offset = end = 0
    for t, track in enumerate(mid.tracks):
        tick = offset
        for i, msg in enumerate(track):
            tick += msg.time
            kind = msg.type
            if kind == "note_on":
                events.append((tick, t, i, _NOTE_ON if msg.velocity else _NOTE_OFF, msg.channel, msg.note, msg.velocity))
            elif kind == "note_off":
                events.append((tick, t, i, _NOTE_OFF, msg.channel, msg.note, 0))
            elif kind == "control_change" and msg.control == 64 and sustain:
                events.append((tick, t, i, _PEDAL, msg.channel, 0, msg.value))
            elif kind == "set_tempo" and msg.tempo > 0:  # 0 us per beat is meaningless: ignored
                tempos.append((tick, msg.tempo))
            elif kind == "time_signature":
                sigs.append((tick, msg.numerator, msg.denominator))
        end = max(end, tick)
        if mid.type == 2:  # independent sequences, played one after another
            offset = tick
    events.sort()
    tempos.sort(key=lambda x: x[0])
    sigs.sort(key=lambda x: x[0])
    return events, tempos, sigs, end


def _notes(events, end, drums: bool):
    """Pair note-ons with note-offs -> list of (start_tick, end_tick, pitch, velocity)."""
    # (track << 11 | channel << 7 | pitch) -> [start, velocity, restruck_at, released_under_pedal]
    sounding = {}
    pedal_down = set()
    notes = []
    add, get = notes.append, sounding.get
    for tick, track, _, kind, ch, pitch, value in events:
        if kind == _PEDAL:
            if value >= 64:
                pedal_down.add(ch)
                continue
            pedal_down.discard(ch)
            for key in [k for k, v in sounding.items() if (k >> 7) & 0x0F == ch and v[3]]:
                start, vel, _, _ = sounding.pop(key)
                add((start, tick, key & 0x7F, vel))
            continue
        if ch == DRUM_CHANNEL and not drums:
            continue
        key = track << 11 | ch << 7 | pitch
        cur = get(key)
        if kind == _NOTE_ON:
            restruck = None
            if cur is not None:
                add((cur[0], tick, pitch, cur[1]))
                restruck = None if cur[3] else tick
            sounding[key] = [tick, value, restruck, False]
        elif cur is not None:  # note-off
            if cur[2] == tick:  # "on new, off old" at one tick: this off was the old note's
                cur[2] = None
            elif ch in pedal_down:
                cur[3] = True
            else:
                del sounding[key]
                add((cur[0], tick, pitch, cur[1]))
    for key, (start, vel, _, _) in sounding.items():
        notes.append((start, end, key & 0x7F, vel))
    return notes


def read_midi(src, steps_per_beat: int | None = 4, *, drums: bool = False, sustain: bool = False,
              max_steps: int = MAX_STEPS, name: str | None = None,
              steps_per_second: float | None = None, max_notes: int | None = None) -> Piece:
    """Read a MIDI file into a :class:`Piece` (roll plus tempo map). See the module docstring.

    ``src`` is a path, bytes, a binary file object or a ``mido.MidiFile``; ``name`` is what errors
    call it (default: the path). ``steps_per_second`` gives a grid in seconds instead of beats
    (``steps_per_beat`` is then ignored). Raises :class:`MidiError` naming the source for anything
    that is not a readable MIDI file or that has more than ``max_notes`` note-ons (None: no limit;
    checked before notes are paired or drawn), :class:`PromptTooLong` (with the steps and the limit)
    for one whose roll would exceed ``max_steps`` rows.
    """
    layout = read_notes(src, steps_per_beat, drums=drums, sustain=sustain, max_steps=max_steps, name=name,
                        steps_per_second=steps_per_second, max_notes=max_notes)
    return Piece(layout.roll(), layout.steps_per_beat, layout.tempos, layout.time_signatures, layout.notes,
                 layout.steps_per_second)


@dataclass
class NoteLayout:
    """A MIDI file's notes placed on the grid, before any roll is drawn: note i sounds on rows
    ``starts[i]`` to ``ends[i] - 1`` of column ``pitches[i]`` at ``velocities[i]`` (1-127, int64
    arrays); the roll has ``steps`` rows. :func:`read_midi` draws it with :meth:`roll`; a caller
    that must bound its work can first look at :attr:`cells`."""

    starts: np.ndarray
    ends: np.ndarray
    pitches: np.ndarray
    velocities: np.ndarray
    steps: int
    steps_per_beat: int | None
    tempos: list[tuple[int, float]]
    time_signatures: list[tuple[int, int, int]]
    steps_per_second: float | None = None

    @property
    def notes(self) -> int:
        return len(self.starts)

    @property
    def cells(self) -> int:
        """Cells the notes fill, each note's own (overlaps count twice): the work of drawing."""
        return int((self.ends - self.starts).sum())

    def roll(self, velocities: bool = False) -> np.ndarray:
        """The (steps, 128) roll: float32 velocity / 127 (a :class:`Piece`'s), or with
        ``velocities`` the uint8 velocities themselves (a quarter of the memory). Where notes
        overlap on one cell the louder wins."""
        roll = np.zeros((self.steps, 128), dtype=np.uint8 if velocities else np.float32)
        order = np.argsort(self.velocities, kind="stable")  # louder notes written last win overlaps
        values = self.velocities[order].astype(roll.dtype)
        if not velocities:
            values /= 127.0
        for a, b, p, v in zip(self.starts[order].tolist(), self.ends[order].tolist(), self.pitches[order].tolist(),
                              values.tolist()):
            roll[a:b, p] = v
        return roll


def read_notes(src, steps_per_beat: int | None = 4, *, drums: bool = False, sustain: bool = False,
               max_steps: int = MAX_STEPS, name: str | None = None,
               steps_per_second: float | None = None, max_notes: int | None = None) -> NoteLayout:
    """What :func:`read_midi` reads, up to the drawing of the roll: the same arguments, checks and
    errors (``max_steps`` included), a :class:`NoteLayout`."""
    if steps_per_second is not None:
        _check_per_second(steps_per_second)
        steps_per_beat = None
    elif steps_per_beat is not None and (not isinstance(steps_per_beat, (int, np.integer)) or steps_per_beat < 1):
        raise ValueError(f"steps_per_beat must be a positive integer or None, not {steps_per_beat!r}")
    name = _source_name(src, name)
    division, events, tempos, sigs, end = _read_events(src, name, sustain, max_notes)
    if division < 0:  # SMPTE: -frames per second in the high byte, ticks per frame in the low byte
        fps, per_frame = -(division >> 8), division & 0xFF
        fps = 29.97 if fps == 29 else fps
        if per_frame == 0 or fps <= 0:
            raise MidiError(name, f"bad SMPTE time division {division}")
        ticks_per_beat = fps * per_frame * 60.0 / SMPTE_NOMINAL_BPM
        tempos = []
    else:
        ticks_per_beat = float(division)
    if steps_per_second is not None:
        rows, scale = _seconds_rows(tempos, ticks_per_beat, steps_per_second)
    else:
        scale = 1.0 if steps_per_beat is None else steps_per_beat / ticks_per_beat

        def rows(ticks):
            return np.floor(np.asarray(ticks, dtype=np.float64) * scale + 0.5).astype(np.int64)
    # A corrupt delta time can claim more ticks than int64/float64 hold: compare as Python numbers
    # (int vs float comparison is exact) before any numpy conversion can overflow. (``scale`` is
    # the fewest rows a tick can be.)
    if end > (max_steps + 1) / scale:  # the rows of ``end``, exactly: ``end`` can be too large for a float
        raise PromptTooLong(name, int(int(end) * Fraction(scale) + Fraction(1, 2)), max_steps)

    notes = _notes(events, end, drums)
    arr = np.fromiter(chain.from_iterable(notes), np.int64, 4 * len(notes)).reshape(-1, 4)
    r0 = rows(arr[:, 0])
    r1 = np.maximum(r0 + 1, rows(arr[:, 1]))
    n_steps = max(int(rows(end)), int(r1.max(initial=0)))
    if n_steps > max_steps:
        raise PromptTooLong(name, n_steps, max_steps)
    tempo_rows = _changes([(0, SMPTE_NOMINAL_BPM if division < 0 else 120.0)],  # MIDI's default
                          [] if steps_per_second else [(int(rows(t)), 60e6 / tempo) for t, tempo in tempos])
    sig_rows = _changes([], [(int(rows(t)), n, d) for t, n, d in sigs if n >= 1 and 1 <= d <= MAX_DENOMINATOR])
    return NoteLayout(r0, r1, arr[:, 2], arr[:, 3], n_steps, steps_per_beat, tempo_rows, sig_rows, steps_per_second)


def _read_events(src, name: str, sustain: bool, max_notes: int | None):
    """(ticks per beat, events, tempos, time signatures, last tick) of a MIDI source, refused with
    :class:`MidiError` if unreadable or over ``max_notes`` note-ons."""
    fast = None
    if not isinstance(src, mido.MidiFile):
        data = _read_bytes(src, name)
        # A note-on takes 3 bytes at least: a file that could hold more than max_notes of them is
        # first only counted, so that one that does costs no memory (a million events: ~150 MB).
        big = max_notes is not None and len(data) > 3 * max_notes
        fast = _fast_events(data, sustain, keep=not big)
        if big and fast is not None and fast[2] <= max_notes:  # not too many after all: read them
            fast = _fast_events(data, sustain)
    if fast is not None:
        division, (events, tempos, sigs, end), ons = fast
    else:
        mid = src if isinstance(src, mido.MidiFile) else _open(data, name)
        division = mid.ticks_per_beat
        try:
            events, tempos, sigs, end = _events(mid, sustain)
        except Exception as e:
            raise MidiError(name, f"malformed events ({e})") from None
        # events >= note-ons: count only then
        ons = sum(1 for e in events if e[3] == _NOTE_ON) if max_notes is not None and len(events) > max_notes else 0
    if division == 0:
        raise MidiError(name, "header says 0 ticks per beat")
    if max_notes is not None and ons > max_notes:
        raise MidiError(name, f"more than max_notes={max_notes} notes ({ons})")
    return division, events, tempos, sigs, end


def _check_per_second(steps_per_second) -> None:
    if isinstance(steps_per_second, bool) or not isinstance(steps_per_second, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(steps_per_second) and steps_per_second > 0):
        raise ValueError(f"steps_per_second must be a positive number, not {steps_per_second!r}")


def _seconds_rows(tempos, ticks_per_beat: float, steps_per_second: float):
    """(ticks -> rows on a grid of ``steps_per_second`` through the tempo map, the fewest rows a
    tick can be). ``tempos`` are (tick, microseconds per beat), sorted; 120 bpm until the first."""
    points, per_beat = [0], [500_000.0]
    for tick, us in tempos:
        if tick == points[-1]:
            per_beat[-1] = float(us)  # the last change at a tick wins
        else:
            points.append(tick)
            per_beat.append(float(us))
    rate = np.array(per_beat) / (1e6 * ticks_per_beat) * steps_per_second  # rows per tick, per span
    start = np.concatenate([[0.0], np.cumsum(np.diff(np.array(points, dtype=np.float64)) * rate[:-1])])
    at = np.array(points, dtype=np.float64)

    def rows(ticks):
        t = np.asarray(ticks, dtype=np.float64)
        i = np.searchsorted(at, t, side="right") - 1
        return np.floor(start[i] + (t - at[i]) * rate[i] + 0.5).astype(np.int64)

    return rows, float(rate.min())


def _changes(first, changes):
    """A map of (row, *value) changes: the last change at a row wins, repeats of a value drop out."""
    out = list(first)
    for row, *value in changes:
        if out and out[-1][0] == row:
            out[-1] = (row, *value)
        elif not out or list(out[-1][1:]) != value:
            out.append((row, *value))
    return out


def bar_positions(steps_per_beat: int | None, time_signatures, steps: int) -> np.ndarray:
    """Each of ``steps`` steps' position in its bar: int64 (steps,), 0 on a bar's first step.

    A bar of n/d is ``n * steps_per_beat * 4 / d`` steps (a beat is a quarter note: 3/4 at 4 steps
    per beat is 12 steps, 6/8 is 12, 4/4 at 1 step per beat 4). Bars start at row 0 and again at
    every change of ``time_signatures`` ((row, numerator, denominator), as :class:`Piece` holds
    them; 4/4 before the first, :data:`DEFAULT_METER`), and the last one goes on to ``steps``, past
    the end of a prompt. A bar of a fractional number of steps (7/8 at 1 step per beat: 3.5) is
    laid exactly: a step's position is the whole steps since its bar began. On a grid without beats
    (``steps_per_beat`` None: rows in seconds or in ticks) no step has a position: all are -1.
    """
    if steps_per_beat is None:
        return np.full(steps, -1, np.int64)
    given = ((int(r), int(n), int(d)) for r, n, d in time_signatures)
    marks = sorted([(0, *DEFAULT_METER), *((r, n, d) for r, n, d in given if r >= 0 and n >= 1 and d >= 1)],
                   key=lambda m: m[0])  # stable: a change at row 0 replaces the default
    k, out = np.arange(steps, dtype=np.int64), np.zeros(steps, np.int64)
    for i, (row, num, den) in enumerate(marks):
        end = min(marks[i + 1][0] if i + 1 < len(marks) else steps, steps)
        if end > row:
            # a bar is num * spb * 4 / den steps: work in 1/den steps, in integers, to stay exact
            out[row:end] = (k[row:end] - row) * den % (num * steps_per_beat * 4) // den
    return out


def midi_to_roll(src, steps_per_beat: int | None = 4, **kwargs) -> np.ndarray:
    """Piano roll (T, 128) float32 in [0, 1] of a MIDI path, bytes or ``mido.MidiFile``.

    Keyword arguments are those of :func:`read_midi` (``drums``, ``sustain``, ``max_steps``, ``name``,
    ``steps_per_second``).
    """
    return read_midi(src, steps_per_beat, **kwargs).roll


def check_roll(roll, what: str = "roll") -> np.ndarray:
    """Return ``roll`` as a float32 (T, 128) array, or raise ValueError naming what is wrong."""
    arr = np.asarray(roll)
    if arr.ndim != 2 or arr.shape[1] != 128:
        raise ValueError(f"{what} must have shape (T, 128), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ValueError(f"{what} must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{what} values must be finite and in [0, 1] (velocity / 127)")
    return arr


def roll_notes(roll) -> np.ndarray:
    """Notes of a roll as an int array of rows (start_row, end_row, pitch, velocity 1-127).

    A note is a run of consecutive cells of one pitch with the same non-zero velocity; a change of
    value inside a run starts a new note. Sorted by pitch, then start.
    """
    vel = np.rint(check_roll(roll) * 127).astype(np.int16)
    vel[(vel == 0) & (np.asarray(roll) > 0)] = 1  # a quiet cell is still a note
    padded = np.zeros((vel.shape[0] + 2, 128), dtype=np.int16)
    padded[1:-1] = vel
    pitch, row = np.nonzero((padded[1:] != padded[:-1]).T)  # value changes, by pitch then row
    same = pitch[:-1] == pitch[1:]
    starts, ends, pitches = row[:-1][same], row[1:][same], pitch[:-1][same]
    v = vel[starts, pitches] if len(starts) else np.zeros(0, np.int16)
    keep = v > 0
    return np.stack([starts[keep], ends[keep], pitches[keep], v[keep]], axis=1).astype(np.int64)


def roll_to_midi(roll, steps_per_beat: int | None = 4, bpm: float = 120.0, *,
                 tempos: list[tuple[int, float]] | None = None,
                 time_signatures: list[tuple[int, int, int]] | None = None,
                 ticks_per_beat: int = 480, program: int = 0,
                 steps_per_second: float | None = None) -> mido.MidiFile:
    """A format-0 ``mido.MidiFile`` playing ``roll`` (T, 128) on one piano channel.

    Row r starts at tick ``round(r * ticks_per_beat / steps_per_beat)`` (one tick per row when
    ``steps_per_beat`` is None). ``tempos`` is a tempo map of (row, bpm) pairs as in
    :class:`Piece`; without it the piece plays at ``bpm`` throughout. ``time_signatures`` are
    (row, numerator, denominator) triples. The file ends at row T, so trailing silence survives.
    ``steps_per_second=N``: a roll on a grid in seconds; row r starts at r/N seconds, at 120 bpm
    (``steps_per_beat``, ``bpm`` and ``tempos`` are then ignored). For a whole N, ticks_per_beat
    becomes the smallest multiple of N/2 that is at least the one given, so that every row is a
    whole number of ticks and the file says exactly r/N seconds; otherwise to the nearest tick.
    """
    roll = check_roll(roll)
    if steps_per_second is not None:
        _check_per_second(steps_per_second)
        # 120 bpm (MIDI's default): a second is 2 beats, so a row is 2 * ticks_per_beat / N ticks
        steps_per_beat, bpm, tempos = None, 120.0, None
        if float(steps_per_second).is_integer():
            per_row = -(-2 * ticks_per_beat // int(steps_per_second))  # whole ticks per row, >= asked
            per_row += (per_row * int(steps_per_second)) % 2  # ticks_per_beat = N * per_row / 2 whole
            if per_row * int(steps_per_second) // 2 <= 0x7FFF:
                ticks_per_beat = per_row * int(steps_per_second) // 2
    elif steps_per_beat is not None and (not isinstance(steps_per_beat, (int, np.integer)) or steps_per_beat < 1):
        raise ValueError(f"steps_per_beat must be a positive integer or None, not {steps_per_beat!r}")
    if not isinstance(ticks_per_beat, (int, np.integer)) or not 1 <= ticks_per_beat <= 0x7FFF:
        raise ValueError(f"ticks_per_beat must be an integer in 1..32767, not {ticks_per_beat!r}")
    if not (np.isfinite(bpm) and bpm > 0):
        raise ValueError(f"bpm must be positive, not {bpm!r}")
    if steps_per_second is not None:
        per_row = 2.0 * ticks_per_beat / steps_per_second
        if per_row < 1:  # two rows on one tick would merge notes
            raise ValueError(f"steps_per_second={steps_per_second} needs ticks_per_beat >= {steps_per_second / 2:g}")
    else:
        per_row = 1.0 if steps_per_beat is None else ticks_per_beat / steps_per_beat

    def tick(row):
        return int(np.floor(row * per_row + 0.5))

    timed = []  # (tick, order, message): at one tick, meta first, then note-offs, then note-ons
    for row, b in tempos or [(0, bpm)]:
        timed.append((tick(row), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(b))))
    for row, num, den in time_signatures or []:
        timed.append((tick(row), 0, mido.MetaMessage("time_signature", numerator=num, denominator=den)))
    timed.append((0, 0, mido.Message("program_change", program=program, channel=0)))
    for start, end, pitch, vel in roll_notes(roll).tolist():
        timed.append((tick(start), 2, mido.Message("note_on", note=pitch, velocity=vel)))
        timed.append((tick(end), 1, mido.Message("note_off", note=pitch, velocity=0)))
    timed.sort(key=lambda x: (x[0], x[1]))

    track = mido.MidiTrack()
    now = 0
    for t, _, msg in timed:
        track.append(msg.copy(time=t - now))
        now = t
    track.append(mido.MetaMessage("end_of_track", time=max(0, tick(len(roll)) - now)))
    mid = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    mid.tracks.append(track)
    return mid
