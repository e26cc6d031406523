"""Training through Ray Train (a real local Ray), then evaluate / extend / generate on the run."""
import json
import os

import numpy as np
import pytest

from musicgen.config import preset
from musicgen.errors import DataError
from musicgen.prepare import PrepareConfig, prepare

from conftest import run_cli

SMALL_LSTM = dict(units=32, layers=1, window=32, batch_size=16, epochs=2, nade_units=16, min_steps_per_epoch=1)
SMALL_VAE = dict(epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def lstm_run(dataset, tmp_path_factory):
    from musicgen.train import train

    out = tmp_path_factory.mktemp("runs") / "lstm"
    metrics = train("lstm", dataset, str(out), preset("lstm", "tiny", **SMALL_LSTM), progress=False)
    return out, metrics


def test_train_writes_model_metrics_history_and_curves(lstm_run):
    out, metrics = lstm_run
    assert metrics["epochs"] == 2 and metrics["kind"] == "lstm"
    assert np.isfinite(metrics["best"]["val_nll"]) and metrics["best"]["val_nll"] > 0
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["val_loss"]) == 2
    assert json.loads((out / "metrics.json").read_text())["best"] == metrics["best"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((out / "model" / "config.json").read_text())
    assert info["kind"] == "lstm" and info["config"]["units"] == 32 and info["steps_per_beat"] == 4
    assert info["bar_positions"] == "meter"  # trained on each piece's own bars: generation places steps so
    assert (out / "model" / "weights.h5").stat().st_size > 10_000
    from musicgen.keras import tf  # per-epoch scalars for TensorBoard, under OUT/tensorboard

    logged = {(v.tag, e.step) for f in (out / "tensorboard").glob("events.out.tfevents.*")
              for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    assert {("loss", 1), ("val_nll", 1), ("val_nll", 2)} <= logged


def test_evaluate_reports_the_model_next_to_baselines(lstm_run, dataset):
    from musicgen.evaluate import evaluate_run

    out, _ = lstm_run
    result = evaluate_run(str(out), dataset, "test")
    for scores in (result, result["copy_last"], result["pitch_prior"]):
        assert {"nll", "accuracy", "f1", "mae"} <= set(scores)
        assert np.isfinite(scores["nll"]) and 0 <= scores["accuracy"] <= 1
    assert result["frames"] == result["copy_last"]["frames"] > 0
    assert result["copy_last"]["nll"] < result["pitch_prior"]["nll"]  # held notes are predictable
    with pytest.raises(DataError, match="not a trained run"):
        evaluate_run(dataset, dataset)


def test_extend_from_a_run_is_reproducible(lstm_run, chorales):
    from musicgen.generate import extend_piece, load_extender, read_prompt

    out, _ = lstm_run
    extender, info = load_extender(str(out))
    prompt = read_prompt(str(sorted(chorales.glob("*.mid"))[0]), info)
    roll, midi = extend_piece(extender, info, prompt, 24, temperature=1.0, seed=3)
    again, _ = extend_piece(extender, info, prompt, 24, temperature=1.0, seed=3)
    assert roll.shape == (len(prompt.roll) + 24, 128)
    np.testing.assert_array_equal(roll, again)
    np.testing.assert_array_equal(roll[:len(prompt.roll)], prompt.roll)
    with pytest.raises(DataError, match="steps"):
        extend_piece(extender, info, prompt, 0)
    with pytest.raises(DataError, match="cannot generate"):
        from musicgen.generate import load_generator
        load_generator(str(out))


def test_evaluate_places_each_test_piece_in_its_own_bars(lstm_run, dataset):
    """``musicgen evaluate`` scores a meter-trained run with each piece's bar positions from its
    time signatures, as training fed them (the chorales include 3/4 and 3/2 pieces)."""
    from musicgen.dataset import iter_records
    from musicgen.evaluate import evaluate_run
    from musicgen.generate import load_extender
    from musicgen.metrics import evaluate

    out, _ = lstm_run
    extender, _ = load_extender(str(out))
    records = list(iter_records(dataset, "test"))
    rolls, positions = [r.roll for r in records], [r.positions for r in records]
    own = evaluate(extender.predict_next, rolls, positions=positions)["nll"]
    assert evaluate_run(str(out), dataset, "test", prompts=0)["nll"] == pytest.approx(own, abs=1e-5)
    if any(r.time_signatures and r.time_signatures[0][1:] != (4, 4) for r in records):
        assert evaluate(extender.predict_next, rolls)["nll"] != pytest.approx(own, abs=1e-5)


def test_workers_read_each_piece_bar_positions(ray_local, tmp_path):
    """A training worker gets every piece with the bar positions of its own time signatures (3/4 and
    6/8 at 4 steps per beat: bars of 12; a change restarts the bar), train and val alike; a model
    without meter gets plain rolls; a format-1 dataset (no time signatures) reads as 4/4."""
    from musicgen.dataset import iter_records, read_manifest
    from musicgen.midi import bar_positions, roll_to_midi
    from musicgen.train import _meter, _shard_pass, _val_rolls, read_split

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    meters = [[(0, 3, 4)], [(0, 6, 8)], [(0, 3, 4), (24, 4, 4)], []]
    for i, ts in enumerate(meters * 2):
        roll = (rng.random((48 + 4 * i, 128)) < 0.05).astype(np.float32)
        roll[-1, 60] = 1  # MIDI keeps no trailing silence
        roll_to_midi(roll, 4, time_signatures=ts).save(str(src / f"p{i}.mid"))
    ds = str(tmp_path / "ds")
    prepare(str(src), ds, PrepareConfig(split=(0.5, 0.5, 0.0)), progress=False)
    manifest = read_manifest(ds)
    meter = _meter("lstm", preset("lstm", "tiny"), manifest)
    assert meter == {"steps_per_beat": 4} and _meter("lstm", preset("lstm", "tiny", meter=False), manifest) is None
    records = {r.roll.tobytes(): r for r in iter_records(ds, None)}

    train = list(_shard_pass(read_split(ds, "train", manifest), 0, meter))
    val = list(_val_rolls(ds, 0, 1, meter))
    assert len(train) + len(val) == 8 and train and val
    for roll, pos in train + val:
        np.testing.assert_array_equal(pos, records[roll.tobytes()].positions)
    assert any(pos.max() == 11 for _, pos in train + val)  # a bar of 12 steps, not 16
    assert any(not np.array_equal(pos, np.arange(len(pos)) % 16) for _, pos in train)
    assert all(isinstance(p, np.ndarray) for p in _shard_pass(read_split(ds, "train", manifest), 0))
    old = read_split(ds, "train", {**manifest, "format": 1})  # written before time signatures
    for roll, pos in _shard_pass(old, 0, meter):
        np.testing.assert_array_equal(pos, bar_positions(4, [], len(roll)))


def test_training_refuses_bad_set_ups(lstm_run, dataset, chorales, tmp_path):
    from musicgen.train import train

    out, _ = lstm_run
    cfg = preset("lstm", "tiny", **SMALL_LSTM)
    with pytest.raises(DataError, match="already holds a trained model"):
        train("lstm", dataset, str(out), cfg, progress=False)
    with pytest.raises(DataError, match="more than the cluster"):
        train("lstm", dataset, str(tmp_path / "r"), cfg, workers=64, progress=False)
    test_only = tmp_path / "test-only"
    prepare(str(chorales), str(test_only), PrepareConfig(split=(0, 0, 1)), progress=False)
    with pytest.raises(DataError, match="no train split"):
        train("lstm", str(test_only), str(tmp_path / "r2"), cfg, progress=False)
    with pytest.raises(DataError, match="not a prepared dataset"):
        train("lstm", str(tmp_path), str(tmp_path / "r3"), cfg, progress=False)
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


def test_cli_model_commands_give_one_line_errors(lstm_run, dataset, tmp_path):
    out, _ = lstm_run
    junk = tmp_path / "junk.mid"
    junk.write_text("not midi")
    cases = [
        (["extend", out, junk, "--steps", "8", "--out", tmp_path / "x.mid"], "junk.mid"),
        (["extend", out, junk, "--steps", "0", "--out", tmp_path / "x.mid"], "--steps"),
        (["evaluate", tmp_path, "--data", dataset], "not a trained run"),
        (["train", "lstm", "--data", tmp_path, "--out", tmp_path / "r"], "not a prepared dataset"),
        (["train", "lstm", "--data", dataset, "--out", tmp_path / "r", "--layers", "4"], "layers"),
        (["generate", out, "--n", "2", "--out", tmp_path / "g"], "cannot generate"),
    ]
    for args, words in cases:
        p = run_cli(*args)
        assert p.returncode != 0
        last = p.stderr.strip().splitlines()[-1]
        assert words in last and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_vae_trains_evaluates_and_generates(dataset, tmp_path):
    from musicgen.evaluate import evaluate_run
    from musicgen.generate import load_generator
    from musicgen.train import train

    out = tmp_path / "vae"
    cfg = preset("vae", "tiny", height=32, filters=(8, 8, 8), dense=32, latent=8, epochs=1, batch_size=16)
    metrics = train("vae", dataset, str(out), cfg, progress=False)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["best"]["val_loss"])
    info = json.loads((out / "model" / "config.json").read_text())
    assert info["kind"] == "vae" and 0 < info["threshold"] < 1  # chosen on validation images
    result = evaluate_run(str(out), dataset, "test", samples=4)
    assert {"reconstruction", "active_units", "samples", "corpus"} <= set(result)
    assert 0 <= result["active_units"] <= 8 and result["corpus"]["pieces"] > 0
    generator, _ = load_generator(str(out))
    assert generator.threshold == info["threshold"]
    a, b = generator.generate(3, seed=1), generator.generate(3, seed=1)
    assert len(a) == 3 and all(r.shape == (32, 128) for r in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    p = run_cli("generate", out, "--n", "2", "--out", tmp_path / "gen", "--seed", "1", "--png", "--wav")
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list((tmp_path / "gen").glob("*.mid"))) == 2 and (tmp_path / "gen" / "overview.png").exists()
    assert sorted(x.name for x in (tmp_path / "gen").glob("*.wav")) == ["piece-000.wav", "piece-001.wav"]


@pytest.mark.parametrize("cluster_cpus, gpu, per_worker", [
    (8, False, {"CPU": 1.0}),  # room to spare: a whole CPU each
    (2, False, {"CPU": 0.5}),  # 2 workers on 2 CPUs: one CPU is left to Ray Data, shared by both
    (8, True, {"CPU": 1.0, "GPU": 1}),
    (None, False, {"CPU": 1}),  # a Tune trial: the split was read before the search
    (None, True, {"GPU": 1}),
])
def test_one_trainer_builder_for_training_and_tune_trials(cluster_cpus, gpu, per_worker, tmp_path):
    from musicgen.train import loop_config, make_trainer, train_loop

    cfg = preset("lstm", "tiny", **SMALL_LSTM)
    config = loop_config("lstm", cfg, "ds", {"steps_per_epoch": 4, "val_steps": 2}, 1)
    assert config["data"] == os.path.abspath("ds") and config["model"]["units"] == 32
    trainer = make_trainer(config, {}, workers=2, gpu=gpu, name="checkpoints", storage_path=str(tmp_path), keep=3,
                           max_failures=2, cluster_cpus=cluster_cpus)
    assert trainer.train_loop_per_worker is train_loop and trainer.train_loop_config == config
    assert trainer.scaling_config.num_workers == 2 and trainer.scaling_config._resources_per_worker_not_none == per_worker
    run = trainer.run_config
    assert (run.name, run.storage_path, run.failure_config.max_failures) == ("checkpoints", str(tmp_path), 2)
    assert (run.checkpoint_config.num_to_keep, run.checkpoint_config.checkpoint_score_attribute) == (3, "val_loss")
    no_val = make_trainer({**config, "val_steps": 0}, {}, workers=1, gpu=False, name="c", storage_path=str(tmp_path),
                          keep=1, max_failures=0)
    assert no_val.run_config.checkpoint_config.checkpoint_score_attribute == "loss"
    # a VAE's loss weighs KL by an annealed beta: its checkpoints are ranked by the ELBO instead
    vae = make_trainer(loop_config("vae", preset("vae", "tiny"), "ds", {"steps_per_epoch": 4, "val_steps": 2}, 1),
                       {}, workers=1, gpu=False, name="c", storage_path=str(tmp_path), keep=1, max_failures=0)
    assert vae.run_config.checkpoint_config.checkpoint_score_attribute == "val_elbo_nll"


def test_the_cluster_checks_name_the_flags():
    from musicgen.train import check_cluster

    check_cluster({"CPU": 2}, 2, False)
    check_cluster({"CPU": 1, "GPU": 2}, 2, True)
    with pytest.raises(DataError, match="^--workers 3 is more than the cluster's 2 CPUs$"):
        check_cluster({"CPU": 2.0}, 3, False)
    with pytest.raises(DataError, match="^--gpu with --workers 2: the cluster has 1 GPUs$"):
        check_cluster({"CPU": 8, "GPU": 1}, 2, True)


def test_an_epoch_of_a_small_corpus_is_at_least_min_steps_per_epoch_batches():
    """JSB Chorales' 229 pieces make 15 batches: an epoch of the joint preset is 100, so that its
    validation and checkpoint do not cost more than its training; a large corpus keeps its pass."""
    from musicgen import lstm
    from musicgen.train import plan

    def manifest(pieces, steps):
        return {"pieces": [{"split": "train", "steps": steps}] * pieces + [{"split": "val", "steps": steps}] * 10}

    cfg = preset("lstm", "tiny")  # window 64, batches of 16, at least 100 per epoch
    assert cfg.min_steps_per_epoch == 100
    assert plan(manifest(229, 60), cfg, lstm, 1)["steps_per_epoch"] == 100
    assert plan(manifest(5000, 640), cfg, lstm, 1)["steps_per_epoch"] == 5000 * 9 // 16
    assert plan(manifest(229, 60), preset("lstm", "paper"), lstm, 1)["steps_per_epoch"] == 229 // 32
    assert plan(manifest(229, 60), preset("lstm", "tiny", steps_per_epoch=7), lstm, 1)["steps_per_epoch"] == 7
