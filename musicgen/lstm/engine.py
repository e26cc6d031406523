"""LSTM generation: rows (one continuation each) stepped together through one batched step.

A :class:`Row` owns everything of one continuation: its prompt, fed one frame per step from a zero
state, then its own samples; its random stream, temperature and velocity; what it has generated.
A :class:`Batch` steps rows together (:meth:`Batch.step`: inputs, one
:class:`~musicgen.lstm.step.StepNet` step, sampling) and admits and drops rows between steps.
:meth:`Extender.extend` (``musicgen extend``) and Serve's continuous batcher
(``musicgen_serve.batching``) both generate through it, so a row's continuation is made by one
piece of code whoever schedules it.

A row's result does not depend on its batch mates: its state starts at zero when it is admitted,
it has its own random generator, and the step runs on a multiple of ``block`` rows (padded with
silent rows). A matmul sums a row's dot products in another order for other numbers of rows, and a
last-bit difference can flip a sampled note; :func:`exact_block` measures a block with which every
row gets the same bits whatever the batch. ``block=1`` steps exactly the rows given.
"""
from __future__ import annotations

import numpy as np

from ..config import LSTMConfig
from ..errors import ArgumentError
from ..midi import bar_positions
from .model import build_step_model, features, input_width, n_features, network_input, on_beat
from .step import StepNet, nade, zero_state

MAX_STEPS = 4096  # one extend request's continuation, at most
RANDOM_CHUNK = 64  # generation steps of random numbers drawn at once per row (same stream as one at a time)
STEP_ROWS = 16  # the block when none is measured
BLOCKS = (1, 2, 4, 8, 16, 32)  # candidates of exact_block


