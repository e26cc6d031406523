"""The LSTM's training data: windows cut on the fly from per-piece rolls, never materialised.

Training is many-to-many: every step of a window predicts the next frame, so a window of W steps
gives W targets (the study's many-to-one set-up gave one and needed a 50 GB window array).
Windows are cut at a random offset, with a random transposition. A piece comes as its roll, or
as (roll, bar positions): its steps' places in their bars, from its own time signatures
(``musicgen.dataset.Record.positions``), which the network reads with each frame.
"""
from __future__ import annotations

import numpy as np

from ..config import LSTMConfig
from ..roll import random_transpose, shuffled_batches
from .model import features, n_features


def piece_windows(roll: np.ndarray, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True,
                  positions=None):
    """(x, y, weight) training triples from one piece: windows of ``cfg.window`` steps at a random offset.

    x is the network input of steps t..t+W-1 (and t+W for the NADE head, which is fed the frame it
    predicts, see :func:`~.model.build_model`), y the frames of steps t+1..t+W (many-to-many) or
    only t+W (``many_to_one``), ``weight`` 1 per target frame of the piece and 0 per frame of
    padding. A piece shorter than a window is padded with silence after its end (weight 0), so
    the LSTM starts it from a zero state as generation and ``musicgen evaluate`` do; the study's
    many-to-one window is padded in front instead (its one target is the window's last frame).
    Padding has no position in the bar. ``positions`` are the piece's bar positions
    (:func:`musicgen.midi.bar_positions` of its time signatures, ``Record.positions``); None: steps
    counted from its start (:func:`~.model.features`).
    With ``augment`` the piece is transposed by a random shift that keeps it on the keyboard, and
    played at half speed with probability ``cfg.half_speed`` (:func:`half_speed`).
    """
    frames = (np.asarray(roll) > 0).astype(np.float32)
    pos = np.arange(len(frames)) if positions is None else np.asarray(positions, np.int64)[:len(frames)]
    if len(pos) < len(frames):
        raise ValueError(f"{len(pos)} bar positions for a piece of {len(frames)} steps")
    if augment and cfg.half_speed and rng.random() < cfg.half_speed:
        frames, pos = half_speed(frames, pos)
    w, real = cfg.window, len(frames) - 1  # frames 1..real are targets
    if len(frames) < w + 1:
        pad = np.zeros((w + 1 - len(frames), frames.shape[1]), np.float32)
        none = np.full(len(pad), -1, np.int64)
        frames = np.concatenate([pad, frames] if cfg.many_to_one else [frames, pad])
        pos = np.concatenate([none, pos] if cfg.many_to_one else [pos, none])
    if augment:
        frames = random_transpose(frames, cfg.transpose, rng)
    offset = int(rng.integers(0, (len(frames) - 1) % w + 1)) if augment else 0
    span = w + 1 if cfg.head == "nade" else w
    for t in range(offset, len(frames) - w, w):
        x = features(frames[t:t + span], t, cfg, pos)
        if cfg.many_to_one:
            yield x, frames[t + w], np.float32(1)
        else:
            yield x, frames[t + 1:t + w + 1], (np.arange(t + 1, t + w + 1) <= real).astype(np.float32)


def half_speed(frames: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A piece at half speed: every frame twice, in bars twice as long (4/4 becomes 4/2: the step
    at position p becomes positions 2p and 2p + 1, which is what ``bar_positions`` gives the
    doubled time signature). A step without a position (-1) stays without."""
    positions = np.asarray(positions, np.int64)
    doubled = (2 * positions[:, None] + np.arange(2)).reshape(-1)
    return np.repeat(frames, 2, axis=0), np.where(np.repeat(positions, 2) < 0, -1, doubled)


def _roll_and_positions(piece):
    """A piece given as its roll, or as (roll, bar positions): (roll, positions or None)."""
    return piece if isinstance(piece, tuple) else (piece, None)


def window_batches(pieces, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True,
                   shuffle_buffer: int = 512):
    """Batches (x, y, weight) of windows from an iterable of pieces (rolls, or (roll, bar positions)
    pairs: :func:`piece_windows`), shuffled through a bounded buffer.

    Memory is bounded by ``shuffle_buffer`` windows, whatever the corpus size.
    """
    windows = (piece_windows(roll, cfg, rng, augment, positions)
               for roll, positions in map(_roll_and_positions, pieces))
    return shuffled_batches(windows, cfg.batch_size, rng, shuffle_buffer)


# The data side of the model-module interface of musicgen.train:

def examples(steps: int, cfg: LSTMConfig) -> int:
    """Windows :func:`piece_windows` cuts (at offset 0) from a piece of ``steps`` steps."""
    return max(1, (max(steps, cfg.window + 1) - 1) // cfg.window)


def train_batches(pieces, cfg: LSTMConfig, rng: np.random.Generator):
    """Training batches of pieces: rolls, or (roll, bar positions) pairs (:func:`window_batches`)."""
    return window_batches(pieces, cfg, rng, augment=True)


def val_arrays(pieces, cfg: LSTMConfig):
    """Every window of the validation pieces (rolls, or (roll, bar positions) pairs), untransposed,
    as arrays (x, y, weight)."""
    triples = [t for roll, positions in map(_roll_and_positions, pieces)
               for t in piece_windows(roll, cfg, np.random.default_rng(0), augment=False, positions=positions)]
    if not triples:
        span = cfg.window + (cfg.head == "nade")
        return (np.zeros((0, span, n_features(cfg)), np.float32), np.zeros((0, cfg.window, 128), np.float32),
                np.zeros((0, cfg.window), np.float32))
    return tuple(np.stack(a) for a in zip(*triples))
