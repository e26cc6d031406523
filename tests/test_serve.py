"""The Ray Serve application (serve/): real Ray Serve on 127.0.0.1, real HTTP, small trained runs.

One module-scoped server serves two LSTM versions (the same small run under ids v1 and v2) and a
VAE, trained here through Ray Train; it is shut down at the end (serve.shutdown). The page test
drives GET / in Debian's headless Chromium (skipped, with the reason, where /usr/bin/chromium or
Playwright is missing) and keeps a screenshot under test-artifacts/.
"""
import asyncio
import concurrent.futures
import glob
import io
import json
import os
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import mido
import numpy as np
import pytest

from musicgen.vae import INTERPOLATION_TEMPERATURE

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SMALL_LSTM = dict(units=16, layers=1, window=16, batch_size=16, epochs=1, steps_per_epoch=4, nade_units=16)
SMALL_VAE = dict(epochs=1, batch_size=8, steps_per_epoch=4)


# --- helpers -------------------------------------------------------------------------------------

def request(url, body=None, ctype=None, method=None, headers=None, timeout=180):
    """(status, body bytes, headers) of one HTTP request; 4xx/5xx are returned, not raised."""
    hdrs = dict(headers or {})
    if ctype:
        hdrs["Content-Type"] = ctype
    req = urllib.request.Request(url, data=body, headers=hdrs, method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def multipart(field, filename, data, extra=None):
    return multipart_files({field: (filename, data)}, extra)


def multipart_files(files: dict, extra=None):
    """(body, content type) of a form with ``files`` ({field: (filename, bytes)}) and text fields."""
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (extra or {}).items()]
    for field, (filename, data) in files.items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     f'Content-Type: audio/midi\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={b}"


def extend(base, prompt: bytes, query="", **fields):
    return request(f"{base}/v1/extend{query}", *multipart("midi", "p.mid", prompt, {k: str(v) for k, v in fields.items()}))


def long_prompt(steps=5000) -> bytes:
    """A MIDI file of one note held for ``steps`` sixteenths: over the server's prompt limit."""
    from musicgen.midi import roll_to_midi

    roll = np.zeros((steps, 128), np.float32)
    roll[:, 60] = 0.6
    buf = io.BytesIO()
    roll_to_midi(roll, 4).save(file=buf)
    return buf.getvalue()


def assert_json_error(status, body, lo=400, hi=499):
    assert lo <= status <= hi, (status, body[:300])
    err = json.loads(body)["error"]
    assert isinstance(err, str) and err
    return err


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """(lstm run, vae run): trained for one short epoch each through Ray Train."""
    from musicgen.config import preset
    from musicgen.train import train

    tmp = tmp_path_factory.mktemp("serve-runs")
    lstm, vae = tmp / "lstm", tmp / "vae"
    train("lstm", dataset, str(lstm), preset("lstm", "tiny", **SMALL_LSTM), progress=False)
    train("vae", dataset, str(vae), preset("vae", "tiny", **SMALL_VAE), progress=False)
    return lstm, vae


@pytest.fixture(scope="module")
def server(runs):
    """Base URL of the application on a free loopback port (Serve shut down afterwards)."""
    from ray import serve as ray_serve

    from musicgen_serve.runner import pick_port, start

    lstm, vae = runs
    for attempt in range(3):  # a port free when picked can be taken before the proxy binds it
        try:
            url = start([f"v1={lstm}", f"v2={lstm}"], [str(vae)], "127.0.0.1", pick_port(),
                        max_batch_size=8, batch_wait_timeout_s=0.05, max_n=8)
            break
        except Exception as e:
            ray_serve.shutdown()
            if "bind" not in str(e).lower() or attempt == 2:
                raise
    yield url
    ray_serve.shutdown()


@pytest.fixture(scope="module")
def prompts(chorales):
    return [open(p, "rb").read() for p in sorted(glob.glob(f"{chorales}/*.mid"))[:4]]


# --- without Ray (the registry and the batcher: test_registry.py, test_batching.py) ---------------

