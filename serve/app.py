"""The Ray Serve application: HTTP API (FastAPI) over musicgen's trained runs.

Routes (``/docs`` has the OpenAPI page):

* ``GET /v1/health`` -> ``{"status": "ok"}`` once the models deployment answers;
* ``GET /v1/models`` -> the loaded models (id, kind, default, training metrics);
* ``POST /v1/extend`` -> multipart field ``midi`` plus ``steps``, ``temperature``, ``seed``,
  ``model`` (query or form): the prompt followed by ``steps`` generated steps, ``audio/midi``;
  ``?format=png|wav|json`` gives the piano roll, the audio, or all three (base64) in JSON;
* ``POST /v1/generate`` JSON ``{"n": 1, "seed": 0, "model": null}`` -> ``audio/midi`` for n=1,
  a zip of n MIDI files otherwise (``?format=json``: base64 MIDI, PNG and WAV per piece);
* ``POST /v1/interpolate`` -> multipart files ``a`` and ``b`` plus ``steps``, ``temperature``,
  ``seed``, ``model``: JSON of the pieces from a to b along the VAE's latent space (base64 MIDI
  each), one PNG strip of them and its audio;
* ``GET /`` -> the page (upload a MIDI, see and hear the continuation, download it).

Every bad request gets a 4xx JSON ``{"error": "..."}``; request bodies are limited before they are
parsed (:mod:`musicgen_serve.limits`); every request has a time limit. The ranges of ``steps`` and
``temperature``, prompt reading and MIDI writing are musicgen's own (:mod:`musicgen.generate`), as
for ``musicgen extend``; the route bodies are :class:`Routes`, which :func:`make_app` wires.

Concurrent extend requests are generated together, continuously: a request joins its model's
running generation at the next step and leaves when it has its steps
(:class:`musicgen_serve.batching.StepBatcher`; ``@serve.batch`` admits requests that arrive together
at the same step), with per-request seeds: a request gets the same bytes whatever it is batched with.

Two deployments: ``musicgen``, the ingress (:class:`MusicService`: HTTP, limits, MIDI in and out,
pictures and sound), calls ``models`` (:class:`ModelServer`: the runs, batching, generation)
through a handle. A request whose models replica dies under it (SIGKILL, out of memory, a lost
node) is sent again to another replica or to the one Serve starts instead, within the request's
time limit (:class:`RemoteModels`); generation is deterministic, so it gets the same bytes.

Deploy with :func:`musicgen_serve.runner.run` (``musicgen serve``), or ``serve run/deploy serve/config.yaml``
(import path ``musicgen_serve.app:build``, builder args = :class:`Settings`).
"""


import asyncio
import base64
import io
import logging
import os
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from musicgen import generate
from musicgen.errors import ArgumentError, MusicgenError, PromptTooLong
from musicgen.lstm import MAX_STEPS, check_extend_args
from musicgen.plot import piece_starts
from musicgen.vae import INTERPOLATION_TEMPERATURE, check_interpolate_args

from .batching import ExtendJob, StepBatcher
from .limits import BodyLimit
from .registry import Model, Registry, UnknownModel, parse_spec

logger = logging.getLogger("ray.serve")

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
MAX_N = 64  # hard cap on /v1/generate's n, whatever the settings
MAX_SEED = 2**63 - 1
FORM_OVERHEAD = 64 << 10  # multipart framing and the small fields, on top of the MIDI file
JSON_BODY_LIMIT = 64 << 10
# Replicas run BLAS single-threaded: batched steps are then exact whatever the batch (see batching.py),
# and a replica does not oversubscribe its CPUs. TensorFlow keeps its own thread pools.
REPLICA_ENV = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
               "TF_NUM_INTEROP_THREADS": "1"}


