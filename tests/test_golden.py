"""Generation is pinned: the same runs, prompt and seeds give byte-identical MIDI to what musicgen
made before the architecture change (a27a66c), through the CLI and through HTTP.

``tests/data/golden/`` holds two small trained runs (an LSTM of 2 x 24 units, a VAE of 8 latent
units), a prompt chorale and the SHA-256 of every output, made by ``make_golden.py`` beside them.
A change that is meant to alter generation regenerates them on purpose and says so.
"""
import hashlib
import json
import os
import wave

import mido
import pytest

from conftest import run_cli
from test_serve import extend, request

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")
DIGESTS = json.load(open(os.path.join(GOLDEN, "digests.json")))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_cli_extend_and_generate_are_byte_identical(tmp_path):
    e, g = DIGESTS["extend"], DIGESTS["generate"]
    out = tmp_path / "e.mid"
    r = run_cli("extend", f"{GOLDEN}/lstm", f"{GOLDEN}/prompt.mid", "--steps", e["steps"],
                "--temperature", e["temperature"], "--seed", e["seed"], "--out", out, "--wav", tmp_path / "e.wav")
    assert r.returncode == 0, r.stderr
    assert sha(out.read_bytes()) == DIGESTS["cli"]["extend"]
    with wave.open(str(tmp_path / "e.wav")) as w:  # prompt + continuation, as long as the MIDI file plays
        assert abs(w.getnframes() / w.getframerate() - mido.MidiFile(out).length) < 1.0
    r = run_cli("generate", f"{GOLDEN}/vae", "--n", g["n"], "--seed", g["seed"], "--out", tmp_path / "gen")
    assert r.returncode == 0, r.stderr
    made = {f"generate/{p.name}": sha(p.read_bytes()) for p in sorted((tmp_path / "gen").glob("*.mid"))}
    assert made == {k: v for k, v in DIGESTS["cli"].items() if k.startswith("generate/")}


@pytest.fixture(scope="module")
def golden_server(ray_local):
    from ray import serve as ray_serve

    from musicgen_serve.runner import pick_port, start

    url = start([f"{GOLDEN}/lstm"], [f"{GOLDEN}/vae"], "127.0.0.1", pick_port())
    yield url
    ray_serve.shutdown()


def test_http_extend_and_generate_are_byte_identical(golden_server):
    status, body, _ = extend(golden_server, open(f"{GOLDEN}/prompt.mid", "rb").read(), **DIGESTS["extend"])
    assert status == 200, body[:300]
    assert sha(body) == DIGESTS["http"]["v1/extend"]
    seed = DIGESTS["generate"]["seed"]
    for s in (seed, seed + 1):
        status, body, _ = request(f"{golden_server}/v1/generate", json.dumps({"n": 1, "seed": s}).encode(),
                                  "application/json")
        assert status == 200, body[:300]
        assert sha(body) == DIGESTS["http"][f"v1/generate/seed{s}"]


def test_cli_extend_wav_to_a_folder_is_one_line_and_keeps_the_midi(tmp_path):
    out, folder = tmp_path / "e.mid", tmp_path / "a-folder"
    folder.mkdir()
    r = run_cli("extend", f"{GOLDEN}/lstm", f"{GOLDEN}/prompt.mid", "--steps", "8", "--out", out, "--wav", folder)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(folder) in r.stderr
    assert mido.MidiFile(out).length > 0  # the continuation written before the audio failed is kept
