"""The LSTM's training data: windows cut on the fly from per-piece rolls, never materialised.

Training is many-to-many: every step of a window predicts the next frame, so a window of W steps
gives W targets (the study's many-to-one set-up gave one and needed a 50 GB window array).
Windows are cut at a random offset, with a random transposition.
"""
from __future__ import annotations

import numpy as np

from ..config import LSTMConfig
from ..roll import random_transpose, shuffled_batches
from .model import features, n_features


def piece_windows(roll: np.ndarray, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True):
    """(x, y) training pairs from one piece: windows of ``cfg.window`` steps at a random offset.

    x is the network input of steps t..t+W-1, y the frames of steps t+1..t+W (many-to-many) or
    only t+W (``many_to_one``). A piece shorter than a window is padded with silence in front.
    With ``augment`` the piece is transposed by a random shift that keeps it on the keyboard.
    """
    frames = (np.asarray(roll) > 0).astype(np.float32)
    w = cfg.window
    start_pos = 0
    if len(frames) < w + 1:
        pad = w + 1 - len(frames)
        frames = np.concatenate([np.zeros((pad, frames.shape[1]), np.float32), frames])
        start_pos = -pad
    if augment:
        frames = random_transpose(frames, cfg.transpose, rng)
    offset = int(rng.integers(0, (len(frames) - 1) % w + 1)) if augment else 0
    for t in range(offset, len(frames) - w, w):
        x = features(frames[t:t + w], start_pos + t, cfg)
        y = frames[t + w] if cfg.many_to_one else frames[t + 1:t + w + 1]
        yield x, y


def window_batches(rolls, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True,
                   shuffle_buffer: int = 512):
    """Batches (x, y) of windows from an iterable of rolls, shuffled through a bounded buffer.

    Memory is bounded by ``shuffle_buffer`` windows, whatever the corpus size.
    """
    pieces = (piece_windows(roll, cfg, rng, augment) for roll in rolls)
    return shuffled_batches(pieces, cfg.batch_size, rng, shuffle_buffer)


# The data side of the model-module interface of musicgen.train:

def examples(steps: int, cfg: LSTMConfig) -> int:
    """Windows :func:`piece_windows` cuts (at offset 0) from a piece of ``steps`` steps."""
    return max(1, (max(steps, cfg.window + 1) - 1) // cfg.window)


def train_batches(rolls, cfg: LSTMConfig, rng: np.random.Generator):
    return window_batches(rolls, cfg, rng, augment=True)


def val_arrays(rolls, cfg: LSTMConfig):
    """Every window of the validation pieces, untransposed, as arrays (x, y)."""
    pairs = [pair for roll in rolls for pair in piece_windows(roll, cfg, np.random.default_rng(0), augment=False)]
    if not pairs:
        return np.zeros((0, cfg.window, n_features(cfg)), np.float32), np.zeros((0, cfg.window, 128), np.float32)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