class Settings(BaseModel):
    """What a deployment serves and its limits (the ``args`` of serve/config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    lstm: list[str] = Field(default_factory=list, description="LSTM runs: PATH or ID=PATH (local or s3://); the first is the default")
    vae: list[str] = Field(default_factory=list, description="VAE runs: PATH or ID=PATH; the first is the default")
    max_upload_bytes: int = Field(1 << 20, ge=1024, description="largest prompt MIDI file")
    max_steps: int = Field(MAX_STEPS, ge=1, le=MAX_STEPS, description="most steps one extend request may ask for")
    max_prompt_steps: int = Field(MAX_STEPS, ge=16, description="longest prompt, in steps of the run's grid "
                                                                "(a prompt is primed one step at a time)")
    max_n: int = Field(16, ge=1, le=MAX_N, description="most pieces one generate request may ask for")
    timeout_s: float = Field(120.0, gt=0, description="time limit of one request's generation")
    max_batch_size: int = Field(16, ge=1, description="extend requests batched together (1: no batching)")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="how long a batch waits to fill")
    audio: bool = Field(True, description="render WAV for format=wav/json")


class ExtendParams(BaseModel):
    """The parameters of one extend request (query or form fields). Their types are checked here;
    the ranges of ``steps`` and ``temperature`` by musicgen's own check (:meth:`Service.check_extend`)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(64, description="steps to generate after the prompt")
    temperature: float = Field(1.0, description="sampling temperature, in (0, 10]")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed: same request and seed, same result")
    model: str | None = Field(None, max_length=200, description="LSTM model id (GET /v1/models); default: the first")

    @classmethod
    def given(cls, form: dict, query: dict) -> "ExtendParams":
        """The parameters given as form fields or query parameters (None: not given); a form field wins."""
        return cls(**{k: form[k] if form[k] is not None else query[k] for k in form
                      if form[k] is not None or query[k] is not None})


class GenerateRequest(BaseModel):
    """Body of POST /v1/generate."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1, le=MAX_N, description="pieces to generate")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed")
    model: str | None = Field(None, max_length=200, description="VAE model id (GET /v1/models); default: the first")


class InterpolateParams(BaseModel):
    """The parameters of one interpolate request (form fields); ranges checked by musicgen's own
    :func:`musicgen.vae.check_interpolate_args`."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(8, description="pieces from a to b, both included")
    temperature: float = Field(INTERPOLATION_TEMPERATURE, description="sampling temperature in [0, 10]; 0: greedy")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="random seed")
    model: str | None = Field(None, max_length=200, description="VAE model id (GET /v1/models); default: the first")


class ErrorBody(BaseModel):
    error: str


class RequestError(Exception):
    """A bad request: HTTP ``status`` with a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _field_errors(errors) -> str:
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")]
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            msg, loc = f"the body is not valid JSON ({(e.get('ctx') or {}).get('error', 'cannot be parsed')})", []
        elif e.get("type") == "missing":
            msg = "is required"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _midi_bytes(mid) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class Models:
    """The models of one model replica: loading, continuous batching, VAE generation (no HTTP)."""

    def __init__(self, settings: Settings, registry: Registry | None = None):
        self.settings = settings
        specs = [parse_spec(s, "lstm") for s in settings.lstm] + [parse_spec(s, "vae") for s in settings.vae]
        self.registry = registry if registry is not None else Registry.load(specs)
        if any(os.environ.get(k) != v for k, v in REPLICA_ENV.items()):
            logger.warning("musicgen serve: set %s in the replica's runtime_env: maths threads make the "
                           "step slower and its exact block larger", ", ".join(f"{k}={v}" for k, v in REPLICA_ENV.items()))
        # One continuous batcher per LSTM (batching.py): its own thread steps all its running jobs.
        self.batchers = {m.id: StepBatcher(m.model, settings.max_batch_size, name=m.id)
                         for m in self.registry.models.values() if m.kind == "lstm"}
        for m in self.registry.models.values():
            if m.kind == "lstm":
                m.block = self.batchers[m.id].block
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="musicgen-vae")  # one VAE generation at a time
        self._admit.set_max_batch_size(settings.max_batch_size)
        self._admit.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def describe(self) -> list[dict]:
        return self.registry.describe()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _admit(self, items: list[tuple]) -> list[asyncio.Future]:
        """Requests that arrive together join their model's running generation at the same step."""
        return [asyncio.wrap_future(self.batchers[model.id].submit(job)) for model, job in items]

    async def extend(self, model_id: str, roll: np.ndarray, steps: int, temperature: float,
                     seed: int, time_signatures=None) -> tuple[np.ndarray, float]:
        """(continuation (steps, 128) in the meter of the prompt's ``time_signatures``, mean rows
        per step it was generated with); cancelling the call (the caller's time limit) drops the
        job from the batch."""
        model = self.registry.get("lstm", model_id)
        future = await self._admit((model, ExtendJob(roll, steps, temperature, seed, time_signatures)))
        return await future

    async def generate(self, model_id: str, n: int, seed: int) -> list[np.ndarray]:
        model = self.registry.get("vae", model_id)
        return await asyncio.get_running_loop().run_in_executor(self._compute, model.model.generate, n, seed)

    async def interpolate(self, model_id: str, a: np.ndarray, b: np.ndarray, steps: int, seed: int,
                          temperature: float) -> list[np.ndarray]:
        model = self.registry.get("vae", model_id)
        return await asyncio.get_running_loop().run_in_executor(
            self._compute, lambda: generate.interpolate_pieces(model.model, a, b, steps, seed, temperature))


