"""musicgen.metrics: hand-made rolls with answers worked out by hand."""
import json
import math

import numpy as np
import pytest

from musicgen.metrics import (CopyLast, FrameScores, PitchPrior, active_units, binarize, change_rate,
                              clash_share, continuation_stats, evaluate, onsets, pitch_class_cosine,
                              pitch_class_histogram, pitch_class_similarity, sample_stats)


def empty(t):
    return np.zeros((t, 128), np.float32)


def test_binarize():
    r = empty(2)
    r[0, 60] = 0.01
    b = binarize(r)
    assert b.dtype == bool and b.sum() == 1 and b[0, 60]


def test_bay_accuracy_precision_recall_f1_mae_by_hand():
    p = np.zeros((1, 128))
    y = np.zeros((1, 128))
    p[0, [0, 1]] = 0.9; y[0, [0, 1]] = 1  # TP, TP
    p[0, 2] = 0.6                          # FP
    p[0, 3] = 0.2; y[0, 3] = 1             # FN
    r = FrameScores().add(p, y).result()
    assert (r["tp"], r["fp"], r["fn"], r["frames"]) == (2, 1, 1, 1)
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(4 / 6)
    assert r["mae"] == pytest.approx((0.1 + 0.1 + 0.6 + 0.8) / 128)
    nll = -2 * math.log(0.9) - math.log(0.4) - math.log(0.2) - 124 * math.log(1 - 1e-7)
    assert r["nll"] == pytest.approx(nll)


def test_threshold_is_inclusive_and_configurable():
    p = np.full((1, 128), 0.5)
    y = np.ones((1, 128))
    assert FrameScores().add(p, y).result()["tp"] == 128
    assert FrameScores(threshold=0.6).add(p, y).result()["fn"] == 128


def test_half_everywhere_is_128_ln2_nats_per_frame():
    rng = np.random.default_rng(0)
    y = rng.random((7, 128)) < 0.1
    r = FrameScores().add(np.full((7, 128), 0.5), y).result()
    assert r["nll"] == pytest.approx(128 * math.log(2))
    assert r["mae"] == pytest.approx(0.5)
    assert r["frames"] == 7


def test_perfect_predictor_nll_near_zero_accuracy_one():
    rng = np.random.default_rng(1)
    y = (rng.random((20, 128)) < 0.1).astype(np.float64)
    r = FrameScores().add(y, y).result()  # p in {0, 1}: clipped to [1e-7, 1 - 1e-7]
    assert 0 < r["nll"] < 128 * 1.1e-7
    assert r["accuracy"] == r["precision"] == r["recall"] == r["f1"] == 1.0
    assert r["mae"] == 0.0


def test_silence_predicted_silence_is_undefined_and_accumulates_over_pieces():
    s = FrameScores()
    s.add(np.zeros((3, 128)), np.zeros((3, 128)))
    r = s.result()  # nothing to count: every ratio is NaN (undefined), not a made-up 0 or 1
    assert all(math.isnan(r[k]) for k in ("accuracy", "precision", "recall", "f1"))
    assert r["frames"] == 3 and r["mae"] == 0.0
    p = np.zeros((2, 128)); y = np.zeros((2, 128))
    p[0, 5] = 1; y[0, 5] = 1; y[1, 6] = 1  # TP=1, FN=1 in a second piece
    r = s.add(p, y).result()
    assert r["frames"] == 5 and r["accuracy"] == pytest.approx(0.5)
    other = FrameScores().add(p, y)
    merged = FrameScores().add(np.zeros((3, 128)), np.zeros((3, 128))).merge(other).result()
    assert merged == r
    json.dumps(r)


def test_frame_scores_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        FrameScores().add(np.zeros((2, 128)), np.zeros((3, 128)))


def test_copylast_alternating_and_held_pitches():
    r = empty(5)
    r[[0, 2, 4], 60] = 0.8   # on off on off on: on->off twice, off->on twice
    r[:, 64] = 1.0           # held throughout: on->on four times
    m = CopyLast().fit([r])
    assert m.p_on_on[60] == pytest.approx((0 + 1) / (2 + 2))   # 0.25
    assert m.p_on_off[60] == pytest.approx((2 + 1) / (2 + 2))  # 0.75
    assert m.p_on_on[64] == pytest.approx((4 + 1) / (4 + 2))   # 5/6
    assert m.p_on_off[64] == pytest.approx(0.5)                # never seen off: 1/2
    assert m.p_on_on[0] == pytest.approx(0.5)                  # never on
    assert m.p_on_off[0] == pytest.approx(1 / 6)               # off->off four times
    pred = m.predict(r)
    assert pred.shape == (4, 128) and pred.dtype == np.float32
    assert pred[:, 60] == pytest.approx([0.25, 0.75, 0.25, 0.75])


