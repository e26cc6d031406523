"""The LSTM's Keras networks and their input encoding.

:func:`build_model` is the training network; :func:`build_step_model` the same layers with their
state as inputs and outputs (generation and scoring). :func:`network_input` is the one place that
turns frames into network inputs (the 128 pitches, then the step's place in the bar), for training
windows and generation alike.
"""
from __future__ import annotations

import functools

import numpy as np

from ..config import LSTMConfig

SPARSE_LOGIT = -4.0  # initial output logit: P(on) = 1.8%


def n_features(cfg: LSTMConfig) -> int:
    """Columns of a frame's network input (:func:`network_input`): the pitches, then the bar position."""
    return 128 + (cfg.steps_per_bar if cfg.position else 0)


def input_width(cfg: LSTMConfig) -> int:
    """Columns a step of the LSTM reads: a frame's network input, then the conditioning vector."""
    return n_features(cfg) + cfg.condition


def network_input(frames: np.ndarray, positions, cfg: LSTMConfig) -> np.ndarray:
    """Network inputs (n, :func:`n_features`) float32 of binary ``frames`` (n, 128) at bar
    ``positions`` (n integers: each frame's step's position in its bar, 0 on a bar's first step,
    :func:`musicgen.midi.bar_positions`; negative: none).

    With ``cfg.position`` a one-hot of the position in the bar follows the 128 pitches: the network
    knows where the beat falls without inferring it from the notes. The one-hot is
    ``cfg.steps_per_bar`` wide: position p sets column ``p % steps_per_bar``, so a bar longer than
    that (12/8 at 4 steps per beat, 24 steps, with 16) wraps onto its own start; a frame without a
    position (a grid in seconds has no beat) sets none, an input of zeros.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if cfg.reads_no_frames:
        frames = np.zeros_like(frames)
    if not cfg.position:
        return frames
    positions = np.asarray(positions, dtype=np.int64)
    pos = np.zeros((len(frames), cfg.steps_per_bar), np.float32)
    placed = np.flatnonzero(positions >= 0)
    pos[placed, positions[placed] % cfg.steps_per_bar] = 1
    return np.concatenate([frames, pos], axis=1)


def features(frames: np.ndarray, start: int, cfg: LSTMConfig, positions=None) -> np.ndarray:
    """Network input for consecutive binary ``frames`` (T, 128) whose first row is step ``start``
    (>= 0) of its piece: :func:`network_input` at the piece's bar ``positions`` of steps
    start..start+T-1 (``positions``: every step's of the piece, or more). Without ``positions``,
    steps are counted from the piece's start: bars of ``steps_per_bar`` steps from step 0 (16: 4/4
    at 4 steps per beat), the input of every LSTM trained before time signatures were read."""
    steps = start + np.arange(len(frames))
    return network_input(frames, steps if positions is None else np.asarray(positions)[steps], cfg)


def build_model(cfg: LSTMConfig):
    """The training network: LSTM layers (dropout between them), then the head per step.

    Factorized: input the window's frames (B, W, features), output P(pitch on) (B, W, 128).
    With ``cfg.many_to_one`` the last LSTM returns only its last step, as in the study
    (the ``paper`` preset then has the study's 13,246,592 parameters).
    NADE: input W + 1 frames; the LSTM reads the first W and the head gives, for frames 1..W, the
    conditionals P(pitch i on | the frame's pitches below i, the past) (B, W, 128) with the true
    frame's lower pitches (teacher forcing), whose binary cross-entropy against that frame is
    exactly the frame's negative log-likelihood.
    """
    from ..keras import keras

    x = inp = keras.Input((None, n_features(cfg)), name="frames")
    inputs, initial = [inp], [None] * (2 * cfg.layers)
    if cfg.frame_dropout or cfg.frame_dropout_scheduled:
        x = frame_dropout_class()(cfg.frame_dropout, cfg.frame_dropout_scheduled, name="frame_dropout")(x)
    if cfg.condition:  # a second input (B, condition): fed at every step, and the initial state
        condition = keras.Input((cfg.condition,), name="condition")
        inputs.append(condition)
        x = conditioned(x, condition)
        initial = _initial_state(cfg, condition)
    if cfg.head == "nade":  # the LSTM reads frames 0..W-1; frames 1..W are the targets
        x = keras.layers.Lambda(lambda t: t[:, :-1], name="history")(x)
    lstm_in = x
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        x = keras.layers.LSTM(cfg.units, return_sequences=not (last and cfg.many_to_one),
                              name=f"lstm_{i}")(x, initial_state=_pair(initial, i))
        if cfg.dropout and (not last or cfg.head == "nade"):  # and before the NADE head: its biases
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    outputs = _output(cfg, lstm_in, x, _targets(inp, cfg), _beats(inp, cfg))
    if cfg.own_draws:
        return own_draws_class()(inp, outputs, rate=cfg.own_draws, nade=cfg.head == "nade", name="lstm_extender")
    return keras.Model(inputs if cfg.condition else inp, outputs, name="lstm_extender")


@functools.cache
def own_draws_class():
    """The training network of ``LSTMConfig.own_draws`` (after parallel scheduled sampling,
    Duckworth et al. 2019): a Keras functional model whose training step first runs the batch
    without gradient, draws each frame's pitches from the conditionals it gives (for the NADE
    head: each pitch given the true frame's lower pitches, the teacher-forced pass, so one pass
    draws every frame), and adds the drawn notes the true frame lacks (the net's slips) to a share
    ``rate`` of the input frames 1..W-1, then trains on that input against the true next frames:
    the net sees histories holding its own slips and learns the music after them. The true notes all
    stay: replacing whole frames by draws (measured 2026-12-02) taught the net that the frame it
    reads is unreliable (its continuations changed their frame at 0.59 of steps, Bach 0.38). Frame 0 stays
    true (a continuation starts from a true prompt). The NADE head reads the frame it predicts
    from the same input (teacher forcing): a frame given slips is no longer its own target, so
    its weight becomes 0. Validation and everything after training see the plain network."""
    from ..keras import keras, tf

    class OwnDraws(keras.Model):
        def __init__(self, inputs, outputs, rate: float, nade: bool, **kwargs):
            super().__init__(inputs, outputs, **kwargs)
            self.rate, self.nade = rate, nade

        def train_step(self, data):
            x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
            weight = tf.ones(tf.shape(y)[:2], x.dtype) if weight is None else weight
            p = tf.stop_gradient(self(x, training=False))  # (B, W, 128): frames 1..W
            drawn = tf.cast(tf.random.uniform(tf.shape(p)) < p, x.dtype)
            shape = tf.shape(p)
            mixed = tf.cast(tf.random.uniform((shape[0], shape[1] - 1, 1)) < self.rate, x.dtype)
            true = x[:, 1:shape[1], :128]
            pitches = true + (1 - true) * drawn[:, :-1] * mixed  # the true notes and its slips
            x = tf.concat([x[:, :1], tf.concat([pitches, x[:, 1:shape[1], 128:]], axis=-1), x[:, shape[1]:]], axis=1)
            if self.nade:  # a frame given slips is no longer its own target
                slipped = tf.reduce_max(pitches - true, axis=-1)
                weight = weight * tf.concat([1 - slipped, tf.ones_like(weight[:, :1])], axis=1)
            return super().train_step((x, y, weight))

    return OwnDraws


@functools.cache
def frame_dropout_class():
    """The Keras layer that, in training, silences whole input frames (the 128 pitch columns of a
    step) with probability ``rate``, independently per step and sequence; the identity otherwise.
    ``scheduled``: the rate is a variable (``rate_variable``, a non-trainable weight) that a
    callback moves during training (musicgen.vae's decoder schedule). A fixed rate of 1 silences
    every frame in inference too (``LSTMConfig.reads_no_frames``)."""
    from ..keras import keras, tf

    class FrameDropout(keras.layers.Layer):
        def __init__(self, rate: float, scheduled: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.rate, self.scheduled = rate, scheduled

        def build(self, input_shape):
            self.rate_variable = self.add_weight(
                name="rate", shape=(), trainable=False, initializer=keras.initializers.Constant(self.rate),
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA) if self.scheduled else None
            super().build(input_shape)

        def call(self, x, training=None):
            if not self.scheduled and self.rate >= 1:  # a net that reads no frames, ever
                return tf.concat([tf.zeros_like(x[..., :128]), x[..., 128:]], axis=-1)
            if not training:
                return x
            rate = self.rate if self.rate_variable is None else self.rate_variable
            keep = tf.cast(tf.random.uniform(tf.shape(x)[:-1])[..., None] >= rate, x.dtype)
            return tf.concat([x[..., :128] * keep, x[..., 128:]], axis=-1)

    return FrameDropout


def conditioned(x, condition):
    """Steps ``x`` (B, T, F) with the vector ``condition`` (B, C) appended to each: (B, T, F + C)."""
    from ..keras import keras, tf

    return keras.layers.Lambda(
        lambda t: tf.concat([t[0], tf.repeat(t[1][:, None], tf.shape(t[0])[1], axis=1)], axis=-1),
        name="conditioned")([x, condition])


def _initial_state(cfg: LSTMConfig, condition) -> list:
    """The LSTM's initial state (h0, c0, h1, c1, ...) from the conditioning vector: one Dense with
    tanh (MusicVAE's), named ``initial_state`` (:class:`~musicgen.lstm.step.StepNet` reads it)."""
    from ..keras import keras, tf

    units = cfg.units
    flat = keras.layers.Dense(2 * cfg.layers * units, activation="tanh", name="initial_state")(condition)
    return keras.layers.Lambda(lambda t: tf.split(t, 2 * cfg.layers, axis=-1), name="initial_split")(flat)


def _pair(state: list, i: int):
    """Layer ``i``'s [h, c] of a state list, or None (zeros) when there is none."""
    return None if state[2 * i] is None else [state[2 * i], state[2 * i + 1]]


def _targets(inp, cfg: LSTMConfig):
    """The frames the NADE head is teacher-forced with: the pitches of input frames 1..W."""
    from ..keras import keras

    if cfg.head != "nade":
        return None
    return keras.layers.Lambda(lambda t: t[:, 1:, :128], name="targets")(inp)


def on_beat(positions, cfg: LSTMConfig) -> np.ndarray:
    """Which metrical levels of the NADE's beat weights (``LSTMConfig.nade_beat``) steps at bar
    ``positions`` (integers; negative: none) fall on: float32 (N, levels), 1 where the position,
    wrapped as the network input's one-hot wraps it (:func:`network_input`), is a multiple of the
    level's steps."""
    p = np.asarray(positions, np.int64)[:, None]
    steps = np.array(cfg.nade_beat, np.int64)[None]
    return ((p >= 0) & (p % cfg.steps_per_bar % steps == 0)).astype(np.float32)


def beat_suffixes(levels: int) -> list[str]:
    """The names' suffixes of the NADE's weights for each metrical level (``_beat``: the first,
    as runs with one level named it; ``_beat_1``, ``_beat_2``, ...: the next)."""
    return ["_beat" + (f"_{level}" if level else "") for level in range(levels)]


def _beats(inp, cfg: LSTMConfig):
    """With ``cfg.nade_beat``, 1 for the target frames 1..W on each metrical level (B, W, levels)
    (the columns of their position one-hot that :func:`on_beat` counts), else None."""
    from ..keras import keras, tf

    if cfg.head != "nade" or not cfg.nade_beat:
        return None
    levels = tf.constant(on_beat(np.arange(cfg.steps_per_bar), cfg))  # (steps_per_bar, levels)
    return keras.layers.Lambda(lambda t: tf.tensordot(t[:, 1:, 128:128 + cfg.steps_per_bar], levels, 1),
                               name="on_beat")(inp)


def _output(cfg: LSTMConfig, inp, x, targets=None, beats=None):
    """The head on the LSTM output ``x`` (``inp``: the LSTM's input; ``targets``: NADE's frames).

    Factorized: Dense(128, sigmoid); with ``cfg.skip`` plus a copy gate, which adds
    ``frame * keep(h)`` to the next frame's logits: the current frame, weighted per pitch by a
    Dense of the LSTM output. "Notes go on sounding" is there from the first step (the gate starts
    at P(on | on) = 0.88), and the LSTM only has to learn *when* they stop: at 4 steps per beat a
    sounding note goes on with probability ~0.99 inside a beat and ~0.33 at a beat's start.
    NADE: the same logits (copy gate included) are the NADE's visible biases, a Dense of
    ``nade_units`` its hidden biases; with ``targets`` the :func:`nade_class` layer's
    conditionals of those frames, without (the step model) the biases, concatenated.
    """
    from ..keras import keras

    # Rolls are sparse (~3% of cells sound): start the output at that rate, not at 0.5, or Adam
    # spends its first thousand steps walking 128 biases down to it.
    silent = keras.initializers.Constant(SPARSE_LOGIT)
    frame = keras.layers.Lambda(lambda t: t[..., :128], name="frame")(inp)
    if not cfg.skip or cfg.many_to_one:
        if cfg.head == "factorized":
            return keras.layers.Dense(128, activation="sigmoid", bias_initializer=silent, name="next_frame")(x)
        logits = keras.layers.Dense(128, bias_initializer=silent, name="next_frame")(x)
    else:
        logits = keras.layers.Dense(128, bias_initializer=silent, name="next_frame")(x)
        keep = keras.layers.Dense(128, bias_initializer=keras.initializers.Constant(-SPARSE_LOGIT + 2), name="keep")(x)
        held = keras.layers.Multiply(name="held")([frame, keep])
        logits = keras.layers.Add()([logits, held])
        if cfg.head == "factorized":
            return keras.layers.Activation("sigmoid", name="probabilities")(logits)
    hidden = keras.layers.Dense(cfg.nade_units, name="nade_hidden")(x)
    if targets is None:  # the step model (its NADE's arithmetic runs in numpy)
        return keras.layers.Concatenate(name="nade_biases")([logits, hidden])
    return nade_layer(cfg)([logits, hidden, targets, frame] + ([beats] if beats is not None else []))


def nade_layer(cfg: LSTMConfig):
    """The NADE layer of ``cfg`` (:func:`nade_class`)."""
    return nade_class()(cfg.nade_units, changes=cfg.nade_changes, neighbours=cfg.nade_neighbours,
                        pitch_classes=cfg.nade_pitch_classes, beat=len(cfg.nade_beat), name="nade")


@functools.cache
def nade_class():
    """The Keras layer class of the NADE head, made on first use (Keras is imported lazily)."""
    from ..keras import keras, tf

    class Nade(keras.layers.Layer):
        """NADE (Larochelle & Murray, 2011) over a frame's 128 pitches, lowest first, with biases
        given per step (RNN-NADE, Boulanger-Lewandowski et al., 2012): for pitch i, hidden
        ``sigmoid(b_h + W[:i]^T v[:i])``, ``P(v_i = 1 | v_<i) = sigmoid(b_v[i] + V[i] . hidden)``.

        With ``changes`` (``LSTMConfig.nade_changes``) it also reads the previous frames u: the
        hidden input adds ``C[:i]^T |v - u|[:i]`` (where the lower pitches changed), and the
        logit ``(2 u_i - 1) Q[i] . hidden`` (a push towards the pitch's previous value).
        With ``neighbours`` = K (``LSTMConfig.nade_neighbours``) each logit adds learned weights of
        the pitches around it, the same at every pitch, one set for a pitch that sounded in the
        previous frame and one for a pitch that did not: of the lower pitches up to K below it
        that start in this frame (``new``) and that go on sounding (``held``), and of the previous
        frame's pitches up to K either side (``around``) (:func:`neighbour_index`). With
        ``pitch_classes`` (``LSTMConfig.nade_pitch_classes``) it adds the same three kinds of
        weights by pitch class, at any distance (``new_pc``, ``held_pc``, ``around_pc``: 12 each,
        by the interval modulo the octave, :func:`pitch_class_index`).
        With ``beat`` = L metrical levels (``LSTMConfig.nade_beat``) every one of those weights has
        L more, each added where the frame decided falls on its level (its name + a suffix of
        :func:`beat_suffixes`): in Bach a beat's frame holds a semitone clash about half as often
        as the steps between beats (passing notes), and a clash struck on a beat or an eighth
        resolves at the next eighth, which one set of weights for every step cannot say.

        Inputs: visible biases (B, T, D), hidden biases (B, T, H), frames v (B, T, D) (D = ``width``,
        128 pitches), the previous frames u (B, T, D) (read only with ``changes`` or
        ``neighbours``), with ``beat`` whether each frame falls on each level (B, T, L). Output: the
        D conditionals of each frame, all pitches in one pass (the hidden inputs of every pitch at
        once, one per stretch of pitches between two sounding or changed ones: :meth:`hidden_inputs`).
        Sampling runs the same arithmetic pitch by pitch (:func:`musicgen.lstm.step.nade`).
        """

        def __init__(self, units: int, width: int = 128, changes: bool = False, neighbours: int = 0,
                     pitch_classes: bool = False, beat: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.units, self.width, self.changes, self.neighbours = units, width, changes, neighbours
            self.pitch_classes, self.beat = pitch_classes, beat
            self.parts = neighbour_parts(width, neighbours, pitch_classes)

        def build(self, input_shape):
            # one initializer each: a Keras initializer called twice gives the same values twice
            def weight(name):
                return self.add_weight(name=name, shape=(self.width, self.units),
                                       initializer=keras.initializers.RandomNormal(stddev=0.05))

            self.w, self.v = weight("w"), weight("v")
            if self.changes:
                self.c, self.q = weight("c"), weight("q")
            # [sounded before? 0/1, offset]; 0 at first: the NADE it starts from. In NadeWeights' order.
            k, sizes = self.neighbours, {}
            if k:
                sizes = {"new": k, "held": k, "around": 2 * k}
            if self.pitch_classes:
                sizes |= {"new_pc": 12, "held_pc": 12, "around_pc": 12}
            for suffix in ["", *beat_suffixes(self.beat)]:
                for name, size in sizes.items():
                    setattr(self, name + suffix, self.add_weight(name=name + suffix, shape=(2, size), initializer="zeros"))
            super().build(input_shape)

        def neighbour_logits(self, frames, before, suffix=""):
            """The neighbours' terms of every pitch's logit (B, T, D), at the pitch's previous value
            (``suffix`` one of :func:`beat_suffixes`: of that metrical level's weights)."""
            def matrix(kind, g):  # index 0: no neighbour, a weight of 0
                return tf.add_n([tf.gather(tf.pad(getattr(self, name + suffix)[g], [[1, 0]]), tf.constant(index))
                                 for name, index in self.parts[kind]])

            new, held = frames * (1 - before), frames * before
            # products as 2-D matmuls: tf.einsum("...j,ji->...i") took 80 times as long here
            per_value = [_times(new, matrix("new", g)) + _times(held, matrix("held", g))
                         + _times(before, matrix("around", g)) for g in (0, 1)]
            return (1 - before) * per_value[0] + before * per_value[1]

        def call(self, inputs):
            b_v, b_h, frames, before = inputs[:4]
            if self.parts:
                b_v += self.neighbour_logits(frames, before)
            for level, suffix in enumerate(beat_suffixes(self.beat)):
                b_v += inputs[4][..., level:level + 1] * self.neighbour_logits(frames, before, suffix)
            changed = tf.abs(frames - before) if self.changes else None
            segments, a = self.hidden_inputs(b_h, frames, changed)
            hidden = tf.sigmoid(a)
            logits = b_v + self.per_pitch(segments, hidden, self.v)
            if self.changes:
                logits += (2 * before - 1) * self.per_pitch(segments, hidden, self.q)
            return tf.sigmoid(logits)

        def hidden_inputs(self, b_h, frames, changed):
            """(segments (..., S, D), hidden inputs (..., S, H)) of each frame.

            Pitch i's hidden input is b_h plus the weights of the *events* below it: the pitches
            that sound (``w``) and, with ``changes``, that changed (``c``). Between two events it
            stays the same, so a frame of E events has S = E + 1 distinct hidden inputs, the s-th
            above its s lowest events, and ``segments[..., s, i]`` is 1 where pitch i has the s-th.
            A frame has a few events (at most 16 in MuseData's training frames, 128 pitches), so
            the hidden units are computed S times a frame instead of 128 times (the cumulative sum
            over all pitches this replaces): training steps 9 to 10 times faster for this layer,
            forward and backward, with the same conditionals to 1e-6. S is the batch's largest E + 1.
            """
            events = frames if changed is None else tf.maximum(frames, changed)
            rank = tf.cumsum(events, axis=-1, exclusive=True)  # events below each pitch: its segment
            s = tf.cast(tf.reduce_max(rank[..., -1] + events[..., -1]), tf.int32) + 1
            segments = tf.linalg.matrix_transpose(tf.one_hot(tf.cast(rank, tf.int32), s))
            # row s: the weights of the event ranked s (the pitches that are no event add 0)
            steps = _times(segments * frames[..., None, :], self.w)
            if changed is not None:
                steps += _times(segments * changed[..., None, :], self.c)
            return segments, b_h[..., None, :] + tf.cumsum(steps, axis=-2, exclusive=True)

        @staticmethod
        def per_pitch(segments, hidden, weights):
            """sum_h hidden[segment of i, h] * weights[i, h] for each pitch i: (..., D)."""
            return tf.reduce_sum(segments * _times(hidden, tf.transpose(weights)), axis=-2)

    def _times(x, matrix):
        """x (..., K) @ matrix (K, N) as one 2-D product: (..., N)."""
        out = tf.matmul(tf.reshape(x, [-1, tf.shape(matrix)[0]]), matrix)
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], tf.shape(matrix)[1:]], 0))

    return Nade


def neighbour_index(width: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Index matrices (width, width) into the NADE's neighbour weights with a 0 put in front
    (``Nade.new`` / ``held`` and ``around``; index 0: no neighbour): at [j, i] the weight pitch j
    gives pitch i's logit. ``low``: j = i - d, d = 1..k below it (index d); ``around``: j = i + d,
    d = -k..k, d != 0 (index d + k + 1 for d < 0, d + k for d > 0)."""
    j, i = np.indices((width, width))
    d = j - i
    low = np.where((d < 0) & (d >= -k), -d, 0)
    around = np.where((d != 0) & (abs(d) <= k), np.where(d < 0, d + k + 1, d + k), 0)
    return low, around


def pitch_class_index(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Index matrices (width, width) like :func:`neighbour_index`'s into the pitch-class weights
    (``Nade.new_pc`` / ``held_pc`` and ``around_pc``, 12 each): ``low``, j below i at any distance,
    index 1 + (i - j) mod 12 (1: an octave or octaves below, 2: a semitone, 12: a major seventh);
    ``around``, j != i, index 1 + (j - i) mod 12. The clash the music section counts is a relation
    of pitch classes (C and C# in any octaves), beyond any band of semitones."""
    j, i = np.indices((width, width))
    low = np.where(j < i, 1 + (i - j) % 12, 0)
    around = np.where(j != i, 1 + (j - i) % 12, 0)
    return low, around


def neighbour_parts(width: int, neighbours: int, pitch_classes: bool) -> dict[str, list]:
    """The NADE's neighbour terms (empty: none): for each kind (``new`` and ``held``, the lower
    pitches of the frame; ``around``, the previous frame's), [(weight name, index matrix)] whose
    gathered weights sum to the (width, width) matrix of what pitch j adds to pitch i's logit."""
    parts = {}
    if neighbours:
        low, around = neighbour_index(width, neighbours)
        parts = {"new": [("new", low)], "held": [("held", low)], "around": [("around", around)]}
    if pitch_classes:
        low, around = pitch_class_index(width)
        for kind, index in (("new", low), ("held", low), ("around", around)):
            parts.setdefault(kind, []).append((kind + "_pc", index))
    return parts


def compile_model(model, cfg: LSTMConfig):
    """Adam with clipping; binary cross-entropy, and ``bce``: the same weighted by each target
    frame's weight (0 for the silence a short piece is padded with, :mod:`.windows`), whose mean
    over cells x 128 is the validation NLL of ``musicgen evaluate`` (:func:`epoch_metrics`)."""
    from ..keras import keras

    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
                  loss=keras.losses.BinaryCrossentropy(),
                  weighted_metrics=[keras.metrics.BinaryCrossentropy(name="bce")])
    return model


def build_step_model(cfg: LSTMConfig):
    """The same layers with explicit state in and out: (frames, h0, c0, h1, c1, ...) ->
    (head output, h0', c0', ...). Any batch size and any number of steps per call. The head
    output is the factorized head's probabilities, or the NADE's biases per step (visible 128,
    then hidden), from which :func:`musicgen.lstm.step.nade` scores or samples a frame."""
    from ..keras import keras

    inp = keras.Input((None, input_width(cfg)), name="frames")  # the conditioning vector included
    states_in, states_out = [], []
    x = inp
    for i in range(cfg.layers):
        h, c = keras.Input((cfg.units,), name=f"h{i}"), keras.Input((cfg.units,), name=f"c{i}")
        x, h2, c2 = keras.layers.LSTM(cfg.units, return_sequences=True, return_state=True,
                                      name=f"lstm_{i}")(x, initial_state=[h, c])
        states_in += [h, c]
        states_out += [h2, c2]
    model = keras.Model([inp, *states_in], [_output(cfg, inp, x), *states_out], name="lstm_step")
    if cfg.head == "nade":
        # The NADE layer rides along unused, so that the step model holds the training model's
        # weights in the same order (set_weights / get_weights) and StepNet finds them.
        model.nade = nade_layer(cfg)
        model.nade.build(None)
    return model


# The rest of the model-module interface of musicgen.train (the data side is in .windows):

def epoch_metrics(logs: dict) -> dict:
    """``bce`` (mean over the target cells of real frames) -> ``nll``, nats per frame (x 128 pitches)."""
    return {name.replace("bce", "nll"): 128 * float(v) for name, v in logs.items() if name.endswith("bce")}


def callbacks(cfg: LSTMConfig, model) -> list:
    """With ``cfg.ema``: the moving average of the weights (:func:`averaging_class`). With
    ``cfg.patience``: stop after that many epochs without a better validation loss, and halve the
    learning rate after half as many. Every worker sees the same (all-reduced) logs, so all stop
    at the same epoch."""
    from ..keras import keras

    out = [averaging_class()(cfg.ema)] if cfg.ema else []
    if cfg.patience:
        out += [keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=max(1, cfg.patience // 2), verbose=0),
                keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience, verbose=0)]
    return out


def warmed_momentum(momentum: float, updates: int) -> float:
    """The momentum of the ``updates``-th update of the average: ``momentum``, but at most
    (1 + n) / (10 + n), the rule of ``tf.train.ExponentialMovingAverage(num_updates=n)``. Without
    it the first batches' weights linger for about 1 / (1 - momentum) batches: a 12-epoch `joint`
    run averaged at 0.998 scored a validation NLL of 3.37 after 8 epochs where its raw weights
    scored 2.53. From n = 9 m / (1 - m) on (4,491 updates at 0.998) the momentum is the given one."""
    return min(momentum, (1 + updates) / (10 + updates))


@functools.cache
def averaging_class():
    """The Keras callback of ``LSTMConfig.ema``: Polyak averaging of the trainable weights.

    Not the optimizer's own ``use_ema``: tf-keras applies that average only at the end of ``fit``
    (or overwrites the training weights with it), and putting it in the model for validation and
    checkpoints would reach into the optimizer's private variables."""
    from ..keras import keras

    class Averaging(keras.callbacks.Callback):
        """Keeps an exponential moving average of the trainable weights, updated after every batch,
        and puts it in the model from validation until the next epoch starts: validation, the
        callbacks after this one (the checkpoint) and the model left at the end all see the
        average; each epoch trains on from the raw weights. A resumed run starts from its
        checkpoint's average and averages anew. Every worker holds the same weights, so the same
        average."""

        def __init__(self, momentum: float):
            super().__init__()
            self.momentum, self.average, self.raw, self.updates = momentum, None, None, 0

        def on_train_batch_end(self, batch, logs=None):
            weights = [v.numpy() for v in self.model.trainable_weights]
            if self.average is None:
                self.average = weights
                return
            self.updates += 1
            m = warmed_momentum(self.momentum, self.updates)
            for a, w in zip(self.average, weights):
                a *= m
                a += (1 - m) * w

        def on_test_begin(self, logs=None):
            self._hold(average=True)

        def on_epoch_end(self, epoch, logs=None):
            self._hold(average=True)

        def on_epoch_begin(self, epoch, logs=None):
            self._hold(average=False)

        def _hold(self, average: bool) -> None:
            """Put the average (True) or the raw weights (False) in the model, if not there yet."""
            if self.average is None or average == (self.raw is not None):
                return
            if average:
                self.raw = [v.numpy() for v in self.model.trainable_weights]
            for v, w in zip(self.model.trainable_weights, self.average if average else self.raw):
                v.assign(w)
            if not average:
                self.raw = None

    return Averaging
