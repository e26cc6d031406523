"""One LSTM step on trained weights: a frame per row in, next-frame probabilities and state out.

For one frame a compiled TensorFlow call costs more in overhead than the arithmetic, so the step
runs on the trained weights outside Keras, each layer one float32 matmul of [input, h] with the
kernels stacked (a step reads every weight once, whatever the rows). The arithmetic is written
once, :func:`cell`, and run by two backends: numpy (one row, and small nets) and, for several rows
of a net of at least :data:`XLA_MIN_WEIGHTS`, one XLA-compiled TensorFlow function (compiled once
per number of rows), measured 1.2-1.7x faster than numpy's (OpenBLAS) gemm for 2-16 rows of the
``paper`` net and slower for ``tiny``, whose step is mostly the call's overhead. Tests check both
against the Keras model.
"""
from __future__ import annotations

import types
import typing

import numpy as np

from ..config import LSTMConfig
from .model import beat_suffixes, input_width, neighbour_parts

XLA_MIN_WEIGHTS = 3_000_000  # LSTM kernel floats from which batched steps run in XLA
HALF = np.float32(0.5)

# The array operations cell() needs, from numpy; TensorFlow's are made when a net first needs them.
NUMPY = types.SimpleNamespace(matmul=np.matmul, concat=np.concatenate, tanh=np.tanh)


def zero_state(cfg: LSTMConfig, rows: int = 1) -> list[np.ndarray]:
    """The LSTM state (h0, c0, h1, c1, ...) of ``rows`` rows that have seen nothing."""
    return [np.zeros((rows, cfg.units), np.float32) for _ in range(2 * cfg.layers)]


def cell(ops, x, state, layers, out, units: int):
    """One step of the stacked LSTM and its output layer for a batch: inputs (B, features) and
    state -> (head output, new state), with ``ops`` numpy's or TensorFlow's operations.

    ``layers`` holds, per LSTM, [kernel; recurrent_kernel] and bias; ``out`` (:class:`Out`) the
    output Dense layers fused into one kernel: ``next_frame``'s 128 columns, the copy gate's
    ``keep`` (128) if there is one, the NADE's hidden biases (``nade_units``) if it is the head.
    The head output is the factorized head's probabilities (B, 128), or NADE's biases: visible
    (128) then hidden (:func:`nade`).
    """
    u, h_in, new_state = units, x, []
    for i, (k, b) in enumerate(layers):
        z = ops.matmul(ops.concat([h_in, state[2 * i]], 1), k) + b
        gates = _sigmoid(ops, z)  # Keras' gate order: i, f, c, o
        c = gates[:, u:2 * u] * state[2 * i + 1] + gates[:, :u] * ops.tanh(z[:, 2 * u:3 * u])
        h = gates[:, 3 * u:] * ops.tanh(c)
        new_state += [h, c]
        h_in = h
    logits = ops.matmul(h_in, out.kernel) + out.bias
    visible = logits[:, :128]
    if out.keep:  # the copy gate: frame * keep(h)
        visible = visible + x[:, :128] * logits[:, 128:256]
    if out.hidden:
        return ops.concat([visible, logits[:, -out.hidden:]], 1), new_state
    return _sigmoid(ops, visible), new_state


class Out(types.SimpleNamespace):
    """The fused output layers of :func:`cell`: ``kernel``, ``bias``, ``keep`` (a copy gate's
    columns follow the first 128), ``hidden`` (NADE hidden units in the last columns, or 0)."""


