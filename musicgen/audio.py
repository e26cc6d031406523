"""Audio: a piano roll rendered to WAV, for the CLI's ``--wav``, the demo and Serve's page.

With FluidSynth and a General MIDI soundfont installed (``fluidsynth`` on PATH; the soundfont in
``$MUSICGEN_SOUNDFONT`` or a usual Debian place such as /usr/share/sounds/sf2/FluidR3_GM.sf2) the
MIDI file is rendered by FluidSynth; otherwise by a small additive synthesiser in numpy (a few
decaying harmonics per note: a plain electric-piano sound), written with the standard library's
``wave`` module. No network, no extra Python package.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

from .midi import roll_notes

SAMPLE_RATE = 22050
MAX_SECONDS = 300.0  # longer pieces are cut (a page plays a few minutes at most)
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2")


def soundfont() -> str | None:
    """A GM soundfont FluidSynth can use, or None."""
    env = os.environ.get("MUSICGEN_SOUNDFONT")
    for path in ([env] if env else []) + list(SOUNDFONTS):
        if path and os.path.isfile(path):
            return path
    return None


def engine() -> str:
    """'fluidsynth' if FluidSynth and a soundfont are installed, else 'numpy'."""
    return "fluidsynth" if shutil.which("fluidsynth") and soundfont() else "numpy"


def row_times(n_rows: int, steps_per_beat: int, tempos=None) -> np.ndarray:
    """Start time in seconds of rows 0..n_rows (n_rows + 1 values) under a tempo map [(row, bpm)]."""
    bpm = np.full(n_rows, 120.0)
    for row, b in sorted(tempos or [(0, 120.0)]):
        if 0 <= row < n_rows and b > 0:
            bpm[int(row):] = b
    seconds = 60.0 / (bpm * steps_per_beat)
    return np.concatenate([[0.0], np.cumsum(seconds)])


def synthesize(roll, steps_per_beat: int = 4, tempos=None, sample_rate: int = SAMPLE_RATE,
               max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of ``roll`` (T, 128), additive synthesis."""
    roll = np.asarray(roll, np.float32)
    times = row_times(len(roll), steps_per_beat, tempos)
    total = min(float(times[-1]), max_seconds)
    out = np.zeros(int(total * sample_rate) + int(0.3 * sample_rate) + 1, np.float32)
    release = 0.08
    for start, end, pitch, vel in roll_notes(roll).tolist():
        t0 = float(times[start])
        if t0 >= total:
            continue
        dur = min(float(times[end]), total) - t0
        n = int((dur + release) * sample_rate)
        if n <= 0:
            continue
        t = np.arange(n, dtype=np.float32) / sample_rate
        freq = 440.0 * 2 ** ((pitch - 69) / 12)
        wave_ = np.zeros(n, np.float32)
        for k, amp in ((1, 1.0), (2, 0.45), (3, 0.2), (4, 0.1)):
            if k * freq < sample_rate / 2:
                wave_ += amp * np.sin(2 * np.pi * k * freq * t, dtype=np.float32) * np.exp(-t * (1.5 + k))
        env = np.minimum(1.0, t / 0.005)  # 5 ms attack, no click
        env *= np.where(t > dur, np.clip(1 - (t - dur) / release, 0, 1), 1.0)
        i0 = int(t0 * sample_rate)
        seg = out[i0:i0 + n]
        seg += (vel / 127) * 0.25 * wave_[:len(seg)] * env[:len(seg)]
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 0.9:
        out *= 0.9 / peak
    return out


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _fluidsynth(midi_bytes: bytes, sample_rate: int, timeout: float) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.mid"), os.path.join(d, "out.wav")
        with open(src, "wb") as f:
            f.write(midi_bytes)
        subprocess.run(["fluidsynth", "-ni", "-g", "0.6", "-r", str(sample_rate), "-F", dst, soundfont(), src],
                       check=True, capture_output=True, timeout=timeout)
        with open(dst, "rb") as f:
            return f.read()


def render_wav(roll, steps_per_beat: int = 4, tempos=None, midi_bytes: bytes | None = None,
               sample_rate: int = SAMPLE_RATE, timeout: float = 60.0) -> tuple[bytes, str]:
    """(WAV bytes, engine name) of ``roll``: FluidSynth on ``midi_bytes`` where installed, else numpy."""
    if midi_bytes is not None and engine() == "fluidsynth":
        try:
            return _fluidsynth(midi_bytes, sample_rate, timeout), "fluidsynth"
        except Exception:  # a broken install should not cost the user the audio
            pass
    return wav_bytes(synthesize(roll, steps_per_beat, tempos, sample_rate), sample_rate), "numpy"


def write_wav(path: str, roll, midi=None, steps_per_beat: int | None = 4, steps_per_second: float | None = None,
              tempos=None) -> str:
    """Write ``roll`` (T, 128) as a WAV file at ``path``; returns the engine that rendered it.

    The grid is that of :func:`musicgen.midi.roll_to_midi` (``steps_per_second``: rows in seconds,
    at 120 bpm); ``midi`` (its ``mido.MidiFile``, with the piece's tempo map) lets FluidSynth
    render the same file where it is installed."""
    if steps_per_second:  # 120 bpm: a beat is half a second
        steps_per_beat, tempos = steps_per_second / 2, None
    midi_bytes = None
    if midi is not None:
        buf = io.BytesIO()
        midi.save(file=buf)
        midi_bytes = buf.getvalue()
    data, name = render_wav(roll, steps_per_beat or 4, tempos, midi_bytes=midi_bytes)
    with open(path, "wb") as f:
        f.write(data)
    return name
