"""Ingest at Lakh scale, without Ray: what bounds one file's work and memory in a conversion task
(the cells a file's notes may fill, the note-ons counted before any is kept), and that the faster
ways of writing a dataset (velocities drawn as uint8, the manifest encoded a block at a time)
write the same bytes as before."""
import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from midi_factory import hung_note_storm, make_midi, million_notes, off, on
from musicgen.dataset import decode_roll, encode_roll, write_manifest
from musicgen.errors import MidiError
from musicgen.midi import read_midi, read_notes
from musicgen.prepare import PrepareConfig, _convert_chunk


def note(pitch: int, start: int, stop: int, velocity: int = 100) -> list:
    return [(start, on(pitch, velocity)), (stop, off(pitch))]


def _items(paths):
    return [{"source": str(p), "path": str(p), "id": p.stem, "split": "train", "size": p.stat().st_size}
            for p in paths]


def test_a_hung_note_storm_is_refused_before_its_roll_exists(chorales, tmp_path, monkeypatch):
    """~2,000 notes never switched off in a file a million rows long: by default refused at once,
    with the cells it would fill, where drawing it took the time limit and ~600 MB."""
    from musicgen.midi import NoteLayout

    storm = tmp_path / "storm.mid"
    storm.write_bytes(hung_note_storm())
    good = sorted(chorales.glob("*.mid"))[0]
    drawn, draw = [], NoteLayout.roll
    monkeypatch.setattr(NoteLayout, "roll", lambda self, **kw: drawn.append(self.steps) or draw(self, **kw))
    t = time.perf_counter()
    rows = _convert_chunk({"shard": "shards/train-00000.parquet", "items": _items([storm, good])},
                          PrepareConfig(file_timeout=30), str(tmp_path), str(tmp_path / "ds"))
    elapsed = time.perf_counter() - t
    cells = 15 * 128 * read_notes(storm.read_bytes()).steps
    assert rows[0]["reason"] == (f"its notes would fill {cells} cells of the roll, more than max_cells={1 << 25} "
                                 "(hung notes?)")
    assert rows[1]["reason"] is None and json.loads(rows[0]["shard_entry"])["pieces"] == 1
    assert drawn == [rows[1]["steps"]]  # the storm's roll was never drawn
    assert elapsed < 5  # ~0.02 s; without max_cells the time limit stops it (test_prepare)


def test_max_cells_counts_each_notes_rows(tmp_path):
    data = make_midi([note(60, 0, 480) + note(64, 0, 960) + note(67, 240, 360)])  # 4 + 8 + 1 rows
    layout = read_notes(data)
    assert layout.cells == 13 and layout.notes == 3
    path = tmp_path / "three.mid"
    path.write_bytes(data)
    for budget, refused in ((13, False), (12, True)):
        row = _convert_chunk({"shard": "shards/train-00000.parquet", "items": _items([path])},
                             PrepareConfig(max_cells=budget), str(tmp_path), str(tmp_path / f"ds{budget}"))[0]
        assert (row["reason"] is not None) == refused


def test_too_many_notes_are_counted_without_being_kept(monkeypatch):
    """A file that could hold more than max_notes note-ons is first counted: one that does is
    refused with its count and without its events ever kept (a million: ~150 MB)."""
    from musicgen import midi

    calls, fast = [], midi._fast_events
    monkeypatch.setattr(midi, "_fast_events", lambda data, sustain, keep=True: calls.append(keep) or
                        fast(data, sustain, keep))
    with pytest.raises(MidiError, match=r"more than max_notes=500000 notes \(1000000\)$"):
        read_midi(million_notes(), max_notes=500_000)
    assert calls == [False]
    small = million_notes(2000)  # 12 KB could hold more than 1,000 note-ons: counted, then read
    calls.clear()
    assert read_midi(small, max_notes=2000).notes == 2000 and calls == [False, True]
    with pytest.raises(MidiError, match=r"\(2000\)"):
        read_midi(small, max_notes=1999)
    calls.clear()
    assert read_midi(small, max_notes=5000).notes == 2000 and calls == [True]  # too small to hold more


def test_velocity_roll_is_the_encoded_float_roll(chorales):
    """prepare stores the velocities it draws as uint8: the same bytes as encode_roll of
    read_midi's float roll, for every velocity and on real files."""
    every = make_midi([[e for v in range(1, 128) for e in note(60 + v % 40, 120 * v, 120 * v + 240, v)]])
    for data in [every] + [p.read_bytes() for p in sorted(chorales.glob("*.mid"))[:6]]:
        for options in ({}, {"steps_per_beat": 12}, {"steps_per_second": 25, "sustain": True}):
            layout, piece = read_notes(data, **options), read_midi(data, **options)
            velocities = layout.roll(velocities=True)
            assert velocities.dtype == np.uint8 and velocities.tobytes() == encode_roll(piece.roll)
            np.testing.assert_array_equal(layout.roll(), piece.roll)


def test_shards_hold_read_midis_rolls(chorales, tmp_path):
    paths = sorted(chorales.glob("*.mid"))[:4]
    for shape in (None, (64, 128)):
        dest = tmp_path / f"ds{shape}"
        _convert_chunk({"shard": "shards/train-00000.parquet", "items": _items(paths)}, PrepareConfig(shape=shape),
                       str(tmp_path), str(dest))
        table = pq.read_table(dest / "shards" / "train-00000.parquet").to_pylist()
        for row, path in zip(table, paths):
            piece = read_midi(str(path))
            assert row["notes"] == piece.notes
            if shape is None:
                np.testing.assert_array_equal(decode_roll(row["roll"], row["steps"], row["width"]), piece.roll)
            else:
                from musicgen.roll import resize

                assert row["roll"] == encode_roll(resize(piece.roll, shape))


def test_manifest_is_json_dumps_with_indent_byte_for_byte(tmp_path):
    manifest = {"format": 2, "config": {"shape": None, "split": [0.8, 0.1, 0.1], "x": float("inf")},
                "pieces": [{"id": f"{i:03d}/p\u00e9ce-{i}", "steps": i, "tempo": 1.5 * i} for i in range(70_000)],
                "skipped": [], "nested": {"a": [[], {}, [1, [2, {"b": None}]]], "t": True}}
    write_manifest(str(tmp_path), manifest)
    assert (tmp_path / "manifest.json").read_bytes() == json.dumps(manifest, indent=1).encode()
