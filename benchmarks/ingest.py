"""Benchmark: `musicgen prepare` at Lakh scale, with corrupt and pathological files, next to pretty_midi.

Run:  python benchmarks/ingest.py --files 10000 [--work /tmp/musicgen-ingest] [--pretty-every 1]
      python benchmarks/ingest.py --files 100000 --pretty-every 10

What it does and how it measures (figures only; nothing is asserted):

1. Corpus: N files in folders of 1,000 (as a crawl is laid out), made from the Bach chorales
   (`musicgen corpus bach`, kept in --work): each copy is mutated (a text event naming the copy,
   so no two files are the same bytes, and a random tempo, so pretty_midi's grid differs per
   file). 3% are corrupt, cycling through: truncated, random bytes, header only, five bytes
   flipped in a track, empty, text. One file in 2,500 is pathological, cycling through: a
   million notes (6 MB), a delta time far in the future (2**28 ticks), a hung-note storm (~2,000
   notes never switched off, a file a million rows long). Built once per N and reused; keep
   --work on a disk with room (the 100k corpus is ~550 MB, its dataset ~100 MB).
2. `musicgen prepare SRC DEST --overwrite` as a user runs it, in its own process with its own
   Ray (RAY_ADDRESS=local), timed from spawn to exit (Python start-up, imports, Ray start-up and
   the manifest included), its process tree polled with psutil every 0.2 s: peak RSS is the
   largest sum of RSS over the CLI and every process it started (Ray's GCS, raylet, workers;
   shared pages counted once per process, so this over-states). The manifest is checked: every
   file is a piece or in `skipped`, and every pathological file is in `skipped`, with its reason.
3. pretty_midi, one process: `PrettyMIDI(path).get_piano_roll(fs)` (fs = 4 steps per beat at the
   file's first tempo), each file in try/except (a failure counts as done), timed per file, on
   every --pretty-every-th file of the same corpus (the same mix of good, corrupt and pathological
   files: pathological ones sit 1,250 after multiples of 2,500). Its files/s is given over all the files
   it read and over the files other than the pathological ones (its best case: pretty_midi has no
   time limit, so one pathological file costs it what it costs).
4. Prints one Markdown row per run, with the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

from mido.midifiles.meta import encode_variable_int

from proctree import measure  # benchmarks/, on the path when run as a script

HERE = os.path.abspath(__file__)
CORRUPT_EVERY = 33  # ~3%
PATHOLOGICAL_EVERY = 2500
CORRUPT = ("truncated", "random-bytes", "header-only", "flipped", "empty", "text")
PATHOLOGICAL = ("million-notes", "far-tick", "hung-note-storm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000, help="files in the corpus (default 10000)")
    p.add_argument("--work", default="/tmp/musicgen-ingest", help="corpora and datasets (kept)")
    p.add_argument("--pretty-every", type=int, default=1, help="pretty_midi reads every k-th file (0: skip it)")
    p.add_argument("--file-timeout", default="5", help="--file-timeout for musicgen prepare (default 5)")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)  # internal: the pretty_midi run
    args = p.parse_args()
    if args._child:
        return pretty_child(*args._child)
    os.makedirs(args.work, exist_ok=True)
    src, kinds = build_corpus(args.work, args.files)
    print(f"{os.cpu_count()} cores; load average {_load()} before", flush=True)
    rows = [run_musicgen(src, os.path.join(args.work, f"dataset-{args.files}"), kinds, args.file_timeout)]
    if args.pretty_every:
        rows.append(run_pretty(src, kinds, args.pretty_every))
    print("\n| run | files | wall s | files/s | peak RSS MB (tree) | load (1 min) before / after |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['run']} | {r['files']} | {r['wall']:.1f} | {r['rate']:.0f} | {r['rss'] / 1e6:.0f} | {r['load']} |")
    if len(rows) == 2:
        print(f"\nmusicgen prepare (CLI) / pretty_midi 1 process, files/s: {rows[0]['rate'] / rows[1]['rate']:.2f}x "
              f"(all files), {rows[0]['rate'] / rows[1]['rate_good']:.2f}x (pretty_midi without pathological files)")


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# --- the corpus ----------------------------------------------------------------------------------

def build_corpus(work: str, n: int) -> tuple[str, dict]:
    """The folder of N files and {relative path: kind} of its bad files; built once per N."""
    folder = os.path.join(work, f"corpus-{n}")
    kinds_file = os.path.join(folder, "kinds.json")
    if os.path.exists(kinds_file):
        with open(kinds_file) as f:
            return folder, json.load(f)
    bach = os.path.join(work, "bach")
    if not os.path.isdir(bach) or len(os.listdir(bach)) < 300:
        from musicgen.corpus import write_corpus

        write_corpus("bach", bach, progress=False)
    sources = [open(os.path.join(bach, name), "rb").read() for name in sorted(os.listdir(bach)) if name.endswith(".mid")]
    t = time.perf_counter()
    rng = random.Random(0)
    kinds = {}
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for k in range(n):
        rel = f"{k // 1000:03d}/piece-{k:06d}.mid"
        data = mutate(sources[k % len(sources)], k, rng)
        if k % PATHOLOGICAL_EVERY == PATHOLOGICAL_EVERY // 2:
            kind = PATHOLOGICAL[(k // PATHOLOGICAL_EVERY) % len(PATHOLOGICAL)]
            data = pathological(kind)
            kinds[rel] = kind
        elif k % CORRUPT_EVERY == CORRUPT_EVERY - 1:
            kind = CORRUPT[(k // CORRUPT_EVERY) % len(CORRUPT)]
            data = corrupt(kind, data, rng)
            kinds[rel] = kind
        os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(tmp, rel), "wb") as f:
            f.write(data)
    with open(os.path.join(tmp, "kinds.json"), "w") as f:
        json.dump(kinds, f)
    os.rename(tmp, folder)
    size = sum(e.stat().st_size for d in os.scandir(folder) if d.is_dir() for e in os.scandir(d.path))
    print(f"corpus: {n} files ({len(kinds)} bad: {sum(v in PATHOLOGICAL for v in kinds.values())} pathological), "
          f"{size / 1e6:.0f} MB in {folder} ({time.perf_counter() - t:.0f} s)", flush=True)
    return folder, kinds


def _varlen(n: int) -> bytes:
    return bytes(encode_variable_int(n))


def _one_track(body: bytes) -> bytes:
    return b"MThd\0\0\0\6\0\0\0\1\1\xe0" + b"MTrk" + len(body).to_bytes(4, "big") + body


def mutate(data: bytes, k: int, rng: random.Random) -> bytes:
    """A copy: a text event naming it at the start of the first track, and a random first tempo."""
    if data[14:18] != b"MTrk":
        return data
    text = f"copy {k}".encode()
    event = b"\x00\xff\x01" + _varlen(len(text)) + text
    length = int.from_bytes(data[18:22], "big") + len(event)
    out = bytearray(data[:18] + length.to_bytes(4, "big") + event + data[22:])
    at = out.find(b"\xff\x51\x03")
    if at > 0:
        out[at + 3:at + 6] = rng.randrange(400_000, 800_000).to_bytes(3, "big")
    return bytes(out)


def corrupt(kind: str, data: bytes, rng: random.Random) -> bytes:
    if kind == "truncated":
        return data[:rng.randrange(14, max(15, len(data) // 2))]
    if kind == "random-bytes":
        return bytes(rng.randrange(256) for _ in range(2000))
    if kind == "header-only":
        return data[:14]
    if kind == "flipped":
        out = bytearray(data)
        for _ in range(5):
            out[rng.randrange(22, len(out))] ^= 0xFF
        return bytes(out)
    if kind == "empty":
        return b""
    return b"this is not a MIDI file\n" * 10


def pathological(kind: str) -> bytes:
    if kind == "million-notes":  # one pitch struck a million times, a tick apart, running status
        return _one_track(b"\x00\x90\x3c\x40" + b"\x01\x3c\x00\x01\x3c\x40" * 999_999 + b"\x01\x3c\x00\x00\xff\x2f\x00")
    if kind == "far-tick":  # a corrupt delta time: 2**28 ticks of silence
        return _one_track(b"\x00\x90\x3c\x40\x60\x80\x3c\x00" + _varlen(1 << 28) + b"\xff\x01\x00\x00\xff\x2f\x00")
    # hung-note storm: every pitch of 15 channels struck, none released, the file ends 2**27 ticks on
    body = b"".join(b"\x00" + bytes([0x90 | ch, p, 64]) for ch in range(16) if ch != 9 for p in range(128))
    return _one_track(body + _varlen(1 << 27) + b"\xff\x01\x00\x00\xff\x2f\x00")


# --- the runs ------------------------------------------------------------------------------------

def run_musicgen(src: str, dest: str, kinds: dict, timeout: str) -> dict:
    musicgen = shutil.which("musicgen", path=os.path.dirname(sys.executable)) or "musicgen"
    n = sum(1 for d in os.scandir(src) if d.is_dir() for _ in os.scandir(d.path))
    before = _load()
    wall, rss, driver, _, by_name = measure([musicgen, "prepare", src, dest, "--overwrite", "--file-timeout", timeout],
                                            {**os.environ, "RAY_ADDRESS": "local"})
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
    print(f"    driver's peak RSS {driver / 1e6:.0f} MB; RSS at the tree's peak: "
          + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in top), flush=True)
    with open(os.path.join(dest, "manifest.json")) as f:
        m = json.load(f)
    skipped = {os.path.relpath(s["source"], src): s["reason"] for s in m["skipped"]}
    missing = [rel for rel, kind in kinds.items() if kind in PATHOLOGICAL and rel not in skipped]
    missing = missing if len(missing) < 4 else f"{len(missing)} ({missing[0]}, ...)"
    timeouts = sum("--file-timeout" in r for r in skipped.values())
    cells = sum("max_cells" in r for r in skipped.values())
    print(f"musicgen prepare (CLI): {n} files in {wall:.1f} s = {n / wall:.0f} files/s, peak RSS tree "
          f"{rss / 1e6:.0f} MB; {m['counts']['pieces']} pieces + {len(skipped)} skipped "
          f"(= {m['counts']['pieces'] + len(skipped)} of {n}), {timeouts} by the time limit, {cells} by max_cells; "
          f"pathological files not skipped: {missing or 'none'}", flush=True)
    for kind in PATHOLOGICAL:
        reasons = {skipped.get(rel, "NOT SKIPPED")[:90] for rel, k in kinds.items() if k == kind}
        print(f"    {kind}: {sorted(reasons)}")
    return {"run": "musicgen prepare (CLI, incl. start-up)", "files": n, "wall": wall, "rate": n / wall, "rss": rss,
            "load": f"{before} / {_load()}"}


def run_pretty(src: str, kinds: dict, every: int) -> dict:
    before = _load()
    wall, rss, _, out, _ = measure([sys.executable, HERE, "--_child", src, str(every)], dict(os.environ))
    r = json.loads(out.strip().splitlines()[-1])
    good = r["seconds"] - r["pathological_seconds"]
    print(f"pretty_midi, 1 process: {r['files']} files (every {every}th) in {r['seconds']:.1f} s = "
          f"{r['files'] / r['seconds']:.1f} files/s; without its {r['pathological']} pathological files "
          f"({r['pathological_seconds']:.1f} s): {(r['files'] - r['pathological']) / good:.1f} files/s; "
          f"{r['failed']} raised; peak RSS {rss / 1e6:.0f} MB", flush=True)
    return {"run": f"pretty_midi, 1 process (every {every}th file)", "files": r["files"], "wall": r["seconds"],
            "rate": r["files"] / r["seconds"], "rate_good": (r["files"] - r["pathological"]) / good, "rss": rss,
            "load": f"{before} / {_load()}"}


def pretty_child(src: str, every: str) -> None:
    import warnings

    import pretty_midi

    warnings.filterwarnings("ignore")
    with open(os.path.join(src, "kinds.json")) as f:
        kinds = json.load(f)
    rels = sorted(os.path.join(d.name, e.name) for d in os.scandir(src) if d.is_dir() for e in os.scandir(d.path))
    rels = rels[::int(every)]
    total = bad_time = 0.0
    failed = patho = 0
    for rel in rels:
        t = time.perf_counter()
        try:
            pm = pretty_midi.PrettyMIDI(os.path.join(src, rel))
            pm.get_piano_roll(fs=4 * pm.get_tempo_changes()[1][0] / 60)
        except Exception:
            failed += 1
        dt = time.perf_counter() - t
        total += dt
        if kinds.get(rel) in PATHOLOGICAL:
            patho += 1
            bad_time += dt
    print(json.dumps({"files": len(rels), "seconds": total, "failed": failed, "pathological": patho,
                      "pathological_seconds": bad_time}))


if __name__ == "__main__":
    main()
