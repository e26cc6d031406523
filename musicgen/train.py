"""Training on Ray Train: a Keras loop per worker fed by its Ray Data shard, checkpoints every epoch.

The driver (:func:`train`) reads the dataset's train and val shards as Ray Data datasets, starts a
``TensorflowTrainer`` with ``workers`` workers, and at the end copies the best checkpoint (lowest
validation loss) to ``RUN/model`` with ``metrics.json``, ``history.json`` and ``loss.png`` beside
it. Each worker (:func:`train_loop`) streams its shard of pieces, cuts training examples on the
fly (the model module's ``train_batches``), and trains under ``MultiWorkerMirroredStrategy``.

A model module (``musicgen.lstm``, ``musicgen.vae``) provides: ``build_model``, ``compile_model``,
``train_batches(rolls, cfg, rng)``, ``val_arrays(rolls, cfg)``, ``examples(steps, cfg)`` (training
examples a piece of that many steps yields), ``epoch_metrics(logs)`` and ``callbacks(cfg, model)``.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile

import numpy as np

from . import storage
from .config import from_dict, to_dict
from .dataset import iter_records, read_manifest, shard_paths
from .errors import DataError

MODEL_DIR = "model"
WEIGHTS = "weights.h5"
HISTORY = "history.json"
CHECKPOINTS = "checkpoints"  # Ray Train's run folder under OUT: one checkpoint per epoch, best 3 kept
BLOCK_BYTES = 4 << 20  # Ray Data blocks of a training read (read_split): ~100 pieces of the beat grid


def model_module(kind: str):
    if kind not in ("lstm", "vae"):
        raise DataError(f"model kind must be lstm or vae, not {kind!r}")
    return importlib.import_module(f"musicgen.{kind}")


def _rolls_forever(shard, seed: int):
    """Rolls (float32, steps x width) of a Ray Data shard, epoch after epoch, in shuffled order."""
    from .dataset import decode_roll

    epoch = 0
    while True:
        for batch in shard.iter_batches(batch_size=8, batch_format="numpy",
                                        local_shuffle_buffer_size=32, local_shuffle_seed=seed + epoch):
            for data, steps, width in zip(batch["roll"], batch["steps"], batch["width"]):
                yield decode_roll(data, int(steps), int(width))
        epoch += 1


def _val_rolls(data: str, rank: int, workers: int):
    """This worker's share of the val split (every ``workers``-th piece), streamed shard by shard."""
    for i, record in enumerate(iter_records(data, "val")):
        if i % workers == rank:
            yield record.roll


