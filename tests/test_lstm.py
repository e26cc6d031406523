"""musicgen.lstm: the study's net, windows cut on the fly, the step on trained weights, generation.

The generation engine's scheduling (rows joining and leaving a batch) is tested with Serve's
batcher in tests/test_batching.py.
"""
from dataclasses import replace

import numpy as np
import pytest

from musicgen import lstm
from musicgen.config import LSTMConfig, preset
from musicgen.errors import DataError

SMALL = LSTMConfig(layers=2, units=16, dropout=0.0, window=8, batch_size=4, epochs=1, transpose=3,
                   position=True, steps_per_bar=4)


def test_paper_preset_is_the_study_net():
    cfg = preset("lstm", "paper", many_to_one=True)
    model = lstm.build_model(cfg)
    assert model.count_params() == 13_246_592
    counts = [layer.count_params() for layer in model.layers if layer.count_params()]
    assert counts == [4_722_688, 8_392_704, 131_200]
    assert model.output_shape == (None, 128)
    # Many-to-many (ours) has the same weights, one prediction per step.
    assert lstm.build_model(preset("lstm", "paper")).count_params() == 13_246_592


def test_windows_are_cut_on_the_fly_with_targets_at_every_step():
    rng = np.random.default_rng(0)
    roll = np.zeros((30, 128), np.float32)
    roll[np.arange(30), 60 + np.arange(30) % 5] = 0.7
    triples = list(lstm.piece_windows(roll, SMALL, rng, augment=False))
    assert len(triples) == lstm.examples(30, SMALL) == 3
    x, y, w = triples[0]
    assert x.shape == (8, 128 + 4) and y.shape == (8, 128) and w.tolist() == [1] * 8
    np.testing.assert_array_equal(y[:-1], x[1:, :128])  # y is x shifted by one step
    np.testing.assert_array_equal(x[:, 128:].argmax(1), np.arange(8) % 4)  # position in the bar
    # Transposition keeps every note on the keyboard.
    high = np.zeros((20, 128), np.float32)
    high[:, 126] = 1
    for _ in range(20):
        for xx, yy, _ in lstm.piece_windows(high, SMALL, rng):
            assert xx[:, :128].sum() == 8 and np.flatnonzero(xx[:, :128].any(0))[0] >= 123
    # A piece shorter than a window is padded with silence after its end, and the padding's
    # targets weigh nothing: the piece starts from a zero state, as in generation and evaluation.
    (x, y, w), = lstm.piece_windows(roll[:5], SMALL, rng, augment=False)
    np.testing.assert_array_equal(x[:5, :128], roll[:5] > 0)
    assert x[5:, :128].sum() == 0 and y[3].sum() == 1 and y[4:].sum() == 0
    assert w.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    # The NADE head reads one frame more: the frame it predicts, fed as its teacher.
    (x, y, w), = lstm.piece_windows(roll[:5], replace(SMALL, head="nade"), rng, augment=False)
    assert x.shape == (9, 132) and y.shape == (8, 128)
    np.testing.assert_array_equal(x[1:, :128], y)
    # The study's many-to-one window is padded in front: its one target is the window's last frame.
    (x, y, w), = lstm.piece_windows(roll[:5], replace(SMALL, many_to_one=True), rng, augment=False)
    assert x[:4, :128].sum() == 0 and y.sum() == 1 and w == 1


def test_half_speed_plays_a_share_of_the_pieces_in_notes_twice_as_long():
    from musicgen.midi import bar_positions

    # a 3/4 piece at half speed is the same piece in 3/2: every frame twice, bars of 24 steps
    roll = np.zeros((24, 128), np.float32)
    roll[np.arange(24), 60 + np.arange(24) % 3] = 1
    frames, positions = lstm.half_speed(roll, bar_positions(4, [(0, 3, 4)], 24))
    np.testing.assert_array_equal(frames, np.repeat(roll, 2, axis=0))
    np.testing.assert_array_equal(positions, bar_positions(4, [(0, 3, 2)], 48))
    assert lstm.half_speed(roll[:2], np.array([-1, 0]))[1].tolist() == [-1, -1, 0, 1]  # no position stays none
    # in training, about half_speed of the pieces; never in validation
    cfg = replace(SMALL, window=4, steps_per_bar=16, transpose=0, half_speed=0.5)
    rng = np.random.default_rng(0)
    windows = [len(list(lstm.piece_windows(roll, cfg, rng))) for _ in range(200)]
    assert set(windows) == {5, 11} and 70 <= windows.count(11) <= 130  # 24 or 48 steps
    def repeats(x):  # steps whose frame is the one before (the roll's frames all differ from the one before)
        return int((x[1:, :128] == x[:-1, :128]).all(1).sum())

    assert all(repeats(x) >= 1 for x, _, _ in lstm.piece_windows(roll, replace(cfg, half_speed=1), rng))
    assert all(repeats(x) == 0 for x, _, _ in lstm.piece_windows(roll, cfg, rng, augment=False))
    assert len(lstm.val_arrays([roll], replace(cfg, half_speed=1))[0]) == 5
    with pytest.raises(DataError, match="half_speed"):
        replace(cfg, half_speed=1.5).check()