def check_extend_args(steps, temperature) -> None:
    """ArgumentError unless ``steps`` is an integer in 1..MAX_STEPS and ``temperature`` a number
    in (0, 10]: the one check of ``musicgen extend``, /v1/extend and :meth:`Extender.extend`."""
    if not (isinstance(steps, (int, np.integer)) and 1 <= steps <= MAX_STEPS):
        raise ArgumentError("steps", steps, f"an integer from 1 to {MAX_STEPS}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and 0 < temperature <= 10):
        raise ArgumentError("temperature", temperature, "a number in (0, 10]")


def mean_velocity(roll) -> float:
    """Mean velocity (0..1) of a roll's sounding cells; 80/127 for a silent roll."""
    roll = np.asarray(roll)
    on = roll[roll > 0]
    return float(on.mean()) if on.size else 80 / 127


def sample_frames(probs: np.ndarray, u: np.ndarray, temps: np.ndarray) -> np.ndarray:
    """Binary frames (B, 128) float32: pitch j of row i sounds when ``u[i, j]`` (uniform, float64)
    is below its probability, sharpened or flattened in logit space by temperature ``temps[i]``
    (rows at 1.0 keep their probabilities exactly)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    hot = temps != 1.0
    if hot.any():
        p = np.where(hot[:, None], 1 / (1 + np.exp((np.log1p(-p) - np.log(p)) / temps[:, None])), p)
    return (u < p).astype(np.float32)


def padded_rows(n: int, block: int = STEP_ROWS) -> int:
    """Rows a step runs on for ``n`` rows: a positive multiple of ``block``."""
    return max(1, -(-n // block)) * block


class Row:
    """One continuation: ``steps`` frames after the prompt ``roll`` (T, 128), sampled at
    ``temperature`` from the generator of ``seed``; notes take ``velocity`` (default: the prompt's
    mean velocity). An empty prompt is one silent frame. ``positions``: the bar position of each of
    its steps, its prompt's then its continuation's (at least ``len(prompt) + steps``;
    :meth:`Extender.row` makes them from the prompt's time signatures); None: counted from its
    start (:func:`~.model.features`). ``condition``: a conditioned LSTM's vector (a VAE's code),
    fed with every input and setting the row's initial state."""

    def __init__(self, roll, steps: int, temperature: float = 1.0, seed: int = 0, velocity=None, positions=None,
                 condition=None):
        frames = np.asarray(roll) > 0
        self.prompt = frames if len(frames) else np.zeros((1, 128), bool)
        self.steps, self.temperature = int(steps), float(temperature)
        self.positions = None if positions is None else np.asarray(positions, np.int64)
        if self.positions is not None and len(self.positions) < len(self.prompt) + self.steps - 1:
            raise ValueError(f"{len(self.positions)} bar positions for a row of {len(self.prompt)} + "
                             f"{self.steps} steps")
        self.velocity = np.float32(mean_velocity(roll) if velocity is None else velocity)
        self.condition = None if condition is None else np.asarray(condition, np.float32)
        self.rng = np.random.default_rng(int(seed))
        self.out = np.zeros((self.steps, 128), np.float32)  # the continuation, velocities
        self.frame = np.zeros(128, np.float32)  # the last sampled frame, the next input
        self.k = 0  # steps this row has been through: its prompt first, then its samples
        self.done = 0  # frames sampled
        self.rows_seen = 0  # sum over its steps of the rows stepped with it (for the mean batch)
        self._u = None  # the uniforms of this chunk of its steps (see uniforms)

    @property
    def finished(self) -> bool:
        return self.done == self.steps

    @property
    def sampling(self) -> bool:
        """Whether this step's output is its next frame: its prompt is all in and it wants more."""
        return self.k >= len(self.prompt) - 1 and not self.finished

    def input(self) -> np.ndarray:
        return self.prompt[self.k] if self.k < len(self.prompt) else self.frame

    def position(self, ahead: int = 0) -> int:
        """The bar position of its input this step, or ``ahead`` steps on (1: of the frame it
        samples); a finished row stepped on with its batch mates, whose outputs nobody reads,
        stays at its last."""
        k = self.k + ahead
        return k if self.positions is None else int(self.positions[min(k, len(self.positions) - 1)])

    def uniforms(self) -> np.ndarray:
        """The uniforms of its next frame: its generator's stream, drawn in chunks."""
        if self.done % RANDOM_CHUNK == 0:
            self._u = self.rng.random((min(RANDOM_CHUNK, self.steps - self.done), 128))
        return self._u[self.done % RANDOM_CHUNK]

    def take(self, frame: np.ndarray) -> None:
        self.out[self.done] = frame * self.velocity
        self.frame, self.done = frame, self.done + 1


class Batch:
    """Up to ``capacity`` rows in slots, stepped together on a multiple of ``block`` rows.

    ``net`` gives ``cfg``, ``zero_state(rows)``, ``first_state(row)``, ``step(x, state)`` and
    ``sample(out, u, temps, prev, beat)`` (an :class:`Extender`).
    Rows join (:meth:`admit`) and leave (:meth:`drop`) between steps; an empty slot (None) is
    stepped as a silent row whose results nobody reads. Steps run on the slots up to the last.
    """

    def __init__(self, net, capacity: int, block: int = 1, fixed: bool = False):
        self.net, self.block, self.capacity = net, block, capacity
        size = padded_rows(capacity, block)
        self.state = net.zero_state(size)
        self.x = np.zeros((size, input_width(net.cfg)), np.float32)
        # ``fixed``: all the slots exist from the start, so every step runs on the same rows.
        self.rows: list[Row | None] = [None] * capacity if fixed else []

    def admit(self, row: Row, slot: int | None = None) -> None:
        """Put ``row`` in ``slot`` (default: a new last slot), from its first state, as when alone."""
        if slot is None:
            slot = len(self.rows)
        if not 0 <= slot < self.capacity or (slot < len(self.rows) and self.rows[slot] is not None):
            raise ValueError(f"slot {slot} of a batch of {self.capacity} is taken or out of range")
        self.rows += [None] * (slot + 1 - len(self.rows))
        self.rows[slot] = row
        for s, first in zip(self.state, self.net.first_state(row)):
            s[slot] = first

    def drop(self, slot: int) -> Row:
        """Remove the row of ``slot``; the last slot's row moves into it (rows do not depend on
        their place: :func:`exact_block` checks it)."""
        row, last = self.rows[slot], len(self.rows) - 1
        if slot != last:
            self.rows[slot] = self.rows[last]
            for s in self.state:
                s[slot] = s[last]
        self.rows.pop()
        return row

    def step(self) -> np.ndarray:
        """One step of every slot: each row's input in, its next frame sampled if its prompt is
        all in. Returns the head output of all the rows stepped (a multiple of ``block``)."""
        rows, cfg = self.rows, self.net.cfg
        live = [i for i, r in enumerate(rows) if r is not None]
        m = padded_rows(len(rows), self.block)
        x = self.x[:m]
        x[:] = 0  # empty slots and padding: silence
        if live:
            nf = n_features(cfg)
            x[live, :nf] = network_input(np.stack([rows[i].input() for i in live]), [rows[i].position() for i in live], cfg)
            if cfg.condition:
                x[live, nf:] = np.stack([rows[i].condition for i in live])
        out, state = self.net.step(x, [s[:m] for s in self.state])
        for s, new in zip(self.state, state):
            s[:m] = new
        sampling = [i for i in live if rows[i].sampling]
        if sampling:
            frames = self.net.sample(out[sampling], np.stack([rows[i].uniforms() for i in sampling]),
                                     np.array([rows[i].temperature for i in sampling]), x[sampling, :128],
                                     on_beat([rows[i].position(1) for i in sampling], cfg))
            for i, frame in zip(sampling, frames):
                rows[i].take(frame)
        for i in live:
            rows[i].k += 1
            rows[i].rows_seen += len(live)
        return out


def exact_block(extender, max_rows: int, seed: int = 0) -> int:
    """Smallest block of :data:`BLOCKS` with which ``extender.step`` gives a row the same bits in
    every batch of 1..``max_rows`` rows padded to whole blocks, wherever the row sits.

    The order of a BLAS kernel's sums depends on the shapes and the thread count, not on the data,
    so random inputs show any difference (with overwhelming probability).
    """
    if max_rows <= 1:
        return 1
    rng = np.random.default_rng(seed)
    for block in BLOCKS:
        top = padded_rows(max_rows, block)
        x = (rng.random((top, input_width(extender.cfg))) < 0.1).astype(np.float32)
        state = [(rng.standard_normal(s.shape) * 0.5).astype(np.float32) for s in extender.zero_state(top)]
        ref = extender.step(x, state)
        flipped = extender.step(x[::-1], [s[::-1] for s in state])
        same = all(np.array_equal(a[::-1], b) for a, b in zip([flipped[0], *flipped[1]], [ref[0], *ref[1]]))
        for m in range(block, top, block):
            if not same:
                break
            p, st = extender.step(x[:m], [s[:m] for s in state])
            same = all(np.array_equal(a, b[:m]) for a, b in zip([p, *st], [ref[0], *ref[1]]))
        if same:
            return block
    return STEP_ROWS


class Extender:
    """A trained LSTM ready to score and extend rolls.

    ``predict_next`` runs the compiled Keras step model; generation (:meth:`extend`,
    :meth:`prime`, a :class:`Batch`) runs :meth:`step`, the :class:`~musicgen.lstm.step.StepNet`
    of the same weights, for priming and sampling alike, so a prompt's result depends only on the
    prompt, its seed and the number of rows a step runs on (``block``, see the module).

    ``steps_per_beat`` is the run's grid (``musicgen.generate.grid``; None: a grid without beats,
    in seconds), on which a piece's time signatures give its steps' bar positions (:meth:`positions`).
    ``meter=False`` is for an LSTM trained before time signatures were read: its steps are counted
    from the piece's start whatever the meter (bars of ``steps_per_bar``), as it was trained.
    """

    def __init__(self, cfg: LSTMConfig, weights=None, steps_per_beat: int | None = 4, meter: bool = True):
        from ..keras import tf

        self.cfg, self.steps_per_beat, self.meter = cfg, steps_per_beat, meter
        self.model = build_step_model(cfg)
        if weights is not None:
            self.model.set_weights(weights)
        # One compiled graph for any batch and length: eager Keras calls cost ~100x a step's maths.
        spec = [tf.TensorSpec((None, None, input_width(cfg)), tf.float32)]
        spec += [tf.TensorSpec((None, cfg.units), tf.float32)] * (2 * cfg.layers)
        self._call = tf.function(lambda x, *state: self.model([x, *state], training=False), input_signature=spec)
        self._net = None  # the StepNet, made at the first step (scoring alone never needs it)

    @classmethod
    def from_training_model(cls, cfg: LSTMConfig, model, steps_per_beat: int | None = 4,
                            meter: bool = True) -> "Extender":
        if cfg.many_to_one:
            raise ValueError("a many-to-one (study) model predicts only after a full window; "
                             "extend and evaluate need a many-to-many model")
        return cls(cfg, model.get_weights(), steps_per_beat, meter)  # the same layers in the same order

    @classmethod
    def of_layers(cls, cfg: LSTMConfig, model) -> "Extender":
        """An Extender that generates with the trained layers of ``model`` found by their names (a
        VAE's decoder, which is trained inside another model): steps without bars, no scoring."""
        extender = cls(cfg, steps_per_beat=None, meter=False)
        extender._net = StepNet(cfg, model)
        return extender

    def positions(self, steps: int, time_signatures=None) -> np.ndarray:
        """The bar positions of a piece's first ``steps`` steps on the run's grid, from its time
        signatures ((row, num, den); None or none: 4/4), the last going on past them
        (:func:`musicgen.midi.bar_positions`); without ``meter``, 0, 1, 2, ... whatever they say."""
        if not self.meter:
            return np.arange(steps)
        return bar_positions(self.steps_per_beat, time_signatures or (), steps)

    def row(self, roll, steps: int, temperature: float = 1.0, seed: int = 0, velocity=None,
            time_signatures=None, condition=None) -> Row:
        """The :class:`Row` that continues prompt ``roll`` in its meter: its time signatures
        ((row, num, den); None: 4/4), the last of them going on through the continuation."""
        return Row(roll, steps, temperature, seed, velocity,
                   self.positions(max(len(roll), 1) + int(steps), time_signatures), condition)

    def zero_state(self, batch: int = 1) -> list[np.ndarray]:
        return zero_state(self.cfg, batch)

    def first_state(self, row: Row) -> list[np.ndarray]:
        """The state ``row`` starts from (one row): zeros, or its condition's."""
        return [s[0] for s in self.net.first_state(row.condition)]

    @property
    def net(self) -> StepNet:
        if self._net is None:
            self._net = StepNet(self.cfg, self.model)
        return self._net

    def step(self, x: np.ndarray, state: list[np.ndarray]):
        """One step for a batch: inputs (B, features) -> (head output, new state): the
        factorized head's probabilities (B, 128), or NADE's biases (B, 128 + H)."""
        return self.net.step(x, state)

    def sample(self, out: np.ndarray, u: np.ndarray, temps: np.ndarray, prev: np.ndarray, beat=None) -> np.ndarray:
        """Binary frames (B, 128) float32 drawn from head outputs ``out`` of :meth:`step` with
        uniforms ``u`` (B, 128) at temperatures ``temps`` (B,), after the frames ``prev`` (B, 128)
        the step read, ``beat`` (B, levels) 1 where a frame falls on a metrical level of the
        NADE's beat weights (:func:`.model.on_beat`):
        each pitch on its own (factorized, :func:`sample_frames`) or pitch by pitch from the lowest,
        each drawn given those below it (NADE, :func:`~musicgen.lstm.step.nade`)."""
        if self.cfg.head == "nade":
            return nade(out, self.net.nade_weights, u=u, temps=np.asarray(temps, np.float32), prev=prev, beat=beat)[1]
        return sample_frames(out, u, temps)

    def _run(self, x: np.ndarray, state):
        out = self._call(np.asarray(x, np.float32), *state)
        return out[0].numpy(), [s.numpy() for s in out[1:]]

    def predict_next(self, roll: np.ndarray, positions=None, chunk: int = 512) -> np.ndarray:
        """P(pitch sounds at t | frames < t) for t = 1..T-1 of one roll: array (T-1, 128). For the
        NADE head, P(pitch sounds at t | frames < t, the lower pitches of frame t): the
        conditionals whose binary cross-entropy against the roll is its exact NLL. ``positions``:
        the piece's bar positions (``musicgen.dataset.Record.positions``); None: 4/4 on the
        run's grid (:meth:`positions`)."""
        frames, positions, out = self._read(roll, chunk, positions)
        if self.cfg.head == "nade":
            return nade(out, self.net.nade_weights, frames=frames[1:], prev=frames[:-1],
                        beat=self._beats(frames, positions))[0]
        return out

    def predict_frames(self, roll: np.ndarray, threshold: float = 0.5, chunk: int = 512, positions=None) -> np.ndarray:
        """The most likely next frame, for t = 1..T-1 of one roll, as a binary array (T-1, 128):
        per pitch, on when its probability reaches ``threshold``; for the NADE head, pitch by
        pitch from the lowest, each decided given the decisions below it (a greedy decoding: its
        conditionals at the true frame would peek at that frame's lower notes). ``positions`` as
        for :meth:`predict_next`."""
        frames, positions, out = self._read(roll, chunk, positions)
        if self.cfg.head != "nade":
            return (out >= threshold).astype(np.float32)
        # on when u < p: u just below the threshold makes "p >= threshold" the rule
        u = np.full(out[:, :128].shape, np.nextafter(np.float32(threshold), np.float32(0)), np.float32)
        return nade(out, self.net.nade_weights, u=u, temps=np.ones(len(out), np.float32), prev=frames[:-1],
                    beat=self._beats(frames, positions))[1]

    def draw_next(self, roll: np.ndarray, seed: int = 0, positions=None, chunk: int = 512) -> np.ndarray:
        """A frame drawn at temperature 1 for each t = 1..T-1 of one roll, given the roll's own
        frames before it: binary (T-1, 128), uniforms from ``seed``. What the net would play next
        at every step of real music; in a continuation (:meth:`extend`) it reads its own draws, so
        the two differ by what its slips lead to. ``positions`` as for :meth:`predict_next`."""
        frames, positions, out = self._read(roll, chunk, positions)
        u = np.random.default_rng(seed).random((len(out), 128))
        return self.sample(out, u, np.ones(len(out), np.float32), frames[:-1], self._beats(frames, positions))

    def _read(self, roll: np.ndarray, chunk: int, positions=None):
        """(binary frames (T, 128) of one roll, their bar positions (None: :meth:`positions`), the
        head outputs of steps 0..T-2 (:meth:`_outputs`))."""
        frames = (np.asarray(roll) > 0).astype(np.float32)
        positions = self.positions(len(frames)) if positions is None else positions
        return frames, positions, self._outputs(frames, chunk, positions)

    def _beats(self, frames: np.ndarray, positions) -> np.ndarray:
        """:func:`.model.on_beat` of the steps 1..T-1 of ``frames`` (T, 128) at bar ``positions``."""
        return on_beat(np.asarray(positions)[1:len(frames)], self.cfg)

    def _outputs(self, frames: np.ndarray, chunk: int, positions=None) -> np.ndarray:
        """The head outputs of steps 0..T-2 of binary ``frames`` (T, 128) at bar ``positions``
        (None: :meth:`positions`), one compiled Keras call per ``chunk`` steps with the state carried."""
        positions = self.positions(len(frames)) if positions is None else positions
        state, outs = self.zero_state(), []
        for t in range(0, len(frames) - 1, chunk):
            x = features(frames[t:min(t + chunk, len(frames) - 1)], t, self.cfg, positions)
            out, state = self._run(x[None], state)
            outs.append(out[0])
        width = 128 + (self.cfg.nade_units if self.cfg.head == "nade" else 0)
        return np.concatenate(outs) if outs else np.zeros((0, width), np.float32)

    def extend(self, prompts, steps, temperature=1.0, seeds=0, velocity=None, block: int = 1, time_signatures=None,
               conditions=None):
        """Continue each prompt roll; returns the continuations, (steps, 128) each.

        ``prompts`` is one roll or a list of rolls, generated together, one :class:`Row` each.
        ``steps``, ``temperature`` and ``seeds`` are one value or one per prompt
        (:func:`check_extend_args`). Pitches are sampled independently per step with probabilities
        sharpened (temperature < 1) or flattened (> 1) in logit space. Notes take ``velocity``
        (default: the prompt's mean velocity). The step runs on a multiple of ``block`` rows.
        ``time_signatures``: the prompt's ((row, num, den) list), or one list per prompt; a
        continuation goes on in its prompt's last meter (None: 4/4, :meth:`row`). ``conditions``
        (n, C): a conditioned LSTM's vector per prompt.
        """
        single = isinstance(prompts, np.ndarray) and prompts.ndim == 2
        prompts = [prompts] if single else list(prompts)
        n = len(prompts)
        steps, temps, seeds = (np.broadcast_to(np.asarray(v), (n,)) for v in (steps, temperature, seeds))
        for s, t in zip(steps, temps):
            check_extend_args(s.item(), t.item())
        meters = [None] * n if time_signatures is None else [time_signatures] if single else list(time_signatures)
        if len(meters) != n:
            raise ArgumentError("time_signatures", len(meters), f"one list per prompt ({n} lists)")
        conditions = [None] * n if conditions is None else list(conditions)
        rows = [self.row(p, s, t, seed, velocity, m, c)
                for p, s, t, seed, m, c in zip(prompts, steps, temps, seeds, meters, conditions)]
        batch, _ = self._prime(rows, block)
        while not all(r.finished for r in rows):
            batch.step()
        result = [r.out for r in rows]
        return result[0] if single else result

    def prime(self, prompts, block: int = 1):
        """Run prompt rolls (each at least one step) together as :meth:`extend` does: (probabilities
        of the step after each prompt, LSTM state), on a multiple of ``block`` rows."""
        batch, probs = self._prime([self.row(p, 0) for p in prompts], block)
        m = len(probs)
        return probs, [s[:m].copy() for s in batch.state]

    def _prime(self, rows: list[Row], block: int):
        """(:class:`Batch` of ``rows`` in slots 0..n-1 with their prompts all in, the last step's
        probabilities). The prompts end together: each row is admitted when the longest prompt has
        as many steps to go as it has frames, so rows sample their first frames at the same step
        and every step runs on the same rows (a waiting row's slot is silent)."""
        batch = Batch(self, len(rows), block, fixed=True)
        lengths = [len(r.prompt) for r in rows]
        longest = max(lengths)
        for t in range(longest):
            for i, length in enumerate(lengths):
                if longest - length == t:
                    batch.admit(rows[i], i)
            probs = batch.step()
        return batch, probs
