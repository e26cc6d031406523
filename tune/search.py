"""The Ray Tune application behind ``musicgen tune lstm``: Optuna (TPE) search, ASHA early stopping.

Every trial is a function trainable (:func:`_trial`) that builds the LSTM config (a preset, its
overrides, and the trial's ``layers``, ``units``, ``learning_rate`` and ``dropout``) and trains it
with the Ray Train trainer ``musicgen train`` uses (:func:`musicgen.train.make_trainer`). Ray Train's
``TuneReportCallback`` forwards each epoch's metrics to Tune, among them ``val_nll`` (nats per
frame on the val split), which ``OptunaSearch`` minimises and ``ASHAScheduler`` uses to stop poor
trials early. The trial function itself holds no CPU, its trainer's workers do (one CPU each, or
one GPU), and as many trials run at once as the cluster holds. The train split is read once, into
Ray's object store, and shared by all the trials. The CPUs of trials that ASHA stops are given
back by :mod:`musicgen.raycompat` (a Ray issue's workaround, kept there with its version guard).

What a search leaves in OUT (a folder or ``s3://...``):

* ``tune.json``: what was asked (data, base config, space, epochs, seed); ``--resume`` reuses it
* ``search/``: the Tune experiment, one folder per trial (params, progress.csv, result.json and
  TensorBoard events: ``tensorboard --logdir OUT/search``); ``Tuner.restore`` continues it
* ``trials/``: each trial's Ray Train run (the checkpoint of its best epoch)
* ``trials.json``: every trial's params, best ``val_nll``, epochs run and status
* ``best.json``: the best trial's full LSTM config and score, written last (atomically), so an
  OUT without it holds no finished search
"""
from __future__ import annotations

import argparse
import json
import math
import os

from musicgen import storage
from musicgen.errors import DataError, MusicgenError, one_line

METRIC, MODE = "val_nll", "min"
UNITS_STEP = 128
SPEC, EXPERIMENT, TRIALS_DIR, TRIALS, BEST = "tune.json", "search", "trials", "trials.json", "best.json"

# The widest range each searched setting may span, and the default search space (min, max).
# ``nade_units`` (the joint-frame head's size) is searched when the base preset has that head.
LIMITS = {"layers": (1, 3), "units": (128, 1024), "learning_rate": (1e-5, 1e-1), "dropout": (0.0, 0.9),
          "nade_units": (16, 1024)}
DEFAULT_SPACE = {"layers": (1, 3), "units": (128, 1024), "learning_rate": (1e-4, 1e-2), "dropout": (0.0, 0.5),
                 "nade_units": (50, 300)}
FLAGS = {"layers": "--layers", "units": "--units", "learning_rate": "--lr", "dropout": "--dropout",
         "nade_units": "--nade-units"}
INTEGER = {"layers", "units", "nade_units"}
TRIAL_RESOURCES = {"CPU": 0, "memory": 256 << 20}
# What a trial trains when --epochs / --steps-per-epoch are not given. `tiny` is the quick CPU
# search: 3 epochs of 16 batches each (ASHA compares trials after every epoch), so that even
# 3 x 1024-unit trials end in minutes on a laptop; `paper` trains as its preset says.
QUICK = {"epochs": 3, "steps_per_epoch": 16}
SEARCH_BUDGET = {"tiny": QUICK, "joint": QUICK, "factorized": QUICK, "paper": {}}


