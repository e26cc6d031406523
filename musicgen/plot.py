"""Pictures of piano rolls: time across, pitch up, velocity as shade (like the study's Fig. 1)."""
from __future__ import annotations

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> name with octave, 60 -> 'C4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, roll, steps_per_beat, split_at, title, separators=()):
    roll = np.asarray(roll, dtype=np.float32)
    rows, width = roll.shape
    used = np.flatnonzero(roll.any(axis=0))
    lo, hi = (max(0, used[0] - 3), min(width - 1, used[-1] + 3)) if len(used) else (0, width - 1)
    # Prompt in blue, continuation in orange: shade = velocity, on white.
    colours = np.array([[0.12, 0.35, 0.75], [0.90, 0.40, 0.05]], dtype=np.float32)
    which = np.zeros(rows, dtype=int)
    if split_at is not None:
        which[split_at:] = 1
    shade = np.clip(roll[:, lo:hi + 1].T, 0, 1)[..., None] ** 0.6  # (pitch, time, 1); soft notes still show
    image = 1 - shade * (1 - colours[which][None, :, :])
    span = rows / steps_per_beat if steps_per_beat else rows
    ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, span, lo - 0.5, hi + 0.5))
    scale = steps_per_beat or 1
    if split_at is not None:
        ax.axvline(split_at / scale, color="black", linewidth=0.8, linestyle="--")
    for row in separators:  # where one piece of a strip ends and the next begins
        ax.axvline(row / scale, color="0.35", linewidth=1.2)
    if width == 128:
        cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
        ax.set_yticks(cs, [pitch_name(p) for p in cs])
        ax.set_ylabel("pitch")
    else:
        ax.set_ylabel(f"column (of {width})")
    ax.set_xlabel("beats" if steps_per_beat else "rows")
    if title:
        ax.set_title(title, fontsize=9)


def plot_roll(roll, path: str, *, steps_per_beat: int | None = 4, split_at: int | None = None,
              title: str | None = None, separators=()) -> str:
    """Save a PNG of ``roll``; with ``split_at`` rows from there on (a continuation) get a second
    colour; a grey line marks each row of ``separators`` (where the pieces of a strip meet)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    _draw(ax, roll, steps_per_beat, split_at, title, separators)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def piece_starts(rolls) -> list[int]:
    """The rows at which the second, third, ... of ``rolls`` start once concatenated into a strip."""
    return [int(r) for r in np.cumsum([len(roll) for roll in rolls])[:-1]]


def plot_rolls(rolls: dict, path: str, *, steps_per_beat: int | None = 4, columns: int = 2) -> str:
    """Save a grid of several rolls ({title: roll}) as one PNG."""
    plt = _pyplot()
    n = len(rolls)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.8 * rows), dpi=100, squeeze=False)
    for ax, (title, roll) in zip(axes.flat, rolls.items()):
        _draw(ax, roll, steps_per_beat, None, title)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_history(history: dict, path: str, title: str | None = None) -> str:
    """Save loss curves ({name: [value per epoch]}) as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
