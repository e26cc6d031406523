"""musicgen.dataset: the shard + manifest format, written and read back without Ray (locally and on
moto's S3), and its errors."""
import json

import numpy as np
import pytest

from musicgen import dataset, storage
from musicgen.errors import DataError


def roll(steps, pitch, velocity=100):
    r = np.zeros((steps, 128), np.float32)
    r[:, pitch] = velocity / 127
    return r


def row(piece_id, split, r):
    return {"id": piece_id, "source": f"/corpus/{piece_id}.mid", "split": split, "steps": r.shape[0],
            "width": r.shape[1], "notes": 1, "tempo_rows": [0, 8], "tempo_bpm": [120.0, 90.0],
            "roll": dataset.encode_roll(r)}


def write_dataset(dest):
    """Two train pieces in one shard, one test piece in another, then the manifest (written last)."""
    rolls = {"a": roll(4, 60), "b": roll(3, 64, 127), "c": roll(5, 67, 1)}
    shards = [dataset.write_shard(dest, "shards/train-00000.parquet", [row("a", "train", rolls["a"]),
                                                                       row("b", "train", rolls["b"])]),
              dataset.write_shard(dest, "shards/test-00000.parquet", [row("c", "test", rolls["c"])])]
    pieces = [{"id": k, "split": s} for k, s in (("a", "train"), ("b", "train"), ("c", "test"))]
    dataset.write_manifest(dest, {"format": dataset.FORMAT, "pieces": pieces, "shards": shards})
    return rolls, shards


def test_roll_bytes_are_velocities_and_lossless_on_integer_velocities():
    r = np.zeros((2, 128), np.float32)
    r[0, 60], r[1, 61], r[1, 127] = 1.0, 64 / 127, 1 / 127
    data = dataset.encode_roll(r)
    assert len(data) == 2 * 128 and data[60] == 127 and data[128 + 61] == 64 and data[-1] == 1
    np.testing.assert_array_equal(dataset.decode_roll(data, 2), r)
    assert dataset.decode_roll(dataset.encode_roll(np.full((1, 32), 0.5)), 1, 32)[0, 0] == 64 / 127  # rounded


@pytest.mark.parametrize("where", ["local", "s3"])
def test_written_dataset_reads_back_by_split(where, tmp_path, request):
    if where == "s3":
        _, bucket = request.getfixturevalue("s3")
        dest = f"s3://{bucket}/ds"
    else:
        dest = str(tmp_path / "ds")
    rolls, shards = write_dataset(dest)
    assert [s["pieces"] for s in shards] == [2, 1] and all(s["bytes"] > 0 for s in shards)
    assert shards[0]["path"] == "shards/train-00000.parquet" and shards[1]["split"] == "test"
    assert dataset.read_manifest(dest)["shards"] == shards
    assert dataset.shard_paths(dest, "test") == [storage.join(dest, "shards/test-00000.parquet")]
    assert len(dataset.shard_paths(dest)) == 2 and dataset.shard_paths(dest, "val") == []
    train = dataset.load_rolls(dest, "train")
    assert list(train) == ["a", "b"]  # shard order
    for k, r in train.items():
        np.testing.assert_array_equal(r, rolls[k])
    (c,) = dataset.iter_records(dest, "test")
    assert (c.id, c.split, c.source) == ("c", "test", "/corpus/c.mid")
    assert c.tempos == [(0, 120.0), (8, 90.0)] and c.roll.dtype == np.float32
    assert list(dataset.load_rolls(dest, None)) == ["a", "b", "c"]


def test_a_folder_without_manifest_or_with_a_bad_one_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a prepared dataset"):
        dataset.read_manifest(str(tmp_path))
    (tmp_path / dataset.MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest"):
        dataset.read_manifest(str(tmp_path))
    (tmp_path / dataset.MANIFEST).write_text(json.dumps({"name": "something else"}))
    with pytest.raises(DataError, match="not a musicgen manifest"):
        dataset.read_manifest(str(tmp_path))
    with pytest.raises(DataError, match="split must be one of train, val, test"):
        dataset.shard_paths(str(tmp_path), "validation")


def test_a_broken_shard_is_a_one_line_data_error_naming_it(tmp_path):
    dest = str(tmp_path / "ds")
    write_dataset(dest)
    shard = tmp_path / "ds" / "shards" / "test-00000.parquet"
    shard.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="unreadable shard") as e:
        list(dataset.iter_records(dest, "test"))
    assert str(e.value).startswith(str(shard)) and "\n" not in str(e.value)


def test_time_signatures_are_stored_and_old_datasets_read_in_four_four(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = str(tmp_path / "ds")
    waltz = {**row("waltz", "train", roll(20, 60)), **dataset.meter_columns([(0, 3, 4), (12, 2, 4)])}
    shards = [dataset.write_shard(dest, "shards/train-00000.parquet", [waltz, row("null", "train", roll(3, 62))])]
    # a format-1 shard, written before the time-signature columns existed
    old_schema = pa.schema([f for f in dataset.SCHEMA if not f.name.startswith("meter_")])
    old_table = pa.Table.from_pylist([row("old", "train", roll(18, 64))], schema=old_schema)
    pq.write_table(old_table, f"{dest}/shards/train-00001.parquet")
    shards.append({"path": "shards/train-00001.parquet", "split": "train", "pieces": 1, "bytes": 0})
    manifest = {"format": dataset.FORMAT, "steps_per_beat": 4, "pieces": [], "shards": shards}
    dataset.write_manifest(dest, manifest)
    got = {r.id: r for r in dataset.iter_records(dest)}
    assert got["waltz"].time_signatures == [(0, 3, 4), (12, 2, 4)]
    np.testing.assert_array_equal(got["waltz"].positions, [*range(12), *range(8)])  # bars of 12 steps, then 8
    assert got["null"].time_signatures == got["old"].time_signatures == []  # MIDI's default: 4/4
    np.testing.assert_array_equal(got["old"].positions, np.arange(18) % 16)
    # On a grid in seconds there are no beats, so no bar positions.
    dataset.write_manifest(dest, {**manifest, "steps_per_beat": None, "steps_per_second": 50})
    assert all((r.positions == -1).all() for r in dataset.iter_records(dest))