def test_copylast_thresholded_copies_previous_frame_and_evaluate_by_hand():
    r = empty(6)
    r[:3, 62] = 1.0  # on on on off off off
    m = CopyLast().fit([r])
    assert m.p_on_on[62] == pytest.approx(3 / 5) and m.p_on_off[62] == pytest.approx(1 / 4)
    assert m.p_on_off[0] == pytest.approx(1 / 7)
    test = empty(5)
    test[[1, 2], 62] = 1.0
    assert np.array_equal(m.predict(test)[:, 62] >= 0.5, binarize(test)[:-1, 62])

    res = evaluate(m.predict, [r])
    # pitch 62: p = .6 .6 .6 .25 .25 vs targets on on off off off -> TP 2, FP 1, FN 0
    assert (res["tp"], res["fp"], res["fn"], res["frames"]) == (2, 1, 0, 5)
    assert res["accuracy"] == pytest.approx(2 / 3)
    nll = (-2 * math.log(0.6) - math.log(0.4) - 2 * math.log(0.75) - 127 * 5 * math.log(6 / 7)) / 5
    assert res["nll"] == pytest.approx(nll)


def test_pitch_prior_frequencies():
    a = empty(4); a[:3, 60] = 1.0
    b = empty(6); b[2, 60] = 0.3; b[:, 72] = 1.0
    m = PitchPrior().fit([a, b])
    assert m.p_on[60] == pytest.approx((4 + 1) / (10 + 2))
    assert m.p_on[72] == pytest.approx((6 + 1) / (10 + 2))
    assert m.p_on[0] == pytest.approx(1 / 12)
    pred = m.predict(empty(3))
    assert pred.shape == (2, 128) and np.allclose(pred, m.p_on[None])


def test_baselines_need_fit():
    with pytest.raises(RuntimeError):
        CopyLast().predict(empty(3))
    with pytest.raises(RuntimeError):
        PitchPrior().predict(empty(3))


def test_evaluate_skips_one_frame_pieces_and_checks_shape():
    calls = []

    def predict(roll):
        calls.append(roll.shape[0])
        return np.full((roll.shape[0] - 1, 128), 0.5)

    res = evaluate(predict, [empty(1), empty(3), empty(0)])
    assert calls == [3] and res["frames"] == 2
    assert res["nll"] == pytest.approx(128 * math.log(2))
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda r: np.zeros((r.shape[0], 128)), [empty(3)])


def test_sample_stats_by_hand():
    a = empty(8)
    a[0:4, 60] = 0.5                    # C, one note, 4 cells
    a[[0, 1, 4, 5], 64] = 1.0           # E, two notes, 4 cells
    a[2, 67] = 0.25                     # G, one note, 1 cell; steps 6-7 silent
    b = empty(4)                        # empty piece
    c = empty(4); c[:, 48] = 0.5        # low C, one note, 4 cells
    s = sample_stats([a, b, c])
    json.dumps(s)
    assert s["pieces"] == 3 and s["steps"] == 16
    assert s["empty_fraction"] == pytest.approx(1 / 3)
    assert s["notes_per_step"] == pytest.approx(5 / 16)
    assert s["polyphony"] == pytest.approx(13 / 10)     # 13 sounding cells over 10 sounding steps
    assert s["silence_fraction"] == pytest.approx(6 / 16)
    assert s["pitch_range"] == pytest.approx((7 + 0) / 2)
    assert (s["pitch_min"], s["pitch_max"]) == (48, 67)
    hist = np.zeros(12); hist[0] = 8 / 13; hist[4] = 4 / 13; hist[7] = 1 / 13
    assert s["pitch_class_histogram"] == pytest.approx(list(hist))
    assert s["mean_velocity"] == pytest.approx((2 + 4 + 0.25 + 2) / 13)
    assert onsets(a)[:, 64].nonzero()[0].tolist() == [0, 4]


def test_sample_stats_all_empty_is_nan_where_undefined_and_json_safe():
    s = sample_stats([empty(3)])
    assert s["empty_fraction"] == 1.0 and s["silence_fraction"] == 1.0 and s["notes_per_step"] == 0.0
    assert all(math.isnan(s[k]) for k in ("polyphony", "pitch_range", "mean_velocity"))
    assert s["pitch_min"] is None and all(math.isnan(x) for x in s["pitch_class_histogram"])
    assert json.loads(json.dumps(s))["pieces"] == 1
    none = sample_stats([])
    assert none["pieces"] == 0 and math.isnan(none["empty_fraction"]) and math.isnan(none["notes_per_step"])


