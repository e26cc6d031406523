"""musicgen.vae: the study's layer table, losses, weights round trip, data cutting, generation."""
import dataclasses
import os

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
    """A small, fast VAE on 32 x 32 images."""
    base = dict(height=32, width=32, filters=(8, 8, 4), dense=32, latent=4, batch_size=16, epochs=1,
                learning_rate=3e-3, kl_anneal_epochs=0, free_bits=0.0, transpose=2)
    return VAEConfig(**{**base, **kw}).check()


def layer_table(model):
    rows = []
    for layer in model.layers[1:]:  # skip the Input
        shape = layer.output_shape
        rows.append((tuple(shape[1:]), layer.count_params()))
    return rows


def test_paper_preset_reproduces_the_study_layer_tables():
    cfg = preset("vae", "paper")
    model = vae.build_model(cfg)
    assert layer_table(model.encoder) == PAPER_ENCODER
    assert layer_table(model.decoder) == PAPER_DECODER
    kinds = [type(l).__name__ for l in model.decoder.layers[1:]]
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


def patterns(n=64, seed=0, cfg=None):
    """Images of two kinds of repeated patterns (a held chord, an arpeggio) at random transpositions."""
    cfg = cfg or small_cfg()
    rng = np.random.default_rng(seed)
    x = np.zeros((n, cfg.height, cfg.width, 1), np.float32)
    for i in range(n):
        root = int(rng.integers(4, cfg.width - 12))
        if i % 2:
            x[i, :, [root, root + 4, root + 7], 0] = 1  # a held triad
        else:
            for t in range(cfg.height):
                x[i, t, root + (0, 4, 7, 12)[(t // 2) % 4], 0] = 1  # an arpeggio, 2 steps a note
    return x


def test_loss_falls_in_a_few_steps():
    cfg = small_cfg()
    keras.utils.set_random_seed(0)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = patterns(32)
    before = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    hist = model.fit(x, epochs=10, batch_size=16, verbose=0)
    after = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert set(before) >= {"loss", "reconstruction", "kl"}
    assert set(hist.history) >= {"loss", "reconstruction", "kl"}
    assert after["loss"] < 0.5 * before["loss"]
    assert np.isfinite(list(after.values())).all()


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_losses_by_hand(loss):
    """The reconstruction term is summed over pixels; KL of the encoder's output against N(0, I)."""
    cfg = small_cfg(loss=loss, free_bits=0.0)
    model = vae.build_model(cfg)
    x = patterns(4, cfg=cfg)
    z_mean, z_log_var, _ = (t.numpy() for t in model.encoder(x, training=False))
    _, rec, kl = (float(t) for t in model.losses_of(x, training=False))
    kl_hand = (-0.5 * (1 + z_log_var - z_mean ** 2 - np.exp(z_log_var))).sum(1).mean()
    assert kl == pytest.approx(kl_hand, rel=1e-4)
    # The sampled z differs from z_mean, so compare only the scale: a sum over 1024 pixels.
    if loss == "bce":
        assert 0.3 * 1024 < rec < 1.5 * 1024  # about log 2 per pixel at initialisation
    else:
        assert 0.0 < rec < 1024


def test_free_bits_floor_the_kl_term():
    cfg = small_cfg(free_bits=2.0)
    model = vae.build_model(cfg)
    x = patterns(4, cfg=cfg)
    loss, rec, kl = (float(t) for t in model.losses_of(x, training=False))
    # at initialisation every unit's KL is far below 2 nats: each counts as 2 (beta = 1)
    assert kl < cfg.latent * 2.0
    assert loss == pytest.approx(rec + cfg.latent * 2.0, rel=1e-3)


def test_save_and_load_weights_reproduce_outputs(tmp_path):
    cfg = preset("vae", "tiny")
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = (np.random.default_rng(0).random((3, 64, 128, 1)) < 0.05).astype(np.float32)
    model.fit(x, epochs=1, batch_size=3, verbose=0)  # moves weights and the BatchNorm statistics
    path = str(tmp_path / "w.h5")
    model.save_weights(path)
    other = vae.build_model(cfg)
    assert not np.allclose(other(x).numpy(), model(x).numpy())
    other.load_weights(path)
    np.testing.assert_allclose(other(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_builds_under_multi_worker_strategy():
    cfg = small_cfg()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = vae.compile_model(vae.build_model(cfg), cfg)
    ds = tf.data.Dataset.from_tensor_slices((patterns(16),)).batch(8)  # 1-tuples, as train.py makes
    hist = model.fit(ds, epochs=1, verbose=0, callbacks=vae.callbacks(cfg, model))
    assert np.isfinite(hist.history["loss"][0])


def test_generate_after_training_on_patterns_is_reproducible_and_not_silent():
    cfg = small_cfg(epochs=40, kl_anneal_epochs=10, free_bits=0.5, latent=4)
    keras.utils.set_random_seed(1)
    model = vae.compile_model(vae.build_model(cfg), cfg)
    x = patterns(128, seed=1, cfg=cfg)
    model.fit(x, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0, callbacks=vae.callbacks(cfg, model))
    gen = vae.Generator(cfg, model)
    t = gen.choose_threshold(x)
    assert t == gen.threshold and 0 < t < 1
    err = gen.reconstruction_error(x)
    assert err["f1"] > 0.5 and err["bce_per_image"] < 0.5 * 1024 * np.log(2)
    a, b = gen.generate(16, seed=3), gen.generate(16, seed=3)
    assert len(a) == 16
    for r, s in zip(a, b):
        assert r.shape == (cfg.height, cfg.width) and r.dtype == np.float32
        np.testing.assert_array_equal(r, s)
        assert set(np.unique(r)) <= {0.0, np.float32(vae.VELOCITY)}
    assert not np.array_equal(a[0], gen.generate(1, seed=4)[0])
    assert all(r.any() for r in a)
    # samples look like the data: a few pitches sound at most steps (not noise, not everything)
    density = np.mean([(r > 0).mean() for r in a])
    assert 0.3 * x.mean() < density < 3 * x.mean()
    assert gen.active_units(x) >= 1


def test_images_cut_pad_and_drop_silence():
    cfg = small_cfg(height=32, width=128)
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
    cfg = small_cfg(height=32, width=128, transpose=6)
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
    cfg = small_cfg(height=32, width=128, batch_size=4)
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
    # inside fit, beta follows the schedule
    model = vae.compile_model(vae.build_model(cfg), cfg)
    hist = model.fit(patterns(16, cfg=cfg), epochs=3, batch_size=8, verbose=0, callbacks=vae.callbacks(cfg, model))
    assert hist.history["beta"] == pytest.approx([0.5 * (0 + 0.5) / 4, 0.5 * 1.5 / 4, 0.5 * 2.5 / 4])