class LocalModels:
    """Calls to a :class:`Models` in this process (tests, one-process use)."""

    def __init__(self, models: Models):
        self.models = models

    async def __call__(self, method: str, *args):
        result = getattr(self.models, method)(*args)
        return await result if asyncio.iscoroutine(result) else result


class RemoteModels:
    """Calls to the models deployment through a Serve handle. A call whose replica dies under it
    (killed, out of memory, its node lost) goes to another replica, or to the replacement Serve
    starts, until the caller's time limit: generation is deterministic, so a retried request gets
    the bytes it would have got."""

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, method: str, *args):
        from ray.exceptions import RayActorError

        delay = 0.25
        while True:
            response = getattr(self.handle, method).remote(*args)
            try:
                return await response
            except asyncio.CancelledError:  # the time limit: stop the generation too
                response.cancel()
                raise
            except RayActorError as e:
                logger.warning("musicgen serve: a models replica died during %s (%s); trying again", method,
                               type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)


class Service:
    """What the ingress does around the models: limits, MIDI in and out, rendering (no HTTP here).

    ``call(method, *args)`` awaits a :class:`Models` method: :class:`RemoteModels` in the
    deployment, :class:`LocalModels` in one process.
    """

    def __init__(self, settings: Settings, call):
        self.settings = settings
        self._call = call
        self._registry: Registry | None = None
        self._render_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe

    async def registry(self) -> Registry:
        """The served models, as the models deployment describes them (asked once)."""
        if self._registry is None:
            described = await self._with_time_limit(self._call("describe"))
            self._registry = Registry([Model.described(d) for d in described])
        return self._registry

    # --- extend ------------------------------------------------------------------------------

    async def check_extend(self, params: ExtendParams):
        """The LSTM to extend with, once the parameters pass musicgen's check (ArgumentError: 422)
        and this server's limit."""
        check_extend_args(params.steps, params.temperature)
        if params.steps > self.settings.max_steps:
            raise RequestError(422, f"steps: must be at most {self.settings.max_steps}, not {params.steps}")
        return (await self.registry()).get("lstm", params.model)

    def read_prompt(self, data: bytes, model, name: str):
        """The prompt as musicgen reads it (:func:`musicgen.generate.read_prompt`), within this
        server's limit: read_midi stops before building a longer roll (413)."""
        try:
            return generate.read_prompt(data, model.info, name, max_steps=self.settings.max_prompt_steps)
        except PromptTooLong as e:
            raise RequestError(413, f"midi: the prompt is {e.steps} steps long, more than the limit of {e.limit} "
                                    f"steps ({model.steps_per_beat} per beat); send its last {e.limit} steps") from None

    async def extend(self, model, piece, params: ExtendParams):
        """(prompt + continuation roll, MIDI bytes, mean rows per step it was generated with): the
        models deployment samples the continuation, musicgen writes the MIDI file as for the CLI."""
        cont, batch = await self._with_time_limit(
            self._call("extend", model.id, piece.roll, params.steps, params.temperature, params.seed,
                       piece.time_signatures))

        def write():  # tens of ms of mido for a long piece: off the event loop
            roll, mid = generate.continue_piece(model.info, piece, cont)
            return roll, _midi_bytes(mid)

        roll, mid = await asyncio.to_thread(write)
        return roll, mid, batch

    # --- generate ----------------------------------------------------------------------------

    async def generate(self, model, n: int, seed: int) -> list[tuple[np.ndarray, bytes]]:
        from musicgen.generate import grid
        from musicgen.midi import roll_to_midi

        if n > self.settings.max_n:
            raise RequestError(422, f"n: must be at most {self.settings.max_n}, not {n}")
        rolls = await self._with_time_limit(self._call("generate", model.id, n, seed))
        midis = await asyncio.to_thread(lambda: [_midi_bytes(roll_to_midi(r, **grid(model.info))) for r in rolls])
        return list(zip(rolls, midis))

    # --- interpolate -------------------------------------------------------------------------

    async def interpolate(self, model, a, b, params: InterpolateParams) -> list[tuple[np.ndarray, bytes]]:
        """The pieces from piece ``a`` to piece ``b`` (:func:`musicgen.generate.interpolate_pieces`)
        with their MIDI bytes."""
        from musicgen.generate import grid
        from musicgen.midi import roll_to_midi

        rolls = await self._with_time_limit(
            self._call("interpolate", model.id, a.roll, b.roll, params.steps, params.seed, params.temperature))
        midis = await asyncio.to_thread(lambda: [_midi_bytes(roll_to_midi(r, **grid(model.info))) for r in rolls])
        return list(zip(rolls, midis))

    async def _with_time_limit(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.settings.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, f"generation took longer than the time limit of {self.settings.timeout_s:g} s; "
                                    "ask for fewer steps or try again later") from None

    # --- rendering ---------------------------------------------------------------------------

    def png(self, roll, steps_per_beat, split_at=None, title=None, separators=()) -> bytes:
        from musicgen.plot import plot_roll

        with self._render_lock, tempfile.TemporaryDirectory() as d:
            path = plot_roll(roll, os.path.join(d, "roll.png"), steps_per_beat=steps_per_beat, split_at=split_at,
                             title=title, separators=separators)
            with open(path, "rb") as f:
                return f.read()

    def wav(self, roll, steps_per_beat, tempos=None, midi=None) -> tuple[bytes | None, str | None]:
        from musicgen.audio import render_wav

        if not self.settings.audio:
            return None, None
        return render_wav(roll, steps_per_beat, tempos, midi_bytes=midi, timeout=self.settings.timeout_s)