def run_search(data: str, out: str, trials: int = 20, *, epochs: int | None = None, base_preset: str = "tiny",
               overrides: dict | None = None, layers=None, units=None, learning_rate=None, dropout=None,
               nade_units=None, max_concurrent: int | None = None, workers: int = 1, gpu: bool = False, seed: int = 0,
               resume: bool = False, progress: bool = True) -> dict:
    """Search LSTM settings on dataset ``data``; writes OUT (see the module doc); returns best.json.

    ``layers``, ``units``, ``learning_rate``, ``dropout`` and ``nade_units`` (the NADE head's
    hidden units, searched for a base preset with that head) narrow the search: (min, max), either
    end None for the default (:data:`DEFAULT_SPACE`), within :data:`LIMITS`. ``overrides`` sets
    other fields of the preset (``window``, ``batch_size``, ``steps_per_epoch``...). ``resume``
    continues the search in OUT (``Tuner.restore``) with the settings it was started with; for a
    finished search it returns its best.json as it is.
    """
    out = _abs(out)
    data = _abs(data)
    experiment = storage.join(out, EXPERIMENT)
    spec = _read_spec(out)
    restoring = False
    if resume and spec is not None and storage.is_file(storage.join(out, BEST)):
        return json.loads(storage.read_bytes(storage.join(out, BEST)))  # finished: nothing to resume
    if resume and spec is not None:
        from ray.tune import Tuner

        restoring = Tuner.can_restore(experiment)
        spec["data"] = data
    else:
        if storage.is_file(storage.join(out, BEST)):
            raise DataError(f"{out}: already holds a finished search (see best.json; choose another --out)")
        if spec is not None and not resume:
            raise DataError(f"{out}: holds an unfinished search (continue it with --resume, or choose another --out)")
        spec = make_spec(data, trials, epochs=epochs, base_preset=base_preset, overrides=overrides,
                         space={"layers": layers, "units": units, "learning_rate": learning_rate,
                                "dropout": dropout, "nade_units": nade_units}, workers=workers, gpu=gpu, seed=seed)
    _check_count("--max-concurrent", max_concurrent, allow_none=True)
    manifest, steps = _plan(spec)  # the dataset is there and fits the settings

    from musicgen import raycompat  # before Ray starts: an unsupported Ray fails here
    from musicgen.runtime import dashboard_url, ensure_ray, quiet_data_context

    ray = ensure_ray(quiet=not progress)
    quiet_data_context()
    if os.environ.get("MUSICGEN_DASHBOARD") and dashboard_url():
        print(f"Ray dashboard: {dashboard_url()}", flush=True)
    concurrency = concurrency_for(ray.cluster_resources(), spec["workers"], spec["gpu"], max_concurrent)
    datasets = read_splits(spec["data"], manifest)
    if not restoring:
        _write_json(storage.join(out, SPEC), spec)  # everything is checked and read: the search starts

    tuner = make_tuner(spec, out, concurrency, restoring, progress, steps, datasets)
    try:
        results = tuner.fit()
    finally:
        raycompat.release_orphans(wait_s=30, ended=True)  # the last stopped trials' CPUs, before anything else runs
    return finish(results, spec, out)


def make_spec(data, trials, *, epochs=None, base_preset="tiny", overrides=None, space=None, workers=1,
              gpu=False, seed=0) -> dict:
    """Check the arguments (a DataError naming the flag) and return the search's settings."""
    from musicgen.config import preset, to_dict

    _check_count("--trials", trials)
    _check_count("--workers", workers)
    _check_count("--epochs", epochs, allow_none=True)
    budget = SEARCH_BUDGET.get(base_preset, {})
    given = {k: v for k, v in {**(overrides or {}), "epochs": epochs}.items() if v is not None}
    base = preset("lstm", base_preset, **{**budget, **given})
    space = check_space(space or {}, head=base.head)
    spec = {"kind": "lstm", "data": data, "preset": base_preset, "base": to_dict(base), "space": space,
            "epochs": base.epochs, "trials": trials, "workers": workers, "gpu": bool(gpu), "seed": seed}
    return spec


def check_space(space: dict, head: str = "nade") -> dict:
    """{name: [min, max]} from (min, max) pairs (None: the default end), within :data:`LIMITS`;
    ``nade_units`` only for the NADE ``head``."""
    unknown = set(space) - set(LIMITS)
    if unknown:
        raise DataError(f"unknown search setting(s): {', '.join(sorted(unknown))} (known: {', '.join(LIMITS)})")
    if head != "nade" and any(v is not None for v in (space.get("nade_units") or ())):
        raise DataError(f"{FLAGS['nade_units']}-min/-max: the base preset's head is {head}, which has no NADE")
    checked = {}
    for name, default in DEFAULT_SPACE.items():
        if name == "nade_units" and head != "nade":
            continue
        given = space.get(name) or (None, None)
        if isinstance(given, (int, float)):
            given = (given, given)
        lo, hi = (default[0] if given[0] is None else given[0]), (default[1] if given[1] is None else given[1])
        for end, value in (("min", lo), ("max", hi)):
            _check_value(name, f"{FLAGS[name]}-{end}", value)
        if lo > hi:
            raise DataError(f"{FLAGS[name]}-min {lo} is more than {FLAGS[name]}-max {hi}")
        checked[name] = [lo, hi]
    return checked