def test_extend_parameters_go_through_musicgens_check_and_answer_422_naming_the_field():
    from musicgen.errors import ArgumentError
    from musicgen_serve.app import ExtendParams, RequestError, Routes, Service, Settings

    async def call(method, *args):
        assert method == "describe"
        return [{"id": "v1", "kind": "lstm", "default": True, "metrics": {}, "epochs": 1, "steps_per_beat": 4,
                 "config": {}}]

    service = Service(Settings(max_steps=100), call)
    params = ExtendParams.given({"steps": None, "temperature": 0.5, "seed": None, "model": None},
                                {"steps": 8, "temperature": 2.0, "seed": 3, "model": None})
    assert (params.steps, params.temperature, params.seed, params.model) == (8, 0.5, 3, None)  # the form wins
    assert asyncio.run(service.check_extend(params)).id == "v1"
    for bad, field in ((dict(steps=0), "steps"), (dict(temperature=float("nan")), "temperature"),
                       (dict(temperature=0.0), "temperature")):
        with pytest.raises(ArgumentError) as e:
            asyncio.run(service.check_extend(ExtendParams(**bad)))
        answer = asyncio.run(Routes(service).argument_error(None, e.value))
        assert answer.status_code == 422 and json.loads(answer.body)["error"].startswith(f"{field}: must be ")
    with pytest.raises(RequestError) as e:  # within musicgen's range, over this server's
        asyncio.run(service.check_extend(ExtendParams(steps=101)))
    assert e.value.status == 422 and str(e.value) == "steps: must be at most 100, not 101"


def test_a_prompt_over_the_limit_gives_413_with_its_steps_and_the_limit():
    from musicgen_serve.app import RequestError, Service, Settings
    from musicgen_serve.registry import Model

    service = Service(Settings(max_prompt_steps=4000), call=None)
    model = Model("v1", "lstm", None, {"steps_per_beat": 4})
    with pytest.raises(RequestError) as e:
        service.read_prompt(long_prompt(5000), model, "long.mid")
    assert e.value.status == 413
    assert str(e.value) == ("midi: the prompt is 5000 steps long, more than the limit of 4000 steps (4 per beat); "
                            "send its last 4000 steps")
    assert len(service.read_prompt(long_prompt(4000), model, "ok.mid").roll) == 4000


def test_time_limit_gives_503():
    from musicgen_serve.app import RequestError, Service, Settings

    service = Service(Settings(timeout_s=0.1), call=None)
    with pytest.raises(RequestError) as e:
        asyncio.run(service._with_time_limit(asyncio.sleep(5)))
    assert e.value.status == 503 and "time limit" in str(e.value)


def test_config_yaml_is_a_valid_serve_config():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from musicgen_serve.app import Settings

    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(config)
    app = schema.applications[0]
    assert app.import_path == "musicgen_serve.app:build"
    args = Settings(**app.args)  # the builder's arguments validate
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"musicgen", "models"}  # the names of musicgen_serve.app's deployments
    models = deployments["models"]
    assert models.max_ongoing_requests >= args.max_batch_size
    from musicgen_serve.app import REPLICA_ENV
    assert models.ray_actor_options.runtime_env["env_vars"] == REPLICA_ENV  # single-threaded maths
    for d in deployments.values():
        assert d.autoscaling_config["max_replicas"] >= d.autoscaling_config["min_replicas"]


# --- the running application ---------------------------------------------------------------------

