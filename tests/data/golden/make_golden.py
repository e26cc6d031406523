"""Makes this folder: two small trained runs and the digests of what musicgen made from them.

Run once, at a27a66c (before the architecture change of issue 10), from the project root:

    python tests/data/golden/make_golden.py

``tests/test_golden.py`` then checks that today's code makes byte-identical MIDI from the same
runs, prompt and seeds through ``musicgen extend``, ``musicgen generate``, ``/v1/extend`` and
``/v1/generate``. Regenerate only on purpose (a change meant to alter generation), and say so.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LSTM = dict(units=24, layers=2, window=16, batch_size=16, epochs=1, steps_per_epoch=4)
VAE = dict(filters=(8, 8, 4), dense=32, latent=8, epochs=1, batch_size=8, steps_per_epoch=4)
EXTEND = dict(steps=48, temperature=0.9, seed=7)
GENERATE = dict(n=2, seed=3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def train_runs(tmp: str) -> None:
    import ray

    from musicgen.config import preset
    from musicgen.corpus import write_corpus
    from musicgen.prepare import PrepareConfig, prepare
    from musicgen.train import train

    paths = write_corpus("bach", f"{tmp}/bach", limit=24, progress=False)
    shutil.copy(sorted(paths)[0], f"{HERE}/prompt.mid")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    prepare(f"{tmp}/bach", f"{tmp}/ds", PrepareConfig(split=(0.7, 0.15, 0.15)), progress=False)
    for kind, small in (("lstm", LSTM), ("vae", VAE)):
        train(kind, f"{tmp}/ds", f"{tmp}/{kind}", preset(kind, "tiny", **small), progress=False)
        shutil.rmtree(f"{HERE}/{kind}", ignore_errors=True)
        shutil.copytree(f"{tmp}/{kind}/model", f"{HERE}/{kind}/model")
        shutil.copy(f"{tmp}/{kind}/metrics.json", f"{HERE}/{kind}/metrics.json")
    ray.shutdown()


def cli_digests(tmp: str) -> dict:
    exe = os.path.join(os.path.dirname(sys.executable), "musicgen")
    e = EXTEND
    subprocess.run([exe, "extend", f"{HERE}/lstm", f"{HERE}/prompt.mid", "--steps", str(e["steps"]),
                    "--temperature", str(e["temperature"]), "--seed", str(e["seed"]), "--out", f"{tmp}/e.mid"],
                   check=True)
    subprocess.run([exe, "generate", f"{HERE}/vae", "--n", str(GENERATE["n"]), "--seed", str(GENERATE["seed"]),
                    "--out", f"{tmp}/gen"], check=True)
    out = {"extend": sha(open(f"{tmp}/e.mid", "rb").read())}
    for name in sorted(os.listdir(f"{tmp}/gen")):
        if name.endswith(".mid"):
            out[f"generate/{name}"] = sha(open(f"{tmp}/gen/{name}", "rb").read())
    return out


def http_digests() -> dict:
    sys.path.insert(0, os.path.join(HERE, "..", ".."))
    from ray import serve

    from musicgen_serve.runner import pick_port, start
    from test_serve import extend, request

    url = start([f"{HERE}/lstm"], [f"{HERE}/vae"], "127.0.0.1", pick_port())
    try:
        status, body, _ = extend(url, open(f"{HERE}/prompt.mid", "rb").read(), **EXTEND)
        assert status == 200, body
        out = {"v1/extend": sha(body)}
        for seed in (GENERATE["seed"], GENERATE["seed"] + 1):
            status, body, _ = request(f"{url}/v1/generate", json.dumps({"n": 1, "seed": seed}).encode(),
                                      "application/json")
            assert status == 200, body
            out[f"v1/generate/seed{seed}"] = sha(body)
        return out
    finally:
        serve.shutdown()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        train_runs(tmp)
        digests = {"extend": EXTEND, "generate": GENERATE, "cli": cli_digests(tmp)}
    digests["http"] = http_digests()
    with open(f"{HERE}/digests.json", "w") as f:
        json.dump(digests, f, indent=1)
    print(json.dumps(digests, indent=1))


if __name__ == "__main__":
    main()
