"""Benchmark: training memory at 1x vs 10x the corpus, many-to-many vs many-to-one, 1 vs 2 workers.

Run:  python benchmarks/training.py [--work /tmp/musicgen-bench-train] [--copies 10] [--epochs 2]
                                    [--parts rss,workers,targets] [--paper-batch 8] [--no-paper]

Figures only; nothing is asserted. Every figure is printed with the 1-minute load average at the
moment it was taken (the machine may be shared: other jobs skew wall-clock figures).

Data (cached in --work and reused): the Bach chorales (`musicgen corpus bach`, ~410 pieces), and
the same files copied --copies times under distinct names (the "10x" corpus); each prepared with
`musicgen prepare` at 4 steps per beat (default split 0.8/0.1/0.1).

1. rss: peak RSS per Ray Train worker at 1x and 10x. `musicgen train lstm --preset tiny --epochs E`
   (one worker) runs as a subprocess. At 10x each epoch is cut to as many steps as a full 1x epoch
   (--big-steps; 0 = full 10x epochs, ten times longer), so both runs train the same number of
   batches and differ only in the corpus behind them (the whole val split is still read and cut
   into windows, and Ray Data still plans and streams the 10x train shards); the capped run calls
   the same `musicgen.train.train` through the Python API, as the CLI has no flag for it. Each run
   has RAY_ADDRESS=local, so it starts its own Ray, whose GCS, raylet and workers are all
   descendants of the command: the process tree is polled with psutil every 0.25 s. A training
   worker is a process whose title (cmdline) holds "RayTrainWorker"; its peak RSS is taken only
   while it carries that title (Ray re-uses idle worker processes). Also
   printed: the driver's (the `musicgen` process) peak, the tree's peak (sum over every process:
   shared pages, e.g. the object store's, are counted once per process that maps them) and the
   tree's RSS by role at its peak. Next to it: what the study's window array (every 256-step window
   of 128 float32, stride 1, materialised) would take for the same corpus, both on our beat grid
   and in the study's own representation (every piece resized to 1024 rows: 768 windows a piece).
2. workers: samples/s with 1 and 2 Ray Train workers on the 1x corpus (--workers-corpus big: the
   10x one; the 1-worker run is then the one of part 1), full epochs. The per-worker batch is the
   preset's 32, so the global batch is 32 x workers and an epoch covers the same training windows
   with either count (train.py's plan halves the steps per epoch for 2 workers). Epoch time = the
   time between the checkpoints Ray Train reports at the end of epochs 1 and 2 (their folder names
   carry the time), so Ray start-up, graph tracing and the first epoch's warm-up are excluded; it includes the epoch's validation
   pass and checkpoint. A sample is a window of 64 steps (64 targets). Scaling efficiency =
   (samples/s with 2) / (2 x samples/s with 1). The workers' CPU seconds are printed too.
3. targets: targets learned per second in one process with Keras (no Ray): train steps
   (`train_on_batch`) of the same layers trained many-to-many (every step of a window predicts the
   next frame: batch x window targets a batch) and many-to-one (the study's scheme: one target,
   after the window's last step). Batches are real windows of the 1x dataset; warm-up batches are
   excluded, and the two schemes are timed in alternating rounds (the median round is reported)
   so load changes hit both alike. Sizes: `tiny` (2 x LSTM 256, batch 32) at the preset's window
   of 64 and at the study's 256, and `paper` (2 x LSTM 1024 = the study's net, window 256) with a
   smaller batch (--paper-batch) to keep it short on a CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import psutil

from proctree import poll_tree  # benchmarks/, on the path when run as a script

HERE = os.path.abspath(__file__)
MUSICGEN = shutil.which("musicgen", path=os.path.dirname(sys.executable)) or "musicgen"
ENV = {**os.environ, "RAY_ADDRESS": "local", "TF_CPP_MIN_LOG_LEVEL": "2"}


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/musicgen-bench-train", help="cache and output folder (kept)")
    p.add_argument("--copies", type=int, default=10, help="how many times the big corpus repeats the chorales")
    p.add_argument("--epochs", type=int, default=2, help="epochs of each Ray Train run (>= 2 for epoch times)")
    p.add_argument("--parts", default="rss,workers,targets", help="which parts to run (comma-separated)")
    p.add_argument("--big-steps", type=int, default=-1,
                   help="steps per epoch of the big-corpus run: -1 = as many as a full 1x epoch (default), "
                        "0 = a full epoch")
    p.add_argument("--workers-corpus", default="1x", choices=["big", "1x"], help="corpus of the 1 vs 2 worker runs")
    p.add_argument("--tiny-batches", type=int, default=8, help="timed tiny batches per round and scheme")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (targets)")
    p.add_argument("--paper-batch", type=int, default=8, help="batch size of the paper-size measurement")
    p.add_argument("--paper-batches", type=int, default=1, help="timed paper batches per round and scheme")
    p.add_argument("--no-paper", action="store_true", help="skip the paper-size (2 x 1024) measurement")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)  # internal: a training run with capped steps
    args = p.parse_args()
    if args._child:
        return child(*args._child)
    parts = set(args.parts.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # -> the running training is stopped

    print(f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; {load()} at the start "
          f"(1-min load average; other work on the machine skews the timings)", flush=True)
    os.makedirs(args.work, exist_ok=True)
    big = f"{args.copies}x"
    one = build_corpus(os.path.join(args.work, "bach"))
    data = {"1x": prepare(one, os.path.join(args.work, "dataset-1x"))}
    if parts & {"rss", "workers"} and (args.workers_corpus == "big" or "rss" in parts):
        many = build_copies(one, os.path.join(args.work, f"bach-x{args.copies}"), args.copies)
        data[big] = prepare(many, os.path.join(args.work, f"dataset-{big}"))

    runs, big_steps = {}, None
    if big in data and args.big_steps:
        big_steps = args.big_steps if args.big_steps > 0 else full_epoch_steps(data["1x"])
    if "rss" in parts:
        print("\n== 1. peak RSS per training worker, 1x vs %s (musicgen train lstm --preset tiny, 1 worker)" % big)
        for name in ("1x", big):
            runs[(name, 1)] = train_run(args.work, name, data[name], 1, args.epochs, big_steps if name == big else None)
        rss_report(runs, data, big)
    if "workers" in parts:
        corpus = big if args.workers_corpus == "big" else "1x"
        print(f"\n== 2. samples/s with 1 and 2 Ray Train workers ({corpus} corpus, per-worker batch 32)")
        for w in (1, 2):
            if (corpus, w) not in runs:
                runs[(corpus, w)] = train_run(args.work, corpus, data[corpus], w, args.epochs,
                                              big_steps if corpus == big else None)
        workers_report(runs[(corpus, 1)], runs[(corpus, 2)])
    if "targets" in parts:
        print("\n== 3. targets learned per second: many-to-many (ours) vs many-to-one (the study's), in-process Keras")
        targets(data["1x"], args)
    print(f"\n{load()} at the end")


# --- data ------------------------------------------------------------------------------------

def build_corpus(folder: str) -> str:
    if not (os.path.isdir(folder) and sum(n.endswith(".mid") for n in os.listdir(folder)) >= 300):
        t = time.perf_counter()
        subprocess.run([MUSICGEN, "corpus", "bach", folder], check=True, env=ENV, stdout=subprocess.DEVNULL)
        print(f"corpus: {folder} ({time.perf_counter() - t:.0f} s, {load()})", flush=True)
    return folder


def build_copies(src: str, folder: str, copies: int) -> str:
    os.makedirs(folder, exist_ok=True)
    for k in range(copies):
        for n in sorted(os.listdir(src)):
            out = os.path.join(folder, f"{os.path.splitext(n)[0]}_copy{k}.mid")
            if n.endswith(".mid") and not os.path.exists(out):
                shutil.copyfile(os.path.join(src, n), out)
    return folder


def prepare(src: str, dest: str) -> dict:
    if not os.path.exists(os.path.join(dest, "manifest.json")):
        t = time.perf_counter()
        subprocess.run([MUSICGEN, "prepare", src, dest, "--overwrite"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"prepared {dest} ({time.perf_counter() - t:.0f} s, {load()})", flush=True)
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["path"] = dest
    return manifest


# --- Ray Train runs --------------------------------------------------------------------------

def role(cmdline: str, pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    for key, name in (("RayTrainWorker", "train worker"), ("TrainController", "train controller"),
                      ("SplitCoordinator", "ray data"), ("DatasetManager", "ray data"), ("ReadParquet", "ray data"),
                      ("raylet", "raylet"), ("gcs_server", "gcs"), ("IDLE", "idle ray workers")):
        if key in cmdline:
            return name
    return "other ray"


def full_epoch_steps(manifest: dict) -> int:
    from musicgen import lstm
    from musicgen.config import preset
    from musicgen.train import plan

    return plan(manifest, preset("lstm", "tiny"), lstm, 1)["steps_per_epoch"]


def child(kind: str, data: str, out: str, workers: str, epochs: str, steps: str) -> None:
    """What `musicgen train lstm --preset tiny --epochs E --workers W` does, with steps per epoch capped."""
    from musicgen.config import preset
    from musicgen.train import train

    cfg = preset("lstm", "tiny", epochs=int(epochs), steps_per_epoch=int(steps))
    train("lstm", data, out, cfg, workers=int(workers))


def train_run(work: str, corpus: str, manifest: dict, workers: int, epochs: int, steps: int | None = None) -> dict:
    """`musicgen train lstm --preset tiny` in its own process (its own Ray), its process tree polled;
    tried again once if its Ray failed to start (Ray gives its raylet 30 s: too few on a loaded machine)."""
    run = _train_once(work, corpus, manifest, workers, epochs, steps)
    if not run["ok"] and "timed out during startup" in open(run["log"]).read():
        print("   (Ray's start-up timed out under load: once more)", flush=True)
        run = _train_once(work, corpus, manifest, workers, epochs, steps)
    return run


def _train_once(work: str, corpus: str, manifest: dict, workers: int, epochs: int, steps: int | None) -> dict:
    out = os.path.join(work, "runs", f"lstm-{corpus}-w{workers}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [MUSICGEN, "train", "lstm", "--data", manifest["path"], "--out", out, "--preset", "tiny",
           "--epochs", str(epochs), "--workers", str(workers)]
    if steps:  # the CLI has no flag for it: the same call through the Python API
        cmd = [sys.executable, HERE, "--_child", "train", manifest["path"], out, str(workers), str(epochs), str(steps)]
    load_start = os.getloadavg()[0]
    log = open(out + ".log", "w")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        return _poll(proc, cmd, out, corpus, workers, load_start, t, log)
    except BaseException:  # interrupted: stop the run's own Ray too (SIGINT lets the driver shut it down)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        raise


def _poll(proc, cmd, out, corpus, workers, load_start, t, log) -> dict:
    worker_peak, worker_private, worker_cpu, tree_peak, driver_peak, at_peak, loads = {}, {}, {}, 0, 0, {}, []
    for procs in poll_tree(proc, 0.25):
        sample = {}
        for q in procs:
            try:
                mem, cmdline = q.memory_info(), " ".join(q.cmdline())
                kind = role(cmdline, q.pid, proc.pid)
                if kind == "train worker":
                    if mem.rss > worker_peak.get(q.pid, 0):
                        worker_peak[q.pid], worker_private[q.pid] = mem.rss, mem.rss - mem.shared
                    cpu = q.cpu_times()
                    first, _ = worker_cpu.get(q.pid, (cpu.user + cpu.system, 0))
                    worker_cpu[q.pid] = (first, cpu.user + cpu.system)
            except psutil.Error:
                continue
            sample[kind] = sample.get(kind, 0) + mem.rss
            if q.pid == proc.pid:
                driver_peak = max(driver_peak, mem.rss)
        if sum(sample.values()) > tree_peak:
            tree_peak, at_peak = sum(sample.values()), sample
        loads.append(os.getloadavg()[0])
    wall = time.perf_counter() - t
    log.close()
    run = {"corpus": corpus, "workers": workers, "wall": wall, "worker_peak": sorted(worker_peak.values()),
           "worker_private": [worker_private[p] for p in sorted(worker_peak, key=worker_peak.get)],
           "worker_cpu": sum(b - a for a, b in worker_cpu.values()), "driver_peak": driver_peak,
           "tree_peak": tree_peak, "at_peak": at_peak, "load_start": load_start, "load_end": os.getloadavg()[0],
           "load_mean": statistics.mean(loads) if loads else load_start, "ok": proc.returncode == 0,
           "log": out + ".log"}
    if not run["ok"]:
        with open(out + ".log") as f:
            print(f"!! {' '.join(cmd)} failed ({proc.returncode}); log tail:\n" + "".join(f.readlines()[-15:]))
        return run
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    run["plan"], run["batch"], run["window"] = (metrics["plan"], metrics["config"]["batch_size"],
                                                metrics["config"]["window"])
    run["epoch_times"] = epoch_times(os.path.join(out, "checkpoints"))
    run["val_nll"] = metrics["best"].get("val_nll")
    print_run(run)
    return run


def epoch_times(folder: str) -> list[float]:
    """Seconds between consecutive epochs' checkpoints (Ray Train names them checkpoint_<time>)."""
    stamps = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith("checkpoint_"):
            try:
                stamps.append(datetime.datetime.strptime(name[len("checkpoint_"):], "%Y-%m-%d_%H-%M-%S.%f"))
            except ValueError:
                pass
    stamps.sort()
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]


