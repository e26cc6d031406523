"""The models a replica serves: trained runs loaded side by side, picked by id.

A run is given as ``PATH`` or ``ID=PATH`` (PATH a local folder or ``s3://...``). Without an id
the run's folder name is used (made unique with ``-2``, ``-3``, ...). The first run of each kind
is that kind's default. A request names a model by id only: ids are looked up in the loaded set,
so a path, a URL or an unknown id is answered 404 and never touches the file system.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from musicgen.errors import DataError

KINDS = ("lstm", "vae")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UnknownModel(LookupError):
    """A request named a model that is not loaded (HTTP 404)."""


@dataclass(frozen=True)
class RunSpec:
    kind: str
    path: str
    id: str | None = None


def parse_spec(text: str, kind: str) -> RunSpec:
    """``PATH`` or ``ID=PATH`` -> RunSpec. ``ID`` must match :data:`ID_PATTERN`, so an ``=`` inside
    a path (``s3://b/date=1``) is not mistaken for one."""
    if kind not in KINDS:
        raise DataError(f"model kind must be one of {', '.join(KINDS)}, not {kind!r}")
    text = str(text).strip()
    head, sep, tail = text.partition("=")
    if sep and ID_PATTERN.match(head) and tail:
        return RunSpec(kind, tail, head)
    if not text:
        raise DataError(f"empty {kind} run path")
    return RunSpec(kind, text)


def _folder_id(path: str, kind: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:64]
    return name if name and ID_PATTERN.match(name) else kind


def assign_ids(specs: list[RunSpec]) -> list[RunSpec]:
    """Specs with ids: explicit ids must be unique; folder names are made unique."""
    taken, out = set(), []
    for s in specs:
        if s.id is not None:
            if s.id in taken:
                raise DataError(f"model id {s.id!r} is given twice")
            taken.add(s.id)
    for s in specs:
        if s.id is None:
            base = _folder_id(s.path, s.kind)
            mid, k = base, 2
            while mid in taken:
                mid, k = f"{base}-{k}", k + 1
            taken.add(mid)
            s = RunSpec(s.kind, s.path, mid)
        out.append(s)
    return out


def check_run(spec: RunSpec) -> None:
    """Fail early, with a one-line message, if ``spec`` is not a trained run of its kind (reads
    only the run's model/config.json)."""
    from musicgen.run import Run

    kind = Run(spec.path).kind
    if kind != spec.kind:
        raise DataError(f"{spec.path}: a {kind} run, given as {spec.kind}")


def read_metrics(path: str) -> dict:
    """The run's metrics.json (empty if it has none, or it cannot be read: metrics are only shown)."""
    from musicgen.run import Run

    try:
        return Run(path).metrics()
    except (OSError, ValueError):  # ValueError: bad JSON, or a DataError (the store cannot be reached)
        return {}


@dataclass
class Model:
    id: str
    kind: str
    model: object  # musicgen.lstm.Extender or musicgen.vae.Generator
    info: dict  # the run's model/config.json
    metrics: dict = field(default_factory=dict)
    default: bool = False
    block: int = 1  # LSTM: rows per padded block of a batched step (musicgen_serve.batching.exact_block)

    @property
    def steps_per_beat(self) -> int:
        return self.info.get("steps_per_beat") or 4

    @classmethod
    def described(cls, d: dict) -> "Model":
        """The model that :meth:`describe` gave ``d`` for, without its weights (what the ingress knows)."""
        grid = {k: d[k] for k in ("steps_per_beat", "steps_per_second") if k in d}
        return cls(d["id"], d["kind"], None, {**grid, "config": d["config"]},
                   {"best": d["metrics"], "epochs": d["epochs"]}, block=d.get("batch_block", 1))

    def describe(self) -> dict:
        cfg = self.info.get("config", {})
        return {"id": self.id, "kind": self.kind, "default": self.default,
                "metrics": self.metrics.get("best", {}), "epochs": self.metrics.get("epochs"),
                "steps_per_beat": self.steps_per_beat, **({"batch_block": self.block} if self.kind == "lstm" else {}),
                # a run on a grid in seconds (prepare --steps-per-second) says so; beat-grid runs as before
                **({"steps_per_second": self.info["steps_per_second"]} if self.info.get("steps_per_second") else {}),
                "config": {k: v for k, v in cfg.items() if not isinstance(v, (dict, list))}}


class Registry:
    """Loaded models by id."""

    def __init__(self, models: list[Model]):
        self.models = {m.id: m for m in models}
        for kind in KINDS:
            first = next((m for m in models if m.kind == kind), None)
            if first is not None:
                first.default = True

    @classmethod
    def load(cls, specs: list[RunSpec]) -> "Registry":
        from musicgen.generate import load_extender, load_generator

        models = []
        for s in assign_ids(specs):
            loader = load_extender if s.kind == "lstm" else load_generator
            obj, info = loader(s.path)
            models.append(Model(s.id, s.kind, obj, info, read_metrics(s.path)))
        return cls(models)

    def get(self, kind: str, model_id: str | None) -> Model:
        """The model of ``kind`` called ``model_id`` (None or '': the kind's default)."""
        if not model_id:
            m = next((m for m in self.models.values() if m.kind == kind and m.default), None)
            if m is None:
                raise UnknownModel(f"no {kind} model is loaded")
            return m
        m = self.models.get(model_id) if isinstance(model_id, str) else None
        if m is None or m.kind != kind:
            known = ", ".join(i for i, m in self.models.items() if m.kind == kind) or "none"
            shown = model_id if len(model_id) <= 80 else model_id[:80] + "..."
            raise UnknownModel(f"unknown {kind} model {shown!r} (loaded: {known})")
        return m

    def describe(self) -> list[dict]:
        return [m.describe() for m in self.models.values()]
