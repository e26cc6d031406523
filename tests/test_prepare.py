"""musicgen.prepare / musicgen.dataset on real chorales, a real local Ray and a real S3 server."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from musicgen.dataset import iter_records, load_rolls, read_manifest, shard_paths
from musicgen.errors import DataError
from musicgen.midi import midi_to_roll
from musicgen.prepare import PrepareConfig, assign_splits, parse_split, prepare

from conftest import N_CHORALES


@pytest.fixture
def messy(chorales, tmp_path):
    """The chorales plus every kind of bad file a real folder holds."""
    src = tmp_path / "messy"
    shutil.copytree(chorales, src / "good")
    raw = sorted((src / "good").glob("*.mid"))[0].read_bytes()
    bad = src / "bad"
    bad.mkdir()
    (bad / "truncated.mid").write_bytes(raw[: len(raw) // 3])
    (bad / "text.mid").write_text("this is not a MIDI file\n")
    (bad / "empty.mid").write_bytes(b"")
    (bad / "header-only.mid").write_bytes(raw[:14])
    (bad / "huge.mid").write_bytes(raw + b"\0" * 200_000)  # larger than the test's --max-bytes
    (bad / "notes.txt").write_text("not a MIDI name: ignored, not skipped")
    return src


def test_prepare_keeps_every_good_piece_and_lists_every_bad_one(ray_local, messy, tmp_path):
    dest = tmp_path / "ds"
    man = prepare(str(messy), str(dest), PrepareConfig(max_bytes=100_000), progress=False)
    assert man["counts"]["pieces"] == N_CHORALES
    assert man["counts"]["files"] == N_CHORALES + 5
    skipped = {os.path.basename(s["source"]): s["reason"] for s in man["skipped"]}
    assert set(skipped) == {"truncated.mid", "text.mid", "empty.mid", "header-only.mid", "huge.mid"}
    assert "too large" in skipped["huge.mid"] and "0 bytes" in skipped["empty.mid"]
    assert all(r for r in skipped.values())
    assert sum(man["counts"][s] for s in ("train", "val", "test")) == N_CHORALES
    assert man["steps_per_beat"] == 4 and man["width"] == 128 and man["shape"] is None
    assert man["bytes"]["dataset"] > 0 and man["bytes"]["midi"] > 0
    for piece in man["pieces"]:
        assert {"id", "source", "split", "steps", "notes", "shard"} <= set(piece)
    # Lossless: what comes back is exactly the roll of the source file.
    rolls = load_rolls(str(dest), None)
    assert len(rolls) == N_CHORALES
    for piece in man["pieces"][:8]:
        expected = midi_to_roll(piece["source"], 4)
        np.testing.assert_array_equal(rolls[piece["id"]], expected)
        assert rolls[piece["id"]].dtype == np.float32
    # A second prepare into the same place refuses unless told to overwrite.
    with pytest.raises(DataError, match="already holds a dataset"):
        prepare(str(messy), str(dest), PrepareConfig(), progress=False)
    again = prepare(str(messy), str(dest), PrepareConfig(max_bytes=100_000, overwrite=True), progress=False)
    assert [p["id"] for p in again["pieces"]] == [p["id"] for p in man["pieces"]]


def test_splits_are_by_piece_deterministic_and_may_be_zero(ray_local, chorales, tmp_path):
    a = prepare(str(chorales), str(tmp_path / "a"), PrepareConfig(seed=3), progress=False)
    b = prepare(str(chorales), str(tmp_path / "b"), PrepareConfig(seed=3), progress=False)
    c = prepare(str(chorales), str(tmp_path / "c"), PrepareConfig(seed=4), progress=False)
    split = lambda m: {p["id"]: p["split"] for p in m["pieces"]}  # noqa: E731
    assert split(a) == split(b)
    assert split(a) != split(c)
    assert a["counts"]["train"] == round(0.8 * N_CHORALES)
    # The shard of each split holds exactly that split's pieces.
    for s in ("train", "val", "test"):
        ids = {r.id for r in iter_records(str(tmp_path / "a"), s)}
        assert ids == {i for i, sp in split(a).items() if sp == s}
    test_only = prepare(str(chorales), str(tmp_path / "t"), PrepareConfig(split=(0, 0, 1)), progress=False)
    assert test_only["counts"]["test"] == N_CHORALES and test_only["counts"]["train"] == 0
    assert shard_paths(str(tmp_path / "t"), "train") == []
    assert load_rolls(str(tmp_path / "t"), "train") == {}


def test_shards_hold_at_most_files_per_shard_and_the_manifest_agrees(ray_local, chorales, tmp_path):
    man = prepare(str(chorales), str(tmp_path / "s"), PrepareConfig(files_per_shard=5), progress=False)
    shards = man["shards"]
    assert len(shards) >= N_CHORALES // 5 and all(1 <= s["pieces"] <= 5 for s in shards)
    assert sum(s["pieces"] for s in shards) == N_CHORALES
    assert sum(s["bytes"] for s in shards) == man["bytes"]["dataset"]
    for s in shards:  # one split per shard, named for it, holding exactly the pieces that say so
        assert s["path"].startswith(f"shards/{s['split']}-")
        records = list(iter_records(str(tmp_path / "s"), s["split"]))
        in_manifest = {p["id"] for p in man["pieces"] if p["shard"] == s["path"]}
        assert len(in_manifest) == s["pieces"] and in_manifest <= {r.id for r in records}
        assert os.path.getsize(tmp_path / "s" / s["path"]) == s["bytes"]


def test_assign_splits_counts():
    for n in range(0, 30):
        for fr in [(0.8, 0.1, 0.1), (0, 0, 1), (0.5, 0.5, 0), (1, 0, 0), (0.34, 0.33, 0.33)]:
            labels = assign_splits(n, fr, seed=1)
            assert len(labels) == n
            for name, f in zip(("train", "val", "test"), fr):
                if f == 0:
                    assert name not in labels
                assert abs(labels.count(name) - f * n) < 1
    assert parse_split("0.8, 0.1, 0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.1", "a,b,c", "0.5,0.5,0.5", "-0.1,0.6,0.5", "nan,0,1"):
        with pytest.raises(DataError, match="--split"):
            parse_split(bad)


def test_shape_gives_the_study_arrays(ray_local, chorales, tmp_path):
    man = prepare(str(chorales), str(tmp_path / "ds"), PrepareConfig(steps_per_beat=None, shape=(256, 128)),
                  progress=False)
    assert man["shape"] == [256, 128] and man["steps_per_beat"] is None
    rolls = load_rolls(str(tmp_path / "ds"), None)
    assert all(r.shape == (256, 128) for r in rolls.values())
    assert all(0 < r.max() <= 1 for r in rolls.values())


def test_nothing_readable_is_an_error_and_writes_no_manifest(ray_local, tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "a.mid").write_text("nope")
    (src / "b.mid").write_bytes(b"MThd\0\0\0\6\0\1\0\1\1\xe0MTrk\0\0\0\xff\0")
    with pytest.raises(DataError, match="none of 2 MIDI files"):
        prepare(str(src), str(tmp_path / "ds"), progress=False)
    assert not (tmp_path / "ds").exists()  # nothing half-written
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("not MIDI")
    with pytest.raises(DataError, match="no MIDI files"):
        prepare(str(tmp_path / "ds"), str(tmp_path / "ds2"), progress=False)
    with pytest.raises(DataError, match="no such file"):
        prepare(str(tmp_path / "missing"), str(tmp_path / "ds3"), progress=False)
    with pytest.raises(DataError, match="not a prepared dataset"):
        read_manifest(str(tmp_path / "ds"))


def test_prepare_from_and_to_s3(ray_local, s3, chorales, tmp_path):
    client, bucket = s3
    files = sorted(chorales.glob("*.mid"))[:10]
    for f in files:
        client.upload_file(str(f), bucket, f"raw/sub/{f.name}")
    client.put_object(Bucket=bucket, Key="raw/sub/broken.mid", Body=b"MThd garbage")
    man = prepare(f"s3://{bucket}/raw", f"s3://{bucket}/ds", PrepareConfig(), progress=False)
    assert man["counts"]["pieces"] == 10
    assert [s["source"] for s in man["skipped"]] == [f"s3://{bucket}/raw/sub/broken.mid"]
    assert all(p["source"].startswith(f"s3://{bucket}/raw/sub/") and p["id"].startswith("sub/")
               for p in man["pieces"])
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="ds/")["Contents"]}
    assert f"ds/manifest.json" in keys and any(k.endswith(".parquet") for k in keys)
    stored = json.loads(client.get_object(Bucket=bucket, Key="ds/manifest.json")["Body"].read())
    assert stored["counts"] == man["counts"]
    rolls = load_rolls(f"s3://{bucket}/ds", None)
    by_name = {p["id"].split("/")[-1]: p["id"] for p in man["pieces"]}
    for f in files[:4]:
        np.testing.assert_array_equal(rolls[by_name[f.stem]], midi_to_roll(str(f)))


def test_unreachable_s3_is_a_clear_error(tmp_path):
    from conftest import free_port, run_cli

    closed = f"http://127.0.0.1:{free_port()}"
    p = run_cli("prepare", "s3://nowhere/raw", str(tmp_path / "ds"),
                env={"AWS_ENDPOINT_URL": closed, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
                timeout=120)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "s3://nowhere/raw" in lines[0] and "Traceback" not in p.stderr


# --- official splits (--split folders, --split-file) ---------------------------------------------

def _split_of(man):
    return {p["id"]: p["split"] for p in man["pieces"]}


def _skipped(man):
    return {s["source"]: s["reason"] for s in man["skipped"]}


@pytest.mark.parametrize("val_name", ["valid", "val", "validation"])
def test_split_folders(ray_local, chorales, tmp_path, val_name):
    files = sorted(chorales.glob("*.mid"))
    src = tmp_path / "src"
    layout = {"train": files[:6], val_name: files[6:8], "test": files[8:10]}
    for folder, fs in layout.items():
        (src / folder / "deep").mkdir(parents=True)
        for f in fs:
            shutil.copyfile(f, src / folder / "deep" / f.name)
    shutil.copyfile(files[10], src / "stray.mid")  # in no split folder
    (src / "test" / "broken.mid").write_bytes(b"MThd garbage")
    man = prepare(str(src), str(tmp_path / "ds"), PrepareConfig(split="folders"), progress=False)
    assert man["split_mode"] == "folders"
    expected = {f"{folder}/deep/{f.stem}": {"valid": "val", "validation": "val"}.get(folder, folder)
                for folder, fs in layout.items() for f in fs}
    assert _split_of(man) == expected  # ids are the paths relative to SRC; no fraction involved
    assert man["counts"]["train"] == 6 and man["counts"]["val"] == 2 and man["counts"]["test"] == 2
    skipped = _skipped(man)
    assert set(skipped) == {str(src / "stray.mid"), str(src / "test" / "broken.mid")}
    assert "not in a split folder" in skipped[str(src / "stray.mid")]
    # a folder without any split folder is an error, not a dataset of nothing
    with pytest.raises(DataError, match="--split folders needs train/"):
        prepare(str(chorales), str(tmp_path / "ds2"), PrepareConfig(split="folders"), progress=False)
    assert parse_split("folders") == "folders"


def _maestro(chorales, root):
    """A MAESTRO-like folder: year folders of .midi files and maestro-v3.0.0.csv beside them."""
    files = sorted(chorales.glob("*.mid"))[:7]
    splits = ["train", "train", "train", "validation", "validation", "test", "test"]
    rows = []
    for i, (f, split) in enumerate(zip(files, splits)):
        rel = f"{2004 + i % 2}/MIDI-Unprocessed_{i:02d}.midi"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, root / rel)
        rows.append({"canonical_composer": "J. S. Bach", "canonical_title": f.stem, "split": split,
                     "year": 2004 + i % 2, "midi_filename": rel, "audio_filename": rel[:-5] + ".wav",
                     "duration": 60.0})
    return rows


def _write_csv(path, rows, columns=None):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns or list(rows[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_split_file_maestro_csv_and_json(ray_local, chorales, tmp_path):
    root = tmp_path / "maestro-v3.0.0"
    rows = _maestro(chorales, root)
    _write_csv(root / "maestro-v3.0.0.csv", rows)
    shutil.copyfile(sorted(chorales.glob("*.mid"))[10], root / "2004" / "not-in-table.midi")
    man = prepare(str(root), str(tmp_path / "ds"), PrepareConfig(split_file=str(root / "maestro-v3.0.0.csv")),
                  progress=False)
    assert man["split_mode"] == "file"
    want = {r["midi_filename"][:-5]: {"validation": "val"}.get(r["split"], r["split"]) for r in rows}
    assert _split_of(man) == want
    assert _skipped(man) == {str(root / "2004" / "not-in-table.midi"):
                             f"not listed in {root / 'maestro-v3.0.0.csv'}"}
    # MAESTRO's JSON (pandas' column layout) gives the same splits
    columns = {k: {str(i): r[k] for i, r in enumerate(rows)} for k in rows[0]}
    (root / "maestro-v3.0.0.json").write_text(json.dumps(columns))
    man2 = prepare(str(root), str(tmp_path / "ds2"), PrepareConfig(split_file=str(root / "maestro-v3.0.0.json")),
                   progress=False)
    assert _split_of(man2) == want
    # a generic list of objects with `path` / `split` and `valid`, paths spelt with ./
    generic = [{"path": "./" + r["midi_filename"], "split": {"validation": "valid"}.get(r["split"], r["split"])}
               for r in rows[1:]]
    (tmp_path / "generic.json").write_text(json.dumps(generic))
    man3 = prepare(str(root), str(tmp_path / "ds3"), PrepareConfig(split_file=str(tmp_path / "generic.json")),
                   progress=False)
    assert _split_of(man3) == {k: v for k, v in want.items() if k != rows[0]["midi_filename"][:-5]}
    assert len(man3["skipped"]) == 2


def test_split_file_errors_name_the_file_or_field(chorales, tmp_path):
    from musicgen.prepare import _labels

    root = tmp_path / "m"
    rows = _maestro(chorales, root)
    rels = [r["midi_filename"] for r in rows]
    table = tmp_path / "t.csv"
    _write_csv(table, rows + [{**rows[0], "midi_filename": "2006/gone.midi"}])
    with pytest.raises(DataError, match=r"2006/gone\.midi: listed in .*t\.csv but not found"):
        _labels(str(root), rels, PrepareConfig(split_file=str(table)))
    _write_csv(table, rows, ["canonical_title", "split"])
    with pytest.raises(DataError, match=r"t\.csv: no path column \(expected one of midi_filename"):
        _labels(str(root), rels, PrepareConfig(split_file=str(table)))
    _write_csv(table, rows, ["midi_filename", "year"])
    with pytest.raises(DataError, match=r"t\.csv: no split column"):
        _labels(str(root), rels, PrepareConfig(split_file=str(table)))
    _write_csv(table, [{**rows[0], "split": "holdout"}])
    with pytest.raises(DataError, match=r"row 1 .* has split 'holdout'"):
        _labels(str(root), rels, PrepareConfig(split_file=str(table)))
    with pytest.raises(DataError, match="no such split file"):
        _labels(str(root), rels, PrepareConfig(split_file=str(tmp_path / "nope.csv")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not readable JSON"):
        _labels(str(root), rels, PrepareConfig(split_file=str(tmp_path / "bad.json")))


def test_bad_split_table_is_one_line_on_the_command_line(chorales, tmp_path):
    from conftest import run_cli

    root = tmp_path / "m"
    rows = _maestro(chorales, root)
    _write_csv(tmp_path / "t.csv", rows, ["canonical_title", "split"])
    p = run_cli("prepare", root, tmp_path / "ds", "--split-file", tmp_path / "t.csv", timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr
    assert "t.csv: no path column" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_official_splits_on_s3(ray_local, s3, chorales, tmp_path):
    client, bucket = s3
    files = sorted(chorales.glob("*.mid"))[:6]
    for f, folder in zip(files, ["train", "train", "valid", "test", "test", "other"]):
        client.upload_file(str(f), bucket, f"raw/{folder}/{f.name}")
    man = prepare(f"s3://{bucket}/raw", f"s3://{bucket}/ds", PrepareConfig(split="folders"), progress=False)
    assert sorted(_split_of(man).values()) == ["test", "test", "train", "train", "val"]
    assert list(_skipped(man)) == [f"s3://{bucket}/raw/other/{files[5].name}"]
    table = "path,split\n" + "".join(f"{folder}/{f.name},{s}\n" for f, folder, s in
                                     zip(files, ["train", "train", "valid", "test", "test"], ["test"] * 5))
    client.put_object(Bucket=bucket, Key="meta/splits.csv", Body=table.encode())
    man = prepare(f"s3://{bucket}/raw", f"s3://{bucket}/ds2",
                  PrepareConfig(split_file=f"s3://{bucket}/meta/splits.csv"), progress=False)
    assert set(_split_of(man).values()) == {"test"} and man["counts"]["test"] == 5
    assert _skipped(man) == {f"s3://{bucket}/raw/other/{files[5].name}": f"not listed in s3://{bucket}/meta/splits.csv"}


def test_seconds_grid_is_recorded_in_the_manifest(ray_local, chorales, tmp_path):
    from musicgen.midi import read_midi

    man = prepare(str(chorales), str(tmp_path / "ds"), PrepareConfig(steps_per_beat=None, steps_per_second=25,
                                                                       sustain=True), progress=False)
    assert man["steps_per_second"] == 25 and man["steps_per_beat"] is None
    rolls = load_rolls(str(tmp_path / "ds"), None)
    for p in man["pieces"][:4]:
        np.testing.assert_array_equal(rolls[p["id"]], read_midi(p["source"], steps_per_second=25, sustain=True).roll)


# --- ingest at scale: no file can stall a task ------------------------------------------------------

def test_file_timeout_skips_a_slow_file_and_the_rest_goes_on(ray_local, chorales, tmp_path):
    from midi_factory import far_tick, hung_note_storm, million_notes

    from musicgen.prepare import _time_limit

    src = tmp_path / "lakh"
    src.mkdir()
    for f in sorted(chorales.glob("*.mid"))[:6]:
        shutil.copyfile(f, src / f.name)
    (src / "storm.mid").write_bytes(hung_note_storm())  # ~50 s to convert without a limit
    (src / "million.mid").write_bytes(million_notes())
    (src / "far.mid").write_bytes(far_tick())
    # max_cells=None: the storm, refused at once by default (see below), is here a file that fills
    # its roll for ~50 s.
    man = prepare(str(src), str(tmp_path / "ds"), PrepareConfig(file_timeout=0.5, files_per_shard=3, max_cells=None),
                  progress=False)
    skipped = {os.path.basename(s["source"]): s["reason"] for s in man["skipped"]}
    assert set(skipped) == {"storm.mid", "million.mid", "far.mid"}
    assert "longer than --file-timeout 0.5 s" in skipped["storm.mid"]
    # the million notes: refused by the watchdog, or by max_notes once counted if that took < 0.5 s
    # (it does on a quiet machine since notes are counted before any roll is drawn: CI saw both)
    assert re.search(r"longer than --file-timeout 0\.5 s|more than max_notes=500000 notes", skipped["million.mid"])
    assert "max_steps" in skipped["far.mid"]
    assert man["counts"]["pieces"] == 6 and man["config"]["file_timeout"] == 0.5
    # the watchdog leaves nothing behind: no timer armed, the previous handler back
    import signal

    before = signal.getsignal(signal.SIGALRM)
    with _time_limit(5):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is before


def test_file_timeout_in_a_conversion_task_without_ray(chorales, tmp_path):
    """The conversion task itself (what each Ray task runs), in this process: the watchdog stops a
    slow file and the chunk's other files are converted and written."""
    from midi_factory import hung_note_storm

    from musicgen.prepare import _convert_chunk

    good = sorted(chorales.glob("*.mid"))[0]
    slow = tmp_path / "storm.mid"
    slow.write_bytes(hung_note_storm())
    items = [{"source": str(p), "path": str(p), "id": p.stem, "split": "train", "size": p.stat().st_size}
             for p in (slow, good)]
    rows = _convert_chunk({"shard": "shards/train-00000.parquet", "items": items},
                          PrepareConfig(file_timeout=0.3, max_cells=None), str(tmp_path), str(tmp_path / "ds"))
    assert "longer than --file-timeout 0.3 s" in rows[0]["reason"] and rows[1]["reason"] is None
    assert json.loads(rows[0]["shard_entry"])["pieces"] == 1