def samples_per_s(run: dict) -> float | None:
    """Training windows a second in the epochs after the first (global: all workers)."""
    if not run.get("epoch_times"):
        return None
    per_epoch = run["plan"]["steps_per_epoch"] * run["batch"] * run["workers"]
    return per_epoch / statistics.mean(run["epoch_times"])


def print_run(r: dict) -> None:
    mb = 1e6
    steps = r["plan"]["steps_per_epoch"]
    per_epoch = steps * r["batch"] * r["workers"]
    sps = samples_per_s(r)
    print(f"-- {r['corpus']}, {r['workers']} worker(s): {r['wall']:.0f} s in all (incl. Ray start-up); "
          f"{steps} steps/epoch x batch {r['batch']} x {r['workers']} = {per_epoch} windows/epoch; "
          f"load {r['load_start']:.1f} at start, {r['load_mean']:.1f} mean, {r['load_end']:.1f} at end", flush=True)
    print(f"   peak RSS: worker(s) {', '.join(f'{v / mb:.0f}' for v in r['worker_peak'])} MB "
          f"(of which not shared: {', '.join(f'{v / mb:.0f}' for v in r['worker_private'])} MB); "
          f"driver {r['driver_peak'] / mb:.0f} MB; tree {r['tree_peak'] / mb:.0f} MB", flush=True)
    print("   tree at its peak: " + ", ".join(f"{k} {v / mb:.0f} MB" for k, v in
                                             sorted(r["at_peak"].items(), key=lambda kv: -kv[1])), flush=True)
    if sps:
        print(f"   epoch time after the first: {', '.join(f'{t:.1f}' for t in r['epoch_times'])} s -> {sps:.0f} windows/s "
              f"= {sps * r['window']:,.0f} targets/s; train workers' CPU {r['worker_cpu']:.0f} s; "
              f"best val_nll {r['val_nll']:.3f}", flush=True)


