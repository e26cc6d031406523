"""Using trained runs: extend a MIDI prompt with the LSTM, generate new pieces with the VAE.

Used by the CLI (``musicgen extend``, ``musicgen generate``) and by the Serve application, which
samples on its models deployment and reads prompts and writes MIDI with :func:`read_prompt` and
:func:`continue_piece` here, so that both give the same bytes.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError, MidiError
from .lstm import check_extend_args
from .midi import MAX_STEPS as MAX_ROLL_STEPS
from .midi import Piece, read_midi, roll_to_midi
from .run import METER_POSITIONS


def load_extender(run: str):
    """(Extender, run info) of a trained LSTM run, placing steps in bars as it was trained (:func:`bar_grid`)."""
    from .lstm import Extender
    from .run import Run

    trained = Run(run)
    if trained.kind != "lstm":  # before the weights: a wrong kind fails fast
        raise DataError(f"{run}: a {trained.kind} run cannot extend a prompt (train an lstm)")
    loaded = trained.load()
    return Extender.from_training_model(loaded.cfg, loaded.model, **bar_grid(loaded.info)), loaded.info


def load_generator(run: str):
    """(Generator, run info) of a trained VAE run, decoding with the threshold chosen in training."""
    from .run import Run
    from .vae import Generator

    trained = Run(run)
    if trained.kind != "vae":
        raise DataError(f"{run}: a {trained.kind} run cannot generate pieces (train a vae)")
    loaded = trained.load()
    generator = Generator(loaded.cfg, loaded.model)
    if loaded.info.get("threshold") is not None:
        generator.threshold = loaded.info["threshold"]
    generator.directions = {k: np.asarray(v, np.float32) for k, v in loaded.info.get("directions", {}).items()}
    return generator, loaded.info


def grid(info: dict) -> dict:
    """A run's time grid (from its dataset's manifest) as keyword arguments of ``read_midi`` and
    ``roll_to_midi``: beats, or seconds for a dataset prepared with ``--steps-per-second``."""
    if info.get("steps_per_second"):
        return {"steps_per_beat": None, "steps_per_second": info["steps_per_second"]}
    return {"steps_per_beat": info.get("steps_per_beat") or 4}


def bar_grid(info: dict) -> dict:
    """How a run's LSTM places steps in their bars, as keyword arguments of ``Extender``: the run's
    ``steps_per_beat`` (None on a grid in seconds: no beat) and ``meter``, whether a piece's time
    signatures count (:data:`METER_POSITIONS`; an older run's output stays what it was)."""
    return {"steps_per_beat": grid(info)["steps_per_beat"], "meter": info.get("bar_positions") == METER_POSITIONS}


def read_prompt(src, info: dict, name: str | None = None, max_steps: int = MAX_ROLL_STEPS) -> Piece:
    """The prompt as a Piece on the run's grid (``info``: the run's model/config.json), with its
    tempo map and time signatures (its meter, which the continuation keeps). MidiError naming it if
    unusable; :class:`~musicgen.errors.PromptTooLong` if longer than ``max_steps``."""
    piece = read_midi(src, **grid(info), max_steps=max_steps, name=name)
    if not piece.roll.any():
        raise MidiError(name or src, "the prompt has no notes")
    return piece


def extend_piece(extender, info: dict, piece: Piece, steps: int, temperature: float = 1.0, seed: int = 0):
    """(prompt + continuation roll, the MIDI file of it). The continuation goes on in the prompt's
    meter: its last time signature (4/4 if it has none)."""
    check_extend_args(steps, temperature)
    continuation = extender.extend(piece.roll, steps, temperature=temperature, seeds=seed,
                                   time_signatures=piece.time_signatures)
    return continue_piece(info, piece, continuation)


def continue_piece(info: dict, piece: Piece, continuation: np.ndarray):
    """(prompt + continuation roll, the MIDI file of it, with the prompt's tempos and time
    signatures): :func:`extend_piece` once the continuation is sampled, wherever it was."""
    roll = np.concatenate([piece.roll, continuation])
    midi = roll_to_midi(roll, **grid(info), tempos=piece.tempos, time_signatures=piece.time_signatures)
    return roll, midi


def interpolate_pieces(generator, a: np.ndarray, b: np.ndarray, steps: int, seed: int = 0,
                       temperature: float | None = None) -> list[np.ndarray]:
    """``steps`` rolls (height, 128) float32 from roll ``a`` to roll ``b``, each one's first image
    (its first ``height`` steps that sound, padded with silence): the VAE's spherical interpolation
    between their codes (:meth:`musicgen.vae.Generator.interpolate`) decoded at ``temperature``
    (None: :data:`musicgen.vae.INTERPOLATION_TEMPERATURE`; 0: greedy); notes at velocity 90/127."""
    from .vae import INTERPOLATION_TEMPERATURE, VELOCITY, images

    first = [images(roll, generator.cfg)[0, ..., 0] for roll in (a, b)]
    on = generator.interpolate(first[0], first[1], steps, seed=seed,
                               temperature=INTERPOLATION_TEMPERATURE if temperature is None else temperature)
    return [(o * VELOCITY).astype(np.float32) for o in on]
