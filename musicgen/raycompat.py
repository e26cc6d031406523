"""The one place musicgen uses Ray's private modules: freeing the CPUs of stopped Tune trials.

Written for Ray 2.60.x and checked against it on import (:func:`check_version`): another Ray
fails here, loudly, and nowhere else.

Why: a Tune trial that runs a Ray Train V2 trainer starts a Train controller actor, whose
placement group holds the trial's worker CPUs. When ASHA stops the trial, Tune ends the trial's
actor and with it (fate-sharing) the controller, but the placement group belongs to the driver's
job and outlives them until the job ends, so later trials wait for CPUs that never come back:
https://github.com/ray-project/ray/issues/54305 ("[Ray Tune + Train V2] Broken resource sharing
among Tune trials"). Ray's fix (https://github.com/ray-project/ray/pull/58515) is a detached
PlacementGroupCleaner actor per Train run, which frees the group only where the dashboard's state
API answers (a local Ray started without the dashboard has none) and otherwise stays behind
itself. The lasting fix, placement groups that end with the actor that made them, is still open:
https://github.com/ray-project/ray/issues/65881.

So Tune trials run their trainers without that cleaner (:func:`without_pg_cleaner`), and the Tune
driver frees the placement groups of dead actors of its own job, from the Tune loop
(:func:`release_orphans_callback`) and when a search ends (:func:`release_orphans`), as Ray itself
does when the job ends, and at the end of a search those of the trials' Train controllers that
outlived it. A training run on a Ray without a dashboard does without the cleaner too: there it
cannot work, and only logs a warning (or a traceback) every second.
"""
from __future__ import annotations

import time

import ray

from .errors import MusicgenError

SUPPORTED = "2.60"  # the Ray release (major.minor) whose private modules this module uses
ISSUE = "https://github.com/ray-project/ray/issues/54305"  # what this module works around
TRAIN_CONTROLLER = "TrainController"  # the class name of Ray Train V2's controller actor


class UnsupportedRay(MusicgenError):
    """The installed Ray (``installed``) is not the one this module was written for (``supported``)."""

    def __init__(self, installed: str, supported: str = SUPPORTED):
        self.installed, self.supported = installed, supported
        super().__init__(f"musicgen.raycompat was written for Ray {supported}.x, and Ray {installed} is installed: "
                         f"install ray=={supported}.* or update musicgen/raycompat.py for it (is {ISSUE} fixed?)")


def check_version(version: str) -> None:
    """An :class:`UnsupportedRay` unless ``version`` is a Ray :data:`SUPPORTED` release."""
    if version.split(".")[:2] != SUPPORTED.split("."):
        raise UnsupportedRay(version)


check_version(ray.__version__)


def without_pg_cleaner(base):
    """``base`` (a Ray Train trainer class) whose runs start no detached PlacementGroupCleaner."""
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class Trainer(base):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, PlacementGroupCleanerCallback)]

    Trainer.__name__ = Trainer.__qualname__ = base.__name__
    return Trainer


def release_orphans(wait_s: float = 0.0, *, ended: bool = False) -> int:
    """Remove this job's placement groups whose creating actor is dead; returns how many.

    What Ray does for them when the job ends. With ``ended`` (a search has ended: none of its
    trials runs any more), first wait (``wait_s`` at most) for the Train controllers that trials
    started to end, then remove the groups of those still there: their trial is over, so nothing
    will use the CPUs they hold. (A CI run once found a live Train controller's group still holding
    a CPU 5 minutes after its search ended; Ray kills an actor only through a handle, which the
    driver has not.)
    The driver's own Train runs are left alone.
    """
    deadline, removed = time.monotonic() + wait_s, 0
    while True:
        dead, controllers = _actor_placement_groups()
        removed += _remove(dead)
        trials = [pg for pg, by_driver in controllers if not by_driver]
        if not ended or not trials:
            return removed
        if time.monotonic() >= deadline:
            return removed + _remove(trials)
        time.sleep(1.0)


def _remove(groups) -> int:
    removed = 0
    for pg in groups:
        try:
            ray.util.remove_placement_group(pg)
            removed += 1
        except Exception:  # noqa: BLE001 - removed already
            pass
    return removed


def _actor_placement_groups():
    """Of this job's placement groups not removed: ([those of dead actors], [(one of a live Train
    controller, whether this driver started that controller)])."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    context = ray.get_runtime_context()
    job, driver = context.get_job_id(), context.get_worker_id()
    dead, controllers = [], []
    try:
        accessor = state._connect_and_get_accessor()
        table = accessor.get_placement_group_table()
    except Exception:  # noqa: BLE001 - the GCS did not answer this time: the next call tries again
        return dead, controllers
    for raw in table:
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        creator = ray.ActorID(info.creator_actor_id)
        if (info.state == gcs_pb2.PlacementGroupTableData.REMOVED or info.is_detached
                or info.creator_job_id.hex() != job or creator.is_nil()):
            continue
        pg = PlacementGroup(ray.PlacementGroupID(info.placement_group_id))
        if info.creator_actor_dead:
            dead.append(pg)
            continue
        actor = accessor.get_actor_info(creator)
        actor = actor and gcs_pb2.ActorTableData.FromString(actor)
        if actor and actor.class_name == TRAIN_CONTROLLER:
            controllers.append((pg, actor.owner_address.worker_id.hex() == driver))
    return dead, controllers


def release_orphans_callback(every_s: float = 2.0):
    """A Tune callback that frees stopped trials' placement groups from the Tune loop (every
    ``every_s`` seconds), so that the next trials get their CPUs."""
    from ray import tune

    class ReleaseOrphans(tune.Callback):
        def __init__(self):
            self.last = 0.0

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self.last >= every_s:
                self.last = time.monotonic()
                release_orphans()

    return ReleaseOrphans()
