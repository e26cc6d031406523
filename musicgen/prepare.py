"""MIDI folder (local or s3://) -> prepared dataset, converted in parallel on Ray Data.

The driver lists the files, assigns each to a split (by piece: fractions drawn with a seed, or the
corpus's own split from its folders or a table, see musicgen.splits) and cuts
each split into chunks of a few dozen files, one chunk per shard. Ray Data runs one task per block
of chunks (about a thousand files): it reads, converts and writes their shards (so rolls never
travel through the driver, and memory holds one chunk per worker) and streams back one small row
per file. The driver keeps the progress bar and the pieces, and writes the manifest last.

A file that cannot be read or converted is listed in the manifest's ``skipped`` with its reason;
it never ends the run. Nor can one stall it or take a worker's memory: a file with more than
``max_notes`` note-ons is refused before its events are kept, one whose notes would fill more than
``max_cells`` cells before its roll is drawn, and one whose conversion takes longer than
``file_timeout`` seconds is stopped by a watchdog and skipped.
"""
from __future__ import annotations

import datetime
import json
import posixpath
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from . import __version__, storage
from .dataset import FORMAT, MANIFEST, SHARD_DIR, SPLITS, encode_roll, meter_columns, write_manifest, write_shard
from .errors import DataError, MidiError, one_line
from .midi import MAX_STEPS, read_notes
from .roll import resize

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
FILES_PER_TASK = 1024  # about a second of conversion on one core


@dataclass
class PrepareConfig:
    """How MIDI files become dataset rows (the flags of ``musicgen prepare``)."""

    steps_per_beat: int | None = 4  # None: one row per MIDI tick, as the study did
    steps_per_second: float | None = None  # a grid in seconds for performances (steps_per_beat ignored)
    shape: tuple[int, int] | None = None  # resize every roll to (rows, columns), the study's arrays
    interpolation: str = "area"
    split: tuple[float, float, float] | str = (0.8, 0.1, 0.1)  # train, val, test fractions, or "folders"
    split_file: str | None = None  # a CSV/JSON table of path -> split (musicgen.splits); overrides split
    seed: int = 0
    drums: bool = False
    sustain: bool = False
    max_bytes: int = 16 << 20  # larger files are skipped unread
    max_steps: int = MAX_STEPS
    max_notes: int | None = 500_000  # more note-ons: skipped (a generated "black MIDI", a corrupt file)
    file_timeout: float | None = 5.0  # seconds one file's conversion may take (None: no limit)
    # Most cells a file's notes may fill (each note's rows, summed), checked before the roll is
    # drawn: a hung-note storm (thousands of notes never switched off in a long file) is refused at
    # once instead of costing a task its time limit and hundreds of MB (None: no limit).
    max_cells: int | None = 1 << 25
    files_per_shard: int = 64  # a Ray task converts a block of shards (FILES_PER_TASK files or so)
    overwrite: bool = False


def parse_split(text: str) -> tuple[float, float, float] | str:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1): three fractions >= 0 that add up to 1; 'folders' as is."""
    if str(text).strip().lower() == "folders":
        return "folders"
    try:
        parts = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not np.isfinite(p) or p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise DataError(f"--split must be three fractions train,val,test >= 0 adding up to 1 "
                        f"(e.g. 0.8,0.1,0.1) or 'folders', not {text!r}")
    return parts


def assign_splits(n: int, fractions, seed: int = 0) -> list[str]:
    """Split labels for n pieces: counts by largest remainder, order shuffled by ``seed``.

    A fraction of 0 gives exactly 0 pieces; the counts add up to n.
    """
    fractions = np.asarray(fractions, dtype=float)
    exact = fractions / fractions.sum() * n
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    for i in np.argsort(-remainder, kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.array(SPLITS), counts)
    return [str(s) for s in np.random.default_rng(seed).permutation(labels)]


class _FileTimeout(BaseException):
    """Raised by the watchdog inside a file's conversion. A BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` on the way (mido's, the fast parser's) takes it for a bad file."""


def _alarm(signum, frame):
    raise _FileTimeout