def test_change_rate():
    prompt = empty(3); prompt[-1, [60, 64]] = 1.0
    cont = empty(5)
    cont[0, [60, 64]] = 1.0          # same as prompt's last frame
    cont[1, [60, 64]] = 0.3          # same pitches, softer: not a change
    cont[2:4, [60, 67]] = 1.0        # change, then hold
    # step 4 silent: change
    assert change_rate(prompt, cont) == pytest.approx(2 / 5)
    assert change_rate(prompt[-1], cont) == pytest.approx(2 / 5)
    held = np.repeat(prompt[-1:], 6, axis=0)
    assert change_rate(prompt, held) == 0.0
    assert math.isnan(change_rate(prompt, empty(0)))


def test_pitch_class_similarity():
    a = empty(2); a[0, 60] = 1; a[1, 64] = 1           # C, E
    up = empty(2); up[0, 72] = 1; up[1, 76] = 1        # C, E an octave up
    other = empty(2); other[:, 62] = 1; other[:, 66] = 1  # D, F#
    c_only = empty(1); c_only[0, 48] = 1
    assert pitch_class_similarity(a, up) == pytest.approx(1.0)
    assert pitch_class_similarity(a, other) == pytest.approx(0.0)
    assert pitch_class_similarity(a, c_only) == pytest.approx(1 / math.sqrt(2))
    # one answer for silence, wherever the cosine is taken: undefined (NaN)
    assert math.isnan(pitch_class_similarity(empty(2), empty(3)))
    assert math.isnan(pitch_class_similarity(a, empty(3)))
    assert math.isnan(pitch_class_cosine(np.zeros(12), np.ones(12)))
    assert pitch_class_cosine(pitch_class_histogram(a), pitch_class_histogram(up)) == pytest.approx(1.0)


def test_active_units():
    z = np.array([[3.0, 0, 0.0, -1],
                  [3.0, 1, 0.1, 1],
                  [3.0, 0, 0.0, -1],
                  [3.0, 1, 0.1, 1]])  # variances 0, 0.25, 0.0025, 1
    assert active_units(z) == 2
    assert active_units(z, threshold=0.001) == 3
    assert active_units(np.zeros((0, 4))) == 0


def test_roll_stats_by_hand():
    from musicgen.metrics import roll_stats

    r = empty(8)
    r[0:4, [60, 64, 67]] = 1   # C major triad for 4 steps: 3 onsets
    r[4:6, 62] = 1             # D for 2 steps: 1 onset; steps 6, 7 silent
    ref = np.zeros(12)
    ref[0] = 1                 # a reference histogram of C only
    s = roll_stats(r, ref)
    assert s["notes_per_step"] == pytest.approx(4 / 8)
    assert s["polyphony"] == pytest.approx((4 * 3 + 2) / 6)
    assert s["silence_fraction"] == pytest.approx(2 / 8)
    assert s["pitch_range"] == 7.0
    assert s["n_pitch_classes_used"] == 4.0  # C, D, E, G
    assert s["scale_consistency"] == 1.0     # all in C major
    hist = np.zeros(12)
    hist[[0, 2, 4, 7]] = [4, 2, 4, 4]
    assert s["pitch_class_similarity"] == pytest.approx(4 / np.linalg.norm(hist))
    assert roll_stats(r)["pitch_class_similarity"] is None
    chromatic = empty(12)
    chromatic[np.arange(12), 60 + np.arange(12)] = 1
    assert roll_stats(chromatic)["scale_consistency"] == pytest.approx(7 / 12)
    silent = roll_stats(empty(4), ref)
    assert {k: v for k, v in silent.items() if not math.isnan(v)} == {
        "notes_per_step": 0.0, "silence_fraction": 1.0, "n_pitch_classes_used": 0.0}
    assert set(silent) == {"notes_per_step", "polyphony", "silence_fraction", "pitch_range",
                           "n_pitch_classes_used", "scale_consistency", "pitch_class_similarity"}


def test_scale_consistency_counts_notes_as_muspy_does():
    from musicgen.metrics import roll_stats

    r = empty(12)
    r[0, 60] = r[1, 64] = r[2, 67] = 1  # C, E, G: one short note each
    r[3:12, 61] = 1                     # C#: one note held 9 steps
    # muspy counts notes: C major holds 3 of 4. Counting sounding cells would give D major's
    # C#, E, G = 11 of 12 cells instead.
    assert roll_stats(r)["scale_consistency"] == pytest.approx(3 / 4)
    r[6, 61] = 0                        # C# struck twice: 5 notes, D major's C#, C#, E, G best
    assert roll_stats(r)["scale_consistency"] == pytest.approx(4 / 5)
    assert roll_stats(r)["polyphony"] == 1.0 and roll_stats(r)["n_pitch_classes_used"] == 4.0


