"""Print musicgen's runtime requirements from pyproject.toml, one per line, for the image build.

    python docker/requirements.py [PYPROJECT] [--gpu]

The Dockerfile installs these before it copies the code, so that a code change rebuilds only the
last, small layer. ``--gpu`` asks for ``tensorflow[and-cuda]``: TensorFlow's own CUDA and cuDNN
wheels, so the GPU image does not depend on which CUDA the base image ships.
"""
from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, gpu: bool = False) -> list[str]:
    with open(pyproject, "rb") as f:
        deps = list(tomllib.load(f)["project"]["dependencies"])
    if gpu:
        # "tensorflow>=2.21,<2.22" -> "tensorflow[and-cuda]>=2.21,<2.22" (not tensorflow-* packages)
        deps = [re.sub(r"^tensorflow(?=\s*(?:[<>=!~;]|$))", "tensorflow[and-cuda]", d) for d in deps]
        if not any(d.startswith("tensorflow[and-cuda]") for d in deps):
            raise SystemExit(f"{pyproject}: no tensorflow requirement to give the and-cuda extra")
    return deps


def main(argv: list[str]) -> int:
    gpu = "--gpu" in argv
    paths = [a for a in argv if a != "--gpu"]
    print("\n".join(requirements(paths[0] if paths else "pyproject.toml", gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