def _check_value(name, flag, value):
    lo, hi = LIMITS[name]
    integer = name in INTEGER
    bad_type = isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value))
    if bad_type or not math.isfinite(value) or not lo <= value <= hi or (name == "units" and value % UNITS_STEP):
        what = (f"a multiple of {UNITS_STEP} from {lo} to {hi}" if name == "units"
                else f"an integer from {lo} to {hi}" if integer else f"a number from {lo:g} to {hi:g}")
        raise DataError(f"{flag} {value!r} is out of range: {name} must be {what}")


def _check_count(flag, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{flag} must be a positive integer, not {value!r}")


def param_space(space: dict) -> dict:
    """The Tune search space: layers and nade_units randint, units qrandint (step 128), lr
    loguniform, dropout uniform."""
    from ray import tune

    kinds = {"layers": lambda lo, hi: tune.randint(lo, hi + 1), "nade_units": lambda lo, hi: tune.randint(lo, hi + 1),
             "units": lambda lo, hi: tune.qrandint(lo, hi, UNITS_STEP),
             "learning_rate": tune.loguniform, "dropout": tune.uniform}
    return {name: (kinds[name](lo, hi) if lo < hi else lo) for name, (lo, hi) in space.items()}


def concurrency_for(resources: dict, workers: int, gpu: bool, requested: int | None = None) -> int:
    """Trials that run at once (at most ``requested``): each holds ``workers`` CPUs (or GPUs).

    The data is read before the search (:func:`read_splits`), so trials need no CPU for Ray Data.
    """
    from musicgen.train import check_cluster

    check_cluster(resources, workers, gpu)
    fits = int(resources.get("GPU" if gpu else "CPU", 0)) // workers
    return min(fits, requested) if requested else fits


def read_splits(data: str, manifest: dict) -> dict:
    """The train split, read once into Ray's object store for all the trials (each trial's
    workers stream the val split from the shards themselves, see ``musicgen.train``)."""
    from musicgen.train import read_split

    return {"train": read_split(data, "train", manifest).materialize()}


def make_tuner(spec: dict, out: str, concurrency: int, restoring: bool, progress: bool, steps: dict,
               datasets: dict):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from musicgen import raycompat

    trial_spec = {**spec, "plan": steps, "storage": storage.join(out, TRIALS_DIR)}
    # The trial function only drives its trainer: no CPU of its own, which its trainer's workers need
    # (Tune needs some resource for it: a little memory).
    trainable = tune.with_resources(tune.with_parameters(_trial, spec=trial_spec, datasets=datasets),
                                    TRIAL_RESOURCES)
    if restoring:
        return tune.Tuner.restore(storage.join(out, EXPERIMENT), trainable=trainable)
    space = param_space(spec["space"])
    searched = any(not isinstance(v, (int, float)) for v in space.values())
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=spec["trials"], max_concurrent_trials=concurrency,
            reuse_actors=False,  # a fresh actor per trial: its trainer's actors and resources go with it
            search_alg=OptunaSearch(seed=spec["seed"]) if searched else None,  # TPE sampler
            scheduler=ASHAScheduler(time_attr="epoch", max_t=spec["epochs"], grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=out, verbose=1 if progress else 0,
                                  callbacks=[raycompat.release_orphans_callback()]),
    )


def trial_config(spec: dict, params: dict):
    """The full LSTM config of a trial: the search's base config with the trial's params."""
    from musicgen.config import from_dict

    values = {**spec["base"], **{k: params[k] for k in LIMITS if k in params}}
    values.update(layers=int(values["layers"]), units=int(values["units"]), nade_units=int(values["nade_units"]),
                  learning_rate=float(values["learning_rate"]), dropout=float(values["dropout"]))
    return from_dict("lstm", values)


