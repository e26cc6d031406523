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
    """A trained LSTM ready to score and extend rolls; carries LSTM state between steps.

    ``predict_next`` runs the compiled Keras step model; ``extend`` runs :meth:`step`, numpy on the
    trained weights, for priming and generation alike, so a prompt's result depends only on the
    prompt, its seed and the number of rows a step runs on (``block``, see :meth:`extend`).
    """

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
        self._fused = None

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

    def extend(self, prompts, steps, temperature=1.0, seeds=0, velocity=None, block: int = 1):
        """Continue each prompt roll; returns the continuations, (steps, 128) each.

        ``prompts`` is one roll or a list of rolls, generated together: one :meth:`step` per time
        step for all of them. ``steps``, ``temperature`` and ``seeds`` are one value or one per
        prompt. Pitches are sampled independently per step with probabilities sharpened
        (temperature < 1) or flattened (> 1) in logit space. Notes take ``velocity`` (default: the
        prompt's mean velocity).

        A prompt's result does not depend on its batch mates: prompts are primed right-aligned,
        each row's state held at zero until its own prompt starts (padding with silence would
        change it), every row has its own random generator, and the step runs on a multiple of
        ``block`` rows (padded with silent rows). BLAS sums a row's dot products in another order
        for other numbers of rows, and a last-bit difference can flip a sampled note;
        ``musicgen_serve.batching.exact_block`` measures a block that gives every row the same
        bits whatever the batch. ``block=1`` steps exactly the rows given.
        """
        single = isinstance(prompts, np.ndarray) and prompts.ndim == 2
        prompts = [prompts] if single else list(prompts)
        n = len(prompts)
        steps, temps, seeds = (np.broadcast_to(np.asarray(v), (n,)) for v in (steps, temperature, seeds))
        temps = temps.astype(np.float64)
        if not (np.all(np.isfinite(temps)) and np.all(temps > 0)):
            raise ValueError(f"temperature must be a positive number, not {temperature!r}")
        cfg = self.cfg
        frames = [(np.asarray(p) > 0).astype(np.float32) for p in prompts]
        frames = [f if len(f) else np.zeros((1, 128), np.float32) for f in frames]  # empty: one silent frame
        lengths = np.array([len(f) for f in frames])
        probs, state = self.prime(frames, block)
        rows = len(probs)

        # Generate: sample every row from its own generator, in chunks of the same stream.
        total = int(steps.max())
        rngs = [np.random.default_rng(int(s)) for s in seeds]
        vel = np.array([velocity if velocity is not None else mean_velocity(p) for p in prompts], np.float32)
        out = np.zeros((n, total, 128), np.float32)
        x = np.zeros((rows, n_features(cfg)), np.float32)
        for t in range(total):
            if t % RANDOM_CHUNK == 0:
                u = np.stack([r.random((min(RANDOM_CHUNK, total - t), 128)) for r in rngs])
            frame = sample_frames(probs[:n], u[:, t % RANDOM_CHUNK], temps)
            out[:, t] = frame * vel[:, None]
            if t == total - 1:
                break
            set_inputs(x, frame, lengths + t, cfg)
            probs, state = self.step(x, state)
        result = [out[i, :steps[i]] for i in range(n)]
        return result[0] if single else result

    def prime(self, prompts, block: int = 1):
        """Run prompt rolls (each at least one step) through :meth:`step` together: (probabilities
        of the step after each prompt, LSTM state), on a multiple of ``block`` rows.

        The prompts end together: row i starts when the longest prompt has
        ``len(longest) - len(prompt i)`` steps to go, its state held at zero until then, so that
        its result does not depend on the other prompts.
        """
        cfg, n = self.cfg, len(prompts)
        rows = max(1, -(-n // block)) * block
        lengths = np.array([len(p) for p in prompts])
        longest = int(lengths.max())
        start = longest - lengths
        frames = np.zeros((longest, rows, 128), bool)  # time-major: one contiguous slice per step
        for i, p in enumerate(prompts):
            frames[start[i]:, i] = np.asarray(p) > 0
        x = np.zeros((rows, n_features(cfg)), np.float32)
        state = self.zero_state(rows)
        waiting = np.ones(rows, bool)
        for t in range(longest):
            x[:, :128] = frames[t]
            if cfg.position:  # as features(): the step's place in the bar, counted from the prompt's start
                x[:, 128:] = 0
                on = np.flatnonzero(start <= t)
                x[on, 128 + (t - start[on]) % cfg.steps_per_bar] = 1
            probs, state = self.step(x, state)
            if t < start.max():
                waiting[:n] = start > t
                for s in state:
                    s[waiting] = 0
        return probs, state

    def step(self, x: np.ndarray, state: list[np.ndarray]):
        """One step for a batch: inputs (B, features) -> (probabilities (B, 128), new state).

        For one frame, a compiled TensorFlow call costs more in overhead than the arithmetic: one
        row runs in plain numpy on the trained weights (each layer one float32 gemv of [input, h]
        with the kernels stacked, so a step reads every weight once). Several rows share that read;
        for a net of at least :data:`XLA_MIN_WEIGHTS` they run as one XLA-compiled TensorFlow step
        (compiled once per number of rows), measured 1.2-1.7x faster than numpy's (OpenBLAS) gemm
        for 2-16 rows of the ``paper`` net, and slower for ``tiny``, whose step is mostly the
        call's overhead. Tests check both against the Keras model.
        """
        if self._fused is None:
            self._fused = self._fuse_weights()
        layers, (w_out, b_out), batched = self._fused
        if len(x) > 1 and batched is not None:
            probs, new_state = batched(np.asarray(x, np.float32), [np.asarray(s, np.float32) for s in state])
            return probs.numpy(), [s.numpy() for s in new_state]
        u, h_in, new_state = self.cfg.units, np.asarray(x, np.float32), []
        for i, (w, b) in enumerate(layers):
            z = np.concatenate([h_in, state[2 * i]], axis=1) @ w
            z += b
            # Keras' gate order i, f, c, o; sigmoid(v) = (1 + tanh(v/2)) / 2 never overflows.
            gates = np.tanh(z * np.float32(0.5))
            gates += 1
            gates *= np.float32(0.5)
            c = gates[:, u:2 * u] * state[2 * i + 1] + gates[:, :u] * np.tanh(z[:, 2 * u:3 * u])
            h = gates[:, 3 * u:] * np.tanh(c)
            new_state += [h, c]
            h_in = h
        logits = h_in @ w_out
        logits += b_out
        if w_out.shape[1] > 128:  # the copy gate: frame * keep(h), fused with next_frame
            logits = logits[:, :128] + x[:, :128] * logits[:, 128:]
        return _sigmoid(logits), new_state

    def _fuse_weights(self):
        w = {v.name.split("/")[0] + "/" + v.name.split("/")[-1].split(":")[0]: v.numpy() for v in self.model.weights}
        layers = []
        for i in range(self.cfg.layers):  # [input, h] @ [kernel; recurrent_kernel]
            k = np.concatenate([w[f"lstm_{i}/kernel"], w[f"lstm_{i}/recurrent_kernel"]]).astype(np.float32)
            layers.append((np.ascontiguousarray(k), w[f"lstm_{i}/bias"].astype(np.float32)))
        names = ["next_frame"] + (["keep"] if self.cfg.skip and not self.cfg.many_to_one else [])
        out = (np.ascontiguousarray(np.concatenate([w[f"{k}/kernel"] for k in names], axis=1), np.float32),
               np.concatenate([w[f"{k}/bias"] for k in names]).astype(np.float32))
        big = sum(k.size for k, _ in layers) >= XLA_MIN_WEIGHTS
        return layers, out, _xla_step(self.cfg, layers, out) if big else None


def _xla_step(cfg: LSTMConfig, layers, out):
    """:meth:`Extender.step`'s arithmetic as one XLA-compiled TensorFlow function of (x, state)."""
    from .keras import tf

    u = cfg.units
    weights = [(tf.constant(k), tf.constant(b)) for k, b in layers]
    w_out, b_out = tf.constant(out[0]), tf.constant(out[1])
    spec = [tf.TensorSpec((None, n_features(cfg)), tf.float32),
            [tf.TensorSpec((None, u), tf.float32)] * (2 * cfg.layers)]

    @tf.function(input_signature=spec, jit_compile=True)
    def step(x, state):
        h_in, new_state = x, []
        for i, (k, b) in enumerate(weights):
            z = tf.linalg.matmul(tf.concat([h_in, state[2 * i]], 1), k) + b
            gates = (tf.tanh(z * 0.5) + 1) * 0.5
            c = gates[:, u:2 * u] * state[2 * i + 1] + gates[:, :u] * tf.tanh(z[:, 2 * u:3 * u])
            h = gates[:, 3 * u:] * tf.tanh(c)
            new_state += [h, c]
            h_in = h
        logits = tf.linalg.matmul(h_in, w_out) + b_out
        if out[0].shape[1] > 128:
            logits = logits[:, :128] + x[:, :128] * logits[:, 128:]
        return (tf.tanh(logits * 0.5) + 1) * 0.5, new_state

    return step


XLA_MIN_WEIGHTS = 3_000_000  # LSTM kernel floats from which batched steps run in XLA (Extender.step)
RANDOM_CHUNK = 64  # generation steps of random numbers drawn at once per row (same stream as one at a time)


def sample_frames(probs: np.ndarray, u: np.ndarray, temps: np.ndarray) -> np.ndarray:
    """Binary frames (B, 128) float32: pitch j of row i sounds when ``u[i, j]`` (uniform, float64)
    is below its probability, sharpened or flattened in logit space by temperature ``temps[i]``
    (rows at 1.0 keep their probabilities exactly)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    hot = temps != 1.0
    if hot.any():
        p = np.where(hot[:, None], 1 / (1 + np.exp((np.log1p(-p) - np.log(p)) / temps[:, None])), p)
    return (u < p).astype(np.float32)


def set_inputs(x: np.ndarray, frames: np.ndarray, steps: np.ndarray, cfg: LSTMConfig) -> None:
    """Write the inputs of one step into the first ``len(frames)`` rows of ``x`` (B, features):
    each row's frame and, with ``cfg.position``, the one-hot of its step (counted from its piece's
    start) in the bar, as :func:`features` does."""
    n = len(frames)
    x[:n, :128] = frames
    if cfg.position:
        x[:n, 128:] = 0
        x[np.arange(n), 128 + np.asarray(steps) % cfg.steps_per_bar] = 1


def _sigmoid(z):
    return (np.tanh(z * np.float32(0.5)) + 1) * np.float32(0.5)


def mean_velocity(roll) -> float:
    """Mean velocity (0..1) of a roll's sounding cells; 80/127 for a silent roll."""
    roll = np.asarray(roll)
    on = roll[roll > 0]
    return float(on.mean()) if on.size else 80 / 127
