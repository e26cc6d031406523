"""The joint-frame (NADE) head: exact likelihood, exact sampling, the same numbers in training and
generation (issue 12)."""
import itertools
from dataclasses import replace

import numpy as np
import pytest

from musicgen import lstm
from musicgen.config import LSTMConfig, preset
from musicgen.errors import DataError
from musicgen.lstm.model import beat_suffixes, nade_class, pitch_class_index
from musicgen.lstm.step import NadeWeights, nade

CFG = LSTMConfig(layers=1, units=24, dropout=0.0, window=12, batch_size=4, transpose=0, position=True,
                 steps_per_bar=4, head="nade", nade_units=10, learning_rate=1e-2)
CHANGES = replace(CFG, nade_changes=True, nade_neighbours=13)  # the presets' NADE
# every neighbour term, apart on two metrical levels: the bar's first step, and every second step
BEAT = replace(CHANGES, nade_pitch_classes=True, nade_beat=(4, 2))


def _rolls(n=8, steps=30, seed=0):
    """Chords of two pitches a third apart moving up and down: joint structure in every frame."""
    rng = np.random.default_rng(seed)
    rolls = []
    for _ in range(n):
        r = np.zeros((steps, 128), np.float32)
        roots = 60 + rng.integers(0, 3, steps) * 2
        r[np.arange(steps), roots] = r[np.arange(steps), roots + 4] = 1
        rolls.append(r)
    return rolls


@pytest.mark.parametrize("changes,neighbours,pitch_classes,beat",
                         [(False, 0, False, None), (True, 0, False, None), (True, 2, False, None), (True, 2, True, None),
                          (False, 0, True, None), (True, 2, True, (1,)), (True, 2, True, (0,)), (False, 2, False, (1,)),
                          (True, 2, True, (0, 1)), (False, 0, True, (1, 1))])
def test_the_probabilities_of_all_frames_sum_to_one_on_a_toy_width(changes, neighbours, pitch_classes, beat):
    """On 6 pitches the 64 frames' probabilities, each the product of its conditionals, sum to 1
    (with ``changes``, after a previous frame that holds some of the pitches; with ``neighbours``,
    weights of the pitches up to 2 semitones around each; with ``pitch_classes``, weights by
    pitch class; with ``beat``, one more set of those weights per metrical level, the frame on the
    levels marked 1)."""
    rng = np.random.default_rng(0)
    weights = NadeWeights(*(rng.normal(0, 1, (6, 5)).astype(np.float32) for _ in range(4 if changes else 2)))
    sizes = ({"new": 2, "held": 2, "around": 4} if neighbours else {}) | (
        {"new_pc": 12, "held_pc": 12, "around_pc": 12} if pitch_classes else {})
    weights = weights._replace(**{name: rng.normal(0, 2, (2, size)).astype(np.float32) for name, size in sizes.items()})
    levels = tuple({name: rng.normal(0, 2, (2, sizes[name])).astype(np.float32) if name in sizes else None
                    for name in NadeWeights._fields[4:-1]} for _ in beat or ())
    weights = weights._replace(beat=levels)
    frames = np.array(list(itertools.product([0, 1], repeat=6)), np.float32)
    biases = np.tile(rng.normal(0, 1, 6 + 5).astype(np.float32), (64, 1))
    prev = np.tile(np.array([1, 0, 0, 1, 1, 0], np.float32), (64, 1))
    beats = np.tile(np.array(beat or (), np.float32), (64, 1))  # (64, levels)
    p, _ = nade(biases, weights, frames=frames, prev=prev, beat=beats)
    joint = np.prod(np.where(frames > 0, p, 1 - p), axis=1, dtype=np.float64)
    assert joint.sum() == pytest.approx(1.0, abs=1e-5)
    if changes:  # the previous frame is read: another one gives other conditionals
        assert not np.allclose(nade(biases, weights, frames=frames, prev=1 - prev)[0], p, atol=1e-3)
    if neighbours:  # the neighbours' weights count
        plain = weights._replace(new=None, held=None, around=None, beat=())
        assert not np.allclose(nade(biases, plain, frames=frames, prev=prev)[0], p, atol=1e-3)
    if pitch_classes and beat is None:  # and the pitch classes'
        plain = weights._replace(new_pc=None, held_pc=None, around_pc=None)
        assert not np.allclose(nade(biases, plain, frames=frames, prev=prev)[0], p, atol=1e-3)
    if beat is not None:  # each level's weights count where the frame is on the level, and only there
        other = nade(biases, weights, frames=frames, prev=prev, beat=1 - beats)[0]
        assert not np.allclose(other, p, atol=1e-3)
        on = weights._replace(beat=tuple(level for level, b in zip(levels, beat) if b))
        np.testing.assert_array_equal(nade(biases, on, frames=frames, prev=prev, beat=np.ones((64, sum(beat))))[0], p)
    # The Keras layer gives the same conditionals in one pass.
    layer = nade_class()(5, width=6, changes=changes, neighbours=neighbours, pitch_classes=pitch_classes,
                         beat=len(levels))
    layer.build(None)
    layer.set_weights([t for t in weights[:-1] if t is not None]
                      + [t for level in levels for t in level.values() if t is not None])
    keras_p = layer([biases[None, :, :6], biases[None, :, 6:], frames[None], prev[None]]
                    + ([beats[None]] if levels else [])).numpy()[0]
    np.testing.assert_allclose(keras_p, p, atol=1e-6)
    # Sampling draws frames with those probabilities (a frequency check, 20,000 draws).
    u = rng.random((20_000, 6))
    _, drawn = nade(np.tile(biases[:1], (20_000, 1)), weights, u=u, temps=np.ones(20_000, np.float32),
                    prev=np.tile(prev[:1], (20_000, 1)), beat=np.tile(beats[:1], (20_000, 1)))
    index = (drawn @ (2 ** np.arange(5, -1, -1))).astype(int)
    freq = np.bincount(index, minlength=64) / 20_000
    assert np.abs(freq - joint).max() < 0.02


