"""musicgen.raycompat: the one module on Ray's private APIs, guarded by the Ray version it was
written for. (That it gives stopped trials' CPUs back: test_tune.py's
test_search_gives_the_cluster_back, on a real search.) No Ray cluster."""
import pathlib
import re

import pytest

from musicgen import raycompat

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("version", ["2.61.0", "2.59.1", "3.0.0", "2.6.0"])
def test_another_ray_fails_loudly_naming_this_module(version):
    with pytest.raises(raycompat.UnsupportedRay) as e:
        raycompat.check_version(version)
    assert (e.value.installed, e.value.supported) == (version, "2.60")
    assert "musicgen.raycompat" in str(e.value) and raycompat.ISSUE in str(e.value)


@pytest.mark.parametrize("version", ["2.60.0", "2.60.3"])
def test_the_ray_it_was_written_for_passes(version):
    raycompat.check_version(version)


def test_trials_trainers_start_no_placement_group_cleaner():
    from ray.train.tensorflow import TensorflowTrainer

    def names(trainer):
        return [type(c).__name__ for c in trainer._create_default_callbacks()]

    trainer = raycompat.without_pg_cleaner(TensorflowTrainer)(lambda config: None)
    assert isinstance(trainer, TensorflowTrainer) and type(trainer).__name__ == "TensorflowTrainer"
    assert "PlacementGroupCleanerCallback" in names(TensorflowTrainer(lambda config: None))
    assert "PlacementGroupCleanerCallback" not in names(trainer)


def test_no_other_module_reaches_into_ray_s_private_modules():
    private = re.compile(r"ray\._private|ray\.train\.v2\._internal|ray\.core\.generated|\._connect_and_get_accessor")
    sources = [p for d in ("musicgen", "tune", "serve") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 10
    users = sorted(str(p.relative_to(ROOT)) for p in sources if private.search(p.read_text()))
    assert users == ["musicgen/raycompat.py"]