ERROR_RESPONSES = {400: {"model": ErrorBody, "description": "unreadable MIDI"},
                   404: {"model": ErrorBody, "description": "unknown model id"},
                   413: {"model": ErrorBody, "description": "request body too large"},
                   422: {"model": ErrorBody, "description": "a parameter is out of range"},
                   503: {"model": ErrorBody, "description": "over the time limit"}}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; "
            "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Routes:
    """The HTTP side of the ingress over a :class:`Service`: the routes' bodies and the answers to
    errors, every one a JSON ``{"error": "..."}`` (:func:`make_app` wires them to paths)."""

    def __init__(self, service: Service):
        self.service = service
        self.settings = service.settings

    def error_handlers(self) -> dict:
        """Exception type -> handler (Starlette picks the handler of the nearest type in the MRO)."""
        return {StarletteHTTPException: self.http_error, RequestValidationError: self.validation_error,
                ValidationError: self.validation_error, RequestError: self.request_error,
                UnknownModel: self.unknown_model, ArgumentError: self.argument_error,
                MusicgenError: self.musicgen_error, Exception: self.internal_error}

    async def http_error(self, request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def validation_error(self, request, exc):
        return _error(422, _field_errors(exc.errors()))

    async def request_error(self, request, exc):
        return _error(exc.status, str(exc))

    async def unknown_model(self, request, exc):
        return _error(404, str(exc.args[0]))

    async def argument_error(self, request, exc):
        """A parameter out of musicgen's range, named as the request names it."""
        return _error(422, f"{exc.field}: must be {exc.must}, not {exc.value!r}")

    async def musicgen_error(self, request, exc):
        return _error(400, str(exc))

    async def internal_error(self, request, exc):
        logger.exception("musicgen serve: unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__})")

    async def page(self):
        with open(PAGE, encoding="utf-8") as f:
            html = f.read()
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    async def health(self) -> dict:
        await self.service.registry()  # the models deployment answers
        return {"status": "ok"}

    async def models(self) -> dict:
        listed = (await self.service.registry()).describe()
        return {"models": listed, "defaults": {m["kind"]: m["id"] for m in listed if m["default"]}}

    async def read_upload(self, upload: UploadFile, field: str, model):
        """The uploaded MIDI file of form field ``field`` as musicgen reads it on ``model``'s grid
        (:meth:`Service.read_prompt`), within this server's upload limit (413)."""
        limit = self.settings.max_upload_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise RequestError(413, f"{field}: the file is larger than the limit of {limit} bytes")
        name = f"{field} upload" + (f" {upload.filename[:100]!r}" if upload.filename else "")
        return await asyncio.to_thread(self.service.read_prompt, data, model, name)

    async def extend(self, midi: UploadFile, params: ExtendParams, format: str):
        """POST /v1/extend once its parameters are parsed (:func:`_extend_endpoint`)."""
        service, settings = self.service, self.settings
        lstm = await service.check_extend(params)
        piece = await self.read_upload(midi, "midi", lstm)
        started = time.perf_counter()
        roll, mid, batch = await service.extend(lstm, piece, params)
        headers = {"X-Model": lstm.id, "X-Seed": str(params.seed), "X-Prompt-Steps": str(len(piece.roll)),
                   "X-Batch-Size": f"{batch:.1f}", "X-Generation-Seconds": f"{time.perf_counter() - started:.3f}"}
        split = len(piece.roll)
        if format == "midi":
            return Response(mid, media_type="audio/midi",
                            headers={**headers, "Content-Disposition": 'attachment; filename="continuation.mid"'})
        if format == "png":
            png = await asyncio.to_thread(service.png, roll, lstm.steps_per_beat, split)
            return Response(png, media_type="image/png", headers=headers)
        if format == "wav":
            if not settings.audio:
                raise RequestError(404, "audio rendering is switched off on this server")
            wav, _ = await asyncio.to_thread(service.wav, roll, lstm.steps_per_beat, piece.tempos, mid)
            return Response(wav, media_type="audio/wav", headers=headers)
        title = f"{midi.filename or 'prompt'} + {params.steps} steps ({lstm.id}, seed {params.seed})"
        png = await asyncio.to_thread(service.png, roll, lstm.steps_per_beat, split, title)
        wav, engine = await asyncio.to_thread(service.wav, roll, lstm.steps_per_beat, piece.tempos, mid)
        return JSONResponse({"model": lstm.id, "steps": params.steps, "temperature": params.temperature,
                             "seed": params.seed, "prompt_steps": split, "total_steps": len(roll),
                             "steps_per_beat": lstm.steps_per_beat, "batch_size": round(batch, 1), "midi": _b64(mid),
                             "png": _b64(png), "wav": _b64(wav), "audio_engine": engine}, headers=headers)

    async def generate(self, body: GenerateRequest,
                       format: Annotated[Literal["midi", "json"], Query(description="midi: MIDI or zip; json: base64 MIDI, PNG, WAV")] = "midi"):
        service = self.service
        vae = (await service.registry()).get("vae", body.model)
        pieces = await service.generate(vae, body.n, body.seed)
        headers = {"X-Model": vae.id, "X-Seed": str(body.seed)}
        if format == "json":
            out = []
            for i, (roll, mid) in enumerate(pieces):
                png = await asyncio.to_thread(service.png, roll, vae.steps_per_beat, None, f"{vae.id} seed {body.seed} #{i}")
                wav, engine = await asyncio.to_thread(service.wav, roll, vae.steps_per_beat, None, mid)
                out.append({"midi": _b64(mid), "png": _b64(png), "wav": _b64(wav), "audio_engine": engine})
            return JSONResponse({"model": vae.id, "seed": body.seed, "pieces": out}, headers=headers)
        if body.n == 1:
            return Response(pieces[0][1], media_type="audio/midi",
                            headers={**headers, "Content-Disposition": 'attachment; filename="piece.mid"'})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for i, (_, mid) in enumerate(pieces):
                z.writestr(f"piece-{i:03d}.mid", mid)
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={**headers, "Content-Disposition": 'attachment; filename="pieces.zip"'})