class NadeWeights(typing.NamedTuple):
    """The NADE's weights as numpy arrays: ``w``, ``v`` (D, H); with ``LSTMConfig.nade_changes``
    ``c``, ``q`` (D, H); with ``LSTMConfig.nade_neighbours`` = K ``new``, ``held`` (2, K) and
    ``around`` (2, 2K); with ``LSTMConfig.nade_pitch_classes`` ``new_pc``, ``held_pc``,
    ``around_pc`` (2, 12); ``beat``, with ``LSTMConfig.nade_beat``, one dict of those again per
    metrical level ({name: array}), added on the frames that fall on the level
    (``model.nade_class``)."""
    w: np.ndarray
    v: np.ndarray
    c: np.ndarray | None = None
    q: np.ndarray | None = None
    new: np.ndarray | None = None
    held: np.ndarray | None = None
    around: np.ndarray | None = None
    new_pc: np.ndarray | None = None
    held_pc: np.ndarray | None = None
    around_pc: np.ndarray | None = None
    beat: tuple = ()

    @classmethod
    def of_layer(cls, layer) -> "NadeWeights":
        """The weights of a built ``model.nade_class`` layer."""
        def value(name):
            return getattr(layer, name).numpy() if hasattr(layer, name) else None

        levels = tuple({name: value(name + suffix) for name in cls._fields[4:-1]}
                       for suffix in beat_suffixes(layer.beat))
        return cls(*(value(name) for name in cls._fields[:-1]), beat=levels)

    def neighbour_matrices(self, width: int, level: int | None = None) -> dict[str, np.ndarray]:
        """{kind: (2, D, D)}: what pitch j adds to pitch i's logit at [g, j, i], g the value pitch
        i had in the previous frame (``model.neighbour_parts``; empty without neighbour terms);
        ``level``: of the weights added on that metrical level (``beat``)."""
        named = self._asdict() if level is None else self.beat[level]
        k = 0 if self.new is None else self.new.shape[1]
        parts = neighbour_parts(width, k, self.new_pc is not None)
        return {kind: np.stack([sum(np.pad(named[name][g], (1, 0))[index] for name, index in parts_of_kind)
                                for g in (0, 1)]) for kind, parts_of_kind in parts.items()}


def nade(biases: np.ndarray, weights: NadeWeights, *, u=None, temps=None, frames=None, prev=None, beat=None):
    """NADE over one frame per row, pitch by pitch from the lowest: (conditionals (B, D), frames (B, D)).

    ``biases`` (B, D + H) are :func:`cell`'s NADE output (D = 128); ``weights`` the NADE's; ``c``,
    ``q`` and the neighbours' weights read each row's previous frame ``prev`` (B, D): the
    arithmetic of the Keras layer (``musicgen.lstm.model.nade_class``) one pitch at a time; the
    weights of a metrical level, if any, count for the rows whose ``beat`` (B, levels) is 1 there
    (None: no row is on one). With ``frames`` given the conditionals are those of these frames
    (scoring); otherwise pitch i of row r sounds when ``u[r, i]`` is below its conditional, the
    logit divided by ``temps[r]`` (sampling). A row's numbers depend only on its own biases,
    uniforms and previous frame: each row sums its own products (no matmul across rows).
    """
    w, v, c, q = weights[:4]
    d = len(w)
    b_v, a = biases[:, :d], np.array(biases[:, d:], np.float32)
    sampling = frames is None
    out = np.zeros((len(biases), d), np.float32) if sampling else np.asarray(frames, np.float32)
    near = weights.neighbour_matrices(d)
    # the sets of neighbour weights and their gain per row: a row on a metrical level adds its set
    levels = len(weights.beat)
    at = np.zeros((len(biases), levels), np.float32) if beat is None else np.asarray(beat, np.float32)
    sets = [(near, 1)] + [(weights.neighbour_matrices(d, level), at[:, level:level + 1]) for level in range(levels)]
    if c is not None or near:
        prev = np.asarray(prev, np.float32)
    if c is not None:
        sign = 2 * prev - 1
    if near:  # the neighbours' terms so far, each pitch's at its value in the previous frame
        was_on = prev > 0
        lift = sum(gain * _pick(was_on, prev @ m["around"][0], prev @ m["around"][1]) for m, gain in sets)
    probs = np.empty_like(out)
    hidden = _sigmoid(NUMPY, a)
    for i in range(d):
        logit = b_v[:, i] + (hidden * v[i]).sum(1)
        if c is not None:
            logit = logit + sign[:, i] * (hidden * q[i]).sum(1)
        if near:
            logit = logit + lift[:, i]
        if sampling:
            p = _sigmoid(NUMPY, logit / temps)  # float32: temperature 1 divides exactly
            out[:, i] = u[:, i] < p
        else:
            p = _sigmoid(NUMPY, logit)
        probs[:, i] = p
        on, moved = out[:, i], False
        # the hidden units change only when a pitch sounds or changes (others add 0: same bits)
        if on.any():
            a += on[:, None] * w[i]
            moved = True
            if near:  # a sounding pitch moves the logits of the pitches above it (0 for the rest)
                started = (on * (1 - prev[:, i]))[:, None]
                for m, gain in sets:
                    lift += gain * (started * _pick(was_on, m["new"][0, i], m["new"][1, i])
                                    + (on[:, None] - started) * _pick(was_on, m["held"][0, i], m["held"][1, i]))
        changed = (on != prev[:, i]).astype(np.float32) if c is not None else None
        if changed is not None and changed.any():
            a += changed[:, None] * c[i]
            moved = True
        if moved:
            hidden = _sigmoid(NUMPY, a)
    return probs, out