def test_window_batches_are_bounded_and_cover_the_data():
    rng = np.random.default_rng(1)
    rolls = [np.ones((17 + i, 128), np.float32) * 0.5 for i in range(10)]
    batches = list(lstm.window_batches(iter(rolls), SMALL, rng, augment=False, shuffle_buffer=8))
    windows = sum(lstm.examples(len(r), SMALL) for r in rolls)
    assert sum(len(x) for x, _, _ in batches) == windows // 4 * 4
    assert all(x.shape == (4, 8, 132) for x, _, _ in batches)


def _toy_rolls(n=12, steps=40):
    """Rising arpeggios: an easy, deterministic next-frame task."""
    rolls = []
    for i in range(n):
        r = np.zeros((steps, 128), np.float32)
        r[np.arange(steps), 50 + (np.arange(steps) + i) % 4] = 0.8
        rolls.append(r)
    return rolls


@pytest.fixture(scope="module")
def trained():
    from musicgen.keras import tf

    tf.keras.utils.set_random_seed(0)
    cfg = LSTMConfig(layers=1, units=32, dropout=0.0, window=16, batch_size=8, transpose=0, position=False,
                     learning_rate=1e-2)
    model = lstm.compile_model(lstm.build_model(cfg), cfg)
    x, y, w = lstm.val_arrays(_toy_rolls(24, 64), cfg)
    first = model.evaluate(x, y, sample_weight=w, verbose=0)[0]
    model.fit(x, y, sample_weight=w, epochs=150, batch_size=8, verbose=0)
    return cfg, model, first, model.evaluate(x, y, sample_weight=w, verbose=0)[0]


def test_loss_falls_and_the_step_model_matches_the_training_model(trained):
    cfg, model, first, last = trained
    assert last < first * 0.3
    ext = lstm.Extender.from_training_model(cfg, model)
    roll = _toy_rolls(1, 50)[0]
    probs = ext.predict_next(roll, chunk=7)  # chunked with carried state == one pass
    full = model.predict((roll[None, :-1] > 0).astype(np.float32), verbose=0)[0]
    np.testing.assert_allclose(probs, full, atol=1e-5)
    # It learned the arpeggio: the next note is the likeliest.
    assert (probs.argmax(1) == (roll[1:] > 0).argmax(1)).mean() > 0.9


def test_weight_averaging_is_what_validation_and_the_end_see():
    """``ema``: validation scores the moving average of the weights (its momentum warmed up as
    TensorFlow's), the model ends holding it, and each epoch trains on from the raw weights."""
    from musicgen.keras import keras, tf

    tf.keras.utils.set_random_seed(0)
    cfg = LSTMConfig(layers=1, units=8, dropout=0.0, window=16, batch_size=8, transpose=0, position=False,
                     learning_rate=1e-2, ema=0.6)
    model = lstm.compile_model(lstm.build_model(cfg), cfg)
    x, y, w = lstm.val_arrays(_toy_rolls(8, 40), cfg)
    seen = {"begin": [], "end": []}

    class Watch(keras.callbacks.Callback):  # before the averaging: sees the raw weights of each step
        def on_train_batch_begin(self, batch, logs=None):
            seen["begin"].append([v.numpy() for v in self.model.trainable_weights])

        def on_train_batch_end(self, batch, logs=None):
            seen["end"].append([v.numpy() for v in self.model.trainable_weights])

    history = model.fit(x, y, sample_weight=w, epochs=2, batch_size=8, validation_data=(x, y, w), verbose=0,
                        shuffle=False, callbacks=[Watch(), *lstm.callbacks(cfg, model)]).history
    average = [a.copy() for a in seen["end"][0]]
    for n, step in enumerate(seen["end"][1:], 1):  # tf.train.ExponentialMovingAverage's warm-up
        m = min(0.6, (1 + n) / (10 + n))
        average = [m * a + (1 - m) * b for a, b in zip(average, step)]
    for v, a in zip(model.trainable_weights, average):
        np.testing.assert_allclose(v.numpy(), a, rtol=1e-4, atol=1e-6)
    assert model.evaluate(x, y, sample_weight=w, verbose=0)[0] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    per_epoch = len(seen["end"]) // 2
    for raw, resumed in zip(seen["end"][per_epoch - 1], seen["begin"][per_epoch]):
        np.testing.assert_array_equal(raw, resumed)
    assert not np.allclose(seen["end"][-1][0], average[0])  # the average is not the last step


