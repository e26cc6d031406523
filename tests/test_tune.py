"""`musicgen tune`: a real Optuna + ASHA search on Ray Tune (a local Ray), bad search spaces, resume."""
import argparse
import contextlib
import json
import math
import os
import signal
import threading
import time

import pytest

from musicgen.errors import DataError, MusicgenError
from musicgen.prepare import PrepareConfig, prepare

from musicgen_tune import add_arguments, main, run_search  # tune/, installed as musicgen_tune

from conftest import cpu_groups, run_cli

TRIALS = 4
# a tiny budget: 2 epochs of 8 batches of 16 windows of 32 steps, small nets
SMALL = dict(epochs=2, overrides=dict(window=32, batch_size=16, steps_per_epoch=8), layers=(1, 2),
             units=(128, 256), nade_units=(16, 48), progress=False)


@pytest.fixture(scope="module")
def groups_before(ray_local):
    """The placement groups holding CPUs before the search (another test's, not the search's to free)."""
    return cpu_groups(ray_local)


@pytest.fixture(scope="module")
def search(dataset, groups_before, tmp_path_factory):
    """A search interrupted (as by Ctrl+C) after its first epoch, then resumed to its end."""
    out = tmp_path_factory.mktemp("tune") / "search"
    started = time.monotonic()
    with interrupt_after_first_result(out / "search"):
        with pytest.raises(MusicgenError, match=f"interrupted after [0-3] of {TRIALS} trials .*--resume"):
            run_search(dataset, str(out), TRIALS, **SMALL)
    assert (out / "tune.json").exists() and not (out / "best.json").exists()
    with pytest.raises(DataError, match="unfinished search .*--resume"):
        run_search(dataset, str(out), TRIALS, **SMALL)
    best = run_search(dataset, str(out), TRIALS, **SMALL, resume=True)  # Tuner.restore
    return out, best, time.monotonic() - started


@contextlib.contextmanager
def interrupt_after_first_result(experiment):
    """Send this process SIGUSR1 (Tune's other stop signal, like SIGINT) once a trial reported."""
    done = threading.Event()

    def watch():
        while not done.is_set():
            if any(p.stat().st_size for p in experiment.glob("*/result.json")):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_search_writes_the_best_config_and_its_score(search):
    out, best, took = search
    print(f"search of {TRIALS} trials, interrupted and resumed: {took:.0f} s")
    assert json.loads((out / "best.json").read_text()) == best
    assert best["trials"] == TRIALS and best["metric"] == "val_nll" and best["errors"] == 0
    assert math.isfinite(best["val_nll"]) and 0 < best["val_nll"] < 128
    config = best["config"]
    assert config["layers"] in (1, 2) and config["units"] in (128, 256)
    assert config["head"] == "nade" and 16 <= config["nade_units"] <= 48  # the joint head's size is searched
    assert 1e-4 <= config["learning_rate"] <= 1e-2 and 0 <= config["dropout"] <= 0.5
    assert config["window"] == 32 and config["batch_size"] == 16 and config["epochs"] == 2
    assert {k: config[k] for k in best["params"]} == best["params"]
    from musicgen.config import from_dict
    from_dict("lstm", config)  # a config `musicgen train` takes as it is

    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == TRIALS and len({t["trial"] for t in trials}) == TRIALS
    assert all(t["val_nll"] is not None and 1 <= t["epochs"] <= 2 for t in trials)
    assert {t["status"] for t in trials} <= {"done", "stopped early"}  # ASHA may stop the poor ones
    assert best["val_nll"] == min(t["val_nll"] for t in trials) == trials[0]["val_nll"]
    assert os.path.isdir(best["checkpoint"]) and "weights.h5" in os.listdir(best["checkpoint"])


def test_every_trial_reports_val_nll_per_epoch_for_tensorboard(search):
    out, best, _ = search
    trial_dirs = [d for d in (out / "search").iterdir() if d.is_dir()]
    assert len(trial_dirs) == TRIALS
    for d in trial_dirs:
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        epochs = [r["epoch"] for r in rows]  # a resumed trial goes on from its checkpoint's epoch
        assert rows and epochs == sorted(set(epochs)) and set(epochs) <= {1, 2}
        assert all(r["val_nll"] > 0 for r in rows)
        assert list(d.glob("events.out.tfevents.*"))  # `tensorboard --logdir OUT/search`
    from tensorflow.compat.v1.train import summary_iterator

    for d in trial_dirs:  # (a trial restarted by the resume has a second, fuller file)
        tags = {v.tag for p in d.glob("events.out.tfevents.*") for e in summary_iterator(str(p))
                for v in e.summary.value}
        assert {"ray/tune/val_nll", "ray/tune/epoch"} <= tags


def test_search_gives_the_cluster_back(search, groups_before, ray_local):
    """Trials stopped by ASHA (or by the interruption) leave no placement group holding CPUs behind."""
    # Ray removes placement groups asynchronously, so wait a little; the search itself already waited
    # for its trials' Train controllers to end and freed the groups of those that did not.
    from musicgen.raycompat import _actor_placement_groups

    deadline = time.monotonic() + 30
    while held := cpu_groups(ray_local) - groups_before:
        dead, controllers = _actor_placement_groups()  # on failure, say whose groups hold the CPUs
        assert time.monotonic() < deadline, (held, f"{len(dead)} of dead actors, {len(controllers)} of live "
                                             f"controllers, {sum(d for _, d in controllers)} of them the driver's")
        time.sleep(1)


