"""Benchmark: `musicgen prepare` against a pretty_midi piano-roll loop, on the Bach chorales.

Run:  python benchmarks/prepare.py [--work /tmp/musicgen-bench] [--copies 10]

What it does and how it measures (figures only; nothing is asserted):

1. Writes the Bach corpus (~410 chorales, via music21; kept in --work and reused) and a copy of
   it repeated --copies times under distinct names (the "10x" corpus).
2. For each corpus, every measured run is its own subprocess, polled with psutil every 0.1 s:
   "peak RSS tree" is the largest sum of RSS over the process and all its descendants (for
   musicgen: the driver plus Ray's GCS, raylet and worker processes, which a local Ray starts as
   its children; memory shared between them, e.g. the object store, is counted once per process,
   so this over-states), "driver" the process's own peak RSS.
   - musicgen prepare (CLI): `musicgen prepare SRC DEST --overwrite`, timed from spawn to exit, so
     Python start-up, imports and Ray start-up are included. RAY_ADDRESS=local makes it start its
     own Ray even if another one is running on the machine.
   - musicgen prepare() on a running Ray ("steady state"): one process starts Ray, calls
     prepare() once on the 1x corpus to warm the workers, then times a second prepare() call on
     the corpus measured. Ray start-up and worker start-up are excluded; all else is included.
   - pretty_midi: `PrettyMIDI(path).get_piano_roll(fs)` per file, rolls discarded, in one process
     and in a multiprocessing Pool of 2; timed around the loop (imports excluded, which favours
     pretty_midi). fs is computed per file as 4 steps per beat at the file's first tempo
     (fs = 4 * bpm / 60; 8 frames/s at 120 bpm), the grid `musicgen prepare` uses by default.
   Notes/s uses each tool's own note count (musicgen: the manifest's splits; pretty_midi: the
   notes of all instruments); both totals are printed.
3. Prints a Markdown table and the speed-ups of musicgen prepare over pretty_midi in files/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time


from proctree import measure, poll_tree  # benchmarks/, on the path when run as a script

HERE = os.path.abspath(__file__)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=os.path.join("/tmp", "musicgen-bench"), help="cache and output folder (kept)")
    p.add_argument("--copies", type=int, default=10, help="how many times the big corpus repeats the chorales")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)  # internal: a measured run
    args = p.parse_args()
    if args._child:
        return child(*args._child)

    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (other work on the machine skews the timings)")
    one = os.path.join(args.work, "bach")
    many = os.path.join(args.work, f"bach-x{args.copies}")
    corpora = {"1x": build_corpus(one), f"{args.copies}x": build_copies(one, many, args.copies)}
    rows = []
    for name, (folder, files) in corpora.items():
        midi_mb = sum(os.path.getsize(f) for f in files) / 1e6
        print(f"\n== {name}: {len(files)} files, {midi_mb:.1f} MB of MIDI in {folder}", flush=True)
        rows += bench_corpus(name, folder, len(files), one, args.work)
    print_table(rows)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min)")


# --- corpora ---------------------------------------------------------------------------------

def build_corpus(folder: str) -> tuple[str, list[str]]:
    from musicgen.corpus import write_corpus

    t = time.perf_counter()
    write_corpus("bach", folder, progress=False)
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".mid"))
    print(f"corpus: {len(files)} chorales in {folder} ({time.perf_counter() - t:.1f} s)", flush=True)
    return folder, files


def build_copies(src: str, folder: str, copies: int) -> tuple[str, list[str]]:
    names = sorted(n for n in os.listdir(src) if n.endswith(".mid"))
    os.makedirs(folder, exist_ok=True)
    files = []
    for k in range(copies):
        for n in names:
            out = os.path.join(folder, f"{os.path.splitext(n)[0]}_copy{k}.mid")
            if not os.path.exists(out):
                shutil.copyfile(os.path.join(src, n), out)
            files.append(out)
    return folder, files


# --- runs ------------------------------------------------------------------------------------

def bench_corpus(name: str, folder: str, n: int, warmup: str, work: str) -> list[dict]:
    dest = os.path.join(work, f"dataset-{name}")
    musicgen = shutil.which("musicgen", path=os.path.dirname(sys.executable)) or "musicgen"
    env = {**os.environ, "RAY_ADDRESS": "local"}
    runs = [
        ("musicgen prepare (CLI, incl. Ray start)", [musicgen, "prepare", folder, dest, "--overwrite"]),
        ("musicgen prepare() on running Ray", [sys.executable, HERE, "--_child", "warm", folder, dest, warmup]),
        ("pretty_midi, 1 process", [sys.executable, HERE, "--_child", "pretty_midi", folder, "1"]),
        ("pretty_midi, Pool(2)", [sys.executable, HERE, "--_child", "pretty_midi", folder, "2"]),
    ]
    rows = []
    for tool, cmd in runs:
        wall, tree, driver, out, by_name = measure(cmd, env)
        row = {"tool": tool, "corpus": name, "files": n, "wall": wall, "tree": tree, "driver": driver}
        if tool.startswith("musicgen"):
            with open(os.path.join(dest, "manifest.json")) as f:
                m = json.load(f)
            row.update(notes=sum(s["notes"] for s in m["splits"].values()), dataset=m["bytes"]["dataset"],
                       midi=m["bytes"]["midi"], pieces=m["counts"]["pieces"])
        if not tool.endswith("(CLI, incl. Ray start)"):  # the child timed its own loop
            row.update(json.loads(out.strip().splitlines()[-1]))
        row["wall"] = row.pop("seconds", wall)
        rows.append(row)
        extra = f", {row['pieces']} pieces, dataset {row['dataset'] / 1e6:.1f} MB" if "dataset" in row else ""
        print(f"{tool:42s} {row['wall']:7.2f} s (process {wall:.2f} s), {n / row['wall']:7.1f} files/s, "
              f"{row['notes']} notes, peak RSS {tree / 1e6:.0f} MB tree / {driver / 1e6:.0f} MB driver{extra}",
              flush=True)
        if "ray_start" in row:
            print(f"    in that process: Ray start {row['ray_start']:.1f} s, first prepare() (1x, cold workers) "
                  f"{row['first_call']:.1f} s", flush=True)
        if tool.startswith("musicgen"):
            top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
            print("    RSS at the tree's peak: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in top), flush=True)
    return rows


# --- the measured children (run as `prepare.py --_child ...`) ----------------------------------

def child(kind: str, *args: str) -> None:
    if kind == "warm":
        folder, dest, warmup = args
        from musicgen.prepare import PrepareConfig, prepare
        from musicgen.runtime import ensure_ray

        t0 = time.perf_counter()
        ensure_ray()
        t1 = time.perf_counter()
        prepare(warmup, dest + "-warmup", PrepareConfig(overwrite=True), progress=False)
        t2 = time.perf_counter()
        prepare(folder, dest, PrepareConfig(overwrite=True), progress=False)
        print(json.dumps({"seconds": time.perf_counter() - t2, "ray_start": t1 - t0, "first_call": t2 - t1}))
    else:
        folder, processes = args[0], int(args[1])
        paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".mid"))
        t = time.perf_counter()
        if processes == 1:
            notes = sum(map(pretty_midi_roll, paths))
        else:
            import multiprocessing

            with multiprocessing.Pool(processes) as pool:
                notes = sum(pool.imap_unordered(pretty_midi_roll, paths, chunksize=8))
        print(json.dumps({"seconds": time.perf_counter() - t, "notes": notes}))


def pretty_midi_roll(path: str) -> int:
    """What a pretty_midi user does: load, piano roll at 4 steps per beat (first tempo); note count."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(path)
    bpm = pm.get_tempo_changes()[1][0]
    pm.get_piano_roll(fs=4 * bpm / 60)
    return sum(len(i.notes) for i in pm.instruments)


# --- report ----------------------------------------------------------------------------------

def print_table(rows: list[dict]) -> None:
    print("\n| tool | corpus | files | wall s | files/s | notes/s | peak RSS MB (tree / driver) | dataset MB / MIDI MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        size = (f"{r['dataset'] / 1e6:.1f} / {r['midi'] / 1e6:.1f} ({r['dataset'] / r['midi']:.1f}x)"
                if "dataset" in r else "–")
        print(f"| {r['tool']} | {r['corpus']} | {r['files']} | {r['wall']:.1f} | {r['files'] / r['wall']:.0f} | "
              f"{r['notes'] / r['wall']:,.0f} | {r['tree'] / 1e6:.0f} / {r['driver'] / 1e6:.0f} | {size} |")
    print("\nSpeed-up of musicgen prepare over pretty_midi, in files/s:")
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        rate = {r["tool"]: r["files"] / r["wall"] for r in rows if r["corpus"] == corpus}
        for ours in [t for t in rate if t.startswith("musicgen")]:
            vs = ", ".join(f"{rate[ours] / rate[t]:.2f}x vs {t}" for t in rate if t.startswith("pretty_midi"))
            print(f"- {corpus}, {ours}: {vs}")


if __name__ == "__main__":
    main()
