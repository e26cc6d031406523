"""Prepared datasets: Parquet shards of piano rolls plus ``manifest.json``, on disk or S3.

Layout of a dataset folder (or ``s3://`` prefix)::

    manifest.json                 written last: a dataset without it is incomplete
    shards/train-00000.parquet    one row per piece, zstd-compressed
    shards/val-00000.parquet
    shards/test-00000.parquet

A row holds ``id``, ``source``, ``split``, ``steps`` (rows of the roll), ``width`` (128, or the
``--shape`` width), ``notes``, the tempo map (``tempo_rows``, ``tempo_bpm``) and ``roll``: the
velocities 0-127 as uint8 bytes, row-major. Velocities are integers, so this is lossless for rolls
on the beat grid and ~4x smaller than float32 before compression (rolls are mostly zeros, so zstd
takes them down to a few percent of that). ``--shape`` rolls are rounded to integer velocities.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import DataError

FORMAT = 1
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
SHARD_DIR = "shards"

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("split", pa.string()),
    ("steps", pa.int32()),
    ("width", pa.int32()),
    ("notes", pa.int32()),
    ("tempo_rows", pa.list_(pa.int32())),
    ("tempo_bpm", pa.list_(pa.float64())),
    ("roll", pa.large_binary()),
])


def encode_roll(roll: np.ndarray) -> bytes:
    """A float roll in [0, 1] -> uint8 velocity bytes (row-major)."""
    return np.rint(np.asarray(roll, dtype=np.float32) * 127).astype(np.uint8).tobytes()


def decode_roll(data: bytes, steps: int, width: int = 128) -> np.ndarray:
    """uint8 velocity bytes -> float32 roll (steps, width) in [0, 1]."""
    return np.frombuffer(data, dtype=np.uint8).reshape(steps, width).astype(np.float32) / 127.0


class ShardWriter:
    """Writes piece rows to ``shards/{split}-NNNNN.parquet``; a new shard every ``rows_per_shard`` rows.

    Rows are buffered and written as row groups of ``rows_per_group``, so memory stays bounded
    however many pieces pass through.
    """

    def __init__(self, dest: str, rows_per_shard: int = 1024, rows_per_group: int = 64):
        self.rows_per_shard, self.rows_per_group = rows_per_shard, rows_per_group
        self.fs, self.inner = storage.filesystem(dest)
        if not storage.is_s3(dest):
            self.fs.create_dir(storage.join(self.inner, SHARD_DIR), recursive=True)
        self.open: dict[str, dict] = {}  # split -> {writer, path, rows, buffer}
        self.shards: list[dict] = []  # manifest entries of closed shards

    def write(self, row: dict) -> str:
        """Add one piece; returns the shard path (relative to the dataset) it goes to."""
        split = row["split"]
        if split not in self.open:
            rel = f"{SHARD_DIR}/{split}-{sum(s['split'] == split for s in self.shards):05d}.parquet"
            writer = pq.ParquetWriter(storage.join(self.inner, rel), SCHEMA, filesystem=self.fs,
                                      compression="zstd")
            self.open[split] = {"writer": writer, "path": rel, "rows": 0, "buffer": []}
        shard = self.open[split]
        shard["buffer"].append(row)
        shard["rows"] += 1
        if len(shard["buffer"]) >= self.rows_per_group:
            self._flush(shard)
        if shard["rows"] >= self.rows_per_shard:
            self._close(split)
        return shard["path"]

    def _flush(self, shard: dict) -> None:
        if shard["buffer"]:
            shard["writer"].write_table(pa.Table.from_pylist(shard["buffer"], schema=SCHEMA))
            shard["buffer"] = []

    def _close(self, split: str) -> None:
        shard = self.open.pop(split)
        self._flush(shard)
        shard["writer"].close()
        self.shards.append({"path": shard["path"], "split": split, "pieces": shard["rows"]})

    def close(self) -> list[dict]:
        """Close every open shard; returns the manifest entries of all shards written."""
        for split in list(self.open):
            self._close(split)
        return sorted(self.shards, key=lambda s: s["path"])


def write_manifest(dest: str, manifest: dict) -> None:
    storage.write_bytes(storage.join(dest, MANIFEST), json.dumps(manifest, indent=1).encode())


def read_manifest(dataset: str) -> dict:
    """The manifest of a prepared dataset; DataError naming the path if it is not one."""
    path = storage.join(dataset, MANIFEST)
    found = storage.info(path)
    if found.type.name != "File":
        raise DataError(f"{dataset}: not a prepared dataset (no {MANIFEST}; run `musicgen prepare` first)")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or "pieces" not in manifest:
        raise DataError(f"{path}: not a musicgen manifest")
    return manifest


def shard_paths(dataset: str, split: str | None = None, manifest: dict | None = None) -> list[str]:
    """Full paths (local or s3://) of the shards of ``split`` (all splits if None)."""
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    manifest = manifest or read_manifest(dataset)
    return [storage.join(dataset, s["path"]) for s in manifest.get("shards", [])
            if split is None or s["split"] == split]


@dataclass
class Record:
    """One piece of a prepared dataset."""

    id: str
    source: str
    split: str
    roll: np.ndarray  # (steps, width) float32 in [0, 1]
    tempos: list[tuple[int, float]]


def iter_records(dataset: str, split: str | None = "train"):
    """Yield the :class:`Record` of every piece of ``split`` (all splits if None), shard by shard."""
    for path in shard_paths(dataset, split):
        fs, inner = storage.filesystem(path)
        try:
            table = pq.read_table(inner, filesystem=fs)
        except OSError as e:
            raise DataError(f"{path}: unreadable shard ({storage._first_line(e)})") from None
        for row in table.to_pylist():
            yield Record(row["id"], row["source"], row["split"],
                         decode_roll(row["roll"], row["steps"], row["width"]),
                         list(zip(row["tempo_rows"], row["tempo_bpm"])))


def load_rolls(dataset: str, split: str | None = "train") -> dict[str, np.ndarray]:
    """The rolls of one split of a prepared dataset (local or s3://), by piece id, in shard order."""
    return {r.id: r.roll for r in iter_records(dataset, split)}
