"""musicgen.runtime: TensorFlow's start-up lines stay off the terminal, in the CLI's process and in
Ray's workers, unless MUSICGEN_VERBOSE asks for everything."""
import os
import subprocess
import sys

import pytest

from musicgen import runtime

# Lines TensorFlow >= 2.19 prints as it loads, whatever TF_CPP_MIN_LOG_LEVEL says (absl, CUDA stub,
# oneDNN, CPU features); any of them on stderr means the quieting failed.
STARTUP = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "I0000", "E0000", "W0000")


def python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("MUSICGEN_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**environ, "RAY_ADDRESS": "local", **env})


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("no", False), ("1", True), ("yes", True)])
def test_verbose_reads_the_variable(value, expected, monkeypatch):
    monkeypatch.setenv(runtime.VERBOSE, value)
    assert runtime.verbose() is expected


def test_importing_tensorflow_through_musicgen_prints_nothing():
    p = python("from musicgen.keras import keras, tf; import numpy as np; "
               "print(keras.layers.Dense(2)(np.zeros((1, 3), np.float32)).shape)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "(1, 2)" and p.stderr == ""
    # the hook Ray's workers run: whoever imports tensorflow afterwards (Ray Train does), quietly
    p = python("from musicgen.runtime import quiet_tensorflow; quiet_tensorflow(); import os, tensorflow; "
               "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "2" and p.stderr == ""


def test_verbose_leaves_tensorflow_alone():
    p = python("import os; from musicgen.keras import tf; "
               "print(type(tf.__spec__.loader).__name__, os.environ.get('TF_CPP_MIN_LOG_LEVEL'))",
               MUSICGEN_VERBOSE="1")
    assert p.returncode == 0, p.stderr
    loader, level = p.stdout.split()
    assert loader != "_QuietLoader" and level == "None"


def test_ray_workers_started_by_ensure_ray_hide_tensorflow_start_up_but_show_their_output():
    """Starts a local Ray in a subprocess (hold the heavy-test lock)."""
    code = """
import ray
from musicgen.runtime import ensure_ray
ensure_ray(quiet=True, worker_output=True)

@ray.remote
def work():
    import tensorflow as tf
    print("worker says hello", flush=True)
    return int(tf.reduce_sum(tf.ones(3)))

print("result", ray.get(work.remote()), flush=True)
import time; time.sleep(2)  # the log monitor forwards worker lines about once a second
"""
    p = python(code)
    assert p.returncode == 0, p.stderr
    assert "result 3" in p.stdout and "worker says hello" in p.stdout + p.stderr
    assert not [x for x in (p.stdout + p.stderr).splitlines() if any(s in x for s in STARTUP)], p.stdout + p.stderr
