"""Audio (``musicgen.audio``): a roll rendered to WAV, as the CLI's ``--wav``, the demo and Serve's page do."""
import io
import wave

import numpy as np

from musicgen.audio import SAMPLE_RATE, render_wav, write_wav
from musicgen.midi import roll_to_midi


def seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1
        return w.getnframes() / w.getframerate()


def two_notes(steps: int = 16) -> np.ndarray:
    roll = np.zeros((steps, 128), np.float32)
    roll[:steps // 2, 60] = roll[steps // 2:, 64] = 0.7
    return roll


def test_render_wav_lasts_as_long_as_the_roll():
    data, engine = render_wav(two_notes(), 4, [(0, 120.0)])
    assert data[:4] == b"RIFF" and engine in ("numpy", "fluidsynth")
    assert 2.0 <= seconds(data) <= 2.5  # 16 steps = 4 beats at 120 bpm, plus the release tail


def test_write_wav_follows_the_tempo_map_and_a_grid_in_seconds(tmp_path):
    roll = two_notes()
    slow = tmp_path / "slow.wav"  # 60 bpm from the start: 4 beats are 4 s
    engine = write_wav(str(slow), roll, roll_to_midi(roll, 4, tempos=[(0, 60.0)]), 4, tempos=[(0, 60.0)])
    assert 4.0 <= seconds(slow.read_bytes()) <= (4.5 if engine == "numpy" else 7.0)  # FluidSynth's reverb tail
    fast = tmp_path / "fast.wav"  # a grid of 8 rows a second: 2 s, whatever the tempo map says
    write_wav(str(fast), roll, None, None, steps_per_second=8, tempos=[(0, 60.0)])
    assert 2.0 <= seconds(fast.read_bytes()) <= 2.5
    samples = np.frombuffer(fast.read_bytes()[44:], "<i2")
    assert np.abs(samples).max() > 1000  # it sounds


def test_silence_renders_as_silence(tmp_path):
    path = tmp_path / "quiet.wav"
    write_wav(str(path), np.zeros((8, 128), np.float32), None, 4)
    assert 1.0 <= seconds(path.read_bytes()) <= 1.5
    assert not np.frombuffer(path.read_bytes()[44:], "<i2").any()
