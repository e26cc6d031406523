"""musicgen.storage: one set of path helpers for local folders and s3:// URIs (S3: moto's server)."""
import os
import time

import pytest

from musicgen import storage
from musicgen.errors import DataError


def test_join_and_is_s3():
    assert storage.join("s3://b/pre/", "shards", "a.parquet") == "s3://b/pre/shards/a.parquet"
    assert storage.join("/data", "x", "y") == os.path.join("/data", "x", "y")
    assert storage.is_s3("s3://b") and not storage.is_s3("/s3://b") and not storage.is_s3("data")


def test_filesystem_and_uri_invert_each_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, inner = storage.filesystem("rel/x.mid")
    assert inner == str(tmp_path / "rel" / "x.mid")  # local paths are absolute: Ray workers cwd elsewhere
    assert storage.uri(fs, inner) == inner
    with pytest.raises(DataError, match="needs a bucket"):
        storage.filesystem("s3://")


def test_local_files_folders_and_listing(tmp_path):
    storage.write_bytes(str(tmp_path / "a" / "b" / "one.MID"), b"1")  # parents are created
    storage.write_bytes(str(tmp_path / "a" / "two.midi"), b"22")
    storage.write_bytes(str(tmp_path / "a" / "notes.txt"), b"x")
    assert storage.read_bytes(str(tmp_path / "a" / "two.midi")) == b"22"
    assert storage.is_file(str(tmp_path / "a" / "two.midi")) and not storage.is_dir(str(tmp_path / "a" / "two.midi"))
    assert storage.is_dir(str(tmp_path / "a")) and not storage.is_file(str(tmp_path / "a"))
    assert not storage.is_file(str(tmp_path / "missing")) and not storage.is_dir(str(tmp_path / "missing"))
    found = storage.list_files(str(tmp_path / "a"), (".mid", ".midi"))  # recursive, any case, sorted
    assert [os.path.relpath(f.path, tmp_path) for f in found] == [os.path.join("a", "b", "one.MID"),
                                                                    os.path.join("a", "two.midi")]
    assert [f.size for f in found] == [1, 2]
    assert [f.path for f in storage.list_files(str(tmp_path / "a" / "two.midi"), (".midi",))] == \
        [str(tmp_path / "a" / "two.midi")]  # a file lists itself when its suffix matches
    assert storage.list_files(str(tmp_path / "a" / "notes.txt"), (".mid",)) == []
    with pytest.raises(DataError, match="no such file or folder"):
        storage.list_files(str(tmp_path / "missing"), (".mid",))


def test_s3_files_prefixes_and_listing(s3):
    client, bucket = s3
    base = f"s3://{bucket}/corpus"
    storage.write_bytes(storage.join(base, "x", "one.mid"), b"abc")
    client.put_object(Bucket=bucket, Key="corpus/two.MIDI", Body=b"de")
    client.put_object(Bucket=bucket, Key="corpus/readme.txt", Body=b"")
    assert client.get_object(Bucket=bucket, Key="corpus/x/one.mid")["Body"].read() == b"abc"
    assert storage.read_bytes(f"{base}/two.MIDI") == b"de"
    assert storage.is_file(f"{base}/x/one.mid") and storage.is_dir(base) and storage.is_dir(f"{base}/x")
    assert not storage.is_file(f"{base}/nothing.mid") and not storage.is_dir(f"s3://{bucket}/nothing")
    found = storage.list_files(base, (".mid", ".midi"))
    fs, _ = storage.filesystem(base)
    assert [storage.uri(fs, f.path) for f in found] == [f"{base}/two.MIDI", f"{base}/x/one.mid"]
    with pytest.raises(DataError, match="no such file or folder"):
        storage.list_files(f"s3://{bucket}/nothing", (".mid",))


def test_an_unreachable_store_is_a_one_line_data_error_within_seconds(s3_env, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot reach it") as e:
        storage.is_file("s3://bucket/key")
    assert time.monotonic() - start < 60
    assert "\n" not in str(e.value) and str(e.value).startswith("s3://bucket/key: ")
