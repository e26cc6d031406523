"""musicgen.roll: the study's fixed-size arrays and transposition."""
import numpy as np
import pytest

from musicgen.roll import SEED_SHAPES, parse_shape, resize, transpose


def test_resize_to_every_seed_shape():
    rng = np.random.default_rng(0)
    roll = (rng.random((700, 128)) < 0.05).astype(np.float32) * 0.7
    for shape in SEED_SHAPES:
        out = resize(roll, shape)
        assert out.shape == shape and out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 1


def test_area_keeps_short_notes_that_linear_sampling_can_drop():
    roll = np.zeros((4096, 128), np.float32)
    roll[1001:1003, 60] = 1.0  # two rows out of 4096: one of many 4-row groups
    assert resize(roll, (1024, 128), "area")[:, 60].max() > 0
    assert resize(roll, (1024, 128), "nearest")[:, 60].max() == 0


def test_resize_keeps_time_order_and_pitch_columns():
    roll = np.zeros((400, 128), np.float32)
    roll[:100, 40] = 1.0
    roll[300:, 80] = 1.0
    out = resize(roll, (100, 128))
    assert out[:20, 40].min() > 0.99 and out[:20, 80].max() == 0
    assert out[-20:, 80].min() > 0.99 and out[-20:, 40].max() == 0


def test_resize_errors():
    with pytest.raises(ValueError, match="shape"):
        resize(np.zeros((0, 128), np.float32), (256, 256))
    with pytest.raises(ValueError, match="interpolation"):
        resize(np.ones((4, 128), np.float32), (8, 8), "bogus")


def test_parse_shape():
    assert parse_shape("1024x128") == (1024, 128)
    assert parse_shape("512X512") == (512, 512)
    for bad in ("1024", "0x128", "axb", "-1x5", "1024x128x3", "100000x100000"):
        with pytest.raises(ValueError, match="--shape"):
            parse_shape(bad)


def test_transpose():
    roll = np.zeros((3, 128), np.float32)
    roll[0, 60] = roll[1, 127] = roll[2, 0] = 0.5
    up = transpose(roll, 2)
    assert up[0, 62] == 0.5 and up[1].sum() == 0 and up[2, 2] == 0.5
    down = transpose(roll, -1)
    assert down[0, 59] == 0.5 and down[1, 126] == 0.5 and down[2].sum() == 0
    np.testing.assert_array_equal(transpose(roll, 0), roll)
