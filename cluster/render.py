"""Fill the ${MUSICGEN_*} placeholders of a file in cluster/ from the environment; print the result.

    export MUSICGEN_REGISTRY=123456789012.dkr.ecr.us-west-2.amazonaws.com  # where docker/build.sh pushed
    export MUSICGEN_BUCKET=my-bucket                                      # S3 bucket for data and runs
    export MUSICGEN_IRSA_ROLE_ARN=arn:aws:iam::123456789012:role/musicgen-ray   # KubeRay only
    python cluster/render.py cluster/aws.yaml > cluster/aws.rendered.yaml
    python cluster/render.py cluster/kuberay.yaml | kubectl apply -f -

Only the exact forms ${MUSICGEN_REGISTRY}, ${MUSICGEN_BUCKET} and ${MUSICGEN_IRSA_ROLE_ARN} are
replaced, so shell variables in the files' commands ($RAY_HEAD_IP, $HOME) stay as they are. A
placeholder whose variable is unset or empty is an error, as is any ${MUSICGEN_...} left over.
"""
from __future__ import annotations

import os
import re
import sys

VARIABLES = ("MUSICGEN_REGISTRY", "MUSICGEN_BUCKET", "MUSICGEN_IRSA_ROLE_ARN")
_PLACEHOLDER = re.compile(r"\$\{(MUSICGEN_[A-Z0-9_]+)\}")


def placeholders(text: str) -> set[str]:
    """Names of the ${MUSICGEN_*} placeholders in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def render(text: str, env: dict[str, str]) -> str:
    """``text`` with every ${MUSICGEN_*} placeholder replaced by its value in ``env``."""
    unknown = placeholders(text) - set(VARIABLES)
    if unknown:
        raise ValueError(f"unknown placeholder(s): {', '.join(sorted(unknown))}")
    missing = sorted(name for name in placeholders(text) if not env.get(name, "").strip())
    if missing:
        raise ValueError("set " + ", ".join(missing) + " (see the top of cluster/render.py)")

    def value(match: re.Match) -> str:
        name = match.group(1)
        v = env[name].strip()
        if name == "MUSICGEN_REGISTRY":
            v = v.rstrip("/")
        if name == "MUSICGEN_BUCKET":
            v = v.removeprefix("s3://").strip("/")
        return v

    return _PLACEHOLDER.sub(value, text)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python cluster/render.py FILE > RENDERED", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        text = f.read()
    try:
        sys.stdout.write(render(text, dict(os.environ)))
    except ValueError as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
