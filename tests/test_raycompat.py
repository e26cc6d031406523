"""musicgen.raycompat: the one module on Ray's private APIs, guarded by the Ray version it was
written for; what it frees at a search's end, on the session's local Ray. (That a real search
gives its CPUs back: test_tune.py's test_search_gives_the_cluster_back.)"""
import pathlib
import re
import time

import pytest

from musicgen import raycompat

from conftest import cpu_groups

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


def test_a_search_s_end_frees_the_groups_of_trials_controllers_that_outlived_it(ray_local):
    """A Train controller started by a trial (here: by another actor) holds a placement group after
    its search ended: ``release_orphans(ended=True)`` waits for it, then removes the group; the
    driver's own Train runs and a search still running are left alone."""
    ray = ray_local
    from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

    class TrainController:  # stands for Ray Train's, which raycompat knows by its class name
        def hold(self):
            self.group = placement_group([{"CPU": 1}])
            ray.get(self.group.ready())
            return self.group.id.hex()

    class Trial:  # stands for a Tune trial's actor: its Train run starts a controller
        def start(self, controller_class):
            self.controller = controller_class.remote()
            return ray.get(self.controller.hold.remote())

    TrainController.__qualname__ = "TrainController"  # as a module-level class's (defined here: pickled by value)
    controller_class, trial_class = ray.remote(num_cpus=0)(TrainController), ray.remote(num_cpus=0)(Trial)

    trial, driver_s = trial_class.remote(), controller_class.remote()
    trial_group, driver_group = ray.get(trial.start.remote(controller_class)), ray.get(driver_s.hold.remote())
    try:
        _, controllers = raycompat._actor_placement_groups()
        assert sorted(by_driver for _, by_driver in controllers) == [False, True]
        assert raycompat.release_orphans(wait_s=2) == 0  # during a search: trials' controllers run
        started = time.monotonic()
        assert raycompat.release_orphans(wait_s=2, ended=True) == 1
        assert time.monotonic() - started >= 2  # it gave the controller time to end by itself
        deadline = time.monotonic() + 30  # Ray removes groups asynchronously
        while trial_group in (held := cpu_groups(ray)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert trial_group not in held and driver_group in held
    finally:
        ray.kill(trial)
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(driver_group)))
        ray.kill(driver_s)