def test_pitch_class_weights_are_indexed_by_the_interval_modulo_the_octave():
    """What pitch j adds to pitch i's logit: the same weight a semitone away in any octave, none
    from itself or (for the frame's own notes) from above."""
    low, around = pitch_class_index(128)
    assert low[60, 61] == low[60, 73] == low[48, 97] == 2  # C below C#: a semitone, 0 / 1 / 4 octaves
    assert low[61, 72] == 12 and low[60, 72] == 1  # C# below C: a major seventh; an octave
    assert low[61, 60] == low[60, 60] == 0  # a pitch above or itself: none
    assert around[61, 60] == around[73, 60] == 2 and around[59, 60] == 12 and around[60, 60] == 0
    assert set(np.unique(low)) == set(np.unique(around)) == set(range(13))


def _train(cfg, epochs=60):
    """(model, loss before, loss after) of ``cfg`` trained on :func:`_rolls`."""
    from musicgen.keras import tf

    tf.keras.utils.set_random_seed(0)
    model = lstm.compile_model(lstm.build_model(cfg), cfg)
    x, y, w = lstm.val_arrays(_rolls(), cfg)
    first = model.evaluate(x, y, sample_weight=w, verbose=0)[1]
    model.fit(x, y, sample_weight=w, epochs=epochs, batch_size=4, verbose=0)
    return model, first, model.evaluate(x, y, sample_weight=w, verbose=0)[1]


@pytest.fixture(scope="module")
def trained():
    return _train(CFG)


@pytest.fixture(scope="module")
def trained_changes():
    return _train(CHANGES)


@pytest.fixture(scope="module")
def trained_beat():
    """The toy has no beats to learn, so the weights of the metrical levels are set at random
    (scale 2): a sampler that put them on other frames than training does would draw other notes."""
    model, first, last = _train(BEAT)
    layer, rng = model.get_layer("nade"), np.random.default_rng(0)
    for suffix in beat_suffixes(len(BEAT.nade_beat)):
        for name in ("new", "held", "around", "new_pc", "held_pc", "around_pc"):
            v = getattr(layer, name + suffix)
            v.assign(rng.normal(0, 2, v.shape).astype(np.float32))
    return model, first, last


def _trained(request, name):
    """(config, model) of fixture ``name``: the plain NADE, the presets' (changes, neighbours), or
    every neighbour term with the beat's weights."""
    cfg = {"trained": CFG, "trained_changes": CHANGES, "trained_beat": BEAT}[name]
    return cfg, request.getfixturevalue(name)[0]


def _thirds(cfg, model) -> float:
    """Share of sampled frames that are one of the corpus's chords: two pitches a third apart."""
    ext = lstm.Extender.from_training_model(cfg, model)
    out = ext.extend([r[:6] for r in _rolls(4, seed=1)], 20, seeds=[0, 1, 2, 3])
    notes = [np.flatnonzero(f) for f in np.concatenate(out) > 0]
    return float(np.mean([len(n) == 2 and n[1] - n[0] == 4 for n in notes]))


