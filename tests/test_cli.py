"""The musicgen command, run as a user runs it: subprocesses, real files, its own local Ray."""
import json
import re

import pytest

from musicgen.errors import MusicgenError
from musicgen.vae import decoder_config as vae_decoder_config

from conftest import run_cli


def one_line_error(p):
    assert p.returncode != 0, p.stdout
    # progress bars (tqdm, on stderr) are not messages
    lines = [x for x in p.stderr.strip().splitlines() if not re.search(r"\d+%\|", x)]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["prepare", "/no/such/folder", "out"], "/no/such/folder"),
    (["prepare", ".", "out", "--shape", "12"], "--shape"),
    (["prepare", ".", "out", "--shape", "0x128"], "--shape"),
    (["prepare", ".", "out", "--split", "0.5,0.6,0.1"], "--split"),
    (["prepare", ".", "out", "--steps-per-beat", "0"], "--steps-per-beat"),
    (["prepare", ".", "out", "--steps-per-second", "0"], "--steps-per-second"),
    (["prepare", ".", "out", "--split-file", "/no/such/splits.csv"], "/no/such/splits.csv"),
    (["show", "/no/such.mid", "--png", "x.png"], "/no/such.mid"),
    (["corpus", "mozart", "out"], "mozart"),
    (["train", "vae", "--data", ".", "--out", "o", "--no-meter"], "--no-meter"),  # an LSTM setting
    (["train", "vae", "--data", ".", "--out", "o", "--no-nade-changes"], "--no-nade-changes"),
    (["train", "vae", "--data", ".", "--out", "o", "--nade-neighbours", "4"], "nade_neighbours"),  # tiny: conv decoder
    (["train", "lstm", "--data", ".", "--out", "o", "--nade-neighbours", "-1"], "nade_neighbours"),
    (["train", "lstm", "--data", ".", "--out", "o", "--nade-beat", "4,x"], "--nade-beat"),
    (["train", "lstm", "--data", ".", "--out", "o", "--own-draws", "1.5"], "own_draws"),
    (["train", "vae", "--data", ".", "--out", "o", "--own-draws", "0.3"], "--own-draws"),
    (["train", "lstm", "--data", ".", "--out", "o", "--bars", "16"], "--bars"),  # a VAE setting
    (["train", "vae", "--data", ".", "--out", "o", "--conductor"], "conductor_bar_steps"),  # tiny: conv decoder
    (["train", "vae", "--data", ".", "--out", "o", "--frame-dropout", "0.5"], "decoder_frame_dropout"),  # conv
    (["train", "vae", "--data", ".", "--out", "o", "--preset", "joint", "--frame-dropout", "1.5"],
     "decoder_frame_dropout"),
    (["train", "lstm", "--data", ".", "--out", "o", "--frame-dropout", "0.5"], "--frame-dropout"),
    (["train", "lstm", "--data", ".", "--out", "o", "--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_arguments_give_one_line(args, words, tmp_path):
    assert words in one_line_error(run_cli(*args))


def test_train_options_reach_the_config():
    from musicgen.cli import build_parser, train_config

    def config(*args):
        return train_config(build_parser().parse_args(["train", *args, "--data", "d", "--out", "o"]))

    cfg = config("vae", "--preset", "joint", "--bars", "16", "--conductor", "--batch-size", "8")
    assert (cfg.height, cfg.conductor_bar_steps, cfg.batch_size, cfg.decoder) == (256, 16, 8, "lstm")
    assert config("vae", "--preset", "joint").conductor_bar_steps == 0  # flat, 4 bars: the preset's
    assert config("vae", "--preset", "joint", "--encoder", "lstm").encoder == "lstm"
    assert config("vae", "--preset", "joint").decoder_frame_dropout == 0.3
    assert config("vae", "--preset", "joint", "--frame-dropout", "0.6").decoder_frame_dropout == 0.6
    with pytest.raises(MusicgenError, match="--encoder"):
        config("lstm", "--preset", "joint", "--encoder", "lstm")
    assert config("lstm", "--preset", "joint", "--units", "64").units == 64
    assert config("lstm", "--preset", "joint").nade_changes  # the presets' NADE reads the frame's changes
    assert not config("lstm", "--preset", "joint", "--no-nade-changes").nade_changes
    assert config("lstm", "--preset", "tiny").nade_neighbours == 13
    assert config("lstm", "--preset", "tiny", "--nade-neighbours", "0").nade_neighbours == 0
    assert not config("lstm", "--preset", "joint").nade_pitch_classes  # off in the presets
    assert config("lstm", "--preset", "joint", "--nade-pitch-classes").nade_pitch_classes
    with pytest.raises(MusicgenError, match="nade_pitch_classes"):  # tiny's decoder is convolutional
        config("vae", "--preset", "tiny", "--nade-pitch-classes")
    with pytest.raises(MusicgenError, match="--no-nade-changes"):  # off already, and there is no NADE
        config("vae", "--preset", "tiny", "--no-nade-changes")
    head = config("vae", "--preset", "joint", "--nade-pitch-classes", "--nade-neighbours", "25")
    assert (head.nade_pitch_classes, head.nade_neighbours) == (True, 25)  # the VAE's lstm decoder's NADE
    assert vae_decoder_config(head).nade_pitch_classes
    assert not config("lstm", "--preset", "joint").nade_beat  # off in the presets
    assert config("lstm", "--preset", "joint", "--nade-beat", "4").nade_beat == (4,)
    assert config("lstm", "--preset", "joint", "--nade-beat", "4,2").nade_beat == (4, 2)
    with pytest.raises(MusicgenError, match="--nade-beat"):
        config("vae", "--preset", "joint", "--nade-beat", "4")
    assert config("lstm", "--preset", "tiny", "--ema", "0.998").ema == 0.998
    assert config("lstm", "--preset", "tiny", "--half-speed", "0.25").half_speed == 0.25
    assert config("lstm", "--preset", "joint", "--own-draws", "0.3").own_draws == 0.3
    assert config("lstm", "--preset", "joint").own_draws == 0  # off in the presets
    with pytest.raises(MusicgenError, match="--half-speed"):
        config("vae", "--preset", "joint", "--half-speed", "0.25")
    assert config("lstm", "--preset", "tiny").steps_per_epoch is None  # the corpus's size decides
    assert config("lstm", "--preset", "tiny", "--steps-per-epoch", "20").steps_per_epoch == 20
    assert config("vae", "--preset", "joint", "--steps-per-epoch", "7").steps_per_epoch == 7


def test_help_for_every_command():
    from musicgen.cli import COMMANDS

    assert [c[0] for c in COMMANDS] == ["corpus", "prepare", "show", "train", "tune", "serve", "evaluate",
                                        "extend", "generate", "interpolate", "benchmark", "demo"]
    nested = [["corpus", "bach"], ["corpus", "other"], ["corpus", "poly"], ["benchmark", "poly"]]
    for cmd in [[c[0]] for c in COMMANDS] + nested:
        p = run_cli(*cmd, "--help")
        assert p.returncode == 0 and "usage: musicgen " + " ".join(cmd) in p.stdout and "--verbose" in p.stdout, \
            p.stderr


@pytest.mark.parametrize("args", [["-v", "corpus", "mozart", "out"], ["corpus", "mozart", "out", "--verbose"]])
def test_verbose_before_or_after_the_command(args):
    assert "mozart" in one_line_error(run_cli(*args))


def test_corpus_prepare_show(tmp_path):
    p = run_cli("corpus", "bach", tmp_path / "bach", "--limit", "6")
    assert p.returncode == 0, p.stderr
    mids = sorted((tmp_path / "bach").glob("*.mid"))
    assert len(mids) == 6 and all(m.read_bytes().startswith(b"MThd") for m in mids)
    (tmp_path / "bach" / "broken.mid").write_bytes(b"MThd\0\0\0\6garbage")
    p = run_cli("prepare", tmp_path / "bach", tmp_path / "ds", "--split", "0.5,0.5,0", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert "6 pieces from 7 files (1 skipped)" in p.stdout and "broken.mid" in p.stdout
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    # splits are drawn over the 7 files, before reading: 4 + 3, and the broken one is lost from its split
    assert man["counts"]["train"] + man["counts"]["val"] == 6 and man["counts"]["test"] == 0
    assert {man["counts"]["train"], man["counts"]["val"]} <= {2, 3, 4}
    p = run_cli("show", tmp_path / "ds", "--png", tmp_path / "piece.png", "--split", "val")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "piece.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = run_cli("show", mids[0], "--png", tmp_path / "file.png")
    assert p.returncode == 0 and (tmp_path / "file.png").stat().st_size > 5000
    p = run_cli("show", tmp_path / "ds", "--png", tmp_path / "x.png", "--piece", "nope")
    assert "nope" in one_line_error(p)
    # Everything unreadable: non-zero exit, one line, no manifest left behind.
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.mid").write_text("not midi")
    assert "none of 1 MIDI files" in one_line_error(run_cli("prepare", tmp_path / "junk", tmp_path / "ds2"))
    assert not (tmp_path / "ds2" / "manifest.json").exists()


def test_demo_writes_dataset_pictures_and_summary(tmp_path):
    p = run_cli("demo", "--out", tmp_path / "demo", "--limit", "12", "--data-only")
    assert p.returncode == 0, p.stderr
    # musicgen's own progress: a line as each step starts and ends, and nothing from Ray's workers
    steps = [x for x in p.stdout.splitlines() if x.startswith("[")]
    assert [x.split()[0] for x in steps] == ["[1/3]", "[1/3]", "[2/3]", "[2/3]", "[3/3]", "[3/3]"], p.stdout
    assert all(" done in " in x for x in steps[1::2]) and "(pid=" not in p.stdout + p.stderr
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["counts"]["pieces"] == 12
    pngs = sorted(x.name for x in (out / "png").glob("*.png"))
    assert "overview.png" in pngs and any(n.startswith("test-") for n in pngs)
    assert (out / "dataset" / "manifest.json").exists() and (out / "summary.md").read_text().startswith("# musicgen")
