"""Tests of musicgen_serve.registry: run specs, model ids, lookup by id (no Ray, no trained run).

The registry loading real runs is tested through the running application in tests/test_serve.py.
"""
import pytest


def test_run_specs_ids_and_registry_lookup():
    from musicgen.errors import DataError
    from musicgen_serve.registry import Model, Registry, RunSpec, UnknownModel, assign_ids, parse_spec

    assert parse_spec("v2=s3://b/runs/x", "lstm") == RunSpec("lstm", "s3://b/runs/x", "v2")
    assert parse_spec("s3://b/date=2024/run", "lstm").id is None  # '=' inside a path is not an id
    assert parse_spec("/runs/a=b", "vae") == RunSpec("vae", "/runs/a=b")
    specs = assign_ids([RunSpec("lstm", "/r/run"), RunSpec("lstm", "/s/run/"), RunSpec("vae", "/t/run", "x")])
    assert [s.id for s in specs] == ["run", "run-2", "x"]
    with pytest.raises(DataError, match="twice"):
        assign_ids([RunSpec("lstm", "/a", "x"), RunSpec("vae", "/b", "x")])
    reg = Registry([Model("a", "lstm", None, {}), Model("b", "lstm", None, {}), Model("g", "vae", None, {})])
    assert reg.get("lstm", None).id == "a" and reg.get("lstm", "b").id == "b" and reg.get("vae", "").id == "g"
    for bad in ("g", "../../etc/passwd", "/tmp/x", "s3://bucket/run", "A"):
        with pytest.raises(UnknownModel):
            reg.get("lstm", bad)


def test_bad_specs_and_a_kind_with_no_model():
    from musicgen.errors import DataError
    from musicgen_serve.registry import Model, Registry, UnknownModel, parse_spec

    with pytest.raises(DataError, match="empty lstm run path"):
        parse_spec("  ", "lstm")
    with pytest.raises(DataError, match="model kind"):
        parse_spec("/r", "gan")
    reg = Registry([Model("a", "lstm", None, {})])
    with pytest.raises(UnknownModel, match="no vae model is loaded"):
        reg.get("vae", None)


def test_what_the_ingress_knows_of_a_model_is_what_the_replica_describes():
    """The ingress rebuilds the models from the models deployment's describe() (no weights): the
    grid, the config and the metrics it answers with must survive the round trip."""
    from musicgen_serve.registry import Model, Registry

    info = {"steps_per_beat": 2, "config": {"units": 16, "layers": 1, "shape": [1, 2]}}
    metrics = {"best": {"val_nll": 0.5}, "epochs": 3}
    loaded = Registry([Model("v1", "lstm", object(), info, metrics, block=4), Model("g", "vae", object(), {})])
    described = loaded.describe()
    assert described[0]["config"] == {"units": 16, "layers": 1}  # only plain values are shown
    known = Registry([Model.described(d) for d in described])
    assert known.describe() == described
    v1 = known.get("lstm", None)
    assert v1.model is None and v1.steps_per_beat == 2 and v1.block == 4
    assert known.get("vae", None).steps_per_beat == 4  # a run without the field: 4 per beat