def test_health_and_models(server):
    status, body, _ = request(server + "/v1/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body, _ = request(server + "/v1/models")
    listed = json.loads(body)
    by_id = {m["id"]: m for m in listed["models"]}
    assert status == 200 and set(by_id) == {"v1", "v2", "vae"}
    assert listed["defaults"] == {"lstm": "v1", "vae": "vae"}
    assert by_id["v1"]["kind"] == "lstm" and by_id["vae"]["kind"] == "vae" and not by_id["v2"]["default"]
    assert np.isfinite(by_id["v1"]["metrics"]["val_nll"]) and by_id["v1"]["epochs"] == 1
    assert "elbo_nll" in by_id["vae"]["metrics"] or "loss" in by_id["vae"]["metrics"]


def test_extend_returns_the_prompt_and_its_continuation(server, prompts):
    from musicgen.midi import midi_to_roll

    status, body, headers = extend(server, prompts[0], steps=24, seed=3)
    assert status == 200 and headers["Content-Type"] == "audio/midi" and body[:4] == b"MThd"
    prompt, out = midi_to_roll(prompts[0]), midi_to_roll(body)
    assert len(out) == len(prompt) + 24
    assert np.array_equal(out[:len(prompt)] > 0, prompt > 0)
    assert headers["X-Model"] == "v1" and int(headers["X-Prompt-Steps"]) == len(prompt)


def test_same_request_same_bytes_alone_batched_and_as_the_cli(server, prompts, runs):
    """Batching must not change a request's result: same seed, same bytes. They are also the
    bytes of musicgen's own extend_piece: exactly up to last-bit BLAS differences between one row
    and a block of rows (batching.py), which flip a note here with probability ~1e-4 at most."""
    from musicgen.generate import extend_piece, load_extender, read_prompt

    status, alone, _ = extend(server, prompts[0], steps=20, seed=7, temperature=0.9)
    assert status == 200
    mixed = [(prompts[i % len(prompts)], dict(steps=8 + 4 * i, seed=100 + i, temperature=0.7 + 0.1 * (i % 4)))
             for i in range(7)]
    mixed.insert(3, (prompts[0], dict(steps=20, seed=7, temperature=0.9)))
    with concurrent.futures.ThreadPoolExecutor(len(mixed)) as pool:
        results = list(pool.map(lambda pf: extend(server, pf[0], **pf[1]), mixed))
    assert all(r[0] == 200 for r in results), [r[1][:200] for r in results if r[0] != 200]
    assert results[3][1] == alone
    assert max(float(r[2]["X-Batch-Size"]) for r in results) > 1, "concurrent requests were never batched"

    extender, info = load_extender(str(runs[0]))
    _, mid = extend_piece(extender, info, read_prompt(prompts[0], info), 20, 0.9, 7)
    buf = io.BytesIO()
    mid.save(file=buf)
    assert buf.getvalue() == alone


def test_query_and_form_parameters_are_the_same(server, prompts):
    a = extend(server, prompts[1], steps=12, seed=5)
    b = extend(server, prompts[1], query="?steps=12&seed=5")
    assert a[0] == b[0] == 200 and a[1] == b[1]
    c = extend(server, prompts[1], steps=12, seed=6)
    assert c[1] != a[1]  # another seed, another continuation (with overwhelming probability)


def test_model_versions_by_id(server, prompts):
    status, body, headers = extend(server, prompts[0], steps=8, model="v2")
    assert status == 200 and headers["X-Model"] == "v2" and body[:4] == b"MThd"
    for bad in ("nope", "vae", "../../etc/passwd", str(ROOT), "s3://bucket/run", "/etc/passwd"):
        status, body, _ = extend(server, prompts[0], steps=8, model=bad)
        assert status == 404, (bad, status)
        assert "unknown lstm model" in assert_json_error(status, body)
    status, body, _ = request(server + "/v1/generate", json.dumps({"model": "v1"}).encode(), "application/json")
    assert status == 404 and "unknown vae model" in assert_json_error(status, body)


def test_generate_one_midi_or_a_zip(server):
    status, body, headers = request(server + "/v1/generate", json.dumps({"n": 1, "seed": 0}).encode(), "application/json")
    assert status == 200 and headers["Content-Type"] == "audio/midi" and body[:4] == b"MThd"
    mido.MidiFile(file=io.BytesIO(body))
    again = request(server + "/v1/generate", json.dumps({"n": 1, "seed": 0, "model": None}).encode(), "application/json")
    assert again[1] == body
    status, body, headers = request(server + "/v1/generate", json.dumps({"n": 3, "seed": 1}).encode(), "application/json")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        names = z.namelist()
        assert len(names) == 3 and all(n.endswith(".mid") for n in names)
        for n in names:
            mido.MidiFile(file=io.BytesIO(z.read(n)))
    status, body, _ = request(server + "/v1/generate", json.dumps({"n": 9}).encode(), "application/json")
    assert status == 422 and "n" in assert_json_error(status, body)


def interpolate(base, a: bytes, b: bytes, **fields):
    return request(f"{base}/v1/interpolate",
                   *multipart_files({"a": ("a.mid", a), "b": ("b.mid", b)}, {k: str(v) for k, v in fields.items()}))


def test_interpolate_gives_the_librarys_pieces_a_strip_and_4xx_for_bad_input(server, prompts, runs):
    import base64

    from musicgen.generate import interpolate_pieces, load_generator, read_prompt
    from musicgen.midi import read_midi

    status, body, headers = interpolate(server, prompts[0], prompts[1], steps=4, seed=2)
    assert status == 200, body[:300]
    out = json.loads(body)
    assert out["steps"] == 4 and len(out["pieces"]) == 4 and headers["X-Seed"] == "2"
    assert out["temperature"] == INTERPOLATION_TEMPERATURE  # sampled by default, not greedy
    assert base64.b64decode(out["png"])[:4] == b"\x89PNG"
    generator, info = load_generator(str(runs[1]))
    a, b = (read_prompt(p, info) for p in prompts[:2])
    expected = interpolate_pieces(generator, a.roll, b.roll, 4, seed=2)
    for piece, roll in zip(out["pieces"], expected):  # the library's pieces, as MIDI
        got = read_midi(base64.b64decode(piece["midi"]), steps_per_beat=4).roll
        np.testing.assert_array_equal(got[:len(roll)] > 0, roll[:len(got)] > 0)
    bad = {"not midi": ((b"not midi", prompts[1]), {}, 400), "one step": ((prompts[0], prompts[1]), {"steps": 1}, 422),
           "too many steps": ((prompts[0], prompts[1]), {"steps": 65}, 422),
           "negative temperature": ((prompts[0], prompts[1]), {"temperature": -0.5}, 422),
           "too long": ((long_prompt(), prompts[1]), {}, 413), "lstm as model": ((prompts[0], prompts[1]), {"model": "v1"}, 404)}
    for name, ((first, last), fields, expected_status) in bad.items():
        status, data, _ = interpolate(server, first, last, **fields)
        assert status == expected_status, (name, status, data[:200])
        assert_json_error(status, data)
    assert "steps" in assert_json_error(*interpolate(server, prompts[0], prompts[1], steps=65)[:2])
    status, data, _ = request(server + "/v1/interpolate", *multipart("a", "a.mid", prompts[0]))
    assert status == 422 and "b" in assert_json_error(status, data)  # the second file is missing
    assert request(server + "/v1/health")[0] == 200


def test_every_bad_request_gets_a_4xx_json_error_and_the_service_stays_up(server, prompts):
    prompt = prompts[0]
    bad = {  # name: (body, content type, status)
        "not midi": (*multipart("midi", "x.mid", b"not midi at all"), 400),
        "truncated": (*multipart("midi", "x.mid", prompt[: len(prompt) // 2]), 400),
        "negative steps": (*multipart("midi", "p.mid", prompt, {"steps": "-5"}), 422),
        "huge steps": (*multipart("midi", "p.mid", prompt, {"steps": "100000000"}), 422),
        "steps not a number": (*multipart("midi", "p.mid", prompt, {"steps": "many"}), 422),
        "nan temperature": (*multipart("midi", "p.mid", prompt, {"temperature": "nan"}), 422),
        "inf temperature": (*multipart("midi", "p.mid", prompt, {"temperature": "inf"}), 422),
        "zero temperature": (*multipart("midi", "p.mid", prompt, {"temperature": "0"}), 422),
        "negative seed": (*multipart("midi", "p.mid", prompt, {"seed": "-1"}), 422),
        "path as model": (*multipart("midi", "p.mid", prompt, {"model": "../../etc/passwd"}), 404),
        "8 MB upload": (*multipart("midi", "big.mid", b"MThd" + os.urandom(8 * 1024 * 1024)), 413),
        "prompt too long": (*multipart("midi", "long.mid", long_prompt()), 413),
        "no notes": (*multipart("midi", "e.mid", bytes.fromhex("4d546864000000060000000101e04d54726b0000000400ff2f00")), 400),
        "no file": (b"", "multipart/form-data; boundary=x", 422),
        "file as text field": (b'--b\r\nContent-Disposition: form-data; name="midi"\r\n\r\nabc\r\n--b--\r\n',
                               "multipart/form-data; boundary=b", 422),
        "garbage multipart": (b"garbage", "multipart/form-data; boundary=xyz", 400),
        "json to extend": (b'{"n": 1}', "application/json", 422),
    }
    for name, (body, ctype, expected) in bad.items():
        status, data, headers = request(server + "/v1/extend", body, ctype)
        assert_json_error(status, data)
        assert status == expected and headers["Content-Type"].startswith("application/json"), (name, status, data[:200])
    assert "too large" in assert_json_error(*request(server + "/v1/extend", *bad["8 MB upload"][:2])[:2])
    too_long = assert_json_error(*request(server + "/v1/extend", *bad["prompt too long"][:2])[:2])
    assert "5000 steps long" in too_long and "limit of 4096 steps" in too_long
    for body in (b"{not json", b'{"n": 0}', b'{"n": "x"}', b'{"seed": -3}', b'{"n": 1, "extra": 1}', b"[]",
                 b'{"model": "/etc/passwd"}', b"x" * (200 << 10)):
        status, data, _ = request(server + "/v1/generate", body, "application/json")
        assert_json_error(status, data)
    for url, method in (("/nope", "GET"), ("/v1/extend", "GET"), ("/v1/models", "POST")):
        status, data, _ = request(server + url, b"" if method == "POST" else None, method=method)
        assert_json_error(status, data)
    status, data, _ = request(server + "/v1/health")
    assert status == 200
    status, data, _ = extend(server, prompt, steps=4)
    assert status == 200 and data[:4] == b"MThd"


def test_upload_limit_counts_bytes_without_content_length(server):
    def chunks():  # urllib sends an iterable with Transfer-Encoding: chunked, no Content-Length
        yield b"--b\r\nContent-Disposition: form-data; name=\"midi\"; filename=\"x.mid\"\r\n\r\nMThd"
        for _ in range(24):
            yield b"\0" * 100_000
        yield b"\r\n--b--\r\n"

    status, data, _ = request(server + "/v1/extend", chunks(), "multipart/form-data; boundary=b")
    assert status == 413 and "too large" in assert_json_error(status, data)
    assert request(server + "/v1/health")[0] == 200


def test_formats_png_wav_and_json(server, prompts):
    import base64

    status, body, headers = extend(server, prompts[2], query="?format=png", steps=8)
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"
    status, body, headers = extend(server, prompts[2], query="?format=wav", steps=8)
    assert status == 200 and headers["Content-Type"] == "audio/wav" and body[:4] == b"RIFF"
    status, body, _ = extend(server, prompts[2], query="?format=json", steps=8, seed=2)
    out = json.loads(body)
    assert base64.b64decode(out["png"])[:4] == b"\x89PNG" and base64.b64decode(out["wav"])[:4] == b"RIFF"
    assert base64.b64decode(out["midi"]) == extend(server, prompts[2], steps=8, seed=2)[1]
    assert out["total_steps"] == out["prompt_steps"] + 8
    status, body, _ = extend(server, prompts[2], query="?format=mp3")
    assert_json_error(status, body)


def test_page_and_openapi_docs(server):
    status, body, headers = request(server + "/")
    page = body.decode()
    assert status == 200 and "<form" in page and 'type="file"' in page and 'name="midi"' in page
    assert "http://" not in page and "https://" not in page  # offline: nothing from a CDN
    assert request(server + "/docs")[0] == 200
    spec = json.loads(request(server + "/openapi.json")[1])
    assert {"/v1/extend", "/v1/generate", "/v1/interpolate", "/v1/models", "/v1/health"} <= set(spec["paths"])
    assert "GenerateRequest" in json.dumps(spec)


def test_page_in_headless_chromium(server, chorales):
    """Upload a prompt on the page; the roll, the audio and the download link appear. Then two
    files in the interpolation view: the strip, its audio and a link per piece."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    prompt_path = sorted(glob.glob(f"{chorales}/*.mid"))[0]
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    outside = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses itself
            page = browser.new_page(viewport={"width": 1200, "height": 1100}, accept_downloads=True, bypass_csp=True)
            page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else outside.append(r.url))
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').options.length > 0", timeout=30_000)
            page.set_input_files("#midi", prompt_path)
            page.fill("#steps", "32")
            page.fill("#temperature", "0.9")
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=180_000)
            page.wait_for_function("document.getElementById('roll').naturalWidth > 0", timeout=30_000)
            assert page.get_attribute("#download", "href").startswith("blob:")
            assert page.get_attribute("#player", "src").startswith("blob:")
            assert "32 generated" in page.inner_text("#summary")
            assert page.is_hidden("#error")
            with page.expect_download() as download:
                page.click("#download")
            with open(download.value.path(), "rb") as f:
                assert f.read(4) == b"MThd"
            # the interpolation view: two files in, the strip and its audio out
            second = sorted(glob.glob(f"{chorales}/*.mid"))[1]
            page.set_input_files("#interp-a", prompt_path)
            page.set_input_files("#interp-b", second)
            page.fill("#interp-steps", "4")
            page.click("#interpolate")
            page.wait_for_selector("#interp-result:not([hidden])", timeout=180_000)
            page.wait_for_function("document.getElementById('interp-roll').naturalWidth > 0", timeout=30_000)
            assert page.get_attribute("#interp-player", "src").startswith("blob:")
            assert page.locator("#interp-links a").count() == 4
            assert page.is_hidden("#interp-error")
            page.screenshot(path=str(artifacts / "serve-page.png"), full_page=True)
        finally:
            browser.close()
    assert not outside, f"the page requested outside resources: {outside}"
    assert (artifacts / "serve-page.png").stat().st_size > 10_000


def test_requests_survive_a_models_replica_killed_under_them(server, prompts):
    """SIGKILL the models replica while extend requests run on it: Serve starts another, the
    ingress sends the requests there, and each gets the bytes it gets without the kill."""
    import signal
    import time

    import psutil

    def replica():
        """The pid of the models replica (the process Ray titles ray::ServeReplica:APP:models)."""
        pids = []
        for proc in psutil.process_iter(["cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if title.startswith("ray::ServeReplica:") and title.split()[0].endswith(":models"):
                pids.append(proc.pid)
        return pids[0] if len(pids) == 1 else None

    jobs = [dict(steps=2000, seed=40 + i, temperature=1.1) for i in range(6)]  # ~15 s in flight
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:  # a row's bytes do not depend on its batch mates
        expected = list(pool.map(lambda i: extend(server, prompts[i % len(prompts)], **jobs[i]), range(len(jobs))))
    assert all(e[0] == 200 for e in expected)
    victim = replica()
    assert victim is not None
    done = []

    def timed(i):
        out = extend(server, prompts[i % len(prompts)], **jobs[i])
        done.append(time.monotonic())
        return out

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(timed, i) for i in range(len(jobs))]
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        results = [f.result(timeout=240) for f in futures]
    assert [r[0] for r in results] == [200] * len(jobs), [r[1][:200] for r in results]
    assert [r[1] for r in results] == [e[1] for e in expected]
    assert sum(t > killed_at for t in done) >= 1, "no request was in flight when the replica was killed"
    deadline = time.monotonic() + 120
    while replica() in (None, victim) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert replica() not in (None, victim), "Serve did not replace the replica"