def _trial(params: dict, spec: dict, datasets: dict) -> None:
    """One trial (in a Tune actor): a Ray Train run of the LSTM, epochs reported to Tune."""
    import ray.tune
    from ray.train.tensorflow import TensorflowTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from musicgen import raycompat
    from musicgen.runtime import quiet_data_context
    from musicgen.train import loop_config, make_trainer

    quiet_data_context()
    trainer = make_trainer(
        loop_config("lstm", trial_config(spec, params), spec["data"], spec["plan"], spec["seed"]), datasets,
        workers=spec["workers"], gpu=spec["gpu"],
        # the trial id as name: a restored trial's Train run continues from its last checkpoint
        name=ray.tune.get_context().get_trial_id(), storage_path=spec["storage"], keep=1, max_failures=2,
        callbacks=[TuneReportCallback()], trainer_class=raycompat.without_pg_cleaner(TensorflowTrainer))
    trainer.fit()


def finish(results, spec: dict, out: str) -> dict:
    """trials.json and best.json from a finished search; an error if it was cut short."""
    done = _finished_trials(storage.join(out, EXPERIMENT))
    if done < spec["trials"]:
        raise MusicgenError(f"{out}: search interrupted after {done} of {spec['trials']} trials "
                            "(continue it with --resume)")
    rows = [_summary(r, spec["epochs"]) for r in results]
    scored = [r for r in rows if r[METRIC] is not None]
    if not scored:
        errors = [e for e in results.errors if e]
        reason = one_line(errors[0]) if errors else "no trial reported val_nll"
        raise MusicgenError(f"{out}: no trial finished an epoch ({reason})")
    best_row = min(scored, key=lambda r: r[METRIC])
    from musicgen.config import to_dict

    best = {"config": to_dict(trial_config(spec, best_row["params"])),
            METRIC: best_row[METRIC], "trial": best_row["trial"], "trials": len(rows),
            "epoch": best_row["epoch"], "params": best_row["params"], "checkpoint": best_row["checkpoint"],
            "metric": METRIC, "mode": MODE, "errors": results.num_errors, "data": spec["data"],
            "experiment": storage.join(out, EXPERIMENT)}
    _write_json(storage.join(out, TRIALS), sorted(rows, key=lambda r: (r[METRIC] is None, r[METRIC] or 0)))
    _write_json(storage.join(out, BEST), best)
    return best


def _finished_trials(experiment: str) -> int:
    """Trials finished (or failed) by the experiment state Tune saved last.

    An interrupted fit() returns as if its running trials had ended; the state saved before that
    has them running, so that ``Tuner.restore`` continues them.
    """
    from ray.tune import ExperimentAnalysis

    return sum(t.status in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(experiment).trials)


def _summary(result, epochs: int) -> dict:
    """One trial: params, its best epoch's val_nll (None if it never reported), status."""
    trial = (result.metrics or {}).get("trial_id") or os.path.basename(str(result.path))
    config = result.config or {}  # None for a trial that failed to start
    params = {k: config[k] for k in LIMITS if k in config}
    row = {"trial": trial, "params": params, METRIC: None, "epoch": None, "epochs": 0, "checkpoint": None}
    frame = result.metrics_dataframe
    if frame is not None and METRIC in frame and frame[METRIC].notna().any():
        at = frame[METRIC].idxmin()
        row.update({METRIC: float(frame[METRIC][at]), "epoch": int(frame["epoch"][at]),
                    "epochs": int(frame["epoch"].max()),
                    "checkpoint": frame["checkpoint_path"][at] if "checkpoint_path" in frame else None})
    row["status"] = "error" if result.error else "done" if row["epochs"] >= epochs else "stopped early"
    return row


def _plan(spec: dict):
    """(manifest, steps per epoch and val steps) of the dataset for the search's base config."""
    from musicgen import lstm
    from musicgen.config import from_dict
    from musicgen.dataset import read_manifest
    from musicgen.train import check_dataset, plan

    manifest = read_manifest(spec["data"])
    base = from_dict("lstm", spec["base"])
    check_dataset(spec["data"], manifest, "lstm", base)
    steps = plan(manifest, base, lstm, spec["workers"])
    if not steps["val_steps"]:
        raise DataError(f"{spec['data']}: the search scores trials on the val split, and the dataset has none "
                        "(prepare it with a val fraction > 0)")
    return manifest, steps


def _read_spec(out: str):
    path = storage.join(out, SPEC)
    return json.loads(storage.read_bytes(path)) if storage.is_file(path) else None


