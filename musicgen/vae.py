"""Convolutional VAE generator: fixed-size images of the roll, new pieces decoded from random z.

An image is ``cfg.height`` steps x ``cfg.width`` pitches of a roll, binarised (a cell is 1 while a
note sounds), with one channel: (height, width, 1). The network is the study's (``SEED.md``):

- encoder: three blocks Conv2D (5x5, then 3x3, 3x3; valid; ReLU) -> MaxPool 2 -> BatchNorm,
  Flatten, Dense(``cfg.dense``, ReLU), z_mean and z_log_var Dense(``cfg.latent``) and a sampling
  layer (reparameterisation z = mean + exp(log_var / 2) * eps);
- decoder, the mirror: Dense(flattened size, ReLU) -> Reshape -> three times UpSampling2D ->
  Conv2DTranspose (3x3 ReLU + BatchNorm, 3x3 ReLU + BatchNorm, 5x5 linear). The last layer gives
  **logits**: the probability that a cell sounds is their sigmoid.

With the ``paper`` preset (512 x 512, filters 64/64/32, Dense 512, latent 256) every layer has the
study's output shape and parameter count. ``height`` and ``width`` must be multiples of 8 (at least
24) for the valid convolutions and poolings to mirror exactly.

Loss (per image, averaged over the batch): the reconstruction term summed over pixels
(``cfg.loss='bce'``: Bernoulli cross-entropy from the logits, i.e. -log p(x|z) in nats;
``'mse'``: the study's squared error of the sigmoid output) plus ``beta`` times the KL divergence
of q(z|x) from N(0, I), summed over latent units with **free bits**: a unit's KL (its mean over the
batch) counts as ``max(KL_unit, cfg.free_bits)``, so each unit may carry ``free_bits`` nats
without being pushed back to the prior. ``beta`` lives in a non-trainable variable that
:class:`KLAnnealing` raises linearly from 0 to ``cfg.kl_weight`` over ``cfg.kl_anneal_epochs``
(0: the full weight from the start).

Against posterior collapse and silent output (the study's VAE decoded nothing from random z):
the Bernoulli likelihood (MSE on 3 %-dense rolls rewards an all-silent output); annealing and free
bits (the decoder learns to use z before the KL is paid); output logits initialised to a 3 %
density (:data:`OUTPUT_BIAS`) and BatchNorm moving statistics that keep up with training
(:data:`BN_MOMENTUM`; with Keras's default, validation and generation saw stale statistics for
the first few hundred steps); and a decision threshold chosen on data
(:meth:`Generator.choose_threshold`) instead of 0.5, which decoders of sparse rolls rarely reach.
None of these changes a layer's shape or parameter count. Training on the chorales sits for a
few hundred steps on a plateau where the decoder gives each pitch its average probability, then
learns to use z; the ``tiny`` preset wants a learning rate of 3e-3, batches of 16 and about 20
epochs of ~80 batches to get past it.

Keras metrics logged: ``loss``, ``reconstruction`` (nats per image for bce) and ``kl`` (the
actual KL, nats per image, without free bits or beta), and ``val_`` versions.
"""
from __future__ import annotations

import functools

import numpy as np

from .roll import random_transpose, shuffled_batches

from .config import VAEConfig
from .errors import DataError

#: Velocity (in velocity/127 units) of generated notes: the VAE models only which cells sound.
VELOCITY = 90 / 127
#: Initial bias of the output logits: log-odds of a 3 % note density, about that of piano rolls
#: (the Bach chorales: 3.2 % of 64 x 128 cells). Starting from p = 0.5 everywhere costs the first
#: epoch of training just to learn that rolls are mostly silent.
OUTPUT_BIAS = float(np.log(0.03 / 0.97))
#: BatchNormalization momentum: its moving statistics (used by inference, generation and
#: validation) follow the last ~10 batches instead of Keras's default ~100.
BN_MOMENTUM = 0.9
#: Thresholds :meth:`Generator.choose_threshold` tries.
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.02, 0.96, 0.01), 2))
#: ``'sample'`` decoding never picks a pitch whose (block-mean) probability is below this.
MIN_PROBABILITY = 0.02


