"""musicgen.evaluate: a run scored on a split next to its baselines; the checks before any weight
loads. Runs and datasets are made by hand (tests/run_factory.py), without Ray."""
import json

import numpy as np
import pytest

from musicgen.config import preset
from musicgen.errors import ArgumentError, DataError
from musicgen.evaluate import baselines, evaluate_run

from run_factory import random_rolls, write_dataset, write_run


def same(a: dict, b: dict) -> bool:
    """Equal results, NaN (an undefined score) equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("ds") / "ds"),
                         {"train": random_rolls(6), "val": random_rolls(2, seed=1), "test": random_rolls(3, seed=2)})


@pytest.fixture(scope="module")
def lstm_run(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lstm")
    write_run(str(tmp / "run"), "lstm", preset("lstm", "tiny", units=16, layers=1, window=16), data, tmp)
    return str(tmp / "run")


def test_an_lstm_is_scored_next_to_copy_last_and_pitch_prior(lstm_run, data):
    result = evaluate_run(lstm_run, data, "test")
    assert (result["kind"], result["split"], result["pieces"], result["threshold"]) == ("lstm", "test", 3, 0.5)
    for scores in (result, result["copy_last"], result["pitch_prior"]):
        assert {"nll", "accuracy", "f1", "mae"} <= set(scores)
        assert np.isfinite(scores["nll"]) and 0 <= scores["accuracy"] <= 1
    assert result["frames"] == result["copy_last"]["frames"] > 0
    assert result["copy_last"]["nll"] < result["pitch_prior"]["nll"]  # held chords: the last frame is a good guess
    assert result["nll_vs_copy_last"] == round(result["nll"] / result["copy_last"]["nll"], 4)
    assert result["baselines_fitted_on"] == data
    assert same(evaluate_run(lstm_run, data, "test"), result)  # no randomness in scoring


def test_an_lstm_continues_held_out_prompts_next_to_the_real_music(lstm_run, tmp_path):
    # 4 bars at 4 steps per beat: prompts of 64 steps, continued by 64; the 96-step piece is too short
    long = write_dataset(str(tmp_path / "long"), {"train": random_rolls(2),
                                                   "test": random_rolls(3, steps=160, seed=3) + random_rolls(1)})
    result = evaluate_run(lstm_run, long, "test", prompts=2)
    music = result["music"]
    assert (music["prompt_steps"], music["continuation_steps"], music["temperature"]) == (64, 64, 1.0)
    assert music["pairs"] == 2
    for side in ("model", "real"):
        assert music[side]["frames"] == 2 * 64
        for name in ("clash_share", "polyphony", "prompt_similarity", "silence_fraction", "change_rate"):
            assert np.isfinite(music[side][name]), (side, name)
        assert 0 <= music[side]["clash_share"] <= 1 and 0 < music[side]["prompt_similarity"] <= 1
    assert music["real"]["polyphony"] == 3.0  # the factory's chords: 3 pitches at every step
    assert music["clash_ratio"] == pytest.approx(music["model"]["clash_share"] / music["real"]["clash_share"], rel=1e-3)
    assert music["next_frame_clash_ratio"] >= 0  # the frames drawn one at a time from the true past
    assert same(evaluate_run(lstm_run, long, "test", prompts=2), result)  # seeded: the same continuations
    assert evaluate_run(lstm_run, long, "test")["music"]["pairs"] == 3  # every long enough piece, up to 32
    with pytest.raises(ArgumentError) as bad:
        evaluate_run(lstm_run, long, prompts=-1)
    assert (bad.value.field, bad.value.value) == ("prompts", -1)


def test_a_test_only_dataset_takes_its_baselines_from_the_run_s_training_data(lstm_run, data, tmp_path):
    other = write_dataset(str(tmp_path / "other"), {"test": random_rolls(2, seed=5)})
    result = evaluate_run(lstm_run, other, "test")
    assert result["baselines_fitted_on"] == data and result["pieces"] == 2
    with pytest.raises(DataError, match="baselines need a train split"):
        baselines(other, random_rolls(1))


def test_a_vae_is_scored_on_reconstruction_and_samples(data, tmp_path):
    cfg = preset("vae", "tiny", height=32, filters=(8, 8, 8), dense=16, latent=4)
    write_run(str(tmp_path / "vae"), "vae", cfg, data, tmp_path, threshold=0.3)
    result = evaluate_run(str(tmp_path / "vae"), data, "test", samples=3, seed=1)
    assert result["kind"] == "vae" and result["threshold"] == 0.3  # the run's, chosen in training
    assert {"reconstruction", "elbo", "active_units", "samples", "corpus", "comparison"} <= set(result)
    assert result["elbo"]["elbo_nll"] > result["elbo"]["kl_per_image"] >= 0
    assert 0 <= result["active_units"] <= 4 and result["latent"] == 4 and 0 <= result["non_empty"] <= 3
    assert same(result, evaluate_run(str(tmp_path / "vae"), data, "test", samples=3, seed=1))


def test_bad_runs_datasets_and_splits_are_one_line_errors(lstm_run, data, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not a trained run"):
        evaluate_run(data, data)
    coarse = write_dataset(str(tmp_path / "coarse"), {"test": random_rolls(1)}, steps_per_beat=2)
    empty = write_dataset(str(tmp_path / "empty"), {"train": random_rolls(1)})

    from musicgen.run import Run

    def no_weights(self):
        raise AssertionError("the weights load after the checks")

    monkeypatch.setattr(Run, "load", no_weights)
    with pytest.raises(DataError, match="grid .*differs from the model's"):
        evaluate_run(lstm_run, coarse)
    with pytest.raises(DataError, match="the test split is empty"):
        evaluate_run(lstm_run, empty)
    with pytest.raises(DataError, match="not a prepared dataset"):
        evaluate_run(lstm_run, str(tmp_path))
