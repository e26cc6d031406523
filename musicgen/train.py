"""Training on Ray Train: a Keras loop per worker fed by its Ray Data shard, checkpoints every epoch.

The driver (:func:`train`) reads the dataset's train split as a Ray Data dataset, starts a
``TensorflowTrainer`` (:func:`make_trainer`, also what a Tune trial runs) with ``workers``
workers, and at the end writes the best checkpoint (by :func:`_monitor`) as a
:class:`musicgen.run.Run`. Each worker (:func:`train_loop`) streams its shard of pieces, cuts
training examples on the fly (the model module's ``train_batches``), and trains under
``MultiWorkerMirroredStrategy``. A checkpoint holds the weights (:data:`~musicgen.run.WEIGHTS`),
``state.json`` (epoch, kind, config) and ``history.json`` (every epoch's metrics so far).

A model module (``musicgen.lstm``, ``musicgen.vae``) provides: ``build_model``, ``compile_model``,
``train_batches(rolls, cfg, rng)``, ``val_arrays(rolls, cfg)``, ``examples(steps, cfg)`` (training
examples a piece of that many steps yields), ``epoch_metrics(logs)`` and ``callbacks(cfg, model)``,
and may name its ``SELECTION_METRIC`` (:func:`_monitor`).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

from . import storage
from .config import from_dict, to_dict
from .dataset import beat_grid, iter_records, read_manifest, shard_paths, time_signatures_of
from .errors import DataError
from .midi import bar_positions
from .run import CHECKPOINTS, WEIGHTS, Run, model_module, uses_meter

STATE = "state.json"  # in a checkpoint: its epoch, kind and config
EPOCHS = "history.json"  # in a checkpoint: every epoch's metrics so far (checkpoints get pruned)
CACHE_BYTES = 256 << 20  # a worker's shard of at most this many roll bytes is read once (_rolls_forever)
BLOCK_BYTES = 4 << 20  # Ray Data blocks of a training read (read_split): ~100 pieces of the beat grid
METER_COLUMNS = ["meter_rows", "meter_num", "meter_den"]  # a piece's time signatures (dataset format 2)


def _rolls_forever(shard, seed: int, meter=None, cache_bytes: int = CACHE_BYTES):
    """Pieces of a Ray Data shard (:func:`_shard_pass`), epoch after epoch, in shuffled order.

    A shard whose rolls fit in ``cache_bytes`` is read once and then replayed from memory in a
    new order each pass: a pass over a small corpus (JSB Chorales: 229 pieces, 15 batches) took
    Ray Data 2-12 s to stream again, longer than training on it. A larger shard streams every
    pass, in bounded memory.
    """
    cache, size = [], 0
    for piece in _shard_pass(shard, seed, meter):
        if cache is not None:
            size += sum(a.nbytes for a in (piece if meter else (piece,)))
            cache = cache if size <= cache_bytes else None
            if cache is not None:
                cache.append(piece)
        yield piece
    epoch = 1
    while True:
        if cache is not None:
            yield from (cache[i] for i in np.random.default_rng(seed + epoch).permutation(len(cache)))
        else:
            yield from _shard_pass(shard, seed + epoch, meter)
        epoch += 1


def _shard_pass(shard, seed: int, meter=None):
    """One pass over a Ray Data shard's pieces, locally shuffled with ``seed``: rolls (float32,
    steps x width), or with ``meter`` (:func:`_meter`) (roll, bar positions) pairs."""
    from .dataset import decode_roll

    for batch in shard.iter_batches(batch_size=8, batch_format="numpy",
                                    local_shuffle_buffer_size=32, local_shuffle_seed=seed):
        for i, (data, steps, width) in enumerate(zip(batch["roll"], batch["steps"], batch["width"])):
            roll = decode_roll(data, int(steps), int(width))
            if meter is None:
                yield roll
            else:
                meters = time_signatures_of({k: batch[k][i] for k in METER_COLUMNS if k in batch})
                yield roll, bar_positions(meter["steps_per_beat"], meters, len(roll))


def _val_rolls(data: str, rank: int, workers: int, meter=None):
    """This worker's share of the val split (every ``workers``-th piece), streamed shard by shard:
    rolls, or with ``meter`` (roll, bar positions) pairs, as :func:`_shard_pass` gives them."""
    for i, record in enumerate(iter_records(data, "val")):
        if i % workers == rank:
            yield record.roll if meter is None else (record.roll, record.positions)


def _meter(kind: str, cfg, manifest: dict):
    """What a worker needs to place a piece's steps in its bars, or None where the model reads
    no meter (:func:`musicgen.run.uses_meter`): the dataset's grid."""
    return {"steps_per_beat": beat_grid(manifest)} if uses_meter(kind, cfg) else None


