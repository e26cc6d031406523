"""musicgen.run: a trained run's layout, written once and read back, local and on S3, and the runs
the code before the architecture change wrote (tests/data/golden) read as they are. No Ray."""
import json
import os

import numpy as np
import pytest

from musicgen import storage
from musicgen.config import preset
from musicgen.errors import DataError
from musicgen.run import Run

from run_factory import EPOCHS, random_rolls, write_dataset, write_run

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")
LSTM = dict(units=16, layers=1, window=16, batch_size=8)
VAE = dict(height=32, filters=(8, 8, 8), dense=16, latent=4, batch_size=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("ds") / "ds"),
                         {"train": random_rolls(4), "val": random_rolls(2, seed=1), "test": random_rolls(2, seed=2)})


def test_a_written_run_has_the_layout_and_reads_back(data, tmp_path):
    out = tmp_path / "run"
    cfg = preset("lstm", "tiny", **LSTM)
    model, metrics = write_run(str(out), "lstm", cfg, data, tmp_path)
    assert sorted(os.listdir(out)) == ["history.json", "loss.png", "metrics.json", "model"]
    assert sorted(os.listdir(out / "model")) == ["config.json", "state.json", "weights.h5"]  # the checkpoint, whole
    info = json.loads((out / "model" / "config.json").read_text())
    assert list(info) == ["kind", "config", "steps_per_beat", "width", "data", "bar_positions"]  # no threshold for an LSTM
    assert info["bar_positions"] == "meter"  # its net read each piece's own bars
    assert info["kind"] == "lstm" and info["config"]["units"] == 16 and info["steps_per_beat"] == 4
    assert list(metrics) == ["kind", "best", "epochs", "workers", "data", "plan", "config"]
    assert metrics["epochs"] == 2 and metrics["best"] == EPOCHS[-1]
    history = json.loads((out / "history.json").read_text())
    assert list(history) == ["epoch", "loss", "val_loss", "val_nll"] and history["epoch"] == [1, 2]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"

    run = Run(str(out))
    assert run.is_trained() and run.kind == "lstm" and run.info() == info
    assert run.metrics() == metrics == json.loads((out / "metrics.json").read_text())
    assert run.history() == history
    loaded = run.load()
    assert loaded.kind == "lstm" and loaded.cfg == cfg and loaded.info == info
    for a, b in zip(loaded.model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_config_json_is_written_once_and_last(data, tmp_path, monkeypatch):
    written = []
    real = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda path, body: (written.append(path), real(path, body)))
    cfg = preset("vae", "tiny", **VAE)
    write_run(str(tmp_path / "vae"), "vae", cfg, data, tmp_path, threshold=0.25)
    names = [os.path.relpath(p, tmp_path / "vae") for p in written]
    assert names.count(os.path.join("model", "config.json")) == 1 and names[-1] == os.path.join("model", "config.json")
    assert Run(str(tmp_path / "vae")).info()["threshold"] == 0.25


def test_what_is_not_a_run_is_a_one_line_error(tmp_path):
    run = Run(str(tmp_path))
    assert not run.is_trained() and not run.has_checkpoints()
    assert run.metrics() == {} and run.history() == {}
    with pytest.raises(DataError, match="not a trained run .*musicgen train") as e:
        run.load()
    assert "\n" not in str(e.value)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the run"):
        Run(str(tmp_path)).info()
    (tmp_path / "checkpoints").mkdir()
    assert Run(str(tmp_path)).has_checkpoints()


def test_paths_for_ray_train_and_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Run("runs/a")
    assert local.location == str(tmp_path / "runs" / "a")
    assert local.tensorboard == str(tmp_path / "runs" / "a" / "tensorboard")
    assert local.file("model", "weights.h5") == os.path.join("runs/a", "model", "weights.h5")
    s3 = Run("s3://bucket/runs/a/")
    assert s3.location == "s3://bucket/runs/a/" and s3.tensorboard is None
    assert s3.file("metrics.json") == "s3://bucket/runs/a/metrics.json"


def test_a_run_on_s3_is_written_and_loaded(data, tmp_path, s3):
    client, bucket = s3
    out = f"s3://{bucket}/runs/lstm"
    cfg = preset("lstm", "tiny", **LSTM)
    model, metrics = write_run(out, "lstm", cfg, data, tmp_path, seed=3)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]
                  if not o["Key"].endswith("/"))  # (pyarrow's folder markers)
    assert keys == [f"runs/lstm/{k}" for k in ("history.json", "loss.png", "metrics.json", "model/config.json",
                                                "model/state.json", "model/weights.h5")]
    run = Run(out)
    assert run.is_trained() and run.metrics() == metrics
    for a, b in zip(run.load().model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "vae"])
def test_runs_written_before_the_change_read_as_they_are(kind):
    run = Run(os.path.join(GOLDEN, kind))
    info = run.info()
    assert info["kind"] == kind and run.metrics()["kind"] == kind
    assert ("threshold" in info) == (kind == "vae")
    loaded = run.load()
    assert loaded.kind == kind and loaded.model.count_params() > 0
