"""A trained run: the one place that knows its layout, reads it and writes it (local or ``s3://``).

What ``musicgen train --out RUN`` leaves::

    RUN/model/config.json   kind, config, steps_per_beat, width, data (and the VAE's threshold,
                            steps_per_second for a dataset on a grid in seconds, and the LSTM's
                            bar_positions: METER_POSITIONS or STEP_POSITIONS)
    RUN/model/weights.h5    the training model's weights (model/ is a copy of the best checkpoint)
    RUN/metrics.json        kind, the best epoch's metrics, epochs, workers, data, plan, config
    RUN/history.json        every epoch's metrics, {name: [value per epoch]}
    RUN/loss.png            the loss curves of history.json
    RUN/checkpoints/        Ray Train's run folder (one checkpoint per epoch, the best 3 kept)
    RUN/tensorboard/        per-epoch scalars for TensorBoard (a local RUN only)

``model/config.json`` is written last: a RUN that has it is a finished run.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from typing import NamedTuple

from . import storage
from .errors import DataError, one_line

MODEL_DIR = "model"
CONFIG = "config.json"
WEIGHTS = "weights.h5"  # in model/ and in every checkpoint (model/ is a copy of one)
METRICS = "metrics.json"
HISTORY = "history.json"
LOSS_PNG = "loss.png"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
#: ``bar_positions`` of an LSTM run (model/config.json): its net was trained on each piece's own
#: bar positions (its time signatures on the grid), or on steps counted from each piece's start
#: (bars of ``steps_per_bar`` whatever the meter: ``meter=False``, and every run from before
#: datasets held time signatures, which has no ``bar_positions`` at all).
METER_POSITIONS = "meter"
STEP_POSITIONS = "steps"


def uses_meter(kind: str, cfg) -> bool:
    """Whether a model of ``kind`` with config ``cfg`` reads each piece's bar positions from its
    time signatures (an LSTM with a position input and ``meter``)."""
    return kind == "lstm" and cfg.position and cfg.meter


def model_module(kind: str):
    """The module of model ``kind`` (``musicgen.lstm`` or ``musicgen.vae``): build, train, load."""
    if kind not in ("lstm", "vae"):
        raise DataError(f"model kind must be lstm or vae, not {kind!r}")
    return importlib.import_module(f"musicgen.{kind}")


class Loaded(NamedTuple):
    """A run's model: its ``kind``, typed config, ``info`` (model/config.json) and Keras training model."""

    kind: str
    cfg: object
    info: dict
    model: object