@contextmanager
def _time_limit(seconds: float | None):
    """Raise :class:`_FileTimeout` in this thread after ``seconds`` of wall-clock time.

    SIGALRM, because a thread cannot be stopped from outside in Python: the handler runs between
    two bytecodes of whatever is converting (mido's parser, the note loop), and a numpy call in
    progress finishes first. Two system calls per file (a few microseconds). Signals reach only the
    main thread, where Ray runs a task; elsewhere there is no limit (``max_steps``, ``max_bytes``
    still bound the work).
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _convert(fs, item: dict, config: PrepareConfig) -> dict:
    """One file -> a dataset row, or ``{"source", "reason"}`` saying why it was skipped."""
    source = item["source"]
    try:
        with fs.open_input_stream(item["path"]) as f:
            data = f.read()
        with _time_limit(config.file_timeout):  # the reading has its own timeouts (local disk, S3's)
            layout = read_notes(data, config.steps_per_beat, drums=config.drums, sustain=config.sustain,
                                max_steps=config.max_steps, name=source, steps_per_second=config.steps_per_second,
                                max_notes=config.max_notes)
            if config.max_cells is not None and layout.cells > config.max_cells:  # before any roll exists
                return {"source": source, "reason": f"its notes would fill {layout.cells} cells of the roll, more than "
                                                    f"max_cells={config.max_cells} (hung notes?)"}
            # The stored bytes are the velocities: drawn as such, the roll takes a quarter of the
            # memory and needs no encoding (encode_roll of the float roll gives the same bytes).
            roll = layout.roll(velocities=config.shape is None) if layout.notes else None
            if roll is None or not roll.any():
                return {"source": source, "reason": "empty: no notes" + (" (drums only?)" if not config.drums else "")}
            if config.shape is not None:
                roll = resize(roll, config.shape, config.interpolation)
            encoded = roll.tobytes() if config.shape is None else encode_roll(roll)
    except _FileTimeout:
        return {"source": source, "reason": f"conversion took longer than --file-timeout {config.file_timeout:g} s "
                                            f"({len(data)} bytes; a pathological file?)"}
    except MidiError as e:
        return {"source": source, "reason": e.reason}
    except OSError as e:
        return {"source": source, "reason": f"unreadable ({one_line(e)})"}
    except Exception as e:  # a bug must cost one file, not the run; the reason says what happened
        return {"source": source, "reason": f"conversion failed ({type(e).__name__}: {e})"}
    return {"id": item["id"], "source": source, "split": item["split"], "steps": roll.shape[0], "width": roll.shape[1],
            "notes": layout.notes, "tempo_rows": [r for r, _ in layout.tempos],
            "tempo_bpm": [b for _, b in layout.tempos], **meter_columns(layout.time_signatures), "roll": encoded}


def _convert_chunk(chunk: dict, config: PrepareConfig, src: str, dest: str) -> list[dict]:
    """Convert one chunk of files and write its shard; one small result row per file.

    A row is a piece's manifest entry (plus ``midi_bytes``) or a skipped file (``reason`` set);
    the chunk's first row also carries the shard's manifest entry (``shard_entry``).
    """
    fs, _ = storage.filesystem(src)
    rows, results = [], []
    for item in chunk["items"]:
        row = _convert(fs, item, config)
        if "reason" in row:
            results.append({**row, "midi_bytes": 0})
        else:
            rows.append(row)
            results.append({"id": row["id"], "source": row["source"], "split": row["split"], "steps": row["steps"],
                            "notes": row["notes"], "shard": chunk["shard"], "midi_bytes": item["size"]})
    entry = write_shard(dest, chunk["shard"], rows) if rows else None
    # Ray Data wants one schema for every row: absent fields are None, the shard entry as JSON.
    return [{"id": None, "split": None, "steps": None, "notes": None, "shard": None, "reason": None,
             **r, "shard_entry": json.dumps(entry) if i == 0 and entry else None} for i, r in enumerate(results)]


def _chunks(items: list[dict], files_per_shard: int, workers: int) -> list[dict]:
    """Items -> shard-sized chunks of one split each, named ``shards/{split}-NNNNN.parquet``.

    Chunks are small enough that every core gets several (the last ones balance the load) and
    never above ``files_per_shard``.
    """
    size = max(1, min(files_per_shard, -(-len(items) // (4 * workers))))
    chunks = []
    for split in SPLITS:
        mine = [it for it in items if it["split"] == split]
        for k, i in enumerate(range(0, len(mine), size)):
            chunks.append({"shard": f"{SHARD_DIR}/{split}-{k:05d}.parquet", "items": mine[i:i + size]})
    return chunks


def _items(src: str, files, config: PrepareConfig):
    """Work items (one per file, with its split) and the files skipped before reading."""
    _, base = storage.filesystem(src)
    single = len(files) == 1 and files[0].path == base
    fs_for = storage.filesystem(src)[0]
    rels = [posixpath.basename(f.path) if single else posixpath.relpath(f.path, base) for f in files]
    labels = _labels(src, rels, config)
    items, skipped, seen = [], [], set()
    for f, rel, (split, unlisted) in zip(files, rels, labels):
        source = storage.uri(fs_for, f.path)
        piece_id = posixpath.splitext(rel)[0]
        while piece_id in seen:  # a.mid and a.midi in one folder
            piece_id += "_"
        seen.add(piece_id)
        if unlisted:
            skipped.append({"source": source, "reason": unlisted})
        elif f.size is not None and f.size > config.max_bytes:
            skipped.append({"source": source, "reason": f"too large: {f.size} bytes > --max-bytes {config.max_bytes}"})
        elif f.size == 0:
            skipped.append({"source": source, "reason": "empty file (0 bytes)"})
        else:
            items.append({"source": source, "path": f.path, "id": piece_id, "split": split, "size": f.size or 0})
    return items, skipped


def split_mode(config: PrepareConfig) -> str:
    """'file', 'folders' or 'fractions': where the splits come from."""
    return "file" if config.split_file else "folders" if config.split == "folders" else "fractions"


def _labels(src: str, rels: list[str], config: PrepareConfig) -> list[tuple[str | None, str | None]]:
    """(split, None) or (None, why the file has no split) for each path relative to ``src``."""
    from . import splits

    mode = split_mode(config)
    if mode == "file":
        return splits.table_labels(src, config.split_file, splits.read_table(config.split_file), rels)
    if mode == "folders":
        labels = splits.folder_labels(rels)
        splits.check_folders(src, labels)
        return labels
    return [(s, None) for s in assign_splits(len(rels), config.split, config.seed)]


def _check_dest(dest: str, overwrite: bool) -> None:
    manifest = storage.join(dest, MANIFEST)
    if storage.is_file(manifest):
        if not overwrite:
            raise DataError(f"{dest}: already holds a dataset (pass --overwrite to replace it)")
        fs, inner = storage.filesystem(manifest)
        fs.delete_file(inner)  # first: an interrupted rewrite reads as incomplete
        shards = storage.join(dest, SHARD_DIR)
        if storage.is_dir(shards):
            fs.delete_dir(storage.filesystem(shards)[1])


def prepare(src: str, dest: str, config: PrepareConfig | None = None, progress: bool = True) -> dict:
    """Convert every MIDI file under ``src`` into a dataset at ``dest``; returns the manifest.

    Raises DataError if ``src`` has no MIDI file or none of them could be converted.
    """
    config = config or PrepareConfig()
    files = storage.list_files(src, MIDI_SUFFIXES)
    if not files:
        raise DataError(f"{src}: no MIDI files ({', '.join(MIDI_SUFFIXES)}) found")
    n_files = len(files)
    items, skipped = _items(src, files, config)  # first: a bad split table must not touch DEST
    del files  # from here on the driver holds nothing per file but the pieces (100,000 at Lakh scale)
    _check_dest(dest, config.overwrite)

    from tqdm import tqdm

    from .runtime import ensure_ray, quiet_data_context

    ray = ensure_ray()
    quiet_data_context()
    pieces, shards = [], []
    midi_bytes = 0
    bar = tqdm(total=n_files, unit="file", desc="prepare", disable=not progress)
    bar.update(len(skipped))
    if items:
        ds = _conversion(ray, items, config, src, dest)
        del items  # the work items are in Ray's object store now
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            midi_bytes += _collect(batch.to_pylist(), pieces, skipped, shards)
            bar.update(batch.num_rows)
    bar.close()
    if not pieces:
        first = min(skipped, key=lambda s: s["source"])
        raise DataError(f"{src}: none of {n_files} MIDI files could be converted "
                        f"(e.g. {first['source']}: {first['reason']})")
    manifest = build_manifest(src, config, n_files, pieces, skipped, shards, midi_bytes)
    write_manifest(dest, manifest)  # last: its presence marks the dataset complete
    return manifest


def _conversion(ray, items: list[dict], config: PrepareConfig, src: str, dest: str):
    """The Ray Dataset that converts ``items`` chunk by chunk, writing the shards, and yields
    :func:`_convert_chunk`'s rows."""
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    chunks = _chunks(items, config.files_per_shard, workers)
    # One Ray task per block of chunks: a task costs ~20 ms of scheduling and start-up, so a
    # block holds up to FILES_PER_TASK files (still several tasks per core, to share the load).
    blocks = min(len(chunks), max(4 * workers, -(-len(items) // FILES_PER_TASK)))
    return ray.data.from_items(chunks, override_num_blocks=blocks).flat_map(
        _convert_chunk, fn_kwargs={"config": config, "src": src, "dest": dest})


def _collect(rows: list[dict], pieces: list[dict], skipped: list[dict], shards: list[dict]) -> int:
    """Add :func:`_convert_chunk`'s rows to the manifest's lists; returns the MIDI bytes of their
    pieces. A piece's split and shard name are shared strings (the driver holds every piece)."""
    midi_bytes = 0
    for row in rows:
        if row["shard_entry"]:
            shards.append(json.loads(row["shard_entry"]))
        if row["reason"] is not None:
            skipped.append({"source": row["source"], "reason": row["reason"]})
            continue
        midi_bytes += row["midi_bytes"]
        pieces.append({"id": row["id"], "source": row["source"], "split": sys.intern(row["split"]),
                       "steps": row["steps"], "notes": row["notes"], "shard": sys.intern(row["shard"])})
    return midi_bytes


def build_manifest(src: str, config: PrepareConfig, files: int, pieces: list[dict], skipped: list[dict],
                   shards: list[dict], midi_bytes: int, **extra) -> dict:
    """The manifest of a dataset whose shards are written: the one layout every writer of datasets
    uses (``prepare``, ``musicgen.poly``); ``extra`` keys are added at the top level."""
    totals = {s: {"pieces": 0, "steps": 0, "notes": 0} for s in SPLITS}
    for p in pieces:
        t = totals[p["split"]]
        t["pieces"] += 1
        t["steps"] += p["steps"]
        t["notes"] += p["notes"]
    shards.sort(key=lambda s: s["path"])
    shard_bytes = sum(s["bytes"] for s in shards)

    width = 128 if config.shape is None else config.shape[1]
    manifest = {
        "format": FORMAT,
        "musicgen_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": src,
        "config": {**asdict(config), "shape": list(config.shape) if config.shape else None},
        "split_mode": split_mode(config),
        "steps_per_beat": None if config.steps_per_second else config.steps_per_beat,
        "steps_per_second": config.steps_per_second,  # set: rows are 1/N s (tempo map ignored)
        "shape": list(config.shape) if config.shape else None,
        "width": width,
        "encoding": "roll: uint8 velocity 0-127, row-major (steps, width); value = velocity / 127",
        "counts": {"files": files, "pieces": len(pieces), "skipped": len(skipped),
                   **{s: totals[s]["pieces"] for s in SPLITS}},
        "splits": totals,
        "bytes": {"midi": midi_bytes, "dataset": shard_bytes},
        "shards": shards,
        "pieces": sorted(pieces, key=lambda p: p["id"]),
        "skipped": sorted(skipped, key=lambda s: s["source"]),
        **extra,
    }
    return manifest


def summary(manifest: dict) -> str:
    """A few human lines about a prepared dataset."""
    c, b = manifest["counts"], manifest["bytes"]
    grid = (f"{manifest['steps_per_second']:g} steps per second" if manifest.get("steps_per_second") else
            f"{manifest['steps_per_beat']} steps per beat" if manifest["steps_per_beat"] else "one row per tick")
    shape = f", resized to {manifest['shape'][0]}x{manifest['shape'][1]}" if manifest.get("shape") else ""
    lines = [f"{c['pieces']} pieces from {c['files']} files ({c['skipped']} skipped), {grid}{shape}",
             f"splits ({manifest.get('split_mode', 'fractions')}): " + ", ".join(f"{s} {manifest['splits'][s]['pieces']} pieces / "
                                    f"{manifest['splits'][s]['steps']} steps / {manifest['splits'][s]['notes']} notes"
                                    for s in SPLITS),
             f"size: {b['dataset'] / 1e6:.2f} MB of Parquet from {b['midi'] / 1e6:.2f} MB of MIDI"]
    for s in manifest["skipped"][:10]:
        lines.append(f"skipped {s['source']}: {s['reason']}")
    if len(manifest["skipped"]) > 10:
        lines.append(f"... and {len(manifest['skipped']) - 10} more skipped (see manifest.json)")
    return "\n".join(lines)

