"""Using trained runs: extend a MIDI prompt with the LSTM, generate new pieces with the VAE.

Used by the CLI (``musicgen extend``, ``musicgen generate``) and by the Serve application.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError
from .midi import Piece, read_midi, roll_to_midi

MAX_STEPS = 4096  # one request's continuation, at most


def load_extender(run: str):
    """(Extender, run info) of a trained LSTM run."""
    from .lstm import Extender
    from .train import load_run

    kind, cfg, info, model = load_run(run)
    if kind != "lstm":
        raise DataError(f"{run}: a {kind} run cannot extend a prompt (train an lstm)")
    return Extender.from_training_model(cfg, model), info


def load_generator(run: str):
    """(Generator, run info) of a trained VAE run."""
    from .train import load_run
    from .vae import Generator

    kind, cfg, info, model = load_run(run)
    if kind != "vae":
        raise DataError(f"{run}: a {kind} run cannot generate pieces (train a vae)")
    generator = Generator(cfg, model)
    if info.get("threshold") is not None:
        generator.threshold = info["threshold"]
    return generator, info


def check_extend_args(steps, temperature) -> None:
    if not (isinstance(steps, (int, np.integer)) and 1 <= steps <= MAX_STEPS):
        raise DataError(f"steps must be an integer from 1 to {MAX_STEPS}, not {steps!r}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and 0 < temperature <= 10):
        raise DataError(f"temperature must be a number in (0, 10], not {temperature!r}")


def grid(info: dict) -> dict:
    """A run's time grid (from its dataset's manifest) as keyword arguments of ``read_midi`` and
    ``roll_to_midi``: beats, or seconds for a dataset prepared with ``--steps-per-second``."""
    if info.get("steps_per_second"):
        return {"steps_per_beat": None, "steps_per_second": info["steps_per_second"]}
    return {"steps_per_beat": info.get("steps_per_beat") or 4}


def read_prompt(src, info: dict, name: str | None = None) -> Piece:
    """The prompt as a Piece on the run's grid; MidiError naming it if unusable."""
    from .errors import MidiError

    piece = read_midi(src, **grid(info), name=name)
    if not piece.roll.any():
        raise MidiError(name or src, "the prompt has no notes")
    return piece


def extend_piece(extender, info: dict, piece: Piece, steps: int, temperature: float = 1.0, seed: int = 0):
    """(prompt + continuation roll, the MIDI file of it)."""
    check_extend_args(steps, temperature)
    continuation = extender.extend(piece.roll, steps, temperature=temperature, seeds=seed)
    roll = np.concatenate([piece.roll, continuation])
    midi = roll_to_midi(roll, **grid(info), tempos=piece.tempos, time_signatures=piece.time_signatures)
    return roll, midi
