"""The demo corpus: Bach chorales from music21's bundled corpus, written as MIDI files offline."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from .errors import DataError

CORPORA = ("bach", "other")
# "other": music the Bach-trained models never saw, for held-out tests of other composers and
# styles (prepare it with --split 0,0,1). Up to this many scores per composer, in music21's order.
OTHER = {"beethoven": 8, "mozart": 8, "haydn": 6, "schumann_robert": 5, "schumann_clara": 4, "chopin": 1,
         "joplin": 1, "schubert": 1, "handel": 1, "corelli": 1, "cpebach": 1, "monteverdi": 10,
         "palestrina": 10, "josquin": 4, "trecento": 6}
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


_TOO_BIG = {"opus132.mxl", "opus133.mxl"}  # late quartets: minutes each in music21, or broken repeats


def other_sources() -> list:
    """A mix of composers and styles from music21's corpus (see ``OTHER``)."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("the demo corpus needs music21: pip install 'musicgen[corpus]'") from None
    out = []
    for composer, n in OTHER.items():
        paths = sorted(p for p in corpus.getComposer(composer) if str(p).lower().endswith(_SCORE_SUFFIXES)
                       and os.path.basename(p) not in _TOO_BIG)
        out += paths[:n]
    return out


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
    """Write corpus ``name`` ('bach' or 'other') as .mid files into folder ``dest``; returns their paths.

    Files already there are kept, so a second call is fast. Uses ``workers`` processes (default:
    every core): music21 takes ~0.25 s per chorale.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(CORPORA)}")
    sources = (bach_sources() if name == "bach" else other_sources())[:limit]
    os.makedirs(dest, exist_ok=True)
    jobs, written = [], []
    for src in sources:
        stem = os.path.splitext(os.path.basename(src))[0]
        if name == "other":  # names repeat across composers (movement numbers)
            stem = os.path.basename(os.path.dirname(src)) + "-" + stem
        out = os.path.join(dest, stem + ".mid")
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