class Run:
    """The trained run at ``path`` (a folder or ``s3://bucket/prefix``); nothing is read until asked."""

    def __init__(self, path: str):
        self.path = str(path)
        self._info: dict | None = None

    def __repr__(self) -> str:
        return f"Run({self.path!r})"

    def file(self, *parts: str) -> str:
        """The path of ``parts`` inside the run."""
        return storage.join(self.path, *parts)

    @property
    def location(self) -> str:
        """The run as Ray Train's ``storage_path`` wants it: an absolute folder, or the S3 URI."""
        return self.path if storage.is_s3(self.path) else os.path.abspath(self.path)

    @property
    def tensorboard(self) -> str | None:
        """Where training writes TensorBoard scalars: under a local run only (None on S3)."""
        return None if storage.is_s3(self.path) else os.path.join(self.location, TENSORBOARD)

    def is_trained(self) -> bool:
        """Whether the run holds a finished model (its model/config.json)."""
        return storage.is_file(self.file(MODEL_DIR, CONFIG))

    def has_checkpoints(self) -> bool:
        """Whether training has started here (Ray Train's checkpoints folder exists)."""
        return storage.is_dir(self.file(CHECKPOINTS))

    def info(self) -> dict:
        """model/config.json; a one-line DataError naming the run if it is not a trained run."""
        if self._info is None:
            path = self.file(MODEL_DIR, CONFIG)
            if not self.is_trained():
                raise DataError(f"{self.path}: not a trained run (no {MODEL_DIR}/{CONFIG}; "
                                "run `musicgen train` first)")
            try:
                info = json.loads(storage.read_bytes(path))
            except Exception as e:  # noqa: BLE001 - unreadable (a store's error, bad JSON): one line
                raise DataError(f"{self.path}: cannot read the run ({one_line(e)})") from None
            if not isinstance(info, dict) or "kind" not in info:
                raise DataError(f"{path}: not a musicgen run config")
            self._info = info
        return self._info

    @property
    def kind(self) -> str:
        return self.info()["kind"]

    def metrics(self) -> dict:
        """metrics.json ({} if the run has none)."""
        return self._optional_json(METRICS)

    def history(self) -> dict:
        """history.json, {name: [value per epoch]} ({} if the run has none)."""
        return self._optional_json(HISTORY)

    def _optional_json(self, name: str) -> dict:
        path = self.file(name)
        return json.loads(storage.read_bytes(path)) if storage.is_file(path) else {}

    def load(self) -> Loaded:
        """The run's Keras training model with its weights, with its kind, config and info."""
        from .config import from_dict

        info = self.info()
        kind = info["kind"]
        cfg = from_dict(kind, info["config"])
        model = model_module(kind).build_model(cfg)
        with tempfile.TemporaryDirectory() as d:  # Keras reads weights from a local file only
            local = os.path.join(d, WEIGHTS)
            with open(local, "wb") as f:
                f.write(storage.read_bytes(self.file(MODEL_DIR, WEIGHTS)))
            model.load_weights(local)
        return Loaded(kind, cfg, info, model)

    def save(self, checkpoint, *, kind: str, cfg, manifest: dict, data: str, epochs: list[dict], best: dict,
             workers: int, plan: dict, threshold: float | None = None, directions: dict | None = None) -> dict:
        """Write the run from training's results; returns what metrics.json holds.

        ``checkpoint`` is the folder ``checkpoint.path`` on the pyarrow filesystem
        ``checkpoint.filesystem`` (a Ray Train Checkpoint): copied whole to model/. ``epochs`` is
        every epoch's metrics in order, ``best`` the best epoch's, ``plan`` the steps per epoch
        (:func:`musicgen.train.plan`); ``threshold`` is the VAE's decoding threshold, ``directions``
        its attributes' latent directions ({name: list of floats}).
        """
        from .config import to_dict

        self._copy_model(checkpoint)
        history = _columns(epochs)
        metrics = {"kind": kind, "best": dict(best), "epochs": len(history.get("epoch", [])),
                   "workers": workers, "data": data, "plan": plan, "config": to_dict(cfg)}
        self._write_json(METRICS, metrics)
        self._write_json(HISTORY, history)
        self._plot_losses(history, title=f"{kind} training")
        info = {"kind": kind, "config": to_dict(cfg), "steps_per_beat": manifest.get("steps_per_beat"),
                "width": manifest.get("width", 128), "data": data}
        if manifest.get("steps_per_second"):  # a grid in seconds (prepare --steps-per-second)
            info["steps_per_second"] = manifest["steps_per_second"]
        if threshold is not None:
            info["threshold"] = float(threshold)
        if directions:
            info["directions"] = {k: [float(x) for x in v] for k, v in directions.items()}
        if kind == "lstm":
            info["bar_positions"] = METER_POSITIONS if uses_meter(kind, cfg) else STEP_POSITIONS
        self._write_json(f"{MODEL_DIR}/{CONFIG}", info)  # last: it marks the run finished
        self._info = info
        return metrics

    def _copy_model(self, checkpoint) -> None:
        import pyarrow.fs as pafs

        fs, inner = storage.filesystem(self.path)
        target = storage.join(inner, MODEL_DIR)
        if not storage.is_s3(self.path):
            fs.create_dir(target, recursive=True)
        pafs.copy_files(checkpoint.path, target, source_filesystem=checkpoint.filesystem,
                        destination_filesystem=fs)

    def _write_json(self, name: str, value) -> None:
        storage.write_bytes(self.file(*name.split("/")), json.dumps(value, indent=1).encode())

    def _plot_losses(self, history: dict, title: str) -> None:
        from .plot import plot_history

        curves = {k: v for k, v in history.items() if k != "epoch" and k.endswith("loss")}
        if not curves:
            return
        with tempfile.TemporaryDirectory() as d:
            png = plot_history(curves, os.path.join(d, LOSS_PNG), title=title)
            with open(png, "rb") as f:
                storage.write_bytes(self.file(LOSS_PNG), f.read())


def _columns(epochs: list[dict]) -> dict:
    """{name: [value per epoch]} (``epoch`` first, then by name) from one dict per epoch."""
    names = sorted({k for e in epochs for k in e}, key=lambda k: (k != "epoch", k))
    return {k: [e.get(k) for e in epochs] for k in names}
