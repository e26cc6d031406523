"""The deployment files: docker/ (the images), cluster/aws.yaml (Ray cluster launcher on AWS) and
cluster/kuberay.yaml (KubeRay RayJob).

Static checks, fast, with no network, Docker or cloud: the files parse, the cluster launcher config
passes Ray's own validation, the images the clusters run are the ones docker/build.sh builds on
Ray's official image of the installed Ray, every job's command line parses with musicgen's own
parser and fits the GPUs of the cluster it is meant for, and no credentials are written anywhere.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
BUILD_SH = ROOT / "docker" / "build.sh"
AWS_YAML = ROOT / "cluster" / "aws.yaml"
KUBERAY_YAML = ROOT / "cluster" / "kuberay.yaml"
SCRIPTS = [BUILD_SH, ROOT / "cluster" / "aws-iam.sh"]

PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"
OFFICIAL_CPU = f"rayproject/ray:{ray.__version__}-{PY_TAG}"
OFFICIAL_GPU = f"{OFFICIAL_CPU}-gpu"
FAKE_ENV = {"MUSICGEN_REGISTRY": "123456789012.dkr.ecr.us-west-2.amazonaws.com",
            "MUSICGEN_BUCKET": "musicgen-test-bucket",
            "MUSICGEN_IRSA_ROLE_ARN": "arn:aws:iam::123456789012:role/musicgen-ray"}


def _load_render():
    spec = importlib.util.spec_from_file_location("musicgen_cluster_render", ROOT / "cluster" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


def _rendered(path: Path):
    return render.render(path.read_text(), FAKE_ENV)


# --- helpers -------------------------------------------------------------------------------------

def parse_job(cmd: str):
    """A job's entrypoint parsed by musicgen's own CLI parser (as `musicgen ...` would be)."""
    from musicgen.cli import build_parser

    argv = shlex.split(cmd)
    assert argv[0] == "musicgen", f"entrypoint should run the musicgen command: {cmd!r}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as e:  # argparse's way of failing
        pytest.fail(f"musicgen's parser rejects {cmd!r} (exit {e.code})")


def check_train_job(args, *, gpus: float, gpu_node_cpus: float, cpus: float, where: str):
    """A `musicgen train` job: data and checkpoints on S3, and enough GPUs (or CPUs) for --workers.

    With --gpu every Ray Train worker holds one GPU and one CPU of a GPU node; without, one CPU.
    """
    assert args.command == "train", f"{where}: only train jobs are checked here, not {args.command!r}"
    assert args.data.startswith("s3://") and args.out.startswith("s3://"), f"{where}: data and run belong on S3"
    if args.gpu:
        assert gpus >= args.workers, f"{where}: --workers {args.workers} --gpu needs {args.workers} GPUs, has {gpus}"
        assert gpu_node_cpus >= args.workers, f"{where}: each GPU worker also needs a CPU on its node"
    else:
        assert cpus >= args.workers, f"{where}: --workers {args.workers} needs {args.workers} CPUs, has {cpus}"


def quantity(value) -> float:
    """A Kubernetes quantity ("3", 3, "500m", "12Gi") as a number (CPU cores, GPUs, bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.fixture(scope="module")
def built_images() -> dict[str, str]:
    """{image name: base image} of what docker/build.sh builds, names as the cluster files write them."""
    if not shutil.which("bash"):
        pytest.skip("bash is needed to run docker/build.sh --dry-run")
    out = subprocess.run(["bash", str(BUILD_SH), "--dry-run", "--push"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "MUSICGEN_REGISTRY": "${MUSICGEN_REGISTRY}"},
                         cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    images = {}
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        if words[:2] == ["docker", "build"]:
            assert words[words.index("-f") + 1] == "docker/Dockerfile"
            base = words[words.index("--build-arg") + 1].removeprefix("BASE_IMAGE=")
            images[words[words.index("-t") + 1]] = base
        else:
            assert words[:2] == ["docker", "push"] and words[2] in images, line
    return images


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load(AWS_YAML.read_text())


@pytest.fixture(scope="module")
def kuberay() -> list[dict]:
    return [d for d in yaml.safe_load_all(KUBERAY_YAML.read_text()) if d]


def cluster_specs(docs: list[dict]):
    """(name, RayCluster spec, entrypoint or None) for every RayCluster and RayJob in ``docs``."""
    for d in docs:
        if d.get("kind") == "RayCluster":
            yield d["metadata"]["name"], d["spec"], None
        elif d.get("kind") == "RayJob":
            yield d["metadata"]["name"], d["spec"]["rayClusterSpec"], d["spec"].get("entrypoint")


def ray_containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


# --- docker/ -------------------------------------------------------------------------------------

def test_dockerfile_builds_on_rays_official_image_of_the_installed_ray():
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)\s*$", text, re.M)
    assert default, "docker/Dockerfile: no 'ARG BASE_IMAGE=' default"
    assert default.group(1) == OFFICIAL_CPU, f"base image {default.group(1)} is not Ray {ray.__version__}'s"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}\s*$", text, re.M), "the base image must come from BASE_IMAGE"
    assert re.search(r"^ENV TF_USE_LEGACY_KERAS=1\b", text, re.M), "the image must select tf-keras"
    assert re.search(r"pip install .*/app\b", text), "the image must install the project"

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ray_req = next(Requirement(d) for d in pyproject["project"]["dependencies"] if Requirement(d).name == "ray")
    assert ray.__version__ in ray_req.specifier, f"installed Ray {ray.__version__} is outside {ray_req}"


