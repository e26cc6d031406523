"""Starting (or joining) Ray for the commands that need it."""
from __future__ import annotations

import logging
import os


def ensure_ray(address: str | None = None, quiet: bool = True):
    """Connect to the Ray cluster at ``address`` / ``RAY_ADDRESS``, or start a local one.

    Inside ``ray job submit`` RAY_ADDRESS is set and the job joins its cluster; on a laptop the
    program starts its own Ray and stops it at exit.
    """
    import ray

    if ray.is_initialized():
        return ray
    if quiet:
        for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address,
             # a local Ray started here skips the dashboard (~0.4 GB, seconds of start-up) unless asked
             include_dashboard=None if address not in (None, "local") else bool(os.environ.get("MUSICGEN_DASHBOARD")),
             logging_level=logging.ERROR if quiet else logging.INFO,
             log_to_driver=not quiet, configure_logging=True)
    return ray


def quiet_data_context():
    """Ray Data without its own progress bars and banners (musicgen shows one bar per job)."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its banners, not our errors
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True  # same input -> same shards, byte for byte
    for attr in ("enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    return ctx
