"""musicgen.vae: the study's layer table, losses, weights round trip, data cutting, generation."""
import dataclasses

import numpy as np
import pytest

from musicgen import vae
from musicgen.config import VAEConfig, preset
from musicgen.errors import DataError
from musicgen.keras import keras, tf

# SEED.md, the study's VAE at 512 x 512: (output shape without the batch, parameters) per layer.
PAPER_ENCODER = [
    ((508, 508, 64), 1_664), ((254, 254, 64), 0), ((254, 254, 64), 256),
    ((252, 252, 64), 36_928), ((126, 126, 64), 0), ((126, 126, 64), 256),
    ((124, 124, 32), 18_464), ((62, 62, 32), 0), ((62, 62, 32), 128),
    ((123_008,), 0), ((512,), 62_980_608), ((256,), 131_328), ((256,), 131_328), ((256,), 0),
]
PAPER_DECODER = [
    ((123_008,), 31_613_056), ((62, 62, 32), 0), ((124, 124, 32), 0), ((126, 126, 64), 18_496),
    ((126, 126, 64), 256), ((252, 252, 64), 0), ((254, 254, 64), 36_928), ((254, 254, 64), 256),
    ((508, 508, 64), 0), ((512, 512, 1), 1_601),
]


def small_cfg(**kw):
    """A small, fast VAE on 32 x 64 images."""
    base = dict(height=32, width=64, filters=(8, 8, 8), dense=32, latent=2, batch_size=16, epochs=1,
                learning_rate=3e-3, kl_anneal_epochs=0, free_bits=0.0, transpose=2)
    return VAEConfig(**{**base, **kw}).check()


def layer_table(model):
    return [(tuple(layer.output_shape[1:]), layer.count_params()) for layer in model.layers[1:]]  # no Input


def test_paper_preset_reproduces_the_study_layer_tables():
    cfg = preset("vae", "paper")
    model = vae.build_model(cfg)
    assert layer_table(model.encoder) == PAPER_ENCODER
    assert layer_table(model.decoder) == PAPER_DECODER
    kinds = [type(layer).__name__ for layer in model.decoder.layers[1:]]
    assert kinds == ["Dense", "Reshape", "UpSampling2D", "Conv2DTranspose", "BatchNormalization",
                     "UpSampling2D", "Conv2DTranspose", "BatchNormalization", "UpSampling2D",
                     "Conv2DTranspose"]


def test_tiny_output_shape_and_probabilities():
    cfg = preset("vae", "tiny")
    model = vae.build_model(cfg)
    x = np.zeros((2, 64, 128, 1), np.float32)
    y = model(x).numpy()
    assert y.shape == (2, 64, 128, 1)
    assert ((y >= 0) & (y <= 1)).all()
    z_mean, z_log_var, z = model.encoder(x)
    assert z_mean.shape == z_log_var.shape == z.shape == (2, cfg.latent)
    assert model.decoder(z).shape == (2, 64, 128, 1)


def test_sizes_that_cannot_mirror_are_refused():
    with pytest.raises(DataError, match="multiple of 8"):
        vae.build_model(small_cfg(height=36))