def _val_batches(data: str, rank: int, workers: int, module, cfg, steps: int, fallback, meter=None):
    """``steps`` batches of validation examples, cut piece by piece from this worker's val pieces.

    Read straight from the shards every epoch, not through a Ray Data split: a split must be
    consumed in step by all workers, and a worker whose share is short reads its share again from
    the start. Memory holds one shard's rows and one batch, however large the val split. A worker
    with no val piece repeats ``fallback``: every worker must run as many steps.
    """
    size, done, buffer = cfg.batch_size, 0, None
    while done < steps:
        found = False
        for piece in _val_rolls(data, rank, workers, meter):
            arrays = module.val_arrays([piece], cfg)
            if not len(arrays[0]):
                continue
            found = True
            buffer = arrays if buffer is None else tuple(np.concatenate(ab) for ab in zip(buffer, arrays))
            while len(buffer[0]) >= size:
                yield tuple(a[:size] for a in buffer)
                buffer = tuple(a[size:] for a in buffer)
                done += 1
                if done == steps:
                    return
        if not found:
            for _ in range(steps - done):
                yield fallback
            return


def read_split(data: str, split: str, manifest: dict | None = None):
    """A split of a prepared dataset as a Ray Data dataset of (steps, width, roll) rows, with the
    time signatures (:data:`METER_COLUMNS`) of a dataset that has them, in blocks of at most about
    :data:`BLOCK_BYTES`.

    Ray Data 2.60 lists all the shards in one task and reads them in one task whose output blocks
    grow up to ``target_max_block_size`` (128 MB): with the corpus 10x larger its one block was 10x
    larger (111 MB), and so was what a training worker held. The dataset keeps the context it was
    made with, so the smaller block size applies to this read only.
    """
    import ray.data

    manifest = manifest or read_manifest(data)
    columns = ["steps", "width", "roll", *(METER_COLUMNS if manifest.get("format", 1) >= 2 else [])]
    ctx = ray.data.DataContext.get_current()
    default, ctx.target_max_block_size = ctx.target_max_block_size, BLOCK_BYTES
    try:
        return ray.data.read_parquet(shard_paths(data, split, manifest)).select_columns(columns)
    finally:
        ctx.target_max_block_size = default


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker (``config``: :func:`loop_config`)."""
    import ray.train

    from .keras import tf

    kind, module = config["kind"], model_module(config["kind"])
    cfg = from_dict(kind, config["model"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    rng = np.random.default_rng(config["seed"] + 1000 * rank)
    tf.keras.utils.set_random_seed(config["seed"] + rank)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = module.compile_model(module.build_model(cfg), cfg)
    start_epoch, history = _resume(model)
    meter = _meter(kind, cfg, read_manifest(config["data"]))

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    train_rolls = _rolls_forever(ray.train.get_dataset_shard("train"), config["seed"] + rank, meter)
    gen = module.train_batches(train_rolls, cfg, rng)
    sample = next(gen)
    signature = tuple(tf.TensorSpec((None, *a.shape[1:]), tf.float32) for a in sample)

    def batches():
        yield sample
        yield from gen

    train_ds = tf.data.Dataset.from_generator(batches, output_signature=signature).with_options(options)

    val_ds, val_steps = None, config["val_steps"]
    if val_steps:
        args = (config["data"], rank, ctx.get_world_size(), module, cfg, val_steps, sample, meter)
        # Known cardinality makes Keras restart the generator every epoch: the same windows each time.
        val_ds = (tf.data.Dataset.from_generator(lambda: _val_batches(*args), output_signature=signature)
                  .apply(tf.data.experimental.assert_cardinality(val_steps)).with_options(options))

    board = None  # per-epoch scalars for TensorBoard (rank 0, local OUT): tensorboard --logdir OUT/tensorboard
    if rank == 0 and config.get("tensorboard"):
        from tensorboardX import SummaryWriter  # a dependency of ray[tune]

        board = SummaryWriter(config["tensorboard"])
    report = _report_callback(kind, cfg, module, rank, history, board)
    if start_epoch < cfg.epochs:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=config["steps_per_epoch"],
                  validation_data=val_ds, validation_steps=val_steps or None, verbose=0,
                  callbacks=[*module.callbacks(cfg, model), report])
    if board:
        board.close()  # drains tensorboardX's queue (flush alone can leave the last epoch unwritten)


def _resume(model) -> tuple[int, list]:
    """(first epoch to train, metrics of the epochs before it): from the worker's checkpoint, if
    it has one (a replaced worker, or --resume), whose weights go into ``model``."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 0, []
    with checkpoint.as_directory() as d:
        model.load_weights(os.path.join(d, WEIGHTS))
        return _read_json(d, STATE)["epoch"] + 1, _read_json(d, EPOCHS)


