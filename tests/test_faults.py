"""Faults in training: a worker killed by a real signal is replaced and the run resumes from its
last checkpoint; a stopped run continues with --resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil

from conftest import run_cli

# a small net, and epochs of 25 batches where the preset's have at least 100: what is tested is
# the run's life (checkpoints, a crash, a resume), not what it learns
SMALL = ["--units", "32", "--layers", "1", "--window", "32", "--batch-size", "16", "--nade-units", "16",
         "--steps-per-epoch", "25"]


def _musicgen():
    return shutil.which("musicgen") or os.path.join(os.path.dirname(sys.executable), "musicgen")


def _checkpoints(run):
    folder = run / "checkpoints"
    return sorted(p for p in folder.glob("checkpoint_*") if (p / "state.json").exists()) if folder.exists() else []


def _train_workers(pid):
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline() or [])]


def test_killed_worker_resumes_from_the_last_checkpoint(chorales, tmp_path):
    ds, run = tmp_path / "ds", tmp_path / "run"
    assert run_cli("prepare", chorales, ds).returncode == 0
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen([_musicgen(), "train", "lstm", "--data", str(ds), "--out", str(run), "--epochs", "4",
                             *SMALL], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RAY_ADDRESS": "local"})
    try:
        deadline = time.time() + 600
        while not _checkpoints(run) and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
        assert _checkpoints(run), "no checkpoint was written"
        workers = _train_workers(proc.pid)
        assert workers, "no Ray Train worker found"
        # short epochs must not let the run finish before the crash: then nothing would resume
        assert len(_checkpoints(run)) < 4, "the run ended before its worker was killed"
        for w in workers:
            w.send_signal(signal.SIGKILL)  # a real crash, mid-training
        assert proc.wait(900) == 0, open(tmp_path / "train.log").read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4]  # every epoch once: resumed, not restarted
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4
    assert (run / "model" / "weights.h5").exists()


def test_resume_continues_a_stopped_run(chorales, tmp_path):
    """... with the weights averaged (--ema): the averaging callback on a Ray Train worker."""
    ds, run = tmp_path / "ds", tmp_path / "run"
    assert run_cli("prepare", chorales, ds, "--split", "0.8,0.2,0").returncode == 0
    p = run_cli("train", "lstm", "--data", ds, "--out", run, "--epochs", "1", *SMALL, "--ema", "0.9")
    assert p.returncode == 0, p.stderr[-2000:]
    shown = p.stdout + p.stderr
    assert shown.count("[lstm] epoch 1/1:") == 1  # once, not once per console handler
    assert "PlacementGroupCleaner" not in shown  # none polls a state API that a local Ray lacks
    p = run_cli("train", "lstm", "--data", ds, "--out", run, "--epochs", "2", *SMALL)
    assert p.returncode != 0 and "--resume" in p.stderr.strip().splitlines()[-1]
    p = run_cli("train", "lstm", "--data", ds, "--out", run, "--epochs", "2", "--resume", *SMALL, "--ema", "0.9")
    assert p.returncode == 0, p.stderr[-2000:]
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert json.loads((run / "metrics.json").read_text())["config"]["ema"] == 0.9