def test_saved_weights_reload_to_the_same_predictions(trained, tmp_path):
    cfg, model, _, _ = trained
    model.save_weights(tmp_path / "w.h5")
    again = lstm.build_model(cfg)
    again.load_weights(tmp_path / "w.h5")
    x = (_toy_rolls(1)[0][None] > 0).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_extend_is_reproducible_and_batching_does_not_change_a_request(trained):
    cfg, model, _, _ = trained
    ext = lstm.Extender.from_training_model(cfg, model)
    short, long = _toy_rolls(1, 3)[0], _toy_rolls(1, 100)[0]  # shorter and longer than the window
    a = ext.extend(short, 20, seeds=5)
    assert a.shape == (20, 128) and a.max() > 0
    np.testing.assert_array_equal(a, ext.extend(short, 20, seeds=5))
    assert not np.array_equal(ext.extend(short, 20, seeds=6, temperature=2.0), a)
    together = ext.extend([short, long], 20, seeds=[5, 9])
    np.testing.assert_allclose(together[0], a)
    np.testing.assert_allclose(together[1], ext.extend(long, 20, seeds=9))
    # Priming with a longer batch mate leaves a short prompt's state as it is alone (up to BLAS's
    # last bits); padding it with silence in front, as a window would, does not.
    p_alone, s_alone = ext.prime([short])
    p_mixed, s_mixed = ext.prime([long, short, long[:50]], block=4)
    assert len(p_mixed) == 4
    np.testing.assert_allclose(p_mixed[1], p_alone[0], atol=1e-6)
    np.testing.assert_allclose(s_mixed[0][1], s_alone[0][0], atol=1e-6)
    padded = np.concatenate([np.zeros((len(long) - len(short), 128), np.float32), short])
    assert np.abs(ext.prime([padded])[1][1][0] - s_alone[1][0]).max() > 1e-3  # the cell state
    # Per-request steps and temperatures in one batch, each as it is alone.
    mixed = ext.extend([long, short], [7, 20], [0.5, 1.0], [9, 5])
    assert mixed[0].shape == (7, 128) and mixed[1].shape == (20, 128)
    np.testing.assert_allclose(mixed[1], a)
    np.testing.assert_allclose(mixed[0], ext.extend(long, 7, 0.5, 9))
    # Notes take the prompt's velocity; low temperature continues the arpeggio.
    cold = ext.extend(long, 12, temperature=0.05, seeds=0)
    np.testing.assert_allclose(cold[cold > 0], 0.8, rtol=1e-5)
    expected = 50 + (np.arange(100, 112) + 0) % 4
    assert (cold.argmax(1) == expected).mean() > 0.8
    with pytest.raises(ValueError, match="temperature"):
        ext.extend(short, 3, temperature=float("nan"))


