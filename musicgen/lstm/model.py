"""The LSTM's Keras networks and their input encoding.

:func:`build_model` is the training network; :func:`build_step_model` the same layers with their
state as inputs and outputs (generation and scoring). :func:`network_input` is the one place that
turns frames into network inputs (the 128 pitches, then the step's place in the bar), for training
windows and generation alike.
"""
from __future__ import annotations

import numpy as np

from ..config import LSTMConfig

SPARSE_LOGIT = -4.0  # initial output logit: P(on) = 1.8%


def n_features(cfg: LSTMConfig) -> int:
    return 128 + (cfg.steps_per_bar if cfg.position else 0)


def network_input(frames: np.ndarray, steps, cfg: LSTMConfig) -> np.ndarray:
    """Network inputs (n, :func:`n_features`) float32 of binary ``frames`` (n, 128) at ``steps``
    (n step numbers, counted from each frame's piece's start).

    With ``cfg.position`` a one-hot of the step's position in the bar (``steps_per_bar``) follows
    the 128 pitches: the network knows where the beat falls without inferring it from the notes.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if not cfg.position:
        return frames
    pos = np.zeros((len(frames), cfg.steps_per_bar), np.float32)
    pos[np.arange(len(frames)), np.asarray(steps) % cfg.steps_per_bar] = 1
    return np.concatenate([frames, pos], axis=1)


def features(frames: np.ndarray, start: int, cfg: LSTMConfig) -> np.ndarray:
    """Network input for consecutive binary ``frames`` (T, 128) whose first row is step ``start``
    of its piece (:func:`network_input` of steps start..start+T-1)."""
    return network_input(frames, start + np.arange(len(frames)), cfg)


def build_model(cfg: LSTMConfig):
    """The training network: LSTM layers (dropout between them), Dense(128, sigmoid) per step.

    With ``cfg.many_to_one`` the last LSTM returns only its last step, as in the study
    (the ``paper`` preset then has the study's 13,246,592 parameters).
    """
    from ..keras import keras

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
    from ..keras import keras

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
    from ..keras import keras

    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
                  loss=keras.losses.BinaryCrossentropy())
    return model


def build_step_model(cfg: LSTMConfig):
    """The same layers with explicit state in and out: (frames, h0, c0, h1, c1, ...) ->
    (probabilities, h0', c0', ...). Any batch size and any number of steps per call."""
    from ..keras import keras

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


# The rest of the model-module interface of musicgen.train (the data side is in .windows):

def epoch_metrics(logs: dict) -> dict:
    """Binary cross-entropy (mean over cells) -> nats per frame (sum over the 128 pitches)."""
    return {name.replace("loss", "nll"): 128 * float(v) for name, v in logs.items() if name.endswith("loss")}


def callbacks(cfg: LSTMConfig, model) -> list:
    return []