def sample_notes(probs: np.ndarray, block: int, temperature: float, rng: np.random.Generator,
                 min_probability: float = MIN_PROBABILITY, polyphony_scale: float = 1.0,
                 min_share: float = 0.0) -> np.ndarray:
    """Which cells sound (bool, shape of ``probs`` (n, height, width)), decided ``block`` steps at a time.

    For each block of ``block`` consecutive steps (from step 0; ``block`` must divide height), q is
    the decoder's probability of each pitch averaged over the block; the block sounds k =
    round(``polyphony_scale`` x sum of q) pitches (the expected polyphony, scaled: decoded from
    random z a decoder tends to spread less probability than the data has notes), drawn without
    replacement with weights q ** (1 / temperature) (the Gumbel top-k trick), each with q >=
    ``min_probability``, and they hold for the whole block. ``temperature`` 0 takes the k most probable pitches (no randomness).
    Pitches whose mean probability over the whole image is below ``min_share`` x that of the
    image's most used pitch are never drawn: stray outliers would widen the pitch range.

    Why: a VAE decoder's probabilities are blurred in time (it is unsure *when* a voice moves), so
    one global threshold turns them into held clusters: too many pitches at once where several
    candidates are likely, too few note changes. Fixing the count per block at the expected
    polyphony and drawing which pitches sound restores both; blocks of an eighth note (2 steps at 4
    per beat) keep the notes on the grid where the corpus's notes change.
    """
    p = np.asarray(probs, np.float64)
    n, h, w = p.shape
    if block < 1 or h % block:
        raise DataError(f"decode block {block} must divide the image height {h}")
    q = p.reshape(n, h // block, block, w).mean(axis=2)
    k = np.rint(polyphony_scale * q.sum(axis=-1)).astype(np.int64)
    profile = p.mean(axis=1, keepdims=True)  # (n, 1, w): how much each pitch is used in the image
    outside = profile < min_share * profile.max(axis=-1, keepdims=True)
    keys = np.where(outside, -np.inf, np.log(np.clip(q, 1e-12, 1.0)))
    if temperature > 0:
        keys = keys / temperature + rng.gumbel(size=q.shape)
    rank = np.argsort(np.argsort(-keys, axis=-1, kind="stable"), axis=-1, kind="stable")
    # The most probable pitch always sounds: the corpus has no silent steps.
    on = ((rank < k[..., None]) & (q >= min_probability)) | (rank == 0)
    return np.repeat(on, block, axis=1)


def _check_size(cfg: VAEConfig) -> None:
    for name in ("height", "width"):
        v = getattr(cfg, name)
        if v % 8 or v < 24:
            raise DataError(f"VAE {name} must be a multiple of 8 and at least 24 (the encoder's valid "
                            f"convolutions and poolings must mirror exactly), not {v}")


def _inner_shape(cfg: VAEConfig) -> tuple[int, int, int]:
    """Shape after the third encoder block: ((s - 4) / 2 - 2) / 2 - 2) / 2 per side."""
    def side(s):
        return (((s - 4) // 2 - 2) // 2 - 2) // 2
    return side(cfg.height), side(cfg.width), cfg.filters[2]


# --- the network ----------------------------------------------------------------------------------

def build_encoder(cfg: VAEConfig):
    """x (height, width, 1) -> (z_mean, z_log_var, z)."""
    from .keras import keras

    f1, f2, f3 = cfg.filters
    x = inp = keras.Input((cfg.height, cfg.width, 1), name="image")
    for i, (f, k) in enumerate([(f1, 5), (f2, 3), (f3, 3)], 1):
        x = keras.layers.Conv2D(f, k, padding="valid", activation="relu", name=f"conv_{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(cfg.dense, activation="relu", name="dense")(x)
    z_mean = keras.layers.Dense(cfg.latent, name="z_mean")(x)
    z_log_var = keras.layers.Dense(cfg.latent, name="z_log_var")(x)
    z = Sampling(name="sampling")([z_mean, z_log_var])
    return keras.Model(inp, [z_mean, z_log_var, z], name="encoder")


def build_decoder(cfg: VAEConfig):
    """z (latent,) -> logits (height, width, 1)."""
    from .keras import keras

    f1, f2, _ = cfg.filters
    inner = _inner_shape(cfg)
    z = keras.Input((cfg.latent,), name="z")
    x = keras.layers.Dense(int(np.prod(inner)), activation="relu", name="dense")(z)
    x = keras.layers.Reshape(inner, name="reshape")(x)
    x = keras.layers.UpSampling2D(2, name="up_1")(x)
    x = keras.layers.Conv2DTranspose(f2, 3, padding="valid", activation="relu", name="deconv_1")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn_1")(x)
    x = keras.layers.UpSampling2D(2, name="up_2")(x)
    x = keras.layers.Conv2DTranspose(f1, 3, padding="valid", activation="relu", name="deconv_2")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn_2")(x)
    x = keras.layers.UpSampling2D(2, name="up_3")(x)
    logits = keras.layers.Conv2DTranspose(1, 5, padding="valid", name="logits",
                                          bias_initializer=keras.initializers.Constant(OUTPUT_BIAS))(x)
    return keras.Model(z, logits, name="decoder")


@functools.cache
def _sampling_layer():
    from .keras import keras, tf

    class Sampling(keras.layers.Layer):
        """z = z_mean + exp(z_log_var / 2) * eps, eps ~ N(0, I) (the reparameterisation trick)."""

        def call(self, inputs):
            z_mean, z_log_var = inputs
            eps = tf.random.normal(tf.shape(z_mean))
            return z_mean + tf.exp(0.5 * z_log_var) * eps

    return Sampling


def Sampling(**kwargs):  # noqa: N802 - a layer factory (Keras is imported lazily)
    return _sampling_layer()(**kwargs)


@functools.cache
def _vae_class():
    from .keras import keras, tf

    class VAE(keras.Model):
        """Encoder + decoder with the ELBO (free bits, annealed beta) in custom train/test steps.

        ``model(x)`` gives the reconstruction probabilities from z = z_mean (deterministic);
        ``model(x, training=True)`` decodes a sampled z.
        """

        def __init__(self, cfg: VAEConfig, **kwargs):
            super().__init__(name="vae", **kwargs)
            self.cfg = cfg
            self.encoder = build_encoder(cfg)
            self.decoder = build_decoder(cfg)
            start = cfg.kl_weight if cfg.kl_anneal_epochs <= 0 else 0.0
            self.beta = tf.Variable(start, trainable=False, dtype=tf.float32, name="kl_beta",
                                    synchronization=tf.VariableSynchronization.ON_WRITE,
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
            self.kl_tracker = keras.metrics.Mean(name="kl")

        @property
        def metrics(self):
            return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

        def call(self, x, training=False):
            z_mean, _, z = self.encoder(x, training=training)
            return tf.sigmoid(self.decoder(z if training else z_mean, training=training))

        def losses_of(self, x, training=False):
            """(loss, reconstruction, kl) of a batch, each averaged over its images."""
            x = tf.cast(x, tf.float32)
            z_mean, z_log_var, z = self.encoder(x, training=training)
            logits = self.decoder(z, training=training)
            if self.cfg.loss == "bce":
                per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
            else:
                per_pixel = tf.square(x - tf.sigmoid(logits))
            reconstruction = tf.reduce_mean(tf.reduce_sum(per_pixel, axis=[1, 2, 3]))
            kl_units = tf.reduce_mean(
                -0.5 * (1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var)), axis=0)
            kl = tf.reduce_sum(kl_units)
            kl_free = tf.reduce_sum(tf.maximum(kl_units, float(self.cfg.free_bits)))
            loss = reconstruction + tf.cast(self.beta, tf.float32) * kl_free
            return loss, reconstruction, kl

        def _track(self, loss, reconstruction, kl):
            self.loss_tracker.update_state(loss)
            self.reconstruction_tracker.update_state(reconstruction)
            self.kl_tracker.update_state(kl)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                loss, reconstruction, kl = self.losses_of(x, training=True)
                # Gradients are summed over replicas: scale so that they average instead.
                scaled = (loss + tf.add_n(self.losses) if self.losses else loss) / \
                    tf.distribute.get_strategy().num_replicas_in_sync
            grads = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return self._track(loss, reconstruction, kl)

        def test_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            return self._track(*self.losses_of(x, training=False))

    return VAE


def build_model(cfg: VAEConfig):
    """The VAE (a ``keras.Model`` with ``.encoder``, ``.decoder`` and ``.beta``), built eagerly on a
    dummy batch so that its weights exist (``load_weights`` works right away)."""
    from .keras import tf

    _check_size(cfg)
    model = _vae_class()(cfg)
    model(tf.zeros((1, cfg.height, cfg.width, 1), tf.float32))
    return model


def compile_model(model, cfg: VAEConfig):
    from .keras import keras

    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0))
    return model


@functools.cache
def _annealing_class():
    from .keras import keras

    class KLAnnealing(keras.callbacks.Callback):
        """Sets the model's ``beta`` = ``kl_weight`` x min(1, progress / ``anneal_epochs``), where
        progress counts epochs, fractionally within an epoch when the steps per epoch are known
        (0 at the first batch of epoch 0, the full weight from epoch ``anneal_epochs`` on)."""

        def __init__(self, vae, kl_weight: float, anneal_epochs: int):
            super().__init__()
            self.vae, self.kl_weight, self.anneal_epochs = vae, float(kl_weight), int(anneal_epochs)
            self._epoch = 0

        def value(self, progress: float) -> float:
            if self.anneal_epochs <= 0:
                return self.kl_weight
            return self.kl_weight * min(1.0, max(0.0, progress) / self.anneal_epochs)

        def _set(self, progress):
            self.vae.beta.assign(self.value(progress))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self._set(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            steps = (self.params or {}).get("steps")
            if steps:
                self._set(self._epoch + batch / steps)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["beta"] = float(self.vae.beta.numpy())

    return KLAnnealing


def KLAnnealing(vae, kl_weight: float, anneal_epochs: int):  # noqa: N802 - a callback factory
    return _annealing_class()(vae, kl_weight, anneal_epochs)


# --- data: images cut from rolls on the fly -------------------------------------------------------

def images(roll: np.ndarray, cfg: VAEConfig, rng: np.random.Generator | None = None,
           augment: bool = False) -> np.ndarray:
    """Binary images (n, height, width, 1) float32 of one roll (T, width).

    Non-overlapping segments of ``height`` steps from step 0 (an incomplete last segment is
    dropped); a piece shorter than ``height`` is padded with silence at the end; segments in which
    nothing sounds are dropped. With ``augment`` (``rng`` needed) the piece is first transposed by a
    random shift in [-transpose, transpose] that keeps every note on the keyboard, and the segments
    start at a random offset in [0, height) that is a multiple of ``cfg.shift_step``: 4 (a beat at 4
    steps per beat) keeps every image on the beat grid, so the decoder can learn where in the beat
    notes change (on the chorales 99 % of onsets fall on an eighth, 74 % on a beat); with offsets of
    any step it saw rhythms at every phase and learned a blur of them.
    """
    frames = np.asarray(roll)
    if frames.ndim != 2 or frames.shape[1] != cfg.width:
        raise DataError(f"the VAE expects rolls (steps, {cfg.width}), not shape {frames.shape}")
    frames = (frames > 0).astype(np.float32)
    h = cfg.height
    if augment:
        rng = rng if rng is not None else np.random.default_rng()
        frames = random_transpose(frames, cfg.transpose, rng)
        step = max(1, int(cfg.shift_step))
        if len(frames) > h:
            frames = frames[step * int(rng.integers(0, -(-h // step))):]
    if len(frames) < h:
        frames = np.concatenate([frames, np.zeros((h - len(frames), cfg.width), np.float32)])
    n = len(frames) // h
    segs = frames[:n * h].reshape(n, h, cfg.width)
    segs = segs[segs.any(axis=(1, 2))]
    return segs[..., None]


def image_batches(rolls, cfg: VAEConfig, rng: np.random.Generator, augment: bool = True,
                  shuffle_buffer: int = 512):
    """Batches (x,) of images from an iterable of rolls, shuffled through a bounded buffer.

    Memory is bounded by about ``shuffle_buffer`` images plus one piece's, whatever the corpus size;
    ends when ``rolls`` ends (the last incomplete batch is yielded too).
    """
    pieces = ([(image,) for image in images(roll, cfg, rng, augment)] for roll in rolls)
    return shuffled_batches(pieces, cfg.batch_size, rng, shuffle_buffer, partial=True)


def examples(steps: int, cfg: VAEConfig) -> int:
    """Images :func:`images` cuts (without augmentation, before dropping silent ones) from a piece."""
    return max(1, steps // cfg.height)


# The model-module interface of musicgen.train:
def train_batches(rolls, cfg: VAEConfig, rng: np.random.Generator):
    return image_batches(rolls, cfg, rng, augment=True)


def val_arrays(rolls, cfg: VAEConfig):
    """Every image of the validation pieces, unaugmented, as a 1-tuple (x,)."""
    parts = [images(roll, cfg) for roll in rolls]
    parts = [p for p in parts if len(p)]
    if not parts:
        return (np.zeros((0, cfg.height, cfg.width, 1), np.float32),)
    return (np.concatenate(parts),)


def epoch_metrics(logs: dict) -> dict:
    """``elbo_nll``: reconstruction + KL at full weight (for loss='bce' the negative ELBO, an upper
    bound on -log p(x) in nats per image); ``val_elbo_nll`` likewise."""
    out = {}
    for prefix in ("", "val_"):
        if f"{prefix}reconstruction" in logs and f"{prefix}kl" in logs:
            out[f"{prefix}elbo_nll"] = float(logs[f"{prefix}reconstruction"]) + float(logs[f"{prefix}kl"])
    return out


def callbacks(cfg: VAEConfig, model) -> list:
    return [KLAnnealing(model, cfg.kl_weight, cfg.kl_anneal_epochs)]


# --- generation and evaluation ---------------------------------------------------------------------

class Generator:
    """A trained VAE ready to generate, encode and score.

    How decoded probabilities become notes (``decoding``, default ``cfg.decoding``):

    - ``'sample'``: per block of ``cfg.decode_block`` steps, the expected number of pitches (times
      ``cfg.decode_polyphony_scale``) drawn at ``cfg.decode_temperature`` (:func:`sample_notes`).
      The ``tiny`` preset's default: on the chorales its samples' notes per step and polyphony fall
      inside the corpus's 10th-90th percentiles, where a threshold gave held clusters (a third of
      the corpus's note changes, 4-6 pitches at once, 9-13 % silent steps).
    - ``'threshold'``: a cell sounds when its probability is >= ``threshold``. It is 0.5 until
      :meth:`choose_threshold` picks it on data (validation images): by default the threshold
      that maximises the F1 score of the reconstructions. On sparse rolls a decoder's
      probabilities rarely reach 0.5 (the study's VAE decoded silence). The ``paper`` preset's
      default; the reconstruction scores use it in every case.

    Generated notes get velocity :data:`VELOCITY` (90/127): velocity is not modelled.
    """

    def __init__(self, cfg: VAEConfig, model, threshold: float = 0.5, batch_size: int = 64):
        self.cfg = cfg
        self.model = model
        self.threshold = float(threshold)
        self.batch_size = batch_size

    def _batched(self, fn, arrays):
        arrays = np.asarray(arrays, np.float32)
        outs = [fn(arrays[i:i + self.batch_size]) for i in range(0, len(arrays), self.batch_size)]
        return outs

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Probabilities (n, height, width) that each cell sounds, for latent codes z (n, latent)."""
        from .keras import tf

        z = np.asarray(z, np.float32)
        if not len(z):
            return np.zeros((0, self.cfg.height, self.cfg.width), np.float32)
        outs = self._batched(lambda b: tf.sigmoid(self.model.decoder(b, training=False)).numpy(), z)
        return np.concatenate(outs)[..., 0]

    def encode(self, images_: np.ndarray) -> np.ndarray:
        """E[z | x]: z_mean (n, latent) of images (n, height, width, 1) (or (n, height, width))."""
        x = self._images(images_)
        if not len(x):
            return np.zeros((0, self.cfg.latent), np.float32)
        return np.concatenate(self._batched(lambda b: self.model.encoder(b, training=False)[0].numpy(), x))

    def reconstruct(self, images_: np.ndarray) -> np.ndarray:
        """Probabilities (n, height, width) of the images decoded from their z_mean."""
        return self.decode(self.encode(images_))

    def _images(self, images_) -> np.ndarray:
        x = (np.asarray(images_) > 0).astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (self.cfg.height, self.cfg.width, 1):
            raise DataError(f"images must be (n, {self.cfg.height}, {self.cfg.width}[, 1]), not {x.shape}")
        return x

    def notes(self, probs: np.ndarray, rng: np.random.Generator | None = None, decoding: str | None = None,
              threshold: float | None = None) -> np.ndarray:
        """Which cells sound (bool (n, height, width)) for decoded probabilities (n, height, width):
        ``decoding`` 'sample' (``rng`` draws; default a fresh one) or 'threshold' (default
        ``self.threshold``); default ``cfg.decoding``."""
        decoding = decoding or self.cfg.decoding
        probs = np.asarray(probs)
        if decoding == "threshold":
            return probs >= (self.threshold if threshold is None else float(threshold))
        if decoding == "sample":
            return sample_notes(probs, self.cfg.decode_block, self.cfg.decode_temperature,
                                rng if rng is not None else np.random.default_rng(),
                                polyphony_scale=self.cfg.decode_polyphony_scale,
                                min_share=self.cfg.decode_min_share)
        raise DataError(f"decoding must be 'sample' or 'threshold', not {decoding!r}")

    def generate(self, n: int, seed: int = 0, threshold: float | None = None,
                 decoding: str | None = None) -> list[np.ndarray]:
        """``n`` rolls (height, width) float32 decoded from z ~ N(0, I) drawn with
        ``numpy.random.default_rng(seed)``, turned into notes by :meth:`notes` (its random draws from
        ``numpy.random.default_rng([seed, 1])``); sounding cells have velocity 90/127. The same
        seed gives the same rolls, and the first m of ``generate(n)`` are ``generate(m)``."""
        z = np.random.default_rng(seed).standard_normal((n, self.cfg.latent)).astype(np.float32)
        on = self.notes(self.decode(z), np.random.default_rng([seed, 1]), decoding, threshold)
        return [(o * VELOCITY).astype(np.float32) for o in on]

    def choose_threshold(self, images_: np.ndarray, criterion: str = "f1", grid=THRESHOLDS) -> float:
        """Set and return the threshold of ``grid`` chosen on the reconstructions of ``images_``.

        ``criterion='f1'`` (default): the threshold that maximises the F1 score of the thresholded
        reconstructions against the images (the middle one of a plateau of equal scores). For
        calibrated probabilities the F1-optimal threshold is about half the best F1, so a blurry
        decoder gets a low threshold instead of going silent. ``'density'``: the threshold whose
        reconstructions have the images' note density (fraction of sounding cells).
        """
        if criterion not in ("f1", "density"):
            raise ValueError(f"criterion must be 'f1' or 'density', not {criterion!r}")
        x = self._images(images_)
        if not len(x):
            raise DataError("choose_threshold needs at least one image")
        grid = np.asarray(grid, np.float64)
        tp, fp, fn = (np.zeros(len(grid)) for _ in range(3))
        for i in range(0, len(x), self.batch_size):  # memory: one batch of reconstructions at a time
            batch = x[i:i + self.batch_size, ..., 0] > 0
            probs = self.reconstruct(batch)
            positives = batch.sum()
            for j, t in enumerate(grid):
                on = probs >= t
                hits = np.count_nonzero(on & batch)
                tp[j] += hits
                fp[j] += np.count_nonzero(on) - hits
                fn[j] += positives - hits
        if criterion == "f1":
            f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
            best = np.flatnonzero(f1 >= f1.max() - 1e-12)
            pick = int(best[len(best) // 2])
        else:
            density, predicted = (tp + fn) / x[..., 0].size, (tp + fp) / x[..., 0].size
            pick = int(np.argmin(np.abs(predicted - density)))
        self.threshold = float(grid[pick])
        return self.threshold

    def reconstruction_error(self, images_: np.ndarray, threshold: float | None = None) -> dict:
        """Scores of the reconstructions (from z_mean) of ``images_``.

        ``bce_per_image`` (nats, summed over pixels, mean over images), ``bce_per_pixel``, and the
        frame scores (:class:`musicgen.metrics.FrameScores`: ``accuracy`` (Bay et al.),
        ``precision``, ``recall``, ``f1``) of reconstructions thresholded at ``threshold``
        (default ``self.threshold``), plus the data's and the reconstructions' note densities.
        """
        from .metrics import FrameScores

        x = self._images(images_)[..., 0]
        t = self.threshold if threshold is None else float(threshold)
        if not len(x):
            return {"images": 0}
        probs = np.clip(self.reconstruct(x).astype(np.float64), 1e-7, 1 - 1e-7)
        bce = -(x * np.log(probs) + (1 - x) * np.log1p(-probs))
        frames = FrameScores(t).add(probs.reshape(-1, self.cfg.width), x.reshape(-1, self.cfg.width)).result()
        return {"images": int(len(x)), "bce_per_image": float(bce.sum(axis=(1, 2)).mean()),
                "bce_per_pixel": float(bce.mean()), "threshold": t,
                **{k: frames[k] for k in ("accuracy", "precision", "recall", "f1")},
                "density": float(x.mean()), "reconstruction_density": float((probs >= t).mean())}

    def active_units(self, images_: np.ndarray, threshold: float = 0.01) -> int:
        """Latent units whose E[z|x] varies over ``images_`` by more than ``threshold``."""
        from .metrics import active_units

        return active_units(self.encode(images_), threshold)