def _val_batches(data: str, rank: int, workers: int, module, cfg, steps: int, fallback):
    """``steps`` batches of validation examples, cut piece by piece from this worker's val pieces.

    Read straight from the shards every epoch, not through a Ray Data split: a split must be
    consumed in step by all workers, and a worker whose share is short reads its share again from
    the start. Memory holds one shard's rows and one batch, however large the val split. A worker
    with no val piece repeats ``fallback``: every worker must run as many steps.
    """
    size, done, buffer = cfg.batch_size, 0, None
    while done < steps:
        found = False
        for roll in _val_rolls(data, rank, workers):
            arrays = module.val_arrays([roll], cfg)
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
    """A split of a prepared dataset as a Ray Data dataset of (steps, width, roll) rows, in blocks
    of at most about :data:`BLOCK_BYTES`.

    Ray Data 2.60 lists all the shards in one task and reads them in one task whose output blocks
    grow up to ``target_max_block_size`` (128 MB): with the corpus 10x larger its one block was 10x
    larger (111 MB), and so was what a training worker held. The dataset keeps the context it was
    made with, so the smaller block size applies to this read only.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    default, ctx.target_max_block_size = ctx.target_max_block_size, BLOCK_BYTES
    try:
        return ray.data.read_parquet(shard_paths(data, split, manifest)).select_columns(["steps", "width", "roll"])
    finally:
        ctx.target_max_block_size = default


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train

    from .keras import keras, tf

    kind, module = config["kind"], model_module(config["kind"])
    cfg = from_dict(kind, config["model"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    rng = np.random.default_rng(config["seed"] + 1000 * rank)
    tf.keras.utils.set_random_seed(config["seed"] + rank)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = module.compile_model(module.build_model(cfg), cfg)

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume (a replaced worker, or --resume)
        with checkpoint.as_directory() as d:
            model.load_weights(os.path.join(d, WEIGHTS))
            start_epoch = json.load(open(os.path.join(d, "state.json")))["epoch"] + 1
            history = json.load(open(os.path.join(d, HISTORY)))

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    train_rolls = _rolls_forever(ray.train.get_dataset_shard("train"), config["seed"] + rank)
    gen = module.train_batches(train_rolls, cfg, rng)
    sample = next(gen)
    signature = tuple(tf.TensorSpec((None, *a.shape[1:]), tf.float32) for a in sample)

    def batches():
        yield sample
        yield from gen

    train_ds = tf.data.Dataset.from_generator(batches, output_signature=signature).with_options(options)

    val_ds, val_steps = None, config["val_steps"]
    if val_steps:
        args = (config["data"], rank, ctx.get_world_size(), module, cfg, val_steps, sample)
        # Known cardinality makes Keras restart the generator every epoch: the same windows each time.
        val_ds = (tf.data.Dataset.from_generator(lambda: _val_batches(*args), output_signature=signature)
                  .apply(tf.data.experimental.assert_cardinality(val_steps)).with_options(options))

    board = None  # per-epoch scalars for TensorBoard (rank 0, local OUT): tensorboard --logdir OUT/tensorboard
    if rank == 0 and config.get("tensorboard"):
        from tensorboardX import SummaryWriter  # a dependency of ray[tune]

        board = SummaryWriter(config["tensorboard"])

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
                json.dump({"epoch": epoch, "kind": kind, "config": to_dict(cfg)}, open(os.path.join(d, "state.json"), "w"))
                json.dump(history, open(os.path.join(d, HISTORY), "w"))  # whole history: checkpoints get pruned
                if rank == 0:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")
                    print(f"[{kind}] epoch {epoch + 1}/{cfg.epochs}: {shown}", flush=True)
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                else:
                    ray.train.report(metrics)

    if start_epoch < cfg.epochs:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=config["steps_per_epoch"],
                  validation_data=val_ds, validation_steps=val_steps or None, verbose=0,
                  callbacks=[*module.callbacks(cfg, model), Report()])
    if board:
        board.close()  # drains tensorboardX's queue (flush alone can leave the last epoch unwritten)


def plan(manifest: dict, cfg, module, workers: int) -> dict:
    """Batches per epoch and validation steps, equal on every worker (the strategy needs that)."""
    pieces = {p["split"]: [] for p in manifest["pieces"]}
    for p in manifest["pieces"]:
        pieces[p["split"]].append(p["steps"])
    per_step = cfg.batch_size * workers
    train_examples = sum(module.examples(s, cfg) for s in pieces.get("train", []))
    val_examples = sum(module.examples(s, cfg) for s in pieces.get("val", []))
    return {"steps_per_epoch": cfg.steps_per_epoch or max(1, train_examples // per_step),
            "val_steps": max(1, val_examples // per_step) if val_examples else 0,
            "train_examples": train_examples, "val_examples": val_examples}


def train(kind: str, data: str, out: str, cfg, *, workers: int = 1, gpu: bool = False, seed: int = 0,
          resume: bool = False, progress: bool = True) -> dict:
    """Train model ``kind`` on dataset ``data``; writes the run to ``out``; returns its metrics."""
    module = model_module(kind)
    manifest = read_manifest(data)
    counts = manifest.get("counts", {})
    if not counts.get("train"):
        raise DataError(f"{data}: the dataset has no train split (prepare it with a train fraction > 0)")
    if kind == "vae" and manifest.get("width", 128) != cfg.width:
        raise DataError(f"{data}: rolls are {manifest.get('width')} wide, the VAE expects {cfg.width}")
    if not resume and storage.info(storage.join(out, MODEL_DIR, "config.json")).type.name == "File":
        raise DataError(f"{out}: already holds a trained model (choose another --out, or --resume)")
    if not resume and storage.info(storage.join(out, CHECKPOINTS)).type.name == "Directory":
        raise DataError(f"{out}: holds an unfinished run (pass --resume to continue it, or choose another --out)")
    steps = plan(manifest, cfg, module, workers)

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from .runtime import ensure_ray, quiet_data_context

    ray = ensure_ray(quiet=not progress)
    quiet_data_context()
    available = ray.cluster_resources()
    cpus = available.get("CPU", 0)
    if workers > cpus and not gpu:
        raise DataError(f"--workers {workers} is more than the cluster's {int(cpus)} CPUs")
    # Leave a CPU to Ray Data, which streams the shards to the workers: with every CPU held by a
    # training worker its read tasks could never run.
    cpu_per_worker = 1.0 if gpu or cpus - workers >= 1 else max(0.1, (cpus - 1) / workers)
    if gpu and workers > available.get("GPU", 0):
        raise DataError(f"--gpu with --workers {workers}: the cluster has {int(available.get('GPU', 0))} GPUs")
    datasets = {"train": read_split(data, "train", manifest)}
    monitor = "val_loss" if steps["val_steps"] else "loss"
    board = None if storage.is_s3(out) else os.path.join(_storage_path(out), "tensorboard")  # local OUT only
    trainer = TensorflowTrainer(
        train_loop,
        train_loop_config={"kind": kind, "model": to_dict(cfg), "seed": seed,
                           "data": data if storage.is_s3(data) else os.path.abspath(data), **steps,
                           "tensorboard": board},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpu_per_worker}),
        datasets=datasets,
        run_config=RunConfig(
            name=CHECKPOINTS, storage_path=_storage_path(out),
            checkpoint_config=CheckpointConfig(num_to_keep=3, checkpoint_score_attribute=monitor,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=3)),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best = result.get_best_checkpoint(metric=monitor, mode="min") if hasattr(result, "get_best_checkpoint") else None
    best = best or result.checkpoint
    if best is None:
        raise DataError(f"{out}: training reported no checkpoint")
    return finish_run(kind, cfg, out, best, result, manifest, data, steps, workers)


def _storage_path(out: str) -> str:
    return out if storage.is_s3(out) else os.path.abspath(out)


def _history(checkpoint) -> dict:
    """Per-epoch metrics, {name: [value per epoch]}, from the history a checkpoint carries."""
    with checkpoint.as_directory() as d:
        epochs = json.load(open(os.path.join(d, HISTORY)))
    names = sorted({k for e in epochs for k in e}, key=lambda k: (k != "epoch", k))
    return {k: [e.get(k) for e in epochs] for k in names}


def finish_run(kind, cfg, out, best, result, manifest, data, steps, workers) -> dict:
    """Copy the best checkpoint to OUT/model; write metrics.json, history.json and loss.png."""
    import pyarrow.fs as pafs

    from .plot import plot_history

    fs, inner = storage.filesystem(out)
    target = storage.join(inner, MODEL_DIR)
    if not storage.is_s3(out):
        fs.create_dir(target, recursive=True)
    pafs.copy_files(best.path, target, source_filesystem=best.filesystem, destination_filesystem=fs)
    info = {"kind": kind, "config": to_dict(cfg), "steps_per_beat": manifest.get("steps_per_beat"),
            "steps_per_second": manifest.get("steps_per_second"), "width": manifest.get("width", 128), "data": data}
    storage.write_bytes(storage.join(out, MODEL_DIR, "config.json"), json.dumps(info, indent=1).encode())
    if kind == "vae":  # the decoding threshold, chosen on held-out images, travels with the model
        info["threshold"] = _vae_threshold(out, data)
        storage.write_bytes(storage.join(out, MODEL_DIR, "config.json"), json.dumps(info, indent=1).encode())
    history = _history(result.checkpoint or best)
    best_metrics = dict(best_metrics_of(result, best) or result.metrics or {})
    metrics = {"kind": kind, "best": best_metrics, "epochs": len(history.get("epoch", [])),
               "workers": workers, "data": data, "plan": steps, "config": to_dict(cfg)}
    storage.write_bytes(storage.join(out, "metrics.json"), json.dumps(metrics, indent=1).encode())
    storage.write_bytes(storage.join(out, "history.json"), json.dumps(history, indent=1).encode())
    curves = {k: v for k, v in history.items() if k != "epoch" and k.endswith("loss")}
    if curves:
        with tempfile.TemporaryDirectory() as d:
            png = plot_history(curves, os.path.join(d, "loss.png"), title=f"{kind} training")
            storage.write_bytes(storage.join(out, "loss.png"), open(png, "rb").read())
    return metrics


def _vae_threshold(out: str, data: str) -> float:
    from .dataset import load_rolls
    from .vae import Generator, images

    _, cfg, _, model = load_run(out)
    rolls = list(load_rolls(data, "val").values()) or list(load_rolls(data, "train").values())[:64]
    return float(Generator(cfg, model).choose_threshold(np.concatenate([images(r, cfg) for r in rolls])))


def best_metrics_of(result, best):
    for checkpoint, metrics in getattr(result, "best_checkpoints", None) or []:
        if checkpoint.path == best.path:
            return metrics
    return None


def load_run(run: str):
    """(kind, config, info, keras training model with weights) of a trained run (local or s3://)."""
    path = storage.join(run, MODEL_DIR, "config.json")
    if storage.info(path).type.name != "File":
        raise DataError(f"{run}: not a trained run (no {MODEL_DIR}/config.json; run `musicgen train` first)")
    info = json.loads(storage.read_bytes(path))
    kind = info["kind"]
    module = model_module(kind)
    cfg = from_dict(kind, info["config"])
    model = module.build_model(cfg)
    with tempfile.TemporaryDirectory() as d:
        local = os.path.join(d, WEIGHTS)
        with open(local, "wb") as f:
            f.write(storage.read_bytes(storage.join(run, MODEL_DIR, WEIGHTS)))
        model.load_weights(local)
    return kind, cfg, info, model
