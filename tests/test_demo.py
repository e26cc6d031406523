"""musicgen.demo's progress lines (the demo itself runs in test_cli, as a user runs it)."""
import time

from musicgen.demo import _duration, _Steps


def test_steps_print_start_end_and_a_heartbeat_while_a_long_step_runs(capsys, monkeypatch):
    monkeypatch.setattr(_Steps, "HEARTBEAT_S", 0.2)
    step = _Steps(2)
    with step("quick"):
        pass
    with step("slow", heartbeat=True):
        time.sleep(0.5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["[1/2] quick", "[1/2] done in 0 s", "[2/2] slow"]
    # about two heartbeats (0.2 s and 0.4 s); any number >= 1 on a busy machine
    assert lines[3:-1] and all(x in ("[2/2] ... 0 s", "[2/2] ... 1 s") for x in lines[3:-1]), lines
    assert lines[-1] in ("[2/2] done in 0 s", "[2/2] done in 1 s")
    with step("quiet once it ended", heartbeat=True):
        pass
    time.sleep(0.3)
    assert capsys.readouterr().out.splitlines() == ["[3/2] quiet once it ended", "[3/2] done in 0 s"]


def test_duration():
    assert [_duration(s) for s in (0.4, 59.6, 61, 3725)] == ["0 s", "1 min 0 s", "1 min 1 s", "62 min 5 s"]


def test_the_lstm_headline_says_how_often_its_continuations_clash():
    from musicgen.demo import _headline

    scores = {"kind": "lstm", "nll": 2.29219, "nll_vs_copy_last": 0.3834,
              "music": {"pairs": 32, "model": {"clash_share": 0.151}, "real": {"clash_share": 0.0629}}}
    assert _headline(scores) == ("nll 2.292 nats/frame, 0.38 x copy_last's; continuations clash in 15.1% of "
                                 "frames (the real music: 6.3%)")
    scores["music"] = {"pairs": 0}  # no test piece long enough for a prompt and its continuation
    assert _headline(scores) == "nll 2.292 nats/frame, 0.38 x copy_last's"


def test_the_demo_writes_continuations_and_pieces_to_listen_to(tmp_path):
    """The demo's extend/ and generated/ folders (the trained models: the golden runs)."""
    import os
    import wave

    from run_factory import random_rolls, write_dataset

    from musicgen.demo import _extend, _generate

    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")
    data = write_dataset(str(tmp_path / "ds"), {"test": random_rolls(2, steps=128)})
    assert len(_extend(f"{golden}/lstm", data, str(tmp_path / "extend"))) == 2
    for piece in ("test-0", "test-1"):  # 64 prompt steps + 64 generated at 120 bpm: 16 s
        with wave.open(str(tmp_path / "extend" / f"{piece}-extended.wav")) as w:
            assert 16.0 <= w.getnframes() / w.getframerate() <= 17.0
    assert _generate(f"{golden}/vae", str(tmp_path / "gen"))["pieces"] == 8
    wavs = sorted(p for p in os.listdir(tmp_path / "gen") if p.endswith(".wav"))
    assert wavs == [f"piece-{i:03d}.wav" for i in range(8)]
