"""Prepared datasets: Parquet shards of piano rolls plus ``manifest.json``, on disk or S3.

Layout of a dataset folder (or ``s3://`` prefix)::

    manifest.json                 written last: a dataset without it is incomplete
    shards/train-00000.parquet    one row per piece, zstd-compressed
    shards/val-00000.parquet
    shards/test-00000.parquet

A row holds ``id``, ``source``, ``split``, ``steps`` (rows of the roll), ``width`` (128, or the
``--shape`` width), ``notes``, the tempo map (``tempo_rows``, ``tempo_bpm``), the time signatures
(``meter_rows``, ``meter_num``, ``meter_den``: from row r on, num/den) and ``roll``: the velocities
0-127 as uint8 bytes, row-major. Velocities are integers, so this is lossless for rolls
on the beat grid and ~4x smaller than float32 before compression (rolls are mostly zeros, so zstd
takes them down to a few percent of that). ``--shape`` rolls are rounded to integer velocities.

Format 2 added the time signatures. A format-1 dataset (without them) still reads: its pieces
are in 4/4, MIDI's default, as is a row whose time signatures are empty or null.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import DataError, one_line
from .midi import bar_positions

FORMAT = 2  # 2: rows hold time signatures (meter_*); 1 (without) still reads
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
    ("meter_rows", pa.list_(pa.int32())),
    ("meter_num", pa.list_(pa.int32())),
    ("meter_den", pa.list_(pa.int32())),
    ("roll", pa.large_binary()),
])


def encode_roll(roll: np.ndarray) -> bytes:
    """A float roll in [0, 1] -> uint8 velocity bytes (row-major)."""
    return np.rint(np.asarray(roll, dtype=np.float32) * 127).astype(np.uint8).tobytes()


def decode_roll(data: bytes, steps: int, width: int = 128) -> np.ndarray:
    """uint8 velocity bytes -> float32 roll (steps, width) in [0, 1]."""
    return np.frombuffer(data, dtype=np.uint8).reshape(steps, width).astype(np.float32) / 127.0


def write_shard(dest: str, rel: str, rows: list[dict]) -> dict:
    """Write piece rows (dicts of :data:`SCHEMA`'s fields) to one Parquet shard ``dest/rel``.

    Returns its manifest entry: ``path`` (relative to the dataset), ``split``, ``pieces``, ``bytes``.
    """
    fs, inner = storage.filesystem(dest)
    path = storage.join(inner, rel)
    if not storage.is_s3(dest):
        fs.create_dir(storage.join(inner, SHARD_DIR), recursive=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path, filesystem=fs, compression="zstd")
    return {"path": rel, "split": rows[0]["split"], "pieces": len(rows), "bytes": fs.get_file_info(path).size}


def write_manifest(dest: str, manifest: dict) -> None:
    """``json.dumps(manifest, indent=1)`` to ``dest/manifest.json``, encoded a block at a time: with
    an indent json's encoder is pure Python and ``dumps`` first holds every token as a string of
    its own (millions, for 100,000 pieces)."""
    blocks, tokens = [], []
    for token in json.JSONEncoder(indent=1).iterencode(manifest):
        tokens.append(token)
        if len(tokens) == 1 << 16:
            blocks.append("".join(tokens).encode())
            tokens.clear()
    blocks.append("".join(tokens).encode())
    storage.write_bytes(storage.join(dest, MANIFEST), b"".join(blocks))


def read_manifest(dataset: str) -> dict:
    """The manifest of a prepared dataset; DataError naming the path if it is not one."""
    path = storage.join(dataset, MANIFEST)
    if not storage.is_file(path):
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
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)  # (row, num, den); none: 4/4
    steps_per_beat: int | None = 4  # the dataset's grid (None: in seconds or ticks, no beat)

    @property
    def positions(self) -> np.ndarray:
        """Each step's position in its bar (:func:`musicgen.midi.bar_positions`)."""
        return bar_positions(self.steps_per_beat, self.time_signatures, len(self.roll))


def meter_columns(time_signatures) -> dict:
    """A row's time-signature columns (:data:`SCHEMA`) of (row, num, den) triples."""
    rows, nums, dens = zip(*time_signatures) if time_signatures else ((), (), ())
    return {"meter_rows": list(map(int, rows)), "meter_num": list(map(int, nums)), "meter_den": list(map(int, dens))}


def time_signatures_of(row) -> list[tuple[int, int, int]]:
    """The (row, num, den) time signatures of a dataset row (a mapping of :data:`SCHEMA`'s
    columns, lists or arrays): [] (4/4) where the columns are absent (a format-1 dataset) or null."""
    rows = row.get("meter_rows")
    if rows is None:
        return []
    return [(int(r), int(n), int(d)) for r, n, d in zip(rows, row["meter_num"], row["meter_den"])]


def beat_grid(manifest: dict) -> int | None:
    """Steps per beat of a dataset's rows, on which its time signatures lay out bars: None on a grid
    in seconds or in ticks (no beat); a manifest without the field is on prepare's default grid."""
    return None if manifest.get("steps_per_second") else manifest.get("steps_per_beat", 4)


def iter_records(dataset: str, split: str | None = "train"):
    """Yield the :class:`Record` of every piece of ``split`` (all splits if None), shard by shard."""
    manifest = read_manifest(dataset)
    steps_per_beat = beat_grid(manifest)
    for path in shard_paths(dataset, split, manifest):
        fs, inner = storage.filesystem(path)
        try:
            table = pq.read_table(inner, filesystem=fs)
        except (OSError, pa.ArrowException) as e:  # missing or unreachable; corrupt (ArrowInvalid)
            raise DataError(f"{path}: unreadable shard ({one_line(e)})") from None
        for row in table.to_pylist():
            yield Record(row["id"], row["source"], row["split"],
                         decode_roll(row["roll"], row["steps"], row["width"]),
                         list(zip(row["tempo_rows"], row["tempo_bpm"])), time_signatures_of(row), steps_per_beat)


def load_rolls(dataset: str, split: str | None = "train") -> dict[str, np.ndarray]:
    """The rolls of one split of a prepared dataset (local or s3://), by piece id, in shard order."""
    return {r.id: r.roll for r in iter_records(dataset, split)}
