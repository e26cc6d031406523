"""musicgen.plot: PNGs of rolls (prompt and continuation in two colours), grids, loss curves."""
import numpy as np

from musicgen.plot import piece_starts, pitch_name, plot_history, plot_roll, plot_rolls


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]  # RGB in [0, 1]


def test_pitch_names():
    assert [pitch_name(p) for p in (60, 61, 21, 0, 127)] == ["C4", "C#4", "A0", "C-1", "G9"]


def test_prompt_blue_continuation_orange(tmp_path):
    roll = np.zeros((32, 128), np.float32)
    roll[:16, 60] = 1.0   # prompt
    roll[16:, 67] = 1.0   # continuation
    path = plot_roll(roll, str(tmp_path / "r.png"), split_at=16, title="t")
    img = read_png(path)
    assert img.shape == (440, 1100, 3)  # 10 x 4 inches at 110 dpi
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    blue = (b > 0.6) & (r < 0.3)
    orange = (r > 0.8) & (b < 0.2) & (g > 0.3)
    assert blue.sum() > 500 and orange.sum() > 500
    assert np.median(np.nonzero(blue)[1]) < np.median(np.nonzero(orange)[1])  # prompt left of continuation
    one = read_png(plot_roll(roll, str(tmp_path / "one.png")))  # no split: all in the prompt's colour
    assert not ((one[..., 0] > 0.8) & (one[..., 2] < 0.2)).any()


def test_grid_and_history(tmp_path):
    rolls = {f"piece {i}": np.eye(16, 128, 40 + i, dtype=np.float32) for i in range(3)}
    grid = read_png(plot_rolls(rolls, str(tmp_path / "grid.png")))
    assert grid.shape[0] > 100 and grid.shape[1] > 100 and (grid < 0.5).any()
    curves = read_png(plot_history({"loss": [3, 2, 1], "val_loss": [3.5, 2.5, 2]}, str(tmp_path / "h.png")))
    assert curves.shape == (400, 600, 3)


def test_a_strip_marks_where_its_pieces_meet(tmp_path):
    pieces = [np.zeros((16, 128), np.float32) for _ in range(3)]
    for i, p in enumerate(pieces):
        p[:, 60 + 4 * i] = 1.0
    assert piece_starts(pieces) == [16, 32]
    strip = np.concatenate(pieces)
    plain = read_png(plot_roll(strip, str(tmp_path / "plain.png")))
    marked = read_png(plot_roll(strip, str(tmp_path / "marked.png"), separators=piece_starts(pieces)))
    grey = lambda img: (np.ptp(img, axis=-1) < 0.02) & (img[..., 0] > 0.2) & (img[..., 0] < 0.5)  # noqa: E731
    lines = np.flatnonzero(grey(marked).sum(axis=0) > 200) / marked.shape[1]  # mostly-grey columns
    assert not (grey(plain).sum(axis=0) > 200).any()
    assert len(lines) >= 2 and lines.min() > 0.3 and lines.max() < 0.75  # at 1/3 and 2/3 of the axes