def test_build_script_makes_a_cpu_and_a_gpu_image_on_the_official_tags(built_images):
    assert built_images == {"${MUSICGEN_REGISTRY}/musicgen:cpu": OFFICIAL_CPU,
                            "${MUSICGEN_REGISTRY}/musicgen:gpu": OFFICIAL_GPU}


def test_image_requirements_are_pyprojects_with_cuda_tensorflow_on_gpu():
    spec = importlib.util.spec_from_file_location("musicgen_docker_requirements", ROOT / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pyproject = str(ROOT / "pyproject.toml")
    cpu, gpu = module.requirements(pyproject), module.requirements(pyproject, gpu=True)
    assert cpu == tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    changed = [(c, g) for c, g in zip(cpu, gpu) if c != g]
    assert len(changed) == 1 and changed[0][1].startswith("tensorflow[and-cuda]"), changed
    assert changed[0][1].removeprefix("tensorflow[and-cuda]") == changed[0][0].removeprefix("tensorflow")


def test_build_context_sends_what_the_dockerfile_copies():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file should allow-list (start with '*')"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    assert {"pyproject.toml", "musicgen"} <= allowed and (readme is None or readme in allowed)
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for src in sources:
                assert src == "." or src in allowed, f"COPY {src}: not sent by {DOCKERIGNORE.name}"
                assert src == "." or (ROOT / src).exists(), f"COPY {src}: no such file"
    # every top-level Python package of the project reaches the image (COPY . /app)
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages - allowed == set(), f"packages left out of the image: {sorted(packages - allowed)}"


# --- cluster/aws.yaml: the Ray cluster launcher ---------------------------------------------------

def test_aws_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(_rendered(AWS_YAML))
    validate_config(config)
    validate_config(prepare_config(config))


def test_aws_config_has_a_cpu_head_and_gpu_workers_from_the_built_images(aws, built_images):
    assert aws["cluster_name"]
    assert aws["provider"]["type"] == "aws" and aws["provider"]["region"]
    types = aws["available_node_types"]
    head = aws["head_node_type"]
    assert head in types
    docker = aws["docker"]
    assert types[head]["resources"].get("GPU", 0) == 0, "the head node should not be a GPU node"
    assert docker.get("head_image", docker.get("image")) == "${MUSICGEN_REGISTRY}/musicgen:cpu"
    gpu_types = {name: t for name, t in types.items() if name != head and t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker node type with resources GPU >= 1"
    for name, t in types.items():
        node = t["node_config"]
        assert node.get("InstanceType"), name
        # S3 (and ECR) through an instance profile: the only AWS credentials the nodes get
        assert node.get("IamInstanceProfile", {}).keys() & {"Name", "Arn"}, f"{name}: no IamInstanceProfile"
        if name != head:
            image = t.get("docker", {}).get("worker_image", docker.get("worker_image", docker.get("image")))
            assert image in built_images, f"{name}: image {image} is not one docker/build.sh builds"
            if name in gpu_types:
                assert built_images[image].endswith("-gpu"), f"{name}: GPU workers need the GPU image"


def test_aws_job_parses_and_fits_the_gpu_workers(aws):
    types, head = aws["available_node_types"], aws["head_node_type"]
    job = aws["metadata"]["musicgen"]
    for text in (job["entrypoint"], yaml.safe_load(_rendered(AWS_YAML))["metadata"]["musicgen"]["entrypoint"]):
        args = parse_job(text)
        # started with the cluster (min_workers): musicgen checks the GPUs before training
        workers = {name: t.get("min_workers", 0) for name, t in types.items() if name != head}
        res = {name: types[name]["resources"] for name in workers}
        gpus = sum(n * res[name].get("GPU", 0) for name, n in workers.items())
        gpu_node_cpus = sum(n * res[name].get("CPU", 0) for name, n in workers.items() if res[name].get("GPU", 0))
        cpus = sum(n * res[name].get("CPU", 0) for name, n in workers.items()) + types[head]["resources"].get("CPU", 0)
        check_train_job(args, gpus=gpus, gpu_node_cpus=gpu_node_cpus, cpus=cpus, where="aws.yaml")
        assert sum(workers.values()) <= aws["max_workers"], "max_workers is below the node types' min_workers"
        for name, n in workers.items():
            assert n <= types[name].get("max_workers", aws["max_workers"]), name
    assert job["runtime_env"]["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"


def test_aws_cluster_uses_ray_token_auth_with_the_token_file(aws):
    options = " ".join(aws["docker"]["run_options"])
    assert re.search(r"--env RAY_AUTH_MODE=token\b", options)
    assert aws["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


# --- cluster/kuberay.yaml ------------------------------------------------------------------------

def test_kuberay_manifest_has_head_and_gpu_worker_groups_from_the_built_images(kuberay, built_images):
    specs = list(cluster_specs(kuberay))
    assert specs, "no RayCluster or RayJob in kuberay.yaml"
    for d in kuberay:
        if d["kind"] in ("RayCluster", "RayJob"):
            assert d["apiVersion"] == "ray.io/v1"
    accounts = {d["metadata"]["name"]: d for d in kuberay if d["kind"] == "ServiceAccount"}
    for name, spec, _ in specs:
        assert spec["rayVersion"] == ray.__version__, f"{name}: rayVersion {spec['rayVersion']}"
        assert spec.get("authOptions", {}).get("mode") == "token", f"{name}: Ray token auth is off"
        head = spec["headGroupSpec"]["template"]
        assert [c["image"] for c in ray_containers(head)][0] == "${MUSICGEN_REGISTRY}/musicgen:cpu"
        groups = spec["workerGroupSpecs"]
        assert groups, f"{name}: no worker groups"
        gpu_groups = [g for g in groups
                      if any(quantity(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
                             for c in ray_containers(g["template"]))]
        assert gpu_groups, f"{name}: no worker group with nvidia.com/gpu limits"
        for pod in [head] + [g["template"] for g in groups]:
            account = pod["spec"].get("serviceAccountName")
            assert account in accounts, f"{name}: pods need the ServiceAccount that carries S3 access"
            for c in ray_containers(pod):
                assert c["image"] in built_images, f"{name}: image {c['image']} is not one docker/build.sh builds"
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert env.get("TF_USE_LEGACY_KERAS") == "1", f"{name}/{c['name']}: TF_USE_LEGACY_KERAS=1 missing"
        for g in gpu_groups:
            for c in ray_containers(g["template"]):
                assert built_images[c["image"]].endswith("-gpu"), f"{g['groupName']}: GPU pods need the GPU image"
    for account in accounts.values():
        assert account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn"), \
            "the ServiceAccount should name its IAM role (IRSA)"


def test_kuberay_jobs_parse_and_fit_their_gpu_groups(kuberay):
    jobs = [d for d in kuberay if d["kind"] == "RayJob"]
    assert jobs, "no RayJob in kuberay.yaml"
    rendered = {d["metadata"]["name"]: d for d in yaml.safe_load_all(_rendered(KUBERAY_YAML)) if d}
    for job in jobs:
        spec = job["spec"]
        for text in (spec["entrypoint"], rendered[job["metadata"]["name"]]["spec"]["entrypoint"]):
            args = parse_job(text)
            gpus = cpus = gpu_node_cpus = min_gpus = 0.0
            for g in spec["rayClusterSpec"]["workerGroupSpecs"]:
                replicas = g.get("replicas", 1)
                assert g.get("minReplicas", 0) <= replicas <= g.get("maxReplicas", replicas), g["groupName"]
                for c in ray_containers(g["template"]):
                    limits = c.get("resources", {}).get("limits", {})
                    gpu = quantity(limits.get("nvidia.com/gpu", 0))
                    gpus += replicas * gpu
                    min_gpus += g.get("minReplicas", 0) * gpu
                    cpus += replicas * quantity(limits.get("cpu", 0))
                    gpu_node_cpus += replicas * quantity(limits.get("cpu", 0)) if gpu else 0
            check_train_job(args, gpus=gpus, gpu_node_cpus=gpu_node_cpus, cpus=cpus, where=job["metadata"]["name"])
            if args.gpu:
                assert min_gpus >= args.workers, "minReplicas would let the GPU group shrink below --workers"
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        assert runtime_env.get("env_vars", {}).get("TF_USE_LEGACY_KERAS") == "1"


# --- everything ----------------------------------------------------------------------------------

def deployment_files() -> list[Path]:
    files = [p for d in ("cluster", "docker") for p in sorted((ROOT / d).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and ".rendered." not in p.name]
    return files + [p for p in (ROOT / "README.md", Path(__file__)) if p.exists()]


def test_no_credentials_in_any_deployment_file():
    key_id = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
    secret = re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{20,}", re.I)
    names = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
    for path in deployment_files():
        text = path.read_text(errors="replace")
        assert not key_id.search(text), f"{path}: an AWS access key id"
        assert not secret.search(text), f"{path}: an AWS secret key"
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(text):
                _no_literal_secrets(doc, names, path)


def _no_literal_secrets(node, names, path):
    if isinstance(node, dict):
        assert not (node.get("kind") == "Secret" and (node.get("data") or node.get("stringData"))), \
            f"{path}: a Secret with its data written in the file"
        if node.get("name") in names:
            assert "value" not in node, f"{path}: {node['name']} given as a literal (use valueFrom or IAM)"
        for v in node.values():
            _no_literal_secrets(v, names, path)
    elif isinstance(node, list):
        for v in node:
            _no_literal_secrets(v, names, path)
    elif isinstance(node, str):
        for name in names:
            assert not re.search(rf"\b{name}=\S", node), f"{path}: {name} set to a literal value"


def test_render_fills_only_musicgen_placeholders():
    for path in (AWS_YAML, KUBERAY_YAML):
        text = _rendered(path)
        assert "${MUSICGEN_" not in text
        yaml.safe_load_all(text)
    aws = _rendered(AWS_YAML)
    assert "$RAY_HEAD_IP" in aws and "${REG%%/*}" in aws, "shell variables must survive rendering"
    assert f"{FAKE_ENV['MUSICGEN_REGISTRY']}/musicgen:gpu" in aws
    assert render.render("s3://${MUSICGEN_BUCKET}/x", {"MUSICGEN_BUCKET": "s3://b/"}) == "s3://b/x"
    with pytest.raises(ValueError, match="MUSICGEN_BUCKET"):
        render.render(AWS_YAML.read_text(), {"MUSICGEN_REGISTRY": "r"})
    with pytest.raises(ValueError, match="MUSICGEN_TYPO"):
        render.render("${MUSICGEN_TYPO}", FAKE_ENV)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    if not shutil.which("bash"):
        pytest.skip("no bash")
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