def patterns(cfg):
    """Four 32 x 64 images: two held triads, a rising and a falling arpeggio."""
    p = np.zeros((4, cfg.height, cfg.width), np.float32)
    p[0, :, [20, 24, 27]] = 1
    p[1, :, [40, 43, 47]] = 1
    for t in range(cfg.height):
        p[2, t, 20 + (0, 4, 7, 12)[(t // 2) % 4]] = 1
        p[3, t, 50 - (0, 3, 7, 12)[(t // 4) % 4]] = 1
    return p


def repeated(cfg, copies=16):
    return np.repeat(patterns(cfg), copies, axis=0)[..., None]


def test_loss_falls_in_a_few_steps():
    cfg = small_cfg()
    keras.utils.set_random_seed(0)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = repeated(cfg, 8)
    before = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    # 80 steps: after 40 the last epoch's loss was 0.34-0.51 x the first over seeds 0-7, too near
    # 0.6 for training that is not bit-reproducible across machines; after 80 it is 0.17-0.24
    # (and the evaluated loss 0.19-0.26 x, against 0.8)
    hist = model.fit(x, epochs=20, batch_size=8, verbose=0)
    after = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert set(before) >= {"loss", "reconstruction", "kl"}
    assert set(hist.history) >= {"loss", "reconstruction", "kl"}
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]
    assert after["loss"] < 0.8 * before["loss"]
    assert np.isfinite(list(after.values())).all()


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_losses_by_hand(loss):
    """The reconstruction term is summed over pixels; KL of the encoder's output against N(0, I)."""
    cfg = small_cfg(loss=loss)
    model = vae.build_model(cfg)
    x = repeated(cfg, 1)
    z_mean, z_log_var, _ = (t.numpy() for t in model.encoder(x, training=False))
    tf.random.set_seed(0)
    _, rec, kl = (float(t) for t in model.losses_of(x, training=False))
    kl_hand = (-0.5 * (1 + z_log_var - z_mean ** 2 - np.exp(z_log_var))).sum(1).mean()
    assert kl == pytest.approx(kl_hand, rel=1e-4)
    # z is sampled inside, so compare with the decoding of the same z
    tf.random.set_seed(0)
    z = model.encoder(x, training=False)[2]
    p = tf.sigmoid(model.decoder(z, training=False)).numpy().astype(np.float64)
    if loss == "bce":
        p = np.clip(p, 1e-7, 1 - 1e-7)
        want = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum((1, 2, 3)).mean()
    else:
        want = ((x - p) ** 2).sum((1, 2, 3)).mean()
    assert rec == pytest.approx(want, rel=1e-3)


def test_free_bits_floor_the_kl_term():
    cfg = small_cfg(free_bits=2.0)
    model = vae.build_model(cfg)
    loss, rec, kl = (float(t) for t in model.losses_of(repeated(cfg, 1), training=False))
    # at initialisation every unit's KL is far below 2 nats: each counts as 2 (beta = 1)
    assert kl < cfg.latent * 2.0
    assert loss == pytest.approx(rec + cfg.latent * 2.0, rel=1e-3)


def test_save_and_load_weights_reproduce_outputs(tmp_path):
    cfg = small_cfg()
    model = vae.build_model(cfg)
    rng = np.random.default_rng(0)  # move every weight, BatchNorm statistics included, off its initial value
    model.set_weights([w + rng.uniform(0.1, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    x = repeated(cfg, 1)
    path = str(tmp_path / "w.h5")
    model.save_weights(path)
    other = vae.build_model(cfg)
    assert not np.allclose(other(x).numpy(), model(x).numpy())
    other.load_weights(path)
    np.testing.assert_allclose(other(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    for part in ("encoder", "decoder"):  # (beta is not a layer's weight: the annealing callback sets it)
        for a, b in zip(getattr(other, part).get_weights(), getattr(model, part).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_trains_under_multi_worker_strategy_on_1_tuples_with_kl_annealing():
    cfg = small_cfg(kl_weight=0.5, kl_anneal_epochs=4)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = vae.compile_model(vae.build_model(cfg), cfg)
    ds = tf.data.Dataset.from_tensor_slices((repeated(cfg, 4),)).batch(8)  # 1-tuples, as train.py makes
    hist = model.fit(ds, epochs=3, verbose=0, callbacks=vae.callbacks(cfg, model))
    assert np.isfinite(hist.history["loss"]).all()
    # beta rises within each epoch: 2 batches per epoch, logged as of the epoch's last batch
    assert hist.history["beta"] == pytest.approx([0.5 * (e + 0.5) / 4 for e in range(3)])


def f1(a, b):
    return 2 * np.sum(a & b) / max(1, a.sum() + b.sum())


def test_generate_after_training_on_patterns_is_reproducible_and_not_silent():
    # Seeded TF training on CPU is not bit-reproducible across runs and machines, so the model must
    # clear the checks below by a margin. After 40 epochs the share of prior samples matching a
    # pattern ranged 0.22-0.53 over seeds 0-3 (against 0.25; a CI run got 0.19); after 80 it is
    # 0.62-0.84 over seeds 0-5, with 97-100 % of samples non-silent (against 75 %).
    cfg = small_cfg(epochs=80, latent=2, kl_anneal_epochs=5, free_bits=0.5)
    keras.utils.set_random_seed(0)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = repeated(cfg)
    model.fit(x, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0, callbacks=vae.callbacks(cfg, model))
    gen = vae.Generator(cfg, model)
    assert gen.threshold == 0.5
    t = gen.choose_threshold(x)
    assert t == gen.threshold and 0 < t < 1
    err = gen.reconstruction_error(x)
    assert err["f1"] > 0.9, err  # it learned the four patterns
    assert err["bce_per_image"] < 0.1 * cfg.height * cfg.width * np.log(2)
    check_generation(gen, cfg, patterns(cfg), "threshold")
    check_generation(gen, cfg, patterns(cfg), "sample")
    assert gen.active_units(x) == 2
    assert gen.encode(x).shape == (len(x), 2)


def check_generation(gen, cfg, pats, decoding):
    a, b = gen.generate(32, seed=3, decoding=decoding), gen.generate(32, seed=3, decoding=decoding)
    assert len(a) == 32
    for r, s in zip(a, b):
        assert r.shape == (cfg.height, cfg.width) and r.dtype == np.float32
        np.testing.assert_array_equal(r, s)
        assert set(np.unique(r)) <= {0.0, np.float32(vae.VELOCITY)}
    assert not np.array_equal(np.stack(a), np.stack(gen.generate(32, seed=4, decoding=decoding)))
    for r, s in zip(gen.generate(5, seed=3, decoding=decoding), a):  # independent of n
        np.testing.assert_array_equal(r, s)
    on = np.stack(a) > 0
    assert on.any(axis=(1, 2)).mean() >= 0.75, decoding  # not silent (the study's VAE decoded nothing)
    # notes where the patterns have them, not noise
    union = (pats > 0).any(axis=(0, 1))
    assert (on & union).sum() / on.sum() > 0.8, decoding
    # several of the patterns themselves (a collapsed posterior decodes one blend for every z)
    best = np.array([[f1(r, p > 0) for p in pats] for r in on])
    matched = best.max(1) > 0.8
    assert matched.mean() >= 0.25, decoding
    assert len(set(best.argmax(1)[matched])) >= 3, decoding


def test_images_cut_pad_and_drop_silence():
    cfg = small_cfg(width=128)
    roll = np.zeros((100, 128), np.float32)
    roll[:, 60] = 0.5
    roll[32:64] = 0  # the second segment is silent
    x = vae.images(roll, cfg)
    assert x.shape == (2, 32, 128, 1) and x.dtype == np.float32  # 3 full segments, 1 silent, tail dropped
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(x[1, :, :, 0], (roll[64:96] > 0))
    short = np.zeros((10, 128), np.float32)
    short[:, 70] = 1
    y = vae.images(short, cfg)
    assert y.shape == (1, 32, 128, 1)
    assert y[0, :10, 70, 0].all() and not y[0, 10:].any()  # padded with silence
    assert vae.images(np.zeros((50, 128), np.float32), cfg).shape == (0, 32, 128, 1)
    assert vae.examples(100, cfg) == 3 and vae.examples(10, cfg) == 1
    with pytest.raises(DataError):
        vae.images(np.zeros((50, 64), np.float32), cfg)


def test_augmented_transposition_stays_on_the_keyboard():
    cfg = small_cfg(width=128, transpose=6)
    roll = np.zeros((64, 128), np.float32)
    roll[:, [0, 2]] = 1  # the lowest pitches: only upward shifts are possible
    rng = np.random.default_rng(0)
    shifts = set()
    for _ in range(50):
        for img in vae.images(roll, cfg, rng, augment=True):
            cols = np.flatnonzero(img[..., 0].any(0))
            assert len(cols) == 2 and cols[1] - cols[0] == 2 and cols[0] >= 0
            shifts.add(int(cols[0]))
    assert shifts == set(range(0, 7))
    top = np.zeros((64, 128), np.float32)
    top[:, 127] = 1
    for _ in range(20):
        for img in vae.images(top, cfg, rng, augment=True):
            assert 121 <= np.flatnonzero(img[..., 0].any(0))[0] <= 127


def test_train_batches_end_with_a_finite_iterable_and_val_arrays():
    cfg = small_cfg(width=128, batch_size=4)
    rolls = []
    for i in range(5):
        r = np.zeros((32 * 3, 128), np.float32)
        r[:, 40 + i] = 1
        rolls.append(r)
    batches = list(vae.train_batches(iter(rolls), cfg, np.random.default_rng(0)))
    assert all(isinstance(b, tuple) and len(b) == 1 for b in batches)
    assert all(b[0].shape[1:] == (32, 128, 1) and len(b[0]) <= 4 for b in batches)
    total = sum(len(b[0]) for b in batches)
    assert 5 * 2 <= total <= 5 * 3  # a random offset may cost a piece its last segment
    (x,) = vae.val_arrays(rolls, cfg)
    assert x.shape == (15, 32, 128, 1)
    (empty,) = vae.val_arrays([], cfg)
    assert empty.shape == (0, 32, 128, 1)
    assert vae.epoch_metrics({"reconstruction": 3.0, "kl": 1.0}) == {"elbo_nll": 4.0}


def test_kl_annealing_callback_sets_beta():
    cfg = small_cfg(kl_weight=0.5, kl_anneal_epochs=4)
    model = vae.build_model(cfg)
    assert float(model.beta.numpy()) == 0.0
    (cb,) = vae.callbacks(cfg, model)
    cb.set_params({"steps": 10, "epochs": 6})
    for epoch, want in [(0, 0.0), (2, 0.25), (4, 0.5), (5, 0.5)]:
        cb.on_epoch_begin(epoch)
        assert float(model.beta.numpy()) == pytest.approx(want)
    cb.on_epoch_begin(1)
    cb.on_train_batch_begin(5)
    assert float(model.beta.numpy()) == pytest.approx(0.5 * 1.5 / 4)
    full = vae.build_model(dataclasses.replace(cfg, kl_anneal_epochs=0))
    assert float(full.beta.numpy()) == 0.5
    (cb,) = vae.callbacks(dataclasses.replace(cfg, kl_anneal_epochs=0), full)
    cb.on_epoch_begin(0)
    assert float(full.beta.numpy()) == 0.5


def test_sample_notes_draws_the_expected_polyphony_per_block():
    rng = np.random.default_rng(0)
    probs = np.zeros((2, 8, 16))
    probs[:, :, [3, 5, 9]] = 0.9       # sum 3.4 -> k = 3 per block
    probs[:, :, 11] = 0.5
    probs[:, :, 12] = 0.01             # below MIN_PROBABILITY: never drawn
    probs[1, 0, 3] = 0.0               # block means: pitch 3 is 0.45 in the first block of piece 1
    on = vae.sample_notes(probs, 2, 0.0, rng)
    assert on.shape == probs.shape and on.dtype == bool
    np.testing.assert_array_equal(on[:, 0::2], on[:, 1::2])  # constant within each block
    assert (on.sum(-1) == 3).all()
    assert on[0][:, [3, 5, 9]].all() and not on[0][:, 11].any()  # temperature 0: the k most probable
    assert on[1, 0, 11] and not on[1, 0, 3]
    assert not on[..., 12].any()
    hot = vae.sample_notes(np.repeat(probs, 50, axis=0), 2, 1.0, rng)
    assert np.isin(hot.sum(-1), [2, 3]).all() and not hot[..., 12].any()  # a draw below the floor is dropped
    assert hot[..., 11].any()  # temperature 1: the less likely pitch is drawn sometimes
    assert hot[..., 11].mean() < hot[..., 5].mean()
    faint = vae.sample_notes(np.full((1, 4, 16), 0.01), 1, 0.5, rng)  # expected polyphony rounds to 0
    assert (faint.sum(-1) == 1).all()  # ...but a step is never silent: the most probable pitch sounds
    stray = probs.copy()
    stray[:, :2, 0] = 0.95  # the likeliest pitch of one block, rare in the image: 0.26 of pitch 5's use
    assert vae.sample_notes(stray, 2, 0.0, rng)[:, :2, 0].all()
    assert not vae.sample_notes(stray, 2, 0.0, rng, min_share=0.3)[..., 0].any()
    scaled = vae.sample_notes(probs, 2, 0.0, rng, polyphony_scale=4 / 3.4)  # round(4.0) = 4
    assert (scaled[0].sum(-1) == 4).all() and scaled[0][:, 11].all()
    assert (scaled[1, :2].sum(-1) == 3).all()  # round(2.95 x 4 / 3.4) = 3
    with pytest.raises(DataError):
        vae.sample_notes(probs, 3, 0.0, rng)


def test_decoding_settings_are_checked():
    assert preset("vae", "paper").decoding == "threshold"
    assert preset("vae", "tiny").decoding == "sample"
    with pytest.raises(DataError, match="decoding"):
        small_cfg(decoding="argmax")
    with pytest.raises(DataError, match="divide"):
        small_cfg(decode_block=3)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(DataError, match="decode_min_share"):
            small_cfg(decode_min_share=bad)


def test_augmented_segments_start_on_the_beat_grid():
    cfg = small_cfg(width=128, transpose=0, shift_step=4)
    roll = np.zeros((120, 128), np.float32)
    roll[np.arange(120), np.arange(120)] = 1  # the pitch tells the step
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(40):
        for img in vae.images(roll, cfg, rng, augment=True):
            starts.add(int(np.flatnonzero(img[0, :, 0])[0]))
    assert starts and all(s % 4 == 0 for s in starts)
    assert len(starts) > 3