def test_compare_to_corpus_percentile_ranges():
    from musicgen.metrics import ROLL_STATS, compare_to_corpus, format_comparison

    corpus = []
    for k in range(1, 11):  # polyphony 1..10
        r = empty(4)
        r[:, 60:60 + k] = 1
        corpus.append(r)
    good = [corpus[4], corpus[5]]  # polyphony 5 and 6: mean 5.5
    c = compare_to_corpus(good, corpus)
    assert c["percentiles"] == [10.0, 90.0] and (c["samples"], c["corpus"]) == (2, 10)
    poly = c["stats"]["polyphony"]
    assert (poly["corpus_low"], poly["corpus_median"], poly["corpus_high"]) == pytest.approx((1.9, 5.5, 9.1))
    assert poly["samples"] == 5.5 and poly["in_range"]
    assert set(c["stats"]) == set(ROLL_STATS)
    assert c["pitch_class_histogram"]["cosine"] > 0.5
    assert sum(c["pitch_class_histogram"]["corpus"]) == pytest.approx(1)
    bad = compare_to_corpus([corpus[9], corpus[9], empty(4)], corpus)  # a silent sample counts
    assert not bad["all_in_range"] and not bad["stats"]["silence_fraction"]["in_range"]
    assert bad["stats"]["silence_fraction"]["samples"] == pytest.approx(1 / 3)
    # ... where it has the statistic; its undefined polyphony is left out of the mean, not a 0
    assert bad["stats"]["polyphony"]["samples"] == 10.0 and bad["stats"]["polyphony"]["samples_defined"] == 2
    assert bad["stats"]["silence_fraction"]["samples_defined"] == 3
    silent = compare_to_corpus([empty(4)], corpus)
    assert math.isnan(silent["stats"]["polyphony"]["samples"]) and not silent["stats"]["polyphony"]["in_range"]
    assert math.isnan(silent["pitch_class_histogram"]["cosine"])
    json.dumps(silent)
    json.dumps(c)
    table = format_comparison(c)
    assert "| polyphony | 5.500 | 1.900 | 5.500 | 9.100 | yes |" in table
    with pytest.raises(ValueError):
        compare_to_corpus(good, [])


def frames(*chords, width=128):
    """A roll with one frame per chord (a list of MIDI pitches; [] is a silent frame)."""
    r = np.zeros((len(chords), width), np.float32)
    for t, chord in enumerate(chords):
        r[t, chord] = 0.5
    return r


def test_clash_share_by_hand():
    assert clash_share(frames([60, 64, 67])) == 0.0  # C major triad
    assert clash_share(frames([67, 71, 74, 77])) == 0.0  # G7: B-D-F, no neighbours
    assert clash_share(frames([60, 61])) == 1.0  # C + C#
    assert clash_share(frames([60, 83])) == 1.0  # C4 + B5: pitch classes 0 and 11 are a semitone apart
    assert clash_share(frames([60, 73 + 12])) == 1.0  # a minor ninth (plus an octave) is a clash too
    assert clash_share(frames([60, 64, 67, 71])) == 1.0  # Cmaj7: B-C
    assert clash_share(frames([60, 72, 84])) == 0.0  # octaves of one pitch class
    assert math.isnan(clash_share(empty(3))) and math.isnan(clash_share(empty(0)))  # silence: undefined
    # 2 clashing of 4 sounding frames; silent frames count in neither
    assert clash_share(frames([60, 64, 67], [], [60, 61], [62, 63, 70], [], [48])) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="2-D"):
        clash_share(np.zeros(128))


