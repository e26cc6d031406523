"""musicgen.corpus: the demo corpora from music21's bundled scores, offline."""
import os

import pytest

from musicgen.corpus import bach_sources, other_sources, write_corpus
from musicgen.errors import DataError
from musicgen.midi import read_midi


def test_sources_are_the_bundled_scores():
    bach = bach_sources()
    assert len(bach) >= 300 and bach == sorted(bach)
    assert len(other_sources()) >= 50


def test_write_keeps_what_is_there_and_files_are_midi(chorales, tmp_path):
    paths = sorted(str(p) for p in chorales.glob("*.mid"))
    dest = tmp_path / "bach"
    dest.mkdir()
    for p in paths[:2]:  # as if a first run wrote two of three files
        (dest / os.path.basename(p)).write_bytes(open(p, "rb").read())
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    out = write_corpus("bach", str(dest), limit=3, workers=1, progress=False)
    assert [os.path.basename(p) for p in out] == sorted(os.path.basename(p) for p in paths[:3])
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.name in before} == before  # kept
    piece = read_midi(out[2], 4)
    assert piece.notes > 20 and piece.roll.shape[1] == 128


def test_unknown_corpus():
    with pytest.raises(DataError, match="unknown corpus 'mozart'"):
        write_corpus("mozart", "/nowhere")