def window_array_gb(manifest: dict, window: int = 256) -> tuple[float, float]:
    """GB (1e9 bytes) of every stride-1 window of `window` steps x 128 float32 of the corpus: on the
    dataset's own grid, and in the study's representation (each piece 1024 rows: 768 windows)."""
    cell = window * 128 * 4
    ours = sum(max(1, p["steps"] - window) for p in manifest["pieces"]) * cell
    study = len(manifest["pieces"]) * (1024 - window) * cell
    return ours / 1e9, study / 1e9


def rss_report(runs: dict, data: dict, big: str) -> None:
    a, b = runs[("1x", 1)], runs[(big, 1)]
    if not (a["ok"] and b["ok"]):
        return
    print("\n| corpus | pieces | train windows (corpus / trained) | worker peak RSS MB (not shared) | driver MB | tree MB "
          f"| study's window array, our grid / 1024-row pieces | load (mean during run) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in (a, b):
        m = data[r["corpus"]]
        ours, study = window_array_gb(m)
        trained = r["plan"]["steps_per_epoch"] * r["batch"] * r["workers"] * (len(r["epoch_times"]) + 1)
        print(f"| {r['corpus']} | {len(m['pieces'])} | {r['plan']['train_examples']} / {trained} | {max(r['worker_peak']) / 1e6:.0f} "
              f"({max(r['worker_private']) / 1e6:.0f}) | {r['driver_peak'] / 1e6:.0f} | {r['tree_peak'] / 1e6:.0f} "
              f"| {ours:.1f} GB / {study:.0f} GB | {r['load_mean']:.1f} |")
    for r in (a, b):  # what the val split would take if a worker held all its windows (it streams them)
        val = r["plan"]["val_examples"] * r["window"] * (128 + 16 + 128) * 4 / r["workers"]
        print(f"{r['corpus']}: {r['plan']['val_examples']} val windows, {val / 1e6:.0f} MB as float32 x + y if held "
              f"whole (train.py streams them piece by piece instead)")
    growth = max(b["worker_peak"]) / max(a["worker_peak"]) - 1
    print(f"\nworker peak RSS {big} vs 1x: {growth:+.1%} (target within +-15%); "
          f"driver {b['driver_peak'] / a['driver_peak'] - 1:+.1%}; "
          f"the study's own estimate for its 295 pieces: ~50 GB (29.7 GB as float32); {load()}", flush=True)


def workers_report(one: dict, two: dict) -> None:
    s1, s2 = samples_per_s(one), samples_per_s(two)
    if not (s1 and s2):
        print("!! no epoch times (use --epochs >= 2)")
        return
    print("\n| workers | global batch | steps/epoch | epoch s | windows/s | targets/s | workers' CPU s | load (mean) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, s in ((one, s1), (two, s2)):
        print(f"| {r['workers']} | {r['batch'] * r['workers']} | {r['plan']['steps_per_epoch']} | "
              f"{statistics.mean(r['epoch_times']):.1f} | {s:.0f} | {s * r['window']:,.0f} | {r['worker_cpu']:.0f} "
              f"| {r['load_mean']:.1f} |")
    print(f"\nscaling 1 -> 2 workers: {s2 / s1:.2f}x, efficiency {s2 / (2 * s1):.0%}; {load()}", flush=True)


# --- targets per second, in process ----------------------------------------------------------

def targets(manifest: dict, args) -> None:
    from dataclasses import replace

    import numpy as np

    from musicgen.config import preset
    from musicgen.dataset import load_rolls
    from musicgen.keras import tf
    from musicgen.lstm import build_model, compile_model, window_batches

    rolls = list(load_rolls(manifest["path"], "train").values())
    print(f"TensorFlow {tf.__version__}: {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} "
          f"intra-op threads; {len(rolls)} training pieces; {load()}", flush=True)

    def batch(cfg):
        return next(window_batches(rolls, cfg, np.random.default_rng(0)))

    tiny = preset("lstm", "tiny")
    paper = preset("lstm", "paper")
    pairs = [("tiny, window 64 (as trained)", tiny, replace(tiny, window=256, many_to_one=True), args.tiny_batches,
              None, args.rounds),
             ("tiny, window 256", replace(tiny, window=256), replace(tiny, window=256, many_to_one=True), args.tiny_batches,
              None, args.rounds)]
    if not args.no_paper:
        pb = replace(paper, batch_size=args.paper_batch)
        pairs.append((f"paper (2 x 1024), window 256, batch {args.paper_batch}", pb, replace(pb, many_to_one=True),
                      args.paper_batches, 1, min(args.rounds, 2)))  # one warm-up batch, two rounds: seconds a batch
    rows = []
    for label, m2m, m2o, n, n_warm, rounds in pairs:
        models, data = {}, {}
        for scheme, cfg in (("many-to-many", m2m), ("many-to-one", m2o)):
            models[scheme] = compile_model(build_model(cfg), cfg)
            data[scheme] = batch(cfg)
            for _ in range(2 if n_warm is None else n_warm):  # warm-up: tracing and the first steps
                models[scheme].train_on_batch(*data[scheme])
        times = {s: [] for s in models}
        cpus = {s: [] for s in models}
        for _ in range(rounds):
            for scheme, model in models.items():
                t, c = time.perf_counter(), time.process_time()
                for _ in range(n):
                    model.train_on_batch(*data[scheme])
                times[scheme].append((time.perf_counter() - t) / n)
                cpus[scheme].append((time.process_time() - c) / n)
        result, by_cpu = {}, {}
        for scheme, cfg in (("many-to-many", m2m), ("many-to-one", m2o)):
            x, y = data[scheme]
            per_batch = y.shape[0] * (y.shape[1] if y.ndim == 3 else 1)  # frames predicted per batch
            sec = statistics.median(times[scheme])
            result[scheme] = per_batch / sec
            by_cpu[scheme] = per_batch / statistics.median(cpus[scheme])
            rows.append((label, scheme, cfg, models[scheme].count_params(), x.shape, per_batch, sec,
                         statistics.median(cpus[scheme]), per_batch / sec, os.getloadavg()[0]))
            print(f"{label}, {scheme}: {models[scheme].count_params():,} params, batch {x.shape}, {per_batch} targets/batch, "
                  f"{sec * 1000:.0f} ms/batch (CPU {statistics.median(cpus[scheme]) * 1000:.0f} ms), "
                  f"{per_batch / sec:,.{0 if per_batch / sec >= 100 else 2}f} targets/s; {load()}", flush=True)
        print(f"   -> many-to-many / many-to-one: {result['many-to-many'] / result['many-to-one']:.0f}x targets/s "
              f"(by the process's CPU time: {by_cpu['many-to-many'] / by_cpu['many-to-one']:.0f}x); {load()}", flush=True)
        del models
        tf.keras.backend.clear_session()
    print("\n| model | scheme | params | batch x window | targets/batch | ms/batch | targets/s | load |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for label, scheme, cfg, params, shape, per_batch, sec, cpu, rate, ld in rows:
        print(f"| {label} | {scheme} | {params:,} | {shape[0]} x {shape[1]} | {per_batch:,} | {sec * 1000:.0f} | "
              f"{rate:,.{0 if rate >= 100 else 2}f} | {ld:.1f} |")


if __name__ == "__main__":
    main()
