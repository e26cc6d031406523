"""musicgen.prepare / musicgen.dataset on real chorales, a real local Ray and a real S3 server."""
import json
import os
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