async def _interpolate(routes: Routes, a: UploadFile, b: UploadFile, params: InterpolateParams):
    """POST /v1/interpolate once its parameters are parsed: JSON of the pieces from a to b (base64
    MIDI each), one PNG strip of them all and its audio."""
    service = routes.service
    check_interpolate_args(params.steps, params.temperature)
    vae = (await service.registry()).get("vae", params.model)
    first, last = await routes.read_upload(a, "a", vae), await routes.read_upload(b, "b", vae)
    pieces = await service.interpolate(vae, first, last, params)
    strip = np.concatenate([roll for roll, _ in pieces])
    title = f"{a.filename or 'a'} -> {b.filename or 'b'}: {len(pieces)} pieces ({vae.id}, seed {params.seed})"
    png = await asyncio.to_thread(service.png, strip, vae.steps_per_beat, None, title,
                                  piece_starts([roll for roll, _ in pieces]))
    wav, engine = await asyncio.to_thread(service.wav, strip, vae.steps_per_beat)
    return JSONResponse({"model": vae.id, "steps": params.steps, "seed": params.seed,
                         "temperature": params.temperature, "piece_steps": len(pieces[0][0]),
                         "pieces": [{"midi": _b64(mid)} for _, mid in pieces], "png": _b64(png), "wav": _b64(wav),
                         "audio_engine": engine}, headers={"X-Model": vae.id, "X-Seed": str(params.seed)})