def test_continuation_stats_pools_frames_and_averages_pairs():
    p1, p2 = frames([60, 64, 67], [60, 64, 67]), frames([62, 65, 69])
    model = [frames([60, 61], [60, 64, 67], []), frames([62, 63], [62, 63])]  # 3 of 4 sounding frames clash
    real = [frames([60, 64, 67], [64, 65, 67], [60, 64]), frames([62, 65, 69], [62, 65])]  # 1 of 5
    s = continuation_stats([p1, p2], model, real)
    assert s["pairs"] == 2
    m, r = s["model"], s["real"]
    assert (m["clash_share"], m["frames"], m["sounding_frames"]) == (3 / 4, 5, 4)
    assert (r["clash_share"], r["frames"], r["sounding_frames"]) == (1 / 5, 5, 5)
    assert s["clash_ratio"] == pytest.approx((3 / 4) / (1 / 5))
    assert m["polyphony"] == pytest.approx((2 + 3 + 2 + 2) / 4) and m["silence_fraction"] == pytest.approx(1 / 5)
    assert r["polyphony"] == pytest.approx((3 + 3 + 2 + 3 + 2) / 5) and r["silence_fraction"] == 0.0
    assert m["prompt_similarity"] == pytest.approx(
        (pitch_class_similarity(p1, model[0]) + pitch_class_similarity(p2, model[1])) / 2)
    assert r["prompt_similarity"] == pytest.approx(
        (pitch_class_similarity(p1, real[0]) + pitch_class_similarity(p2, real[1])) / 2)
    assert m["change_rate"] == pytest.approx((change_rate(p1, model[0]) + change_rate(p2, model[1])) / 2)
    json.dumps(s)
    assert "next_frame_clash_ratio" not in s
    nexts = [frames([60, 64], [61, 62], [60]), frames([62], [62, 63])]  # 2 of 5 sounding frames clash
    assert continuation_stats([p1, p2], model, real, nexts)["next_frame_clash_ratio"] == pytest.approx((2 / 5) / (1 / 5))


def test_continuation_stats_undefined_is_nan():
    p = frames([60])
    silent = continuation_stats([p, p], [empty(2), empty(2)], [frames([60, 64]), empty(1)])
    assert math.isnan(silent["model"]["clash_share"]) and math.isnan(silent["model"]["polyphony"])
    assert math.isnan(silent["model"]["prompt_similarity"])  # no pair defined
    assert silent["real"]["prompt_similarity"] == pytest.approx(pitch_class_similarity(p, frames([60, 64])))
    assert silent["real"]["clash_share"] == 0.0 and math.isnan(silent["clash_ratio"])  # real has no clash
    none = continuation_stats([], [], [])
    assert none["pairs"] == 0 and math.isnan(none["model"]["clash_share"]) and math.isnan(none["clash_ratio"])
    with pytest.raises(ValueError, match="one of each per pair"):
        continuation_stats([p], [p, p], [p])
    with pytest.raises(ValueError, match="next frames must be 2-D"):
        continuation_stats([p], [p], [p], [np.zeros(128)])
    with pytest.raises(ValueError, match="one per pair"):
        continuation_stats([p], [p], [p], [p, p])
    assert math.isnan(continuation_stats([], [], [], [])["next_frame_clash_ratio"])


def test_accuracy_counts_the_decided_frames_when_a_model_gives_them():
    """A joint model's conditionals peek at the target frame's lower notes: its accuracy counts
    the frames it decides (decide_fn), while its NLL still comes from the probabilities."""
    from musicgen.metrics import evaluate

    roll = np.zeros((3, 128), np.float32)
    roll[:, 60] = 1
    probs = lambda r: np.full((len(r) - 1, 128), 0.9, np.float32)  # noqa: E731 - every pitch "likely"
    decide = lambda r: (r[:-1] > 0).astype(np.float32)  # noqa: E731 - decides the last frame again
    plain, decided = evaluate(probs, [roll]), evaluate(probs, [roll], decide_fn=decide)
    assert plain["nll"] == decided["nll"]
    assert plain["accuracy"] == pytest.approx(1 / 128) and decided["accuracy"] == 1.0


def test_evaluate_passes_each_piece_its_bar_positions():
    """With ``positions`` (one per roll) the predictor and the decider get each piece's own; the
    baselines, called without, get the roll alone."""
    from musicgen.metrics import evaluate

    rolls = [empty(4), empty(1), empty(6)]
    positions = [np.arange(4) % 3, np.zeros(1, np.int64), np.arange(6) % 12]
    seen = []

    def predict(roll, pos):
        seen.append(("p", len(roll), tuple(pos)))
        return np.full((len(roll) - 1, 128), 0.5)

    def decide(roll, pos):
        seen.append(("d", len(roll), tuple(pos)))
        return np.zeros((len(roll) - 1, 128))

    evaluate(predict, rolls, decide_fn=decide, positions=positions)
    assert seen == [("p", 4, (0, 1, 2, 0)), ("d", 4, (0, 1, 2, 0)),  # the one-frame piece is skipped
                    ("p", 6, tuple(range(6))), ("d", 6, tuple(range(6)))]
    assert evaluate(lambda r: np.full((len(r) - 1, 128), 0.5), rolls)["frames"] == 8