def test_extend_arguments_are_checked_in_one_place_with_typed_errors(trained):
    from musicgen.errors import ArgumentError

    check = lstm.check_extend_args
    check(1, 1e-3)
    check(lstm.MAX_STEPS, 10)
    check(np.int64(5), 1)
    for steps, temperature, field, message in (
            (5000, 1.0, "steps", "steps must be an integer from 1 to 4096, not 5000"),
            (0, 1.0, "steps", "steps must be an integer from 1 to 4096, not 0"),
            (2.0, 1.0, "steps", "steps must be an integer from 1 to 4096, not 2.0"),
            (4, float("nan"), "temperature", "temperature must be a number in (0, 10], not nan"),
            (4, 0, "temperature", "temperature must be a number in (0, 10], not 0"),
            (4, 10.5, "temperature", "temperature must be a number in (0, 10], not 10.5")):
        with pytest.raises(ArgumentError) as e:
            check(steps, temperature)
        assert (e.value.field, str(e.value)) == (field, message)
    # Extender.extend checks every row with it.
    cfg, model, _, _ = trained
    ext = lstm.Extender.from_training_model(cfg, model)
    with pytest.raises(ArgumentError) as e:
        ext.extend([_toy_rolls(1, 3)[0]] * 2, [3, lstm.MAX_STEPS + 1])
    assert e.value.field == "steps" and e.value.value == lstm.MAX_STEPS + 1


def test_one_input_encoder_for_windows_and_generation():
    """A frame's network input is the same from a training window and from a generated row."""
    roll = (np.random.default_rng(3).random((11, 128)) < 0.1).astype(np.float32)
    x = lstm.features(roll, 5, SMALL)
    np.testing.assert_array_equal(x, lstm.network_input(roll, np.arange(5, 16), SMALL))
    np.testing.assert_array_equal(x[:, 128:].argmax(1), np.arange(5, 16) % SMALL.steps_per_bar)
    (w, _, _), = lstm.piece_windows(roll[:9], SMALL, np.random.default_rng(0), augment=False)
    np.testing.assert_array_equal(w[-8:], lstm.features(roll[:8], 0, SMALL))

    class Recorder:  # a net that records the inputs the engine gives it
        cfg, inputs = SMALL, []

        def zero_state(self, rows):
            return [np.zeros((rows, 1), np.float32)]

        def first_state(self, row):
            return [np.zeros(1, np.float32)]

        def step(self, x, state):
            self.inputs.append(x[0].copy())
            return np.full((len(x), 128), 0.5, np.float32), state

        def sample(self, out, u, temps, prev, beat):
            return lstm.sample_frames(out, u, temps)

    batch = lstm.Batch(Recorder(), 1)
    batch.admit(lstm.Row(roll, 3))
    for _ in range(len(roll) + 2):
        batch.step()
    fed = np.stack(Recorder.inputs)
    np.testing.assert_array_equal(fed[:len(roll)], lstm.features(roll, 0, SMALL))
    np.testing.assert_array_equal(fed[len(roll):], lstm.features(batch.rows[0].out[:2] > 0, len(roll), SMALL))


def test_config_checks_ranges():
    from musicgen.errors import DataError

    with pytest.raises(DataError, match="layers"):
        preset("lstm", "tiny", layers=4)
    with pytest.raises(DataError, match="ema"):
        preset("lstm", "tiny", ema=1.0)
    with pytest.raises(DataError, match="unknown lstm setting"):
        preset("lstm", "tiny", colour="red")
    with pytest.raises(DataError, match="preset"):
        preset("lstm", "huge")


@pytest.mark.parametrize("skip, position, xla", [(True, True, False), (False, False, False), (True, True, True)])
def test_step_matches_the_keras_model(skip, position, xla, monkeypatch):
    """The numpy step (one row, or small nets) and the XLA step (several rows of a large net;
    forced here on a small one) against the compiled Keras model: one cell, two backends."""
    from musicgen.lstm import step

    if xla:
        monkeypatch.setattr(step, "XLA_MIN_WEIGHTS", 0)
    cfg = LSTMConfig(layers=2, units=16, window=8, position=position, steps_per_bar=4, skip=skip)
    ext = lstm.Extender.from_training_model(cfg, lstm.build_model(cfg))
    x = np.random.default_rng(0).random((3, 6, lstm.n_features(cfg))).astype(np.float32)
    probs, state = ext._run(x, ext.zero_state(3))
    for rows in (3, 1):
        s = ext.zero_state(rows)
        for t in range(6):
            p, s = ext.step(x[:rows, t], s)
        np.testing.assert_allclose(p, probs[:rows, -1], atol=1e-5)
        for a, b in zip(s, state):
            np.testing.assert_allclose(a, b[:rows], atol=1e-5)
    assert (ext.net.batched is not None) == xla
