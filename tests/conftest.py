"""Shared fixtures: real chorales, a real S3 endpoint (moto's server on 127.0.0.1), a real local Ray.

Everything started here is stopped at the end of the session.
"""
import os
import shutil
import socket
import subprocess
import sys

import pytest

N_CHORALES = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chorales(tmp_path_factory):
    """A folder of real Bach chorales as MIDI, written by musicgen's own corpus command."""
    from musicgen.corpus import write_corpus

    dest = tmp_path_factory.mktemp("bach")
    paths = write_corpus("bach", str(dest), limit=N_CHORALES, progress=False)
    assert len(paths) == N_CHORALES
    return dest


@pytest.fixture(scope="session")
def s3_env():
    """moto's S3 server on a free loopback port, with the standard AWS_* variables pointing at it.

    Started before Ray (see ``ray_local``) so that Ray's worker processes inherit the variables.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3(s3_env):
    """A boto3 client on the test S3 server and a fresh bucket name."""
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    bucket = "test-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture(scope="session")
def ray_local(s3_env):
    """A real local Ray (2 CPUs) for the whole session."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def dataset(ray_local, chorales, tmp_path_factory):
    """The chorales prepared once (70/15/15 split) for the tests that train on them; read-only."""
    from musicgen.prepare import PrepareConfig, prepare

    dest = tmp_path_factory.mktemp("ds") / "ds"
    prepare(str(chorales), str(dest), PrepareConfig(split=(0.7, 0.15, 0.15)), progress=False)
    return str(dest)


def cpu_groups(ray) -> set:
    """The ids of the placement groups holding CPUs (Ray names their resources CPU_group_[i_]ID)."""
    return {key.rsplit("_", 1)[-1] for key in ray.cluster_resources() if key.startswith("CPU_group_")}


def run_cli(*args, env=None, timeout=600):
    """Run ``musicgen ARGS`` in a subprocess (its own Ray); returns the CompletedProcess."""
    exe = shutil.which("musicgen") or os.path.join(os.path.dirname(sys.executable), "musicgen")
    # RAY_ADDRESS=local: its own Ray, never the test session's
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RAY_ADDRESS": "local", **(env or {})})