def _interpolate_endpoint(routes: Routes):
    """The /v1/interpolate endpoint: two MIDI files and form fields (:class:`InterpolateParams`)."""
    max_bytes = routes.settings.max_upload_bytes

    async def interpolate(
        a: Annotated[UploadFile, File(description=f"the first piece, a MIDI file (at most {max_bytes} bytes)")],
        b: Annotated[UploadFile, File(description="the last piece, a MIDI file")],
        steps: Annotated[int, Form(description="pieces from a to b, both included (2-64)")] = 8,
        temperature: Annotated[float, Form(description="sampling temperature, 0 to 10 (0: greedy)")]
        = INTERPOLATION_TEMPERATURE,
        seed: Annotated[int, Form(description="random seed")] = 0,
        model: Annotated[str | None, Form(description="VAE model id (default: the first)")] = None,
    ):
        params = InterpolateParams(steps=steps, temperature=temperature, seed=seed, model=model)
        return await _interpolate(routes, a, b, params)

    return interpolate


def _extend_endpoint(routes: Routes):
    """The /v1/extend endpoint FastAPI calls: its parameters, each a form field or a query
    parameter (the docs state this server's upload limit); the body is :meth:`Routes.extend`."""
    max_bytes = routes.settings.max_upload_bytes

    async def extend(
        midi: Annotated[UploadFile, File(description=f"the prompt, a MIDI file (at most {max_bytes} bytes)")],
        steps: Annotated[int | None, Form(description="steps to generate (default 64)")] = None,
        temperature: Annotated[float | None, Form(description="sampling temperature in (0, 10] (default 1)")] = None,
        seed: Annotated[int | None, Form(description="random seed (default 0)")] = None,
        model: Annotated[str | None, Form(description="LSTM model id (default: the first)")] = None,
        steps_q: Annotated[int | None, Query(alias="steps", description="as the form field")] = None,
        temperature_q: Annotated[float | None, Query(alias="temperature", description="as the form field")] = None,
        seed_q: Annotated[int | None, Query(alias="seed", description="as the form field")] = None,
        model_q: Annotated[str | None, Query(alias="model", description="as the form field")] = None,
        format: Annotated[Literal["midi", "png", "wav", "json"], Query(description="what to return")] = "midi",
    ):
        params = ExtendParams.given({"steps": steps, "temperature": temperature, "seed": seed, "model": model},
                                    {"steps": steps_q, "temperature": temperature_q, "seed": seed_q, "model": model_q})
        return await routes.extend(midi, params, format)

    return extend


