"""The process tree of a running benchmark subject, polled with psutil, and a command measured by it
(shared by the benchmarks)."""
from __future__ import annotations

import subprocess
import sys
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


def measure(cmd: list[str], env: dict) -> tuple[float, int, int, str, dict]:
    """Run ``cmd``: wall seconds, peak RSS of its process tree and of itself, its stdout, and the
    tree's RSS by process name at its peak."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    tree_peak, driver_peak, by_name = 0, 0, {}
    for procs in poll_tree(proc, 0.1):
        sample = {}
        for q in procs:
            try:
                rss, name = q.memory_info().rss, q.name()
            except psutil.Error:
                continue
            sample[name] = sample.get(name, 0) + rss
            if q.pid == proc.pid:
                driver_peak = max(driver_peak, rss)
        if sum(sample.values()) > tree_peak:
            tree_peak, by_name = sum(sample.values()), sample
    out, _ = proc.communicate()  # stdout is small (a summary or one JSON line), so no pipe stall
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit status {proc.returncode}:\n{out}")
    return wall, tree_peak, driver_peak, out, by_name
