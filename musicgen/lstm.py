"""LSTM extender: predicts the next frame of a piano roll; extends a prompt one step at a time.

Frames are binary (which pitches sound); the model gives, per pitch, the probability that it sounds
at the next step (sigmoid, binary cross-entropy). Velocity is not modelled: generated notes take
the prompt's mean velocity (the demo corpus has one velocity throughout; a second output would
have nothing to learn from it).

Training is many-to-many: every step of a window predicts the next frame, so a window of W steps
gives W targets (the study's many-to-one set-up gave one and needed a 50 GB window array).
Windows are cut on the fly from per-piece rolls, with a random transposition, never materialised.

Generation is incremental: :class:`Extender` keeps the LSTM state, so each new step costs one
frame through the network instead of re-running a whole window.
"""
from __future__ import annotations

import numpy as np

from .roll import random_transpose, shuffled_batches

from .config import LSTMConfig


SPARSE_LOGIT = -4.0  # initial output logit: P(on) = 1.8%


def features(frames: np.ndarray, start: int, cfg: LSTMConfig) -> np.ndarray:
    """Network input for binary ``frames`` (T, 128) whose first row is step ``start`` of its piece.

    With ``cfg.position`` a one-hot of the step's position in the bar (``steps_per_bar``) follows
    the 128 pitches.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if not cfg.position:
        return frames
    pos = np.zeros((len(frames), cfg.steps_per_bar), np.float32)
    pos[np.arange(len(frames)), (start + np.arange(len(frames))) % cfg.steps_per_bar] = 1
    return np.concatenate([frames, pos], axis=1)


def n_features(cfg: LSTMConfig) -> int:
    return 128 + (cfg.steps_per_bar if cfg.position else 0)


def build_model(cfg: LSTMConfig):
    """The training network: LSTM layers (dropout between them), Dense(128, sigmoid) per step.

    With ``cfg.many_to_one`` the last LSTM returns only its last step, as in the study
    (the ``paper`` preset then has the study's 13,246,592 parameters).
    """
    from .keras import keras

    x = inp = keras.Input((None, n_features(cfg)), name="frames")
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        x = keras.layers.LSTM(cfg.units, return_sequences=not (last and cfg.many_to_one), name=f"lstm_{i}")(x)
        if not last and cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    return keras.Model(inp, _output(cfg, inp, x), name="lstm_extender")


def _output(cfg: LSTMConfig, inp, x):
    """Dense(128, sigmoid) on the LSTM output; with ``cfg.skip`` plus a copy gate.

    The copy gate adds ``frame * keep(h)`` to the next frame's logits: the current frame, weighted
    per pitch by a Dense of the LSTM output. "Notes go on sounding" is there from the first step
    (the gate starts at P(on | on) = 0.88), and the LSTM only has to learn *when* they stop: at 4 steps per
    beat a sounding note goes on with probability ~0.99 inside a beat and ~0.33 at a beat's start.
    """
    from .keras import keras

    # Rolls are sparse (~3% of cells sound): start the output at that rate, not at 0.5, or Adam
    # spends its first thousand steps walking 128 biases down to it.
    silent = keras.initializers.Constant(SPARSE_LOGIT)
    if not cfg.skip or cfg.many_to_one:
        return keras.layers.Dense(128, activation="sigmoid", bias_initializer=silent, name="next_frame")(x)
    logits = keras.layers.Dense(128, bias_initializer=silent, name="next_frame")(x)
    keep = keras.layers.Dense(128, bias_initializer=keras.initializers.Constant(-SPARSE_LOGIT + 2), name="keep")(x)
    frame = keras.layers.Lambda(lambda t: t[..., :128], name="frame")(inp)
    held = keras.layers.Multiply(name="held")([frame, keep])
    return keras.layers.Activation("sigmoid", name="probabilities")(keras.layers.Add()([logits, held]))


def compile_model(model, cfg: LSTMConfig):
    from .keras import keras

    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
                  loss=keras.losses.BinaryCrossentropy())
    return model


def build_step_model(cfg: LSTMConfig):
    """The same layers with explicit state in and out: (frames, h0, c0, h1, c1, ...) ->
    (probabilities, h0', c0', ...). Any batch size and any number of steps per call."""
    from .keras import keras

    inp = keras.Input((None, n_features(cfg)), name="frames")
    states_in, states_out = [], []
    x = inp
    for i in range(cfg.layers):
        h, c = keras.Input((cfg.units,), name=f"h{i}"), keras.Input((cfg.units,), name=f"c{i}")
        x, h2, c2 = keras.layers.LSTM(cfg.units, return_sequences=True, return_state=True,
                                      name=f"lstm_{i}")(x, initial_state=[h, c])
        states_in += [h, c]
        states_out += [h2, c2]
    return keras.Model([inp, *states_in], [_output(cfg, inp, x), *states_out], name="lstm_step")


# --- training data: windows cut on the fly --------------------------------------------------------

def piece_windows(roll: np.ndarray, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True):
    """(x, y) training pairs from one piece: windows of ``cfg.window`` steps at a random offset.

    x is the network input of steps t..t+W-1, y the frames of steps t+1..t+W (many-to-many) or
    only t+W (``many_to_one``). A piece shorter than a window is padded with silence in front.
    With ``augment`` the piece is transposed by a random shift that keeps it on the keyboard.
    """
    frames = (np.asarray(roll) > 0).astype(np.float32)
    w = cfg.window
    start_pos = 0
    if len(frames) < w + 1:
        pad = w + 1 - len(frames)
        frames = np.concatenate([np.zeros((pad, frames.shape[1]), np.float32), frames])
        start_pos = -pad
    if augment:
        frames = random_transpose(frames, cfg.transpose, rng)
    offset = int(rng.integers(0, (len(frames) - 1) % w + 1)) if augment else 0
    for t in range(offset, len(frames) - w, w):
        x = features(frames[t:t + w], start_pos + t, cfg)
        y = frames[t + w] if cfg.many_to_one else frames[t + 1:t + w + 1]
        yield x, y


def window_batches(rolls, cfg: LSTMConfig, rng: np.random.Generator, augment: bool = True,
                   shuffle_buffer: int = 512):
    """Batches (x, y) of windows from an iterable of rolls, shuffled through a bounded buffer.

    Memory is bounded by ``shuffle_buffer`` windows, whatever the corpus size.
    """
    pieces = (piece_windows(roll, cfg, rng, augment) for roll in rolls)
    return shuffled_batches(pieces, cfg.batch_size, rng, shuffle_buffer)


def examples(steps: int, cfg: LSTMConfig) -> int:
    """Windows :func:`piece_windows` cuts (at offset 0) from a piece of ``steps`` steps."""
    return max(1, (max(steps, cfg.window + 1) - 1) // cfg.window)


# The model-module interface of musicgen.train:
def train_batches(rolls, cfg: LSTMConfig, rng: np.random.Generator):
    return window_batches(rolls, cfg, rng, augment=True)


def val_arrays(rolls, cfg: LSTMConfig):
    """Every window of the validation pieces, untransposed, as arrays (x, y)."""
    pairs = [pair for roll in rolls for pair in piece_windows(roll, cfg, np.random.default_rng(0), augment=False)]
    if not pairs:
        return np.zeros((0, cfg.window, n_features(cfg)), np.float32), np.zeros((0, cfg.window, 128), np.float32)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def epoch_metrics(logs: dict) -> dict:
    """Binary cross-entropy (mean over cells) -> nats per frame (sum over the 128 pitches)."""
    return {name.replace("loss", "nll"): 128 * float(v) for name, v in logs.items() if name.endswith("loss")}


def callbacks(cfg: LSTMConfig, model) -> list:
    return []


# --- prediction and generation -----------------------------------------------------------------

class Extender:
    """A trained LSTM ready to score and extend rolls; carries LSTM state between steps."""

    def __init__(self, cfg: LSTMConfig, weights=None):
        from .keras import tf

        self.cfg = cfg
        self.model = build_step_model(cfg)
        if weights is not None:
            self.model.set_weights(weights)
        # One compiled graph for any batch and length: eager Keras calls cost ~100x a step's maths.
        spec = [tf.TensorSpec((None, None, n_features(cfg)), tf.float32)]
        spec += [tf.TensorSpec((None, cfg.units), tf.float32)] * (2 * cfg.layers)
        self._call = tf.function(lambda x, *state: self.model([x, *state], training=False), input_signature=spec)

    @classmethod
    def from_training_model(cls, cfg: LSTMConfig, model) -> "Extender":
        if cfg.many_to_one:
            raise ValueError("a many-to-one (study) model predicts only after a full window; "
                             "extend and evaluate need a many-to-many model")
        return cls(cfg, model.get_weights())  # the same layers in the same order

    def zero_state(self, batch: int = 1) -> list[np.ndarray]:
        return [np.zeros((batch, self.cfg.units), np.float32) for _ in range(2 * self.cfg.layers)]

    def _run(self, x: np.ndarray, state):
        out = self._call(np.asarray(x, np.float32), *state)
        return out[0].numpy(), [s.numpy() for s in out[1:]]

    def predict_next(self, roll: np.ndarray, chunk: int = 512) -> np.ndarray:
        """P(pitch sounds at t | frames < t) for t = 1..T-1 of one roll: array (T-1, 128)."""
        frames = (np.asarray(roll) > 0).astype(np.float32)
        state, probs = self.zero_state(), []
        for t in range(0, len(frames) - 1, chunk):
            x = features(frames[t:min(t + chunk, len(frames) - 1)], t, self.cfg)
            p, state = self._run(x[None], state)
            probs.append(p[0])
        return np.concatenate(probs) if probs else np.zeros((0, 128), np.float32)

    def extend(self, prompts, steps: int, temperature: float = 1.0, seeds=0, velocity=None):
        """Continue each prompt roll by ``steps`` steps; returns the continuations (steps, 128).

        ``prompts`` is one roll or a list of rolls (batched together: one network call per step
        for all of them); ``seeds`` one seed or one per prompt, so a request's result does not
        depend on what it was batched with. Pitches are sampled independently per step with
        probabilities sharpened (temperature < 1) or flattened (> 1) in logit space. Notes take
        ``velocity`` (default: the prompt's mean velocity).
        """
        single = isinstance(prompts, np.ndarray) and prompts.ndim == 2
        prompts = [prompts] if single else list(prompts)
        seeds = [seeds] * len(prompts) if np.isscalar(seeds) else list(seeds)
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, not {temperature!r}")
        rngs = [np.random.default_rng(s) for s in seeds]
        n = len(prompts)
        state = self.zero_state(n)
        lengths = [len(p) for p in prompts]
        # Prime: run every prompt to its end; prompts of different lengths are left-padded with
        # silence so all end together (the LSTM has seen silence before pieces in training).
        longest = max(max(lengths), 1)
        x = np.zeros((n, longest, n_features(self.cfg)), np.float32)
        for i, p in enumerate(prompts):
            frames = (np.asarray(p) > 0).astype(np.float32)
            x[i, longest - len(frames):] = features(frames, 0, self.cfg) if len(frames) else 0
        probs, state = self._run(x, state)
        p_next = probs[:, -1]
        out = np.zeros((n, steps, 128), np.float32)
        vel = [velocity if velocity is not None else _mean_velocity(p) for p in prompts]
        for t in range(steps):
            frame = np.stack([_sample(p_next[i], temperature, rngs[i]) for i in range(n)])
            out[:, t] = frame * np.array(vel, np.float32)[:, None]
            if t == steps - 1:
                break
            step_x = np.stack([features(frame[i:i + 1], lengths[i] + t, self.cfg)[0] for i in range(n)])
            p_next, state = self.step(step_x, state)
        return out[0] if single else list(out)

    def step(self, x: np.ndarray, state: list[np.ndarray]):
        """One step for a batch: inputs (B, features) -> (probabilities (B, 128), new state).

        Plain numpy on the trained weights: for one frame, a compiled TensorFlow call costs far
        more in overhead than the arithmetic (tests check it matches the Keras model).
        """
        if not hasattr(self, "_weights"):
            self._weights = {w.name.split("/")[0] + "/" + w.name.split("/")[-1].split(":")[0]: w.numpy()
                             for w in self.model.weights}
        w, u = self._weights, self.cfg.units
        h_in, new_state = x, []
        for i in range(self.cfg.layers):
            h, c = state[2 * i], state[2 * i + 1]
            z = h_in @ w[f"lstm_{i}/kernel"] + h @ w[f"lstm_{i}/recurrent_kernel"] + w[f"lstm_{i}/bias"]
            gate_i, gate_f, g, gate_o = (z[:, k * u:(k + 1) * u] for k in range(4))  # Keras' order: i, f, c, o
            c = _sigmoid(gate_f) * c + _sigmoid(gate_i) * np.tanh(g)
            h = _sigmoid(gate_o) * np.tanh(c)
            new_state += [h, c]
            h_in = h
        logits = h_in @ w["next_frame/kernel"] + w["next_frame/bias"]
        if self.cfg.skip and not self.cfg.many_to_one:
            logits = logits + x[:, :128] * (h_in @ w["keep/kernel"] + w["keep/bias"])
        return _sigmoid(logits), new_state


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _sample(p: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    if temperature != 1.0:
        logit = np.log(p) - np.log1p(-p)
        p = 1 / (1 + np.exp(-logit / temperature))
    return (rng.random(p.shape) < p).astype(np.float32)


def _mean_velocity(roll) -> float:
    roll = np.asarray(roll)
    on = roll[roll > 0]
    return float(on.mean()) if on.size else 80 / 127
