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

from .config import LSTMConfig, VAEConfig
from .errors import ArgumentError, DataError

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
#: The temperature at which the lstm decoder's sampling is greedy: a conditional's logit divided
#: by it is beyond +-20 (p within 2e-9 of 0 or 1) unless the conditional is within 0.005 of 0.5.
GREEDY = 1e-3
#: The lstm decoder's default temperature for interpolation (``reconstruct`` stays greedy by
#: default): greedy decoding holds the first chord (in the `joint` run's greedy reconstructions of 64
#: Bach test images 95 % of frames repeat the one before, 62 % in Bach) where sampling at 0.5
#: moves like music (74 %) at the same F1 (0.28 against 0.30). 0 is greedy.
INTERPOLATION_TEMPERATURE = 0.5
#: Draws from p(x | z_mean) whose mean gives the lstm decoder's reconstruction probabilities
#: (:meth:`Generator.reconstruction_probs`): the standard error of a cell's share of 16 draws is at
#: most 0.125. On the 33-epoch `joint --encoder lstm` run (Bach test images, 2026-12-02) the share
#: of 16 draws at the threshold chosen on validation (0.22) scored F1 0.416, greedy decoding 0.355.
RECONSTRUCTION_DRAWS = 16
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


def _cell_nll(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each cell's Bernoulli negative log-likelihood (nats) of binary x under ``probs``."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p))


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
    """x (height, width, 1) -> (z_mean, z_log_var, z).

    ``cfg.encoder='conv'``: the study's three convolutional blocks, then Dense(``cfg.dense``).
    ``'lstm'``: MusicVAE's encoder, a bidirectional LSTM of ``cfg.encoder_units`` a direction over
    the image's frames (every pitch read exactly, where the poolings blur them), its two final
    states concatenated."""
    from .keras import keras

    x = inp = keras.Input((cfg.height, cfg.width, 1), name="image")
    if cfg.encoder == "lstm":
        x = keras.layers.Reshape((cfg.height, cfg.width), name="frames")(x)
        x = keras.layers.Bidirectional(keras.layers.LSTM(cfg.encoder_units), name="bilstm")(x)
    else:
        f1, f2, f3 = cfg.filters
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


def decoder_config(cfg: VAEConfig) -> LSTMConfig:
    """The autoregressive decoder (``cfg.decoder='lstm'``) is the extender's joint-frame net, one
    LSTM of ``decoder_units`` and a NADE of ``nade_units`` over the 128 pitches
    (:mod:`musicgen.lstm.model`), conditioned on z: z is appended to every step's input and sets
    the LSTM's initial state through a Dense with tanh (MusicVAE's decoder, Roberts et al. 2018).
    It reads the frame before each step (silence before the first) with the copy gate, and no bar
    position: an image starts on a beat, not necessarily on a bar."""
    return LSTMConfig(layers=1, units=cfg.decoder_units, dropout=0.0, head="nade", nade_units=cfg.nade_units,
                      nade_changes=cfg.nade_changes, nade_neighbours=cfg.nade_neighbours,
                      nade_pitch_classes=cfg.nade_pitch_classes, position=False, transpose=0,
                      condition=cfg.decoder_units if cfg.conductor_bar_steps else cfg.latent,
                      frame_dropout=cfg.decoder_frame_dropout,
                      frame_dropout_scheduled=cfg.decoder_dropout_epochs > 0).check()


def build_conductor(cfg: VAEConfig):
    """z (B, latent) -> one embedding per bar (B, bars, decoder_units): MusicVAE's conductor, an LSTM
    over the bars whose initial state comes from z through a Dense with tanh (Roberts et al. 2018,
    section 3.2), here with z as every step's input too. Each bar's decoder starts from its bar's
    embedding alone (:func:`teacher_forced`): what a bar plays cannot come from the bars before it
    except through z and their last frame, so the decoder has to use z (a flat decoder over 16
    bars used 0.03 nats of it per image)."""
    from .keras import keras

    z = keras.Input((cfg.latent,), name="z")
    units = cfg.decoder_units
    h, c = (keras.layers.Dense(units, activation="tanh", name=f"conductor_{s}")(z) for s in "hc")
    steps = keras.layers.RepeatVector(cfg.height // cfg.conductor_bar_steps, name="conductor_steps")(z)
    bars = keras.layers.LSTM(units, return_sequences=True, name="conductor_lstm")(steps, initial_state=[h, c])
    return keras.Model(z, bars, name="conductor")


def build_lstm_decoder(cfg: VAEConfig):
    """[frames (B, height + 1, 128): a silent frame then the image's, z (B, latent)] -> the NADE's
    conditionals (B, height, 128) of the image's frames (teacher forcing)."""
    from .lstm.model import build_model as build_lstm

    return build_lstm(decoder_config(cfg))


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
            self.decoder = build_decoder(cfg) if cfg.decoder == "conv" else build_lstm_decoder(cfg)
            self.conductor = build_conductor(cfg) if cfg.conductor_bar_steps else None
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
            code = z if training else z_mean
            if self.cfg.decoder == "lstm":
                return self.teacher_forced(x, code, training)[..., None]
            return tf.sigmoid(self.decoder(code, training=training))

        def teacher_forced(self, x, z, training=False):
            """The lstm decoder's P(cell sounds | the frames before, the lower pitches of its frame,
            z) (B, height, width) for images x (B, height, width, 1) and codes z."""
            return teacher_forced(self, x, z, training)

        def losses_of(self, x, training=False):
            """(loss, reconstruction, kl) of a batch, each averaged over its images."""
            x = tf.cast(x, tf.float32)
            z_mean, z_log_var, z = self.encoder(x, training=training)
            reconstruction = tf.reduce_mean(tf.reduce_sum(per_cell_loss(self, x, z, training), axis=[1, 2, 3]))
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


def teacher_forced(vae, x, z, training=False):
    """The lstm decoder's conditionals (B, height, width) of images x (B, height, width, 1) given
    codes z: each step reads the frame before (silence before the first). A flat decoder reads z
    with every step; a hierarchical one (``vae.conductor``) decodes each bar as a sequence of its
    own, from its bar's embedding, its first step reading the previous bar's last frame."""
    from .keras import tf

    frames = tf.pad(tf.cast(x, tf.float32)[..., 0], [[0, 0], [1, 0], [0, 0]])  # (B, height + 1, 128)
    if vae.conductor is None:
        return vae.decoder([frames, z], training=training)
    bar, cfg = vae.cfg.conductor_bar_steps, vae.cfg
    bars = cfg.height // bar
    embeddings = vae.conductor(z, training=training)  # (B, bars, units)
    # bar b reads frames b*bar - 1 .. (b + 1)*bar - 1 and is scored on the last ``bar`` of them
    windows = tf.stack([frames[:, b * bar:(b + 1) * bar + 1] for b in range(bars)], axis=1)
    out = vae.decoder([tf.reshape(windows, [-1, bar + 1, cfg.width]),
                       tf.reshape(embeddings, [-1, embeddings.shape[-1]])], training=training)
    return tf.reshape(out, [-1, cfg.height, cfg.width])


def per_cell_loss(vae, x, z, training=False):
    """The reconstruction loss of each cell of images x (B, height, width, 1) decoded from z by the
    VAE ``vae``'s decoder: the lstm decoder's exact -log p(x | z), a cell's conditional at a time;
    the convolutional decoder's Bernoulli cross-entropy (``loss='bce'``) or squared error."""
    from .keras import tf

    if vae.cfg.decoder == "lstm":
        p = tf.clip_by_value(teacher_forced(vae, x, z, training)[..., None], 1e-7, 1 - 1e-7)
        return -(x * tf.math.log(p) + (1 - x) * tf.math.log(1 - p))
    logits = vae.decoder(z, training=training)
    if vae.cfg.loss == "bce":
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
    return tf.square(x - tf.sigmoid(logits))


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
def _schedule_class():
    from .keras import keras

    class LinearSchedule(keras.callbacks.Callback):
        """Moves ``variable`` linearly from ``start`` to ``end`` over ``epochs`` epochs of training,
        fractionally within an epoch when the steps per epoch are known (``start`` at the first
        batch of epoch 0, ``end`` from epoch ``epochs`` on; ``end`` throughout when ``epochs`` <= 0);
        each epoch's logs get the value under ``name``."""

        def __init__(self, variable, start: float, end: float, epochs: int, name: str):
            super().__init__()
            self.variable, self.start, self.end = variable, float(start), float(end)
            self.epochs, self.name, self._epoch = int(epochs), name, 0

        def value(self, progress: float) -> float:
            done = 1.0 if self.epochs <= 0 else min(1.0, max(0.0, progress) / self.epochs)
            return self.end if done == 1.0 else self.start + (self.end - self.start) * done

        def _set(self, progress):
            self.variable.assign(self.value(progress))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self._set(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            steps = (self.params or {}).get("steps")
            if steps:
                self._set(self._epoch + batch / steps)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs[self.name] = float(self.variable.numpy())

    return LinearSchedule


def KLAnnealing(vae, kl_weight: float, anneal_epochs: int):  # noqa: N802 - a callback factory
    """The model's ``beta`` from 0 to ``kl_weight`` over ``anneal_epochs`` (logged as ``beta``)."""
    return _schedule_class()(vae.beta, 0.0, kl_weight, anneal_epochs, "beta")


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


#: What picks a run's best checkpoint (``val_elbo_nll`` with a val split; musicgen.train): not the
#: loss, whose KL weight ``beta`` is annealed, so an early epoch's loss at a small beta can beat
#: every later one at full weight (a run with ``free_bits=8`` kept its first epoch that way).
SELECTION_METRIC = "elbo_nll"


def epoch_metrics(logs: dict) -> dict:
    """``elbo_nll``: reconstruction + KL at full weight (for loss='bce' the negative ELBO, an upper
    bound on -log p(x) in nats per image); ``val_elbo_nll`` likewise."""
    out = {}
    for prefix in ("", "val_"):
        if f"{prefix}reconstruction" in logs and f"{prefix}kl" in logs:
            out[f"{prefix}elbo_nll"] = float(logs[f"{prefix}reconstruction"]) + float(logs[f"{prefix}kl"])
    return out


def callbacks(cfg: VAEConfig, model) -> list:
    schedules = [KLAnnealing(model, cfg.kl_weight, cfg.kl_anneal_epochs)]
    if cfg.decoder == "lstm" and cfg.decoder_dropout_epochs > 0:
        # The decoder first reads no frame at all, so only z can tell it the piece; the frames
        # come back over the first epochs (a decoder that reads them from the start learns to
        # continue the previous frame and uses z for ~20 of its ~150 nats per image).
        rate = model.decoder.get_layer("frame_dropout").rate_variable
        schedules.append(_schedule_class()(rate, 1.0, cfg.decoder_frame_dropout, cfg.decoder_dropout_epochs,
                                           "frame_dropout"))
    return schedules


# --- generation and evaluation ---------------------------------------------------------------------

MAX_INTERPOLATION_STEPS = 64
#: Attributes with latent directions (:func:`image_attributes`, :meth:`Generator.attribute_directions`).
ATTRIBUTES = ("density", "mean_pitch")


def image_attributes(images_: np.ndarray) -> dict[str, np.ndarray]:
    """Per binary image (n, height, width[, 1]): ``density``, note onsets per step (a note is a
    run of sounding cells of one pitch, :func:`musicgen.metrics.onsets`), and ``mean_pitch``, the
    mean MIDI pitch of its notes (NaN for a silent image)."""
    from .metrics import onsets

    x = np.asarray(images_) > 0
    x = x[..., 0] if x.ndim == 4 else x
    notes = np.stack([onsets(img) for img in x]) if len(x) else np.zeros(x.shape, bool)
    count = notes.sum(axis=(1, 2)).astype(np.float64)
    pitch_sum = (notes.sum(axis=1) * np.arange(x.shape[-1])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pitch = np.where(count > 0, pitch_sum / count, np.nan)
    return {"density": count / x.shape[1], "mean_pitch": mean_pitch}


def attribute_direction(z: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The latent direction of an attribute (MusicVAE's attribute vectors, Roberts et al. 2018):
    the mean code of the images in the top quarter of ``values`` minus that of the bottom quarter
    (images whose value is undefined, NaN, left out). Zeros with fewer than 4 defined values."""
    defined = np.flatnonzero(~np.isnan(values))
    if len(defined) < 4:
        return np.zeros(z.shape[1], np.float32)
    order = defined[np.argsort(values[defined], kind="stable")]
    quarter = len(order) // 4
    return (z[order[-quarter:]].mean(0) - z[order[:quarter]].mean(0)).astype(np.float32)


def check_interpolate_args(steps, temperature=INTERPOLATION_TEMPERATURE) -> None:
    """ArgumentError unless ``steps`` is an integer in 2..MAX_INTERPOLATION_STEPS and
    ``temperature`` a number in [0, 10] (0: greedy): ``musicgen interpolate`` and
    /v1/interpolate's check."""
    if not (isinstance(steps, (int, np.integer)) and 2 <= steps <= MAX_INTERPOLATION_STEPS):
        raise ArgumentError("steps", steps, f"an integer from 2 to {MAX_INTERPOLATION_STEPS}")
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
                                             and 0 <= temperature <= 10):
        raise ArgumentError("temperature", temperature, "a number in [0, 10] (0: greedy)")


def slerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """Codes (len(t), latent) float32 along the great circle from ``a`` to ``b`` at fractions ``t``
    (Shoemake 1985; MusicVAE's interpolation): a Gaussian prior puts little mass near the straight
    line's middle, whose norm shrinks. Parallel codes are interpolated linearly."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


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
        self.directions: dict[str, np.ndarray] = {}  # attribute -> latent direction (a run's)
        self._extender = None

    @property
    def autoregressive(self) -> bool:
        return self.cfg.decoder == "lstm"

    @property
    def extender(self):
        """The lstm decoder's generation engine: :class:`musicgen.lstm.Extender` on its layers."""
        if self._extender is None:
            from .lstm import Extender

            self._extender = Extender.of_layers(decoder_config(self.cfg), self.model.decoder)
        return self._extender

    def sample(self, z: np.ndarray, seeds, temperature: float = 1.0) -> np.ndarray:
        """lstm decoder: binary images (n, height, width) drawn from p(x | z) by exact ancestral
        sampling, frame by frame, each frame pitch by pitch from the lowest (the LSTM's generation
        engine), row i from the random generator of ``seeds[i]``, in blocks of rows whose results
        do not depend on each other (:func:`musicgen.lstm.exact_block`)."""
        from .lstm import exact_block

        z = np.asarray(z, np.float32)
        if not len(z):
            return np.zeros((0, self.cfg.height, self.cfg.width), bool)
        block = exact_block(self.extender, len(z))
        if self.model.conductor is None:
            out = self.extender.extend([np.zeros((0, 128), np.float32)] * len(z), self.cfg.height, temperature,
                                       np.asarray(seeds), velocity=1.0, block=block, conditions=z)
            return np.stack(out) > 0
        # hierarchical: bar by bar, each from its embedding with a fresh state, its prompt the
        # previous bar's last frame (as in training), its draws from (row's seed, bar)
        embeddings = self.model.conductor(z, training=False).numpy()
        last, bars = [np.zeros((0, 128), np.float32)] * len(z), []
        for b in range(embeddings.shape[1]):
            seeds_b = [int(np.random.default_rng([int(s), b]).integers(0, 1 << 62)) for s in seeds]
            out = self.extender.extend(last, self.cfg.conductor_bar_steps, temperature, np.asarray(seeds_b),
                                       velocity=1.0, block=block, conditions=embeddings[:, b])
            bars.append(np.stack(out))
            last = [o[-1:] for o in out]
        return np.concatenate(bars, axis=1) > 0

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

    def elbo(self, images_: np.ndarray, seed: int = 0) -> dict:
        """The negative ELBO per image in nats (for ``loss='bce'`` an upper bound on -log p(x)), one
        sample of z ~ q(z | x) per image (``seed``): -log p(x | z) + KL(q(z | x) || N(0, I)),
        with the KL alone (``kl_per_image``)."""
        x = self._images(images_)
        if not len(x):
            return {"images": 0}
        mean, log_var = (np.concatenate(part) for part in zip(*self._batched(
            lambda b: [t.numpy() for t in self.model.encoder(b, training=False)[:2]], x)))
        z = (mean + np.exp(0.5 * log_var) * np.random.default_rng(seed).standard_normal(mean.shape)).astype(np.float32)
        probs = self._teacher_forced(x[..., 0], z) if self.autoregressive else self.decode(z)
        kl = (-0.5 * (1.0 + log_var - mean ** 2 - np.exp(log_var))).sum(axis=1)
        nll = _cell_nll(x[..., 0], probs).sum(axis=(1, 2))
        return {"elbo_nll": float((nll + kl).mean()), "kl_per_image": float(kl.mean())}

    def reconstruct(self, images_: np.ndarray, seed: int = 0, temperature: float = 0.0) -> np.ndarray:
        """Probabilities (n, height, width) of the images decoded from their z_mean; for the lstm
        decoder, the piece decoded by :meth:`decode_notes` (default greedily: each pitch on when
        its conditional reaches 0.5), 0 or 1: what an interpolation starts and ends with. The
        F1 of ``evaluate`` scores :meth:`reconstruction_probs` instead."""
        z = self.encode(images_)
        if self.autoregressive:
            return self.decode_notes(z, seed, temperature).astype(np.float32)
        return self.decode(z)

    def reconstruction_probs(self, images_: np.ndarray, seed: int = 0) -> np.ndarray:
        """The probability (n, height, width) that each cell sounds in the piece decoded from the
        image's z_mean: the convolutional decoder's output, or for the lstm decoder, whose cells
        are not independent, the share of :data:`RECONSTRUCTION_DRAWS` draws from p(x | z_mean) at
        temperature 1 in which the cell sounds (draw k of a row from the seed (``seed``, k), so a
        row does not depend on the others). Thresholded at :attr:`threshold` (chosen for F1 on
        validation images, :meth:`choose_threshold`) this is the reconstruction ``evaluate`` scores:
        a cell is worth predicting when its probability reaches about half the F1 to be had, and a
        greedy decoding, one likely piece, keeps only the notes along its own path."""
        z = self.encode(images_)
        if not self.autoregressive:
            return self.decode(z)
        k = RECONSTRUCTION_DRAWS
        seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(k)]
        draws = self.sample(np.repeat(z, k, axis=0), np.tile(seeds, len(z)), 1.0)
        return draws.reshape(len(z), k, *draws.shape[1:]).mean(axis=1, dtype=np.float32)

    def attribute_shift(self, attributes: dict | None) -> np.ndarray:
        """The sum of ``amount`` x direction over ``attributes`` ({name: amount}), the directions
        this generator was given (``self.directions``, a run's: chosen on held-out images when it
        was trained). ArgumentError for an attribute it has no direction for."""
        shift = np.zeros(self.cfg.latent, np.float32)
        for name, amount in (attributes or {}).items():
            if name not in self.directions:
                raise ArgumentError("attribute", name, f"one of {', '.join(self.directions) or '(none in this run)'}")
            if not (isinstance(amount, (int, float)) and np.isfinite(amount) and abs(amount) <= 10):
                raise ArgumentError(f"attribute {name}", amount, "a number from -10 to 10")
            shift += np.float32(amount) * np.asarray(self.directions[name], np.float32)
        return shift

    def decode_notes(self, z: np.ndarray, seed: int = 0, temperature: float = 0.0) -> np.ndarray:
        """Which cells sound (bool (n, height, width)) in the pieces of codes z: the lstm decoder
        samples each at ``temperature`` (0: greedily, :data:`GREEDY`), every row from the seed
        ``seed`` (so a row does not depend on the others); the convolutional decoder's
        probabilities go through :meth:`notes` (its draws from ``numpy.random.default_rng(seed)``)."""
        if self.autoregressive:
            return self.sample(z, np.full(len(z), seed), temperature or GREEDY)
        return self.notes(self.decode(z), np.random.default_rng(seed))

    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int, seed: int = 0,
                    temperature: float = INTERPOLATION_TEMPERATURE) -> np.ndarray:
        """``steps`` pieces (bool (steps, height, width)) from image ``a`` to image ``b`` (height,
        width): the codes of :func:`slerp` between their z_mean, decoded by :meth:`decode_notes`
        (the lstm decoder at ``temperature``, 0 greedy); the first and last are ``a``'s and ``b``'s
        reconstructions (:meth:`reconstruct` with the same seed and temperature)."""
        check_interpolate_args(steps, temperature)
        za, zb = self.encode(np.stack([a, b]))
        return self.decode_notes(slerp(za, zb, np.linspace(0.0, 1.0, steps)), seed, temperature)

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
                 decoding: str | None = None, temperature: float = 1.0,
                 attributes: dict | None = None) -> list[np.ndarray]:
        """``n`` rolls (height, width) float32 decoded from z ~ N(0, I) drawn with
        ``numpy.random.default_rng(seed)``; sounding cells have velocity 90/127. The same seed
        gives the same rolls, and the first m of ``generate(n)`` are ``generate(m)``. ``attributes``
        ({name: amount}) moves every code ``amount`` times along the attribute's direction
        (:meth:`attribute_shift`).

        The lstm decoder samples each piece from p(x | z) at ``temperature``, row i from the seed
        ``numpy.random.default_rng([seed, 1])``'s i-th draw (:meth:`sample`). The convolutional
        decoder's probabilities become notes by :meth:`notes` (its random draws from
        ``numpy.random.default_rng([seed, 1])``)."""
        z = np.random.default_rng(seed).standard_normal((n, self.cfg.latent)).astype(np.float32)
        z = z + self.attribute_shift(attributes)
        if self.autoregressive:
            on = self.sample(z, np.random.default_rng([seed, 1]).integers(0, 1 << 62, n), temperature)
        else:
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
            probs = self.reconstruction_probs(batch)
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
        # the likelihood: of the reconstruction's probabilities, or the lstm decoder's exact
        # teacher-forced conditionals given z_mean; the frame scores: of the probabilities
        decoded = self.reconstruction_probs(x)
        likely = self._teacher_forced(x, self.encode(x)) if self.autoregressive else decoded
        bce = _cell_nll(x, likely)
        frames = FrameScores(t).add(decoded.reshape(-1, self.cfg.width), x.reshape(-1, self.cfg.width)).result()
        out = {"images": int(len(x)), "bce_per_image": float(bce.sum(axis=(1, 2)).mean()),
               "bce_per_pixel": float(bce.mean()), "threshold": t,
               **{k: frames[k] for k in ("accuracy", "precision", "recall", "f1")},
               "density": float(x.mean()), "reconstruction_density": float((decoded >= t).mean())}
        if self.autoregressive:
            # What the code is worth to the decoder: nats per image it saves against the prior's
            # mean. Near 0 is posterior collapse on the decoder's side, however many units are
            # active (a decoder that continues the previous frame can ignore an informative z).
            blind = _cell_nll(x, self._teacher_forced(x, np.zeros((len(x), self.cfg.latent), np.float32)))
            out["bce_per_image_at_prior_mean"] = float(blind.sum(axis=(1, 2)).mean())
            out["code_nats"] = out["bce_per_image_at_prior_mean"] - out["bce_per_image"]
        return out

    def attribute_directions(self, images_: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`attribute_direction` of each of :data:`ATTRIBUTES` over the codes (z_mean) of
        ``images_``."""
        z = self.encode(images_)
        return {name: attribute_direction(z, v) for name, v in image_attributes(images_).items()}

    def _teacher_forced(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The lstm decoder's conditionals (n, height, width) of binary images x given codes z."""
        x, z = x[..., None].astype(np.float32), np.asarray(z, np.float32)
        n = self.batch_size
        return np.concatenate([self.model.teacher_forced(x[i:i + n], z[i:i + n]).numpy()
                               for i in range(0, len(x), n)])

    def active_units(self, images_: np.ndarray, threshold: float = 0.01) -> int:
        """Latent units whose E[z|x] varies over ``images_`` by more than ``threshold``."""
        from .metrics import active_units

        return active_units(self.encode(images_), threshold)