def _write_json(path: str, value) -> None:
    """Write whole or not at all: a local file appears by rename, an S3 object by one PUT."""
    body = json.dumps(value, indent=1).encode()
    if storage.is_s3(path):
        storage.write_bytes(path, body)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(body)
    os.replace(path + ".tmp", path)


def _abs(path: str) -> str:
    return str(path) if storage.is_s3(path) else os.path.abspath(os.path.expanduser(str(path)))


# --- command line: `musicgen tune lstm ...` --------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``musicgen tune`` (``parser`` is its subparser)."""
    p = parser
    p.add_argument("model", choices=["lstm"], help="the model to tune")
    p.add_argument("--data", required=True, help="prepared dataset with train and val splits (folder or s3://)")
    p.add_argument("--out", required=True, help="search folder or s3:// prefix (Tune experiment, best.json)")
    p.add_argument("--trials", type=int, default=20, help="trials to run (default 20)")
    p.add_argument("--epochs", type=int, help="epochs of a trial that ASHA does not stop "
                   "(default: 3 for tiny, the preset's for paper)")
    p.add_argument("--preset", default="tiny", choices=list(SEARCH_BUDGET),
                   help="base config the search varies (default tiny: the joint-frame head)")
    lo, hi = DEFAULT_SPACE["layers"], DEFAULT_SPACE["units"]
    p.add_argument("--layers-min", type=int, help=f"fewest LSTM layers searched ({lo[0]}-3, default {lo[0]})")
    p.add_argument("--layers-max", type=int, help=f"most LSTM layers searched (1-3, default {lo[1]})")
    p.add_argument("--units-min", type=int, help=f"fewest units searched (multiple of 128, default {hi[0]})")
    p.add_argument("--units-max", type=int, help=f"most units searched (multiple of 128 up to 1024, default {hi[1]})")
    p.add_argument("--lr-min", type=float, help="lowest learning rate (log-uniform, 1e-5 to 0.1, default 1e-4)")
    p.add_argument("--lr-max", type=float, help="highest learning rate (default 1e-2)")
    p.add_argument("--dropout-min", type=float, help="lowest dropout (default 0)")
    p.add_argument("--dropout-max", type=float, help="highest dropout (0-0.9, default 0.5)")
    lo = DEFAULT_SPACE["nade_units"]
    p.add_argument("--nade-units-min", type=int, help=f"fewest NADE hidden units searched (16-1024, default {lo[0]})")
    p.add_argument("--nade-units-max", type=int, help=f"most NADE hidden units searched (default {lo[1]})")
    p.add_argument("--window", type=int, help="training window in steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--steps-per-epoch", type=int,
                   help="batches per epoch (default: 16 for tiny, the whole train split for paper)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial (default 1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster holds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search and of training (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out (Tuner.restore)")
    p.add_argument("--dashboard", action="store_true",
                   help="start a local Ray with its dashboard (trials, Train runs) and print its address")
    return p


def main(args) -> dict:
    """Run ``musicgen tune`` from parsed arguments; prints a summary; returns best.json."""
    if args.dashboard:
        os.environ.setdefault("MUSICGEN_DASHBOARD", "1")
        os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")  # the dashboard's Train view
    overrides = {"window": args.window, "batch_size": args.batch_size, "steps_per_epoch": args.steps_per_epoch}
    for flag, value in (("--window", args.window), ("--batch-size", args.batch_size),
                        ("--steps-per-epoch", args.steps_per_epoch)):
        _check_count(flag, value, allow_none=True)
    best = run_search(args.data, args.out, args.trials, epochs=args.epochs, base_preset=args.preset,
                      overrides=overrides, layers=(args.layers_min, args.layers_max),
                      units=(args.units_min, args.units_max), learning_rate=(args.lr_min, args.lr_max),
                      dropout=(args.dropout_min, args.dropout_max),
                      nade_units=(args.nade_units_min, args.nade_units_max), max_concurrent=args.max_concurrent,
                      workers=args.workers, gpu=args.gpu, seed=args.seed, resume=args.resume)
    shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in best["params"].items())
    print(f"best of {best['trials']} trials: val_nll {best[METRIC]:.4f} (epoch {best['epoch']}) with {shown}")
    print(f"best config: {storage.join(_abs(args.out), BEST)}")
    print(f"TensorBoard: tensorboard --logdir {best['experiment']}")
    return best