def _report_callback(kind, cfg, module, rank, history, board):
    """The Keras callback that ends every epoch: metrics to Ray Train (and TensorBoard), a checkpoint."""
    import ray.train

    from .keras import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                       **module.epoch_metrics(logs or {})}
            history.append(metrics)
            if board:
                for name, value in metrics.items():
                    if name != "epoch":
                        board.add_scalar(name, value, epoch + 1)
                board.flush()
            with tempfile.TemporaryDirectory() as d:
                self.model.save_weights(os.path.join(d, WEIGHTS))  # every rank: saving may all-reduce
                _write_json(d, STATE, {"epoch": epoch, "kind": kind, "config": to_dict(cfg)})
                _write_json(d, EPOCHS, history)  # the whole history: checkpoints get pruned
                if rank == 0:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")
                    # not print(): Ray Train routes a worker's print() through the root logger,
                    # and every epoch line reached the terminal twice
                    sys.stdout.write(f"[{kind}] epoch {epoch + 1}/{cfg.epochs}: {shown}\n")
                    sys.stdout.flush()
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                else:
                    ray.train.report(metrics)

    return Report()


def _read_json(folder: str, name: str):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def _write_json(folder: str, name: str, value) -> None:
    with open(os.path.join(folder, name), "w") as f:
        json.dump(value, f)


