"""The process tree of a running benchmark subject, polled with psutil (shared by the benchmarks)."""
from __future__ import annotations

import time

import psutil


def poll_tree(proc, interval: float):
    """While ``proc`` (a ``subprocess.Popen``) runs, every ``interval`` seconds yield the list of its
    ``psutil.Process`` and all its descendants (the process itself first)."""
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        yield procs
        time.sleep(interval)