def test_resume_of_a_finished_search_returns_its_best_without_new_trials(search, dataset):
    out, best, _ = search
    trial_dirs = sorted(p.name for p in (out / "search").iterdir() if p.is_dir())
    assert run_search(dataset, str(out), TRIALS, progress=False, resume=True) == best
    assert sorted(p.name for p in (out / "search").iterdir() if p.is_dir()) == trial_dirs
    with pytest.raises(DataError, match="already holds a finished search"):
        run_search(dataset, str(out), TRIALS, **SMALL)


@pytest.mark.parametrize("space, flag", [
    (dict(units=(64, 256)), "--units-min"),
    (dict(units=(128, 2048)), "--units-max"),
    (dict(units=(128, 200)), "--units-max"),  # not a multiple of 128
    (dict(units=(512, 256)), "--units-min"),  # min above max
    (dict(layers=(0, 2)), "--layers-min"),
    (dict(layers=(1, 4)), "--layers-max"),
    (dict(learning_rate=(0.0, 1e-2)), "--lr-min"),
    (dict(dropout=(0.0, 0.99)), "--dropout-max"),
    (dict(nade_units=(8, 64)), "--nade-units-min"),
    (dict(nade_units=(64, 2048)), "--nade-units-max"),
    (dict(nade_units=(64, 128), base_preset="factorized"), "--nade-units-min/-max"),  # no NADE to size
])
def test_a_search_space_out_of_range_is_a_one_line_error_before_anything_starts(space, flag, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        run_search(str(tmp_path / "no-dataset"), str(out), 4, **space)
    assert flag in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_bad_counts_no_val_split_and_an_unfinished_search(dataset, chorales, tmp_path):
    with pytest.raises(DataError, match="--trials"):
        run_search(dataset, str(tmp_path / "a"), 0)
    with pytest.raises(DataError, match="--max-concurrent"):
        run_search(dataset, str(tmp_path / "a"), 2, max_concurrent=0)
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(chorales.glob("*.mid"))[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    train_only = tmp_path / "train-only"
    prepare(str(few), str(train_only), PrepareConfig(split=(1.0, 0.0, 0.0)), progress=False)
    with pytest.raises(DataError, match="val split"):
        run_search(str(train_only), str(tmp_path / "a"), 2)
    assert not (tmp_path / "a").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "tune.json").write_text("{}")
    with pytest.raises(DataError, match="--resume"):
        run_search(dataset, str(unfinished), 2)


def test_command_line_flags(tmp_path):
    parser = add_arguments(argparse.ArgumentParser(prog="musicgen tune"))
    args = parser.parse_args(["lstm", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "out"),
                              "--trials", "4", "--units-max", "2048"])
    assert args.trials == 4 and args.units_max == 2048 and args.layers_min is None and not args.resume
    with pytest.raises(DataError, match="--units-max 2048 is out of range"):
        main(args)
    args = parser.parse_args(["lstm", "--data", "ds", "--out", str(tmp_path / "out"), "--layers-max", "4"])
    with pytest.raises(DataError, match="--layers-max"):
        main(args)
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_a_space_out_of_range_in_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_cli("tune", "lstm", "--data", tmp_path / "ds", "--out", out, "--trials", 4, "--units-max", 2048)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "musicgen tune: error: --units-max 2048 is out of range: units must be a multiple of 128 from 128 to 1024"]
    assert not out.exists()


def test_the_tiny_search_has_a_quick_default_budget_and_flags_override_it():
    from musicgen_tune.search import make_spec

    quick = make_spec("/data", 4)["base"]
    assert (quick["epochs"], quick["steps_per_epoch"]) == (3, 16)
    assert make_spec("/data", 4, epochs=5, overrides={"steps_per_epoch": 40})["base"]["steps_per_epoch"] == 40
    assert make_spec("/data", 4, epochs=5)["epochs"] == 5
    paper = make_spec("/data", 4, base_preset="paper")["base"]
    assert paper["epochs"] == 50 and paper["steps_per_epoch"] is None


def test_trials_at_once_follow_the_cluster_and_its_checks_are_training_s():
    from musicgen.train import check_cluster
    from musicgen_tune.search import concurrency_for

    assert concurrency_for({"CPU": 8}, 2, False) == 4 and concurrency_for({"CPU": 8}, 2, False, 3) == 3
    assert concurrency_for({"CPU": 1, "GPU": 4}, 2, True) == 2
    for cluster, workers, gpu in (({"CPU": 2}, 3, False), ({"CPU": 8}, 1, True)):
        with pytest.raises(DataError) as tune_error:
            concurrency_for(cluster, workers, gpu)
        with pytest.raises(DataError) as train_error:
            check_cluster(cluster, workers, gpu)
        assert str(tune_error.value) == str(train_error.value)


def test_the_dashboard_address_is_what_ray_init_returned(monkeypatch):
    from types import SimpleNamespace

    from musicgen import runtime

    monkeypatch.setattr(runtime, "_context", SimpleNamespace(dashboard_url="127.0.0.1:8265"))
    assert runtime.dashboard_url() == "http://127.0.0.1:8265"
    monkeypatch.setattr(runtime, "_context", SimpleNamespace(dashboard_url=""))  # started without one
    assert runtime.dashboard_url() is None
    monkeypatch.setattr(runtime, "_context", None)  # Ray was started elsewhere
    assert runtime.dashboard_url() is None