def test_each_pieces_meter_goes_through_the_dataset_into_its_training_windows(ray_local, tmp_path):
    """Hand-built 3/4, 6/8 and changing meters: prepare stores each file's time signatures, and
    the LSTM's training windows see every step's position in its own bar."""
    from dataclasses import replace

    from musicgen import lstm
    from musicgen.config import LSTMConfig
    from midi_factory import in_meter

    src = tmp_path / "meters"
    src.mkdir()
    files = {"waltz": [(0, 3, 4)], "jig": [(0, 6, 8)], "change": [(0, 4, 4), (4, 3, 4), (7, 6, 8)], "plain": []}
    for name, sigs in files.items():
        (src / f"{name}.mid").write_bytes(in_meter(sigs, 16))
    prepare(str(src), str(tmp_path / "ds"), PrepareConfig(split=(1, 0, 0)), progress=False)
    records = {r.id: r for r in iter_records(str(tmp_path / "ds"))}
    bars = {"waltz": [*range(12)] * 5 + [0, 1, 2, 3], "jig": [*range(12)] * 5 + [0, 1, 2, 3],
            "change": [*range(16)] + [*range(12)] * 4,
            "plain": [*range(16)] * 4}
    for name, sigs in files.items():
        assert records[name].time_signatures == [(4 * beat, n, d) for beat, n, d in sigs]
        np.testing.assert_array_equal(records[name].positions, bars[name])
    cfg = LSTMConfig(layers=1, units=8, window=16, transpose=0, position=True, steps_per_bar=16)
    pieces = [(r.roll, r.positions) for r in records.values()]
    x, _, _ = lstm.val_arrays(pieces, cfg)
    windows = (len(records["plain"].roll) - 1) // 16  # 64 steps each: 3 windows of 16 steps
    expected = np.concatenate([r.positions[:16 * windows].reshape(-1, 16) for r in records.values()])
    np.testing.assert_array_equal(x[:, :, 128:].argmax(-1), expected)
    assert (x[:, :, 128:].sum(-1) == 1).all()
    # A bar longer than the one-hot wraps onto its start: 3/4 bars of 12 steps in 8 columns.
    waltz = records["waltz"]
    x8, _, _ = lstm.val_arrays([(waltz.roll, waltz.positions)], replace(cfg, steps_per_bar=8))
    np.testing.assert_array_equal(x8[:, :, 128:].argmax(-1).ravel(), waltz.positions[:48] % 8)