def _pick(was_on: np.ndarray, if_off, if_on):
    """Per pitch, the value for its state in the previous frame."""
    return np.where(was_on, if_on, if_off)


def _sigmoid(ops, z):
    """sigmoid(z) as (1 + tanh(z/2)) / 2, which never overflows."""
    return (ops.tanh(z * HALF) + 1) * HALF


class StepNet:
    """The step of a Keras step model (:func:`~musicgen.lstm.model.build_step_model`)'s weights."""

    def __init__(self, cfg: LSTMConfig, model):
        self.cfg = cfg
        w = {v.name.split("/")[0] + "/" + v.name.split("/")[-1].split(":")[0]: v.numpy() for v in model.weights}
        self.layers = []
        for i in range(cfg.layers):  # [input, h] @ [kernel; recurrent_kernel]
            k = np.concatenate([w[f"lstm_{i}/kernel"], w[f"lstm_{i}/recurrent_kernel"]]).astype(np.float32)
            self.layers.append((np.ascontiguousarray(k), w[f"lstm_{i}/bias"].astype(np.float32)))
        keep = cfg.skip and not cfg.many_to_one
        names = ["next_frame"] + (["keep"] if keep else []) + (["nade_hidden"] if cfg.head == "nade" else [])
        self.out = Out(kernel=np.ascontiguousarray(np.concatenate([w[f"{k}/kernel"] for k in names], axis=1), np.float32),
                       bias=np.concatenate([w[f"{k}/bias"] for k in names]).astype(np.float32),
                       keep=keep, hidden=cfg.nade_units if cfg.head == "nade" else 0)
        # NADE's weights, (128, H) each, rows contiguous: pitch i's are read one at a time. The step
        # model carries the layer as an attribute, a training model (a VAE's decoder) in its graph.
        if cfg.head == "nade":
            layer = getattr(model, "nade", None) or model.get_layer("nade")
            self.nade_weights = NadeWeights.of_layer(layer)
        else:
            self.nade_weights = None
        # A conditioned LSTM's initial state is a Dense of the condition (model._initial_state).
        self.initial = (w["initial_state/kernel"], w["initial_state/bias"]) if cfg.condition else None
        big = sum(k.size for k, _ in self.layers) >= XLA_MIN_WEIGHTS
        self.batched = self._xla() if big else None  # the several-row backend, if it pays

    def first_state(self, condition=None, rows: int = 1) -> list[np.ndarray]:
        """The state (h0, c0, ...) a row starts from: zeros, or for a conditioned LSTM the
        initial-state Dense of its ``condition`` (rows, C)."""
        if self.initial is None:
            return zero_state(self.cfg, rows)
        k, b = self.initial
        flat = np.tanh(np.asarray(condition, np.float32).reshape(-1, len(k)) @ k + b).astype(np.float32)
        return [np.ascontiguousarray(part) for part in np.split(flat, 2 * self.cfg.layers, axis=1)]

    def step(self, x: np.ndarray, state: list[np.ndarray]):
        """Inputs (B, features) and state -> (head output (B, 128 [+ H]), new state), numpy arrays."""
        x, state = np.asarray(x, np.float32), [np.asarray(s, np.float32) for s in state]
        if len(x) > 1 and self.batched is not None:
            probs, new_state = self.batched(x, state)
            return probs.numpy(), [s.numpy() for s in new_state]
        return cell(NUMPY, x, state, self.layers, self.out, self.cfg.units)

    def _xla(self):
        """:func:`cell` on these weights as one XLA-compiled TensorFlow function of (x, state)."""
        from ..keras import tf

        cfg, ops = self.cfg, types.SimpleNamespace(matmul=tf.linalg.matmul, concat=tf.concat, tanh=tf.tanh)
        layers = [(tf.constant(k), tf.constant(b)) for k, b in self.layers]
        out = Out(kernel=tf.constant(self.out.kernel), bias=tf.constant(self.out.bias), keep=self.out.keep,
                  hidden=self.out.hidden)
        spec = [tf.TensorSpec((None, input_width(cfg)), tf.float32),
                [tf.TensorSpec((None, cfg.units), tf.float32)] * (2 * cfg.layers)]
        return tf.function(lambda x, state: cell(ops, x, state, layers, out, cfg.units),
                           input_signature=spec, jit_compile=True)