def test_training_lowers_the_loss_and_learns_chords_that_a_factorized_head_cannot(trained):
    model, first, last = trained
    assert last < first * 0.3
    # Measured: 0.76 of the NADE's frames are the corpus's chords, 0.06 of the factorized head's
    # (which draws the root and the third of different chords).
    factorized = replace(CFG, head="factorized")
    assert _thirds(CFG, model) > 0.6 > 0.3 > _thirds(factorized, _train(factorized)[0])


@pytest.mark.parametrize("name", ["trained", "trained_changes", "trained_beat"])
def test_teacher_forced_likelihood_is_the_sum_of_the_sampling_conditionals(name, request):
    """The training model's NLL of a sampled continuation equals -sum log of the conditionals the
    sampler drew it with (same net, same frames)."""
    cfg, model = _trained(request, name)
    ext = lstm.Extender.from_training_model(cfg, model)
    prompt = _rolls(1, seed=2)[0][:7]
    state, drawn, conditionals = ext.zero_state(), [], []
    x = lstm.features(prompt, 0, cfg)
    out, state = ext.step(x[:1], state)
    for t in range(1, len(prompt)):
        out, state = ext.step(x[t:t + 1], state)
    u = np.random.default_rng(5).random((10, 128))  # a Row's uniforms of seed 5 (one chunk)
    prev = prompt[-1:]
    for t in range(10):  # sample 10 frames, keeping the conditionals used
        step = len(prompt) + t  # the step of the frame drawn: on a level every so many steps of the bar
        beat = np.array([[step % cfg.steps_per_bar % steps == 0 for steps in cfg.nade_beat]], np.float32)
        p, prev = nade(out, ext.net.nade_weights, u=u[t:t + 1], temps=np.ones(1, np.float32), prev=prev, beat=beat)
        conditionals.append(p[0])
        drawn.append(prev[0])
        out, state = ext.step(lstm.features(prev, len(prompt) + t, cfg), state)
    roll = np.concatenate([prompt, np.stack(drawn)])
    # the generation engine draws the same frames: its rows know which frames fall on a beat
    np.testing.assert_array_equal(ext.extend(prompt, 10, seeds=5, velocity=1.0), np.stack(drawn))
    probs = model.predict(lstm.features(roll, 0, cfg)[None], verbose=0)[0][len(prompt) - 1:]
    # Keras runs the LSTM over the whole sequence, the sampler one step at a time in numpy:
    # float32 rounding apart, the same conditionals (also where a drawn note had p ~ 1e-4).
    np.testing.assert_allclose(probs, conditionals, atol=2e-6, rtol=2e-2)

    def loglik(p):  # in float64: float32's 1 - p loses digits where p is near 1
        p = np.asarray(p, np.float64)
        return float(np.log(np.where(roll[len(prompt):] > 0, p, 1 - p)).sum())

    assert loglik(probs) == pytest.approx(loglik(conditionals), rel=1e-3)
    # predict_next (evaluation) gives the same conditionals, chunked with the state carried.
    np.testing.assert_allclose(ext.predict_next(roll, chunk=5)[len(prompt) - 1:], probs, atol=1e-5)


@pytest.mark.parametrize("name", ["trained", "trained_changes", "trained_beat"])
def test_sampling_is_seeded_and_independent_of_batch_mates(name, request):
    cfg, model = _trained(request, name)
    ext = lstm.Extender.from_training_model(cfg, model)
    prompts = [r[:5 + i] for i, r in enumerate(_rolls(3, seed=3))]
    alone = ext.extend(prompts[0], 16, seeds=7)
    np.testing.assert_array_equal(alone, ext.extend(prompts[0], 16, seeds=7))
    assert not np.array_equal(alone, ext.extend(prompts[0], 16, seeds=8))
    together = ext.extend(prompts, 16, seeds=[7, 1, 2], block=2)
    np.testing.assert_array_equal(together[0], ext.extend(prompts[0], 16, seeds=7, block=2))
    # Temperature: colder sampling stays nearer the most likely frame.
    cold = ext.extend(prompts, 16, temperature=0.2, seeds=[7, 1, 2])
    hot = ext.extend(prompts, 16, temperature=3.0, seeds=[7, 1, 2])
    assert sum((c > 0).sum() for c in cold) < sum((h > 0).sum() for h in hot)


def test_greedy_prediction_and_accuracy_inputs(trained):
    model, _, _ = trained
    ext = lstm.Extender.from_training_model(CFG, model)
    roll = _rolls(1, seed=4)[0]
    guess = ext.predict_frames(roll)
    assert guess.shape == (len(roll) - 1, 128) and set(np.unique(guess)) <= {0.0, 1.0}
    assert (guess.sum(1) == 2).mean() > 0.8  # a chord of two, decided jointly


