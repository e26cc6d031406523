"""The VAE's autoregressive decoder (``decoder='lstm'``): the extender's joint-frame LSTM conditioned
on z. Likelihood against sampling, reproducible sampling, interpolation, attribute directions."""
import glob
import os

import numpy as np
import pytest
from conftest import run_cli
from run_factory import random_rolls, write_dataset, write_run

from musicgen import vae
from musicgen.config import VAEConfig
from musicgen.errors import ArgumentError, DataError
from musicgen.keras import keras
from musicgen.lstm.step import nade


def small_cfg(**kw):
    base = dict(height=32, width=128, filters=(8, 8, 8), dense=32, latent=4, batch_size=16, learning_rate=1e-2,
                kl_anneal_epochs=0, free_bits=1.0, transpose=0, decoder="lstm", decoder_units=32, nade_units=16)
    return VAEConfig(**{**base, **kw}).check()


def patterns(height=32):
    """Four 32-step pieces: a chord every 4 steps (four chords in turn, each piece starting on
    another) and a bass note every 4 steps, two steps long, on its own pitches per piece."""
    out = np.zeros((4, height, 128), np.float32)
    chords = [(60, 64, 67), (62, 65, 69), (57, 60, 64), (55, 59, 62)]
    for k in range(4):
        for t in range(0, height, 4):
            out[k, t:t + 4, list(chords[(k + t // 8) % 4])] = 1
            out[k, t:t + 2, 48 + 2 * k + (t // 4) % 3] = 1
    return out


@pytest.fixture(scope="module")
def trained():
    """A small lstm-decoder VAE fitted to the four patterns (300 updates, ~15 s): on seeds 0 it
    reconstructs all four exactly (F1 1.0; after 80 updates, 0.62)."""
    cfg = small_cfg()
    keras.utils.set_random_seed(0)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = np.repeat(patterns(), 8, axis=0)[..., None]
    history = model.fit(x, epochs=150, batch_size=16, verbose=0)
    return cfg, model, history.history


HEAD = dict(nade_changes=True, nade_neighbours=3, nade_pitch_classes=True)


@pytest.mark.parametrize("frame_dropout,head", [(0.0, {}), (1.0, {}), (0.0, HEAD)])
def test_teacher_forced_likelihood_is_the_sum_of_the_sampling_conditionals(frame_dropout, head):
    """Also for a decoder that reads no frames (``decoder_frame_dropout=1``: every step from z),
    and for the NADE that reads the frame's changes, neighbours and pitch classes."""
    cfg = small_cfg(decoder_frame_dropout=frame_dropout, **head)
    assert vae.decoder_config(cfg).nade_pitch_classes == bool(head)
    keras.utils.set_random_seed(1)
    model = vae.build_model(cfg)
    gen = vae.Generator(cfg, model)
    z = np.random.default_rng(0).standard_normal((3, cfg.latent)).astype(np.float32)
    pieces = gen.sample(z, [1, 2, 3])
    assert pieces.shape == (3, cfg.height, 128) and pieces.any()
    forced = model.teacher_forced(pieces[..., None].astype(np.float32), z).numpy()
    # the generation engine's own step, the conditionals of each sampled frame as it was drawn
    net = gen.extender.net
    state, frame, conditionals = net.first_state(z), np.zeros((3, 128), np.float32), []
    for t in range(cfg.height):
        out, state = net.step(np.concatenate([frame * (frame_dropout < 1), z], 1), state)
        frame, prev = pieces[:, t].astype(np.float32), frame
        conditionals.append(nade(out, net.nade_weights, frames=frame, prev=prev)[0])
    np.testing.assert_allclose(np.stack(conditionals, 1), forced, atol=2e-6)
    if frame_dropout == 1:  # a frame's conditionals do not depend on the frames before it
        other = pieces.copy()
        other[:, :cfg.height // 2] = ~other[:, :cfg.height // 2]
        later = model.teacher_forced(other[..., None].astype(np.float32), z).numpy()[:, cfg.height // 2:]
        np.testing.assert_allclose(later, forced[:, cfg.height // 2:], atol=1e-6)
    # and the loss is that likelihood: -log p(x | z) summed over the cells
    p = np.clip(forced, 1e-7, 1 - 1e-7)
    nll = -(pieces * np.log(p) + (1 - pieces) * np.log1p(-p)).sum(axis=(1, 2))
    per_cell = vae.per_cell_loss(model, pieces[..., None].astype(np.float32), z).numpy()
    np.testing.assert_allclose(per_cell.sum(axis=(1, 2, 3)), nll, rtol=1e-4)


def test_hierarchical_decoder_likelihood_is_the_sum_of_its_bar_by_bar_sampling_conditionals():
    cfg = small_cfg(conductor_bar_steps=8)  # 4 bars of 8 steps
    keras.utils.set_random_seed(3)
    model = vae.build_model(cfg)
    gen = vae.Generator(cfg, model)
    z = np.random.default_rng(0).standard_normal((3, cfg.latent)).astype(np.float32)
    pieces = gen.sample(z, [1, 2, 3], temperature=2.0)  # hot: untrained conditionals are small
    assert pieces.shape == (3, cfg.height, 128) and pieces.any()
    forced = model.teacher_forced(pieces[..., None].astype(np.float32), z).numpy()
    # each bar from its own embedding and a fresh state, reading the previous bar's last frame
    net, embeddings = gen.extender.net, model.conductor(z).numpy()
    assert embeddings.shape == (3, 4, cfg.decoder_units)
    frame, conditionals = np.zeros((3, 128), np.float32), []
    for t in range(cfg.height):
        e = embeddings[:, t // 8]
        if t % 8 == 0:
            state = net.first_state(e)
        out, state = net.step(np.concatenate([frame, e], 1), state)
        frame = pieces[:, t].astype(np.float32)
        conditionals.append(nade(out, net.nade_weights, frames=frame)[0])
    np.testing.assert_allclose(np.stack(conditionals, 1), forced, atol=2e-6)
    # seeded, a row independent of its batch mates
    np.testing.assert_array_equal(gen.sample(z[1:2], [2], temperature=2.0)[0], pieces[1])
    with pytest.raises(DataError, match="conductor_bar_steps"):
        small_cfg(conductor_bar_steps=12)


def _learns_the_patterns_and_reloads(cfg, tmp_path):
    """Fits ``cfg`` to the four patterns (150 epochs), checks that it reconstructs them from codes it
    uses, and that its saved weights give the same samples; returns (model, generator)."""
    keras.utils.set_random_seed(0)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    model.fit(np.repeat(patterns(), 8, axis=0)[..., None], epochs=150, batch_size=16, verbose=0)
    gen = vae.Generator(cfg, model)
    err = gen.reconstruction_error(patterns())
    assert err["f1"] > 0.9 and err["code_nats"] > 10, err
    model.save_weights(str(tmp_path / "w.h5"))
    again = vae.build_model(cfg)
    again.load_weights(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(np.stack(vae.Generator(cfg, again).generate(3, seed=4)), np.stack(gen.generate(3, seed=4)))
    return model, gen


def test_hierarchical_decoder_learns_the_patterns_and_reloads(tmp_path):
    _learns_the_patterns_and_reloads(small_cfg(conductor_bar_steps=8), tmp_path)


def test_a_bidirectional_lstm_encoder_learns_the_patterns_and_reloads(tmp_path):
    """``encoder='lstm'`` (MusicVAE's): the same VAE with a bidirectional LSTM reading the frames."""
    model, _ = _learns_the_patterns_and_reloads(small_cfg(encoder="lstm", encoder_units=16), tmp_path)
    assert model.encoder.get_layer("bilstm").count_params() > 0
    with pytest.raises(DataError, match="encoder must be"):
        small_cfg(encoder="gru")
    with pytest.raises(DataError, match="encoder_units"):
        small_cfg(encoder="lstm", encoder_units=0)


def test_sampling_is_seeded_and_independent_of_batch_mates():
    cfg = small_cfg()
    keras.utils.set_random_seed(2)
    gen = vae.Generator(cfg, vae.build_model(cfg))
    a = gen.generate(5, seed=7)
    np.testing.assert_array_equal(np.stack(a), np.stack(gen.generate(5, seed=7)))
    for r, s in zip(gen.generate(2, seed=7), a):  # the first m of n are the m alone
        np.testing.assert_array_equal(r, s)
    assert not np.array_equal(np.stack(a), np.stack(gen.generate(5, seed=8)))
    assert set(np.unique(np.stack(a))) <= {0.0, np.float32(vae.VELOCITY)}
    hot, cold = (np.stack(gen.generate(16, seed=1, temperature=t)) > 0 for t in (2.0, 0.25))
    assert hot.sum() > cold.sum()  # an untrained net's conditionals are below 0.5: heat spreads them


def test_trained_on_patterns_it_reconstructs_them_and_uses_its_code(trained):
    cfg, model, history = trained
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    gen = vae.Generator(cfg, model)
    err = gen.reconstruction_error(patterns())
    assert err["f1"] > 0.9, err  # the draws from p(x | z_mean) give each piece back
    assert err["bce_per_image"] < 10
    # which of the four pieces (and so every bass note) only the code says: without it, at the
    # prior's mean, the same frames cost many more nats
    assert err["code_nats"] == pytest.approx(err["bce_per_image_at_prior_mean"] - err["bce_per_image"])
    assert err["code_nats"] > 10, err  # 28.6 when written
    # the negative ELBO: its KL is the training loss's (the same encoder), and its reconstruction
    # term, at a sampled z, is worse than at z_mean by no more than the posterior's spread allows
    elbo = gen.elbo(patterns(), seed=0)
    _, _, kl = model.losses_of(patterns()[..., None], training=False)
    assert elbo["kl_per_image"] == pytest.approx(float(kl), rel=1e-4)
    assert elbo["elbo_nll"] - elbo["kl_per_image"] == pytest.approx(err["bce_per_image"], abs=5.0)
    assert elbo == gen.elbo(patterns(), seed=0) and elbo != gen.elbo(patterns(), seed=1)
    # the threshold on the share of draws is chosen for F1, as the convolutional decoder's is
    chosen = gen.choose_threshold(patterns())
    assert chosen in vae.THRESHOLDS and gen.threshold == chosen
    assert gen.reconstruction_error(patterns())["f1"] >= gen.reconstruction_error(patterns(), threshold=0.5)["f1"]
    assert gen.active_units(patterns()) >= 2


def test_reconstruction_probabilities_are_seeded_shares_of_draws_independent_of_batch_mates(trained):
    cfg, model, _ = trained
    gen = vae.Generator(cfg, model)
    x = patterns()
    probs = gen.reconstruction_probs(x, seed=4)
    assert probs.shape == (len(x), cfg.height, 128)
    shares = probs * vae.RECONSTRUCTION_DRAWS
    np.testing.assert_allclose(shares, np.round(shares), atol=1e-4)  # k of the draws
    np.testing.assert_array_equal(gen.reconstruction_probs(x, seed=4), probs)
    np.testing.assert_array_equal(gen.reconstruction_probs(x[1:2], seed=4)[0], probs[1])  # alone = in a batch
    assert ((probs >= 0.5) == (x > 0)).mean() > 0.99  # a net that learned the pieces draws them back
    untrained = vae.Generator(cfg, vae.build_model(cfg)).reconstruction_probs(x, seed=4)
    assert 0 < untrained.mean() < 1 and not np.array_equal(untrained, np.round(untrained))  # draws differ


def test_interpolation_runs_from_one_reconstruction_to_the_other(trained):
    cfg, model, _ = trained
    gen = vae.Generator(cfg, model)
    a, b = patterns()[0], patterns()[3]
    path = gen.interpolate(a, b, 6, seed=3)  # sampled at vae.INTERPOLATION_TEMPERATURE
    assert path.shape == (6, cfg.height, 128) and path.dtype == bool
    rec = gen.reconstruct(np.stack([a, b]), seed=3, temperature=vae.INTERPOLATION_TEMPERATURE) > 0
    np.testing.assert_array_equal(path[0], rec[0])
    np.testing.assert_array_equal(path[-1], rec[1])
    np.testing.assert_array_equal(gen.interpolate(a, b, 6, seed=3), path)  # seeded
    greedy = gen.interpolate(a, b, 4, temperature=0)
    rec = gen.reconstruct(np.stack([a, b])) > 0  # greedy by default
    np.testing.assert_array_equal(greedy[[0, -1]], rec)
    np.testing.assert_array_equal(gen.interpolate(a, b, 4, seed=9, temperature=0), greedy)  # no randomness
    for field, bad in (("steps", 1), ("steps", 65), ("steps", 2.5), ("temperature", -0.1),
                       ("temperature", float("nan")), ("temperature", 11)):
        with pytest.raises(ArgumentError) as e:
            gen.interpolate(a, b, 4, temperature=bad) if field == "temperature" else gen.interpolate(a, b, bad)
        assert e.value.field == field


def test_slerp_follows_the_great_circle():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    path = vae.slerp(a, b, np.linspace(0, 1, 5))
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    assert np.all(path[:, 2] == 0)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1, atol=1e-6)  # on the circle, not the chord
    angles = np.arctan2(path[:, 1], path[:, 0])
    np.testing.assert_allclose(np.diff(angles), np.pi / 8, atol=1e-6)  # equal angles per step
    longer = vae.slerp(a, 2 * b, [0.0, 1.0])
    np.testing.assert_allclose(longer, [a, 2 * b], atol=1e-6)
    np.testing.assert_allclose(vae.slerp(a, 3 * a, [0.5])[0], 2 * a, atol=1e-6)  # parallel: linear


def test_attribute_directions_by_hand():
    x = np.zeros((8, 32, 128), np.float32)
    for i in range(8):  # image i: i + 1 notes of 4 steps at pitch 40 + 5 i
        for k in range(i + 1):
            x[i, 4 * k:4 * k + 3, 40 + 5 * i] = 1
    attrs = vae.image_attributes(x)
    np.testing.assert_allclose(attrs["density"], (np.arange(8) + 1) / 32)
    np.testing.assert_allclose(attrs["mean_pitch"], 40 + 5 * np.arange(8))
    assert np.isnan(vae.image_attributes(np.zeros((1, 32, 128)))["mean_pitch"][0])
    z = np.arange(16, dtype=np.float32).reshape(8, 2)
    # top quarter (images 6, 7) minus bottom quarter (0, 1)
    np.testing.assert_allclose(vae.attribute_direction(z, attrs["density"]), z[6:].mean(0) - z[:2].mean(0))
    values = np.array([np.nan] * 5 + [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(vae.attribute_direction(z, values), np.zeros(2))  # too few defined


def test_generating_along_an_attribute_moves_the_codes():
    cfg = small_cfg()
    keras.utils.set_random_seed(3)
    gen = vae.Generator(cfg, vae.build_model(cfg))
    gen.directions = {"density": np.array([1, 0, 0, 0], np.float32)}
    np.testing.assert_array_equal(gen.attribute_shift({"density": 2}), [2, 0, 0, 0])
    assert not np.array_equal(np.stack(gen.generate(4, seed=0, attributes={"density": 3})),
                              np.stack(gen.generate(4, seed=0)))
    with pytest.raises(ArgumentError) as e:
        gen.generate(1, attributes={"loudness": 1})
    assert e.value.field == "attribute" and e.value.value == "loudness"
    with pytest.raises(ArgumentError):
        gen.attribute_shift({"density": float("nan")})


def test_decoder_settings_are_checked():
    with pytest.raises(DataError, match="decoder must be"):
        small_cfg(decoder="gru")
    with pytest.raises(DataError, match="128 pitches"):
        small_cfg(width=64)
    with pytest.raises(DataError, match="decoder_units"):
        small_cfg(decoder_units=0)
    with pytest.raises(DataError, match="nade_pitch_classes"):  # the convolutional decoder has no NADE
        small_cfg(decoder="conv", nade_pitch_classes=True)
    with pytest.raises(DataError, match="nade_neighbours"):
        small_cfg(nade_neighbours=-1)


def test_weights_round_trip(tmp_path, trained):
    cfg, model, _ = trained
    model.save_weights(str(tmp_path / "w.h5"))
    again = vae.build_model(cfg)
    again.load_weights(str(tmp_path / "w.h5"))
    gen, gen2 = vae.Generator(cfg, model), vae.Generator(cfg, again)
    np.testing.assert_array_equal(np.stack(gen.generate(3, seed=4)), np.stack(gen2.generate(3, seed=4)))


def test_cli_interpolate_and_generate_along_an_attribute(tmp_path, chorales):
    from musicgen.generate import interpolate_pieces, load_generator, read_prompt
    from musicgen.midi import read_midi

    cfg = small_cfg(latent=4)
    data = write_dataset(str(tmp_path / "ds"), {"train": random_rolls(2), "val": random_rolls(1)})
    run = str(tmp_path / "run")
    write_run(run, "vae", cfg, data, tmp_path, directions={"density": [0.5, 0, 0, 0], "mean_pitch": [0, 0, 0, 1]})
    a, b = sorted(glob.glob(f"{chorales}/*.mid"))[:2]
    p = run_cli("interpolate", run, a, b, "--steps", 3, "--out", tmp_path / "path", "--wav")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "path")) == ["step-00.mid", "step-01.mid", "step-02.mid", "strip.png",
                                                     "strip.wav"]
    generator, info = load_generator(run)
    assert set(generator.directions) == {"density", "mean_pitch"}
    expected = interpolate_pieces(generator, read_prompt(a, info).roll, read_prompt(b, info).roll, 3)
    for i, roll in enumerate(expected):
        got = read_midi(str(tmp_path / "path" / f"step-{i:02d}.mid"), steps_per_beat=4).roll
        np.testing.assert_array_equal(got > 0, roll[:len(got)] > 0)
    p = run_cli("generate", run, "--n", 2, "--out", tmp_path / "moved", "--attribute", "density=+1.5",
                "--temperature", "0.8")
    assert p.returncode == 0, p.stderr
    assert len(glob.glob(str(tmp_path / "moved" / "*.mid"))) == 2
    p = run_cli("generate", run, "--out", tmp_path / "x", "--attribute", "loudness=1")
    assert p.returncode != 0 and "attribute must be one of density, mean_pitch, not 'loudness'" in p.stderr
    p = run_cli("interpolate", run, a, b, "--steps", 1, "--out", tmp_path / "y")
    assert p.returncode != 0 and "steps must be an integer from 2 to 64" in p.stderr
    p = run_cli("interpolate", run, a, b, "--temperature", "-1", "--out", tmp_path / "y")
    assert p.returncode != 0 and "temperature must be a number in [0, 10]" in p.stderr
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    p = run_cli("interpolate", run, a, broken, "--out", tmp_path / "z")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and "broken.mid" in last and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "z").exists()  # nothing half-written


def test_frame_dropout_silences_whole_input_frames_in_training_only():
    from musicgen.lstm.model import frame_dropout_class
    from musicgen.keras import tf

    layer = frame_dropout_class()(0.5)
    x = tf.ones((8, 50, 128 + 4))
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    out = layer(x, training=True).numpy()
    pitches = out[..., :128]
    assert set(np.unique(pitches.sum(-1))) == {0.0, 128.0}  # a frame is kept whole or silenced whole
    assert 0.35 < (pitches.sum(-1) == 0).mean() < 0.65
    np.testing.assert_array_equal(out[..., 128:], 1.0)  # the rest of the input stays
    cfg = small_cfg(decoder_frame_dropout=0.3)
    assert vae.decoder_config(cfg).frame_dropout == 0.3
    model = vae.build_model(cfg)  # builds and samples like any other
    assert vae.Generator(cfg, model).generate(1, seed=0)[0].shape == (cfg.height, 128)


def test_the_decoder_can_start_blind_to_its_frames_and_read_them_later(tmp_path):
    """decoder_dropout_epochs: the frame dropout starts at 1 (only z tells the decoder the piece)
    and falls to decoder_frame_dropout as training goes; the KL weight has its own schedule; the
    rate travels with the weights and generation reads every frame."""
    cfg = small_cfg(decoder_dropout_epochs=2, decoder_frame_dropout=0.2, kl_anneal_epochs=2, kl_weight=0.5)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    schedules = vae.callbacks(cfg, model)
    assert [s.value(0) for s in schedules] == [0.0, 1.0] and [s.value(9) for s in schedules] == [0.5, 0.2]
    x = np.repeat(patterns(), 4, axis=0)[..., None]
    logs = model.fit(x, epochs=3, batch_size=8, callbacks=schedules, verbose=0).history
    assert logs["frame_dropout"][0] > logs["frame_dropout"][1] > 0.2 and logs["frame_dropout"][-1] == pytest.approx(0.2)
    assert logs["beta"][-1] == pytest.approx(0.5)
    model.save_weights(str(tmp_path / "w.h5"))
    again = vae.build_model(cfg)
    again.load_weights(str(tmp_path / "w.h5"))
    assert float(again.decoder.get_layer("frame_dropout").rate_variable.numpy()) == pytest.approx(0.2)
    assert not vae.callbacks(small_cfg(decoder_frame_dropout=0.2), model)[1:]  # a fixed rate: no schedule
    with pytest.raises(DataError, match="decoder_dropout_epochs"):
        small_cfg(decoder_dropout_epochs=-1)
