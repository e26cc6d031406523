"""Tiny helpers for building MIDI files by hand in tests.

Tracks are written as lists of ``(abs_tick, message)`` pairs in absolute ticks, so a test reads as a
score: ``[(0, on(60, 100)), (480, off(60))]``. :func:`make_midi` sorts each track by tick (stable,
so messages at one tick keep the order written), converts to delta times and saves with mido.
"""
from __future__ import annotations

import io
import struct

import mido


def on(note: int, velocity: int = 100, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, channel=channel)


def off(note: int, channel: int = 0, velocity: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=velocity, channel=channel)


def on0(note: int, channel: int = 0) -> mido.Message:
    """A note-on of velocity 0 (which MIDI defines as a note-off)."""
    return mido.Message("note_on", note=note, velocity=0, channel=channel)


def pedal(down: bool, channel: int = 0, value: int | None = None) -> mido.Message:
    """Sustain pedal (CC64): 127 down, 0 up, unless ``value`` is given."""
    if value is None:
        value = 127 if down else 0
    return mido.Message("control_change", control=64, value=value, channel=channel)


def tempo(bpm: float) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))


def timesig(numerator: int, denominator: int) -> mido.MetaMessage:
    return mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator)


def end() -> mido.MetaMessage:
    """An explicit end_of_track: put it at the tick where the track should end."""
    return mido.MetaMessage("end_of_track")


def make_track(events) -> mido.MidiTrack:
    """A MidiTrack from ``(abs_tick, message)`` pairs (sorted by tick, stable)."""
    track = mido.MidiTrack()
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def make_midifile(tracks, ticks_per_beat: int = 480, type: int = 1) -> mido.MidiFile:  # noqa: A002
    """A ``mido.MidiFile`` with one track per list of ``(abs_tick, message)`` pairs."""
    mid = mido.MidiFile(type=type, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        mid.tracks.append(make_track(events))
    return mid


def to_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def make_midi(tracks, ticks_per_beat: int = 480, type: int = 1) -> bytes:  # noqa: A002
    """The bytes of a standard MIDI file with the given tracks (see :func:`make_midifile`).

    mido writes the header division as a signed short, so a negative ``ticks_per_beat`` gives an
    SMPTE division: ``-(fps << 8) + ticks_per_frame``.
    """
    return to_bytes(make_midifile(tracks, ticks_per_beat, type))


def smpte_division(fps: int, ticks_per_frame: int) -> int:
    """The signed 16-bit header division for SMPTE timing (e.g. 25, 40 -> bytes 0xE7 0x28)."""
    return struct.unpack(">h", bytes([(-fps) & 0xFF, ticks_per_frame]))[0]


def raw_midi(track_data: bytes, ticks_per_beat: int = 480, type: int = 0) -> bytes:  # noqa: A002
    """A one-track file around raw track bytes (for malformed events mido would not write)."""
    header = b"MThd" + struct.pack(">LhhH", 6, type, 1, ticks_per_beat & 0xFFFF)
    return header + b"MTrk" + struct.pack(">L", len(track_data)) + track_data


def messages(mid: mido.MidiFile, types=None) -> list[tuple[int, mido.Message]]:
    """``(abs_tick, message)`` of every message of every track (optionally only ``types``)."""
    out = []
    for track in mid.tracks:
        now = 0
        for msg in track:
            now += msg.time
            if types is None or msg.type in types:
                out.append((now, msg))
    return out


# --- pathological files (what a crawl like Lakh holds): raw bytes, as no sequencer would write them ---

def varlen(n: int) -> bytes:
    """MIDI's variable-length number (mido's encoder)."""
    from mido.midifiles.meta import encode_variable_int

    return bytes(encode_variable_int(n))


def million_notes(n: int = 1_000_000) -> bytes:
    """``n`` notes of one pitch, one tick apart, in running status (6 bytes a note: a 6 MB file)."""
    body = b"\x00\x90\x3c\x40" + b"\x01\x3c\x00\x01\x3c\x40" * (n - 1) + b"\x01\x3c\x00"
    return raw_midi(body + b"\x00\xff\x2f\x00")


def far_tick(delta: int = 0x0FFFFFFF) -> bytes:
    """One note, then an event ``delta`` ticks later (a corrupt delta time: days of silence)."""
    return raw_midi(b"\x00\x90\x3c\x40\x60\x80\x3c\x00" + varlen(delta) + b"\xff\x01\x00\x00\xff\x2f\x00")


def hung_note_storm(end_tick: int = 1 << 27) -> bytes:
    """A note-on for every pitch of 15 channels, none switched off, the file ending ``end_tick``
    ticks later (at 480 per beat and 4 steps per beat, 1 << 27 is about a million rows): each
    note then sounds to the end, and the roll has ~2,000 notes of a million rows to fill."""
    body = b"".join(b"\x00" + bytes([0x90 | ch, p, 64]) for ch in range(16) if ch != 9 for p in range(128))
    return raw_midi(body + varlen(end_tick) + b"\xff\x01\x00\x00\xff\x2f\x00")


def in_meter(signatures, beats: int, ticks_per_beat: int = 480) -> bytes:
    """A file in the given meter: ``signatures`` are (beat, numerator, denominator) time
    signatures, in quarter notes from the start; a C4 sounds on every beat for ``beats`` beats."""
    sigs = [(round(b * ticks_per_beat), timesig(n, d)) for b, n, d in signatures]
    notes = [e for b in range(beats) for e in ((b * ticks_per_beat, on(60)), ((b + 1) * ticks_per_beat - 1, off(60)))]
    return make_midi([sigs + notes], ticks_per_beat)