def test_next_frames_are_drawn_from_the_true_past_only(trained):
    model, _, _ = trained
    ext = lstm.Extender.from_training_model(CFG, model)
    roll = _rolls(1, seed=4)[0]
    drawn = ext.draw_next(roll, seed=3)
    assert drawn.shape == (len(roll) - 1, 128) and set(np.unique(drawn)) <= {0.0, 1.0}
    assert (drawn.sum(1) == 2).mean() > 0.6  # the toy's chords of two, drawn jointly
    np.testing.assert_array_equal(drawn, ext.draw_next(roll, seed=3))
    assert not np.array_equal(drawn, ext.draw_next(roll, seed=4))
    # frame t reads the roll's frames before t, not what follows
    changed = roll.copy()
    changed[10:] = _rolls(1, seed=5)[0][10:]
    np.testing.assert_array_equal(ext.draw_next(changed, seed=3)[:9], drawn[:9])


def test_bad_head_settings_are_one_line_errors():
    with pytest.raises(DataError, match="head"):
        preset("lstm", "tiny", head="joint")
    with pytest.raises(DataError, match="many-to-one"):
        preset("lstm", "paper", head="nade", many_to_one=True)
    with pytest.raises(DataError, match="nade_units"):
        replace(CFG, nade_units=0).check()
    with pytest.raises(DataError, match="nade_beat"):  # the beat's weights are neighbour weights: none here
        replace(CFG, nade_beat=(2,)).check()
    with pytest.raises(DataError, match="nade_beat"):
        replace(BEAT, position=False).check()
    with pytest.raises(DataError, match="nade_beat"):
        replace(BEAT, nade_beat=(5,)).check()  # more than a bar (steps_per_bar 4)
    with pytest.raises(DataError, match="nade_beat"):
        replace(BEAT, nade_beat=(2, 2)).check()  # a level twice
    with pytest.raises(DataError, match="nade_beat"):
        replace(BEAT, nade_beat=(4, 0)).check()
    with pytest.raises(DataError, match="own_draws"):
        replace(CFG, own_draws=1.5).check()
    with pytest.raises(DataError, match="own_draws"):  # a VAE's decoder
        replace(CFG, own_draws=0.3, condition=8).check()
    with pytest.raises(DataError, match="own_draws"):  # the study's many-to-one net
        replace(CFG, head="factorized", many_to_one=True, own_draws=0.3).check()
    # a run written on 2026-12-07 holds one level as a number
    assert replace(BEAT, nade_beat=4).nade_beat == (4,) and replace(BEAT, nade_beat=0).nade_beat == ()


@pytest.mark.parametrize("head", ["nade", "factorized"])
def test_own_draws_add_the_nets_slips_to_the_input_frames(head):
    """With every input frame but the first given its slips (``own_draws`` 1) by a net that gives
    every pitch P = 1, a training step is the plain network's step on the same windows with every
    pitch of frames 1..W-1 on, and, for the NADE (whose targets they are too), those frames weighed 0."""
    from musicgen.keras import keras, tf

    cfg = replace(CFG, head=head, own_draws=1.0)
    x, y, w = (a[:4] for a in lstm.val_arrays(_rolls(), cfg))
    steps = {}
    for name, c in (("own", cfg), ("plain", replace(cfg, own_draws=0.0))):
        tf.keras.utils.set_random_seed(0)
        model = lstm.build_model(c)
        bias = model.get_layer("next_frame").bias
        bias.assign(np.full(bias.shape, 20.0, np.float32))  # P(on) = 1 in float32: every pitch drawn
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy())
        steps[name] = model
    full, weight = x.copy(), w.copy()
    full[:, 1:cfg.window, :128] = 1
    if head == "nade":
        weight[:, :-1] = 0
    start = [v.numpy() for v in steps["own"].trainable_weights]
    steps["own"].fit(x, y, sample_weight=w, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    steps["plain"].fit(full, y, sample_weight=weight, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    own = [v.numpy() for v in steps["own"].trainable_weights]
    for a, b in zip(own, (v.numpy() for v in steps["plain"].trainable_weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(own, start))  # it did train
    for v, a in zip(steps["plain"].trainable_weights, start):  # the plain step on the true frames differs
        v.assign(a)
    steps["plain"].fit(x, y, sample_weight=w, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    assert any(not np.allclose(a, v.numpy(), rtol=1e-5, atol=1e-6) for a, v in zip(own, steps["plain"].trainable_weights))