def plan(manifest: dict, cfg, module, workers: int) -> dict:
    """Batches per epoch and validation steps, equal on every worker (the strategy needs that)."""
    pieces = {p["split"]: [] for p in manifest["pieces"]}
    for p in manifest["pieces"]:
        pieces[p["split"]].append(p["steps"])
    per_step = cfg.batch_size * workers
    train_examples = sum(module.examples(s, cfg) for s in pieces.get("train", []))
    val_examples = sum(module.examples(s, cfg) for s in pieces.get("val", []))
    least = getattr(cfg, "min_steps_per_epoch", 1)
    return {"steps_per_epoch": cfg.steps_per_epoch or max(least, train_examples // per_step),
            "val_steps": max(1, val_examples // per_step) if val_examples else 0,
            "train_examples": train_examples, "val_examples": val_examples}


def check_dataset(data: str, manifest: dict, kind: str, cfg) -> None:
    """A DataError naming ``data`` unless model ``kind`` (config ``cfg``) can train on it."""
    if not manifest.get("counts", {}).get("train"):
        raise DataError(f"{data}: the dataset has no train split (prepare it with a train fraction > 0)")
    if kind == "vae" and manifest.get("width", 128) != cfg.width:
        raise DataError(f"{data}: rolls are {manifest.get('width')} wide, the VAE expects {cfg.width}")


def check_cluster(cluster: dict, workers: int, gpu: bool) -> None:
    """A DataError naming the flags unless the cluster (``ray.cluster_resources()``) holds
    ``workers`` training workers at once: one CPU each, or one GPU each with ``gpu``."""
    if gpu and workers > cluster.get("GPU", 0):
        raise DataError(f"--gpu with --workers {workers}: the cluster has {int(cluster.get('GPU', 0))} GPUs")
    if not gpu and workers > cluster.get("CPU", 0):
        raise DataError(f"--workers {workers} is more than the cluster's {int(cluster.get('CPU', 0))} CPUs")


def _worker_resources(workers: int, gpu: bool, cluster_cpus: float | None) -> dict | None:
    """Ray Train's ``resources_per_worker`` (see :func:`make_trainer`)."""
    if cluster_cpus is None:
        return None  # Ray Train's default: one CPU, or one GPU
    # Leave a CPU to Ray Data, which streams the shards to the workers: with every CPU held by a
    # training worker its read tasks could never run.
    return {"CPU": 1.0 if gpu or cluster_cpus - workers >= 1 else max(0.1, (cluster_cpus - 1) / workers)}


def loop_config(kind: str, cfg, data: str, steps: dict, seed: int, tensorboard: str | None = None) -> dict:
    """What :func:`train_loop` gets on every worker: model, seed, dataset, :func:`plan`'s steps."""
    return {"kind": kind, "model": to_dict(cfg), "seed": seed,
            "data": data if storage.is_s3(data) else os.path.abspath(data), **steps, "tensorboard": tensorboard}


def make_trainer(config: dict, datasets: dict, *, workers: int, gpu: bool, name: str, storage_path: str,
                 keep: int, max_failures: int, cluster_cpus: float | None = None, callbacks=(), trainer_class=None):
    """The Ray Train trainer of a training run (:func:`train`, and a trial of ``musicgen tune``):
    :func:`train_loop` with ``config`` (:func:`loop_config`) on ``workers`` workers fed ``datasets``.

    Checkpoints go to ``storage_path/name``, the best ``keep`` kept by :func:`_monitor`; a failed
    worker is replaced up to ``max_failures`` times.
    ``cluster_cpus`` (the cluster's CPUs) says that the workers read the train split as they train:
    a CPU is left to Ray Data, and a GPU worker holds a CPU too. Without it (a Tune trial: the
    search read the split before it started) a worker holds one CPU, or one GPU.
    ``trainer_class``: TensorflowTrainer (the default) or a subclass.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    monitor = _monitor(config["kind"], config["val_steps"])
    return (trainer_class or TensorflowTrainer)(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=_worker_resources(workers, gpu, cluster_cpus)),
        datasets=datasets,
        run_config=RunConfig(
            name=name, storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=monitor,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=max_failures), callbacks=list(callbacks)),
    )


def _trainer_class():
    """Ray Train's trainer, less its PlacementGroupCleaner on a Ray without a dashboard (a local
    one, :func:`musicgen.runtime.ensure_ray`): the cleaner asks the dashboard's state API every
    second whether the run's controller lives, and without one it only filled the terminal with
    warnings, or a traceback where two local Rays ran (:mod:`musicgen.raycompat`)."""
    from ray.train.tensorflow import TensorflowTrainer

    from .runtime import dashboard_url

    if dashboard_url():
        return TensorflowTrainer
    from .raycompat import without_pg_cleaner

    return without_pg_cleaner(TensorflowTrainer)


def _monitor(kind: str, val_steps: int) -> str:
    """The metric that picks the best checkpoint: the model module's ``SELECTION_METRIC`` (``loss``
    unless it says otherwise) on the val split, or on the training split without one."""
    name = getattr(model_module(kind), "SELECTION_METRIC", "loss")
    return f"val_{name}" if val_steps else name


def train(kind: str, data: str, out: str, cfg, *, workers: int = 1, gpu: bool = False, seed: int = 0,
          resume: bool = False, progress: bool = True) -> dict:
    """Train model ``kind`` on dataset ``data``; writes the run to ``out``; returns its metrics."""
    module = model_module(kind)
    manifest = read_manifest(data)
    check_dataset(data, manifest, kind, cfg)
    run = Run(out)
    if not resume and run.is_trained():
        raise DataError(f"{out}: already holds a trained model (choose another --out, or --resume)")
    if not resume and run.has_checkpoints():
        raise DataError(f"{out}: holds an unfinished run (pass --resume to continue it, or choose another --out)")
    steps = plan(manifest, cfg, module, workers)

    from .runtime import ensure_ray, quiet_data_context

    ray = ensure_ray(quiet=not progress)
    quiet_data_context()
    cluster = ray.cluster_resources()
    check_cluster(cluster, workers, gpu)
    trainer = make_trainer(loop_config(kind, cfg, data, steps, seed, tensorboard=run.tensorboard),
                           {"train": read_split(data, "train", manifest)}, workers=workers, gpu=gpu,
                           name=CHECKPOINTS, storage_path=run.location, keep=3, max_failures=3,
                           cluster_cpus=cluster.get("CPU", 0), trainer_class=_trainer_class())
    result = trainer.fit()
    if result.error:
        raise result.error
    monitor = _monitor(kind, steps["val_steps"])
    best = result.get_best_checkpoint(metric=monitor, mode="min") if hasattr(result, "get_best_checkpoint") else None
    best = best or result.checkpoint
    if best is None:
        raise DataError(f"{out}: training reported no checkpoint")
    with (result.checkpoint or best).as_directory() as d:
        epochs = _read_json(d, EPOCHS)
    calibration = _vae_calibration(cfg, best, data) if kind == "vae" else {}
    return run.save(best, kind=kind, cfg=cfg, manifest=manifest, data=data, epochs=epochs,
                    best=best_metrics_of(result, best) or result.metrics or {}, workers=workers, plan=steps,
                    **calibration)


def _vae_calibration(cfg, checkpoint, data: str) -> dict:
    """What travels with a VAE's weights, chosen on held-out images (a few train pieces without a
    val split) with the weights of ``checkpoint``: the decoding ``threshold`` and the latent
    ``directions`` of the attributes (:meth:`musicgen.vae.Generator.attribute_directions`)."""
    from .dataset import load_rolls
    from .vae import Generator, build_model, images

    model = build_model(cfg)
    with checkpoint.as_directory() as d:
        model.load_weights(os.path.join(d, WEIGHTS))
    rolls = list(load_rolls(data, "val").values()) or list(load_rolls(data, "train").values())[:64]
    x = np.concatenate([images(r, cfg) for r in rolls])
    generator = Generator(cfg, model)
    return {"threshold": float(generator.choose_threshold(x)),
            "directions": {k: v.tolist() for k, v in generator.attribute_directions(x).items()}}


def best_metrics_of(result, best):
    """The metrics Ray Train reported with checkpoint ``best`` (None if it kept none for it)."""
    for checkpoint, metrics in getattr(result, "best_checkpoints", None) or []:
        if checkpoint.path == best.path:
            return metrics
    return None
