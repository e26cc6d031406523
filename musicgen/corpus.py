"""The demo corpus: Bach chorales from music21's bundled corpus, written as MIDI files offline."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from .errors import DataError

CORPORA = ("bach",)
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")  # scores, not the .rntxt harmonic analyses


def bach_sources() -> list:
    """Paths of the Bach scores that music21 ships (about 410 chorales), sorted."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("the demo corpus needs music21: pip install 'musicgen[corpus]'") from None
    by_name = {}  # a few chorales ship as both .krn and .mxl: one MIDI each, from the .mxl
    for p in sorted(corpus.getComposer("bach"), key=lambda p: (str(p).lower().endswith(".krn"), str(p))):
        if str(p).lower().endswith(_SCORE_SUFFIXES):
            by_name.setdefault(os.path.splitext(os.path.basename(p))[0], p)
    return sorted(by_name.values())


def _write_one(args) -> tuple[str, str | None]:
    source, dest = args
    try:
        from music21 import converter

        converter.parse(source).write("midi", fp=dest)
        return dest, None
    except Exception as e:  # one score music21 cannot render must not end the corpus
        return source, f"{type(e).__name__}: {e}"


def write_corpus(name: str, dest: str, *, limit: int | None = None, workers: int | None = None,
                 progress: bool = True) -> list[str]:
    """Write corpus ``name`` ('bach') as .mid files into folder ``dest``; returns their paths.

    Files already there are kept, so a second call is fast. Uses ``workers`` processes (default:
    every core): music21 takes ~0.25 s per chorale.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(CORPORA)}")
    sources = bach_sources()[:limit]
    os.makedirs(dest, exist_ok=True)
    jobs, written = [], []
    for src in sources:
        out = os.path.join(dest, os.path.splitext(os.path.basename(src))[0] + ".mid")
        if os.path.exists(out) and os.path.getsize(out):
            written.append(out)
        else:
            jobs.append((str(src), out))
    from tqdm import tqdm

    failed = []
    with tqdm(total=len(sources), initial=len(written), unit="piece", desc=f"corpus {name}",
              disable=not progress) as bar:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for path, error in pool.map(_write_one, jobs, chunksize=4):
                (failed.append((path, error)) if error else written.append(path))
                bar.update()
    for path, error in failed:
        print(f"corpus {name}: skipped {path}: {error}")
    return sorted(written)