def make_app(service: Service):
    """The FastAPI app over ``service``: wires :class:`Routes` to paths."""
    routes = Routes(service)
    app = FastAPI(title="musicgen", version="1",
                  description="Extend MIDI prompts with a trained LSTM, generate pieces with a trained VAE. "
                              "Errors are JSON `{\"error\": \"...\"}` with a 4xx status for bad input.")
    limits = {"/v1/extend": service.settings.max_upload_bytes + FORM_OVERHEAD,
              "/v1/interpolate": 2 * (service.settings.max_upload_bytes + FORM_OVERHEAD)}
    app.add_middleware(BodyLimit, limit_for=lambda path: limits.get(path, JSON_BODY_LIMIT))
    for exc_type, handler in routes.error_handlers().items():
        app.add_exception_handler(exc_type, handler)

    app.get("/", response_class=HTMLResponse, include_in_schema=False)(routes.page)
    app.get("/v1/health", summary="ready once the models are loaded")(routes.health)
    app.get("/v1/models", summary="the loaded models: ids, kinds, training metrics, defaults")(routes.models)
    app.post("/v1/extend", summary="continue a MIDI prompt with an LSTM", response_class=Response,
             responses={200: {"content": {"audio/midi": {}, "image/png": {}, "audio/wav": {}, "application/json": {}},
                              "description": "the prompt followed by the continuation"},
                        **ERROR_RESPONSES})(_extend_endpoint(routes))
    app.post("/v1/generate", summary="new pieces from a VAE", response_class=Response,
             responses={200: {"content": {"audio/midi": {}, "application/zip": {}, "application/json": {}},
                              "description": "one MIDI file (n=1) or a zip of n"},
                        **ERROR_RESPONSES})(routes.generate)
    app.post("/v1/interpolate", summary="pieces between two MIDI files along a VAE's latent space",
             responses={200: {"content": {"application/json": {}},
                              "description": "base64 MIDI per piece, a PNG strip and its audio"},
                        **ERROR_RESPONSES})(_interpolate_endpoint(routes))
    return app


@serve.deployment(name="models", max_ongoing_requests=64,
                  ray_actor_options={"num_cpus": 1, "runtime_env": {"env_vars": REPLICA_ENV}},
                  health_check_period_s=10, health_check_timeout_s=60)
class ModelServer:
    """The models deployment: loads the runs in its constructor; the ingress calls it by handle.
    Apart from the ingress so that a request whose model replica dies is retried on another."""

    def __init__(self, settings: dict):
        self.models = Models(Settings(**settings))

    def describe(self) -> list[dict]:
        return self.models.describe()

    async def extend(self, *args):
        return await self.models.extend(*args)

    async def generate(self, *args):
        return await self.models.generate(*args)

    async def interpolate(self, *args):
        return await self.models.interpolate(*args)


# The ingress parses requests, reads and writes MIDI and renders pictures and sound; it reserves
# no CPU (as Serve's own proxies), so that the models deployment can take a node's CPUs.
@serve.deployment(name="musicgen", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=10, health_check_timeout_s=60)
@serve.ingress()
class MusicService:
    """The ingress deployment: the FastAPI app over the models deployment's handle."""

    def __init__(self, settings: dict, models):
        self.service = Service(Settings(**settings), RemoteModels(models))

    def __serve_build_asgi_app__(self):
        return make_app(self.service)


def bind(settings: Settings, ingress: dict | None = None, models: dict | None = None):
    """The application: the ingress over the models deployment, with these deployment options."""
    needed = {"max_ongoing_requests": max(64, 2 * settings.max_batch_size)}  # >= max_batch_size or batches never fill
    models_app = ModelServer.options(**{**needed, **(models or {})}).bind(settings.model_dump())
    return MusicService.options(**{**needed, **(ingress or {})}).bind(settings.model_dump(), models_app)


def build(args: Settings):
    """Application builder (``import_path: musicgen_serve.app:build`` in serve/config.yaml)."""
    if not (args.lstm or args.vae):
        raise ValueError("musicgen_serve.app:build needs at least one run in args.lstm or args.vae")
    return bind(args)
