"""Operations on piano rolls: plain functions over (T, W) float arrays in [0, 1].

The study's fixed-size arrays come from :func:`resize`: OpenCV stretches every piece to the same
(H, W) whatever its length. That distorts time: a 30-second chorale and a 10-minute sonata both
become H rows, so a row is a different duration in every piece, tempo and rhythm are lost, and
with ``area`` interpolation short notes blur into their neighbours (with ``linear``/``nearest`` they
can vanish between sampled rows). A width other than 128 interpolates between neighbouring
pitches, so columns are no longer semitones. Such arrays are good for reproducing the study
(its LSTM on 1024x128, its VAE on 256x256 and 512x512) and for fixed-size image models; for
music that sounds like music, keep the beat grid (``steps_per_beat``) instead.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

#: The study's fixed sizes, (rows, columns).
SEED_SHAPES = ((256, 256), (512, 512), (1024, 1024), (1024, 128))

INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
                  "cubic": cv2.INTER_CUBIC}


def parse_shape(text: str) -> tuple[int, int]:
    """'1024x128' -> (1024, 128); ValueError naming the text for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m[1]) < 1 or int(m[2]) < 1 or int(m[1]) * int(m[2]) > 1 << 26:
        raise ValueError(f"--shape must be HxW with positive sizes (e.g. 1024x128), not {text!r}")
    return int(m[1]), int(m[2])


def resize(roll: np.ndarray, shape: tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize a roll to ``shape`` = (rows, columns) with OpenCV, as the study did; float32 in [0, 1].

    ``interpolation`` is one of ``area`` (averages, the default: no note disappears), ``linear``
    (OpenCV's own default), ``nearest`` or ``cubic``.
    """
    roll = np.asarray(roll, dtype=np.float32)
    if roll.ndim != 2 or 0 in roll.shape:
        raise ValueError(f"cannot resize a roll of shape {roll.shape}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, not {interpolation!r}")
    rows, cols = shape
    out = cv2.resize(roll, (cols, rows), interpolation=INTERPOLATIONS[interpolation])  # cv2 wants (w, h)
    return np.clip(out, 0.0, 1.0)


def transpose(roll: np.ndarray, semitones: int) -> np.ndarray:
    """Shift every note by ``semitones`` (positive = up); notes pushed off the keyboard drop out."""
    out = np.zeros_like(roll)
    if semitones >= 0:
        out[:, semitones:] = roll[:, : roll.shape[1] - semitones]
    else:
        out[:, :semitones] = roll[:, -semitones:]
    return out


def transpose_range(roll: np.ndarray, limit: int) -> tuple[int, int]:
    """Shifts in [-limit, limit] that keep every sounding pitch of ``roll`` on the keyboard."""
    used = np.flatnonzero(np.asarray(roll).any(axis=0))
    if not len(used):
        return 0, 0
    return max(-limit, -int(used[0])), min(limit, roll.shape[1] - 1 - int(used[-1]))


def random_transpose(roll: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``roll`` transposed by a random shift in [-limit, limit] that keeps it on the keyboard
    (data augmentation: the same music in another key)."""
    if not limit:
        return roll
    lo, hi = transpose_range(roll, limit)
    shift = int(rng.integers(lo, hi + 1))
    return transpose(roll, shift) if shift else roll


def shuffled_batches(pieces, batch_size: int, rng: np.random.Generator, buffer_size: int = 512,
                     partial: bool = False):
    """Batches from a stream of training examples, shuffled through a bounded buffer.

    ``pieces`` yields, per piece, an iterable of examples (tuples of arrays, e.g. (x, y)); each
    batch is the tuple of their stacked parts. Memory holds about ``buffer_size`` examples, however
    long the stream. With ``partial`` the last, smaller batch is yielded too.
    """
    buffer: list = []

    def drain(keep):
        rng.shuffle(buffer)
        while len(buffer) - keep >= batch_size or (partial and not keep and buffer):
            batch, buffer[:] = buffer[:batch_size], buffer[batch_size:]
            yield tuple(np.stack(parts) for parts in zip(*batch))

    for examples in pieces:
        buffer.extend(examples)
        if len(buffer) >= buffer_size:
            yield from drain(buffer_size // 2)
    yield from drain(0)
