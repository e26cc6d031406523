#!/usr/bin/env bash
# Build musicgen's two images from docker/Dockerfile, and with --push push them.
#
#   docker/build.sh                      # musicgen:cpu and musicgen:gpu, local only
#   MUSICGEN_REGISTRY=123456789012.dkr.ecr.us-west-2.amazonaws.com docker/build.sh --push
#   VARIANTS=gpu docker/build.sh         # only one of them
#   docker/build.sh --dry-run            # print the commands, run nothing
#
# Images: ${MUSICGEN_REGISTRY}/musicgen:cpu on rayproject/ray:<ray>-py311      (Ray head nodes)
#         ${MUSICGEN_REGISTRY}/musicgen:gpu on rayproject/ray:<ray>-py311-gpu  (GPU workers)
# where <ray> is the version in the Dockerfile's BASE_IMAGE default. cluster/aws.yaml and
# cluster/kuberay.yaml refer to exactly these names (tests/test_deploy.py checks it).
set -euo pipefail
cd "$(dirname "$0")/.."

push=0 dry=0
for arg in "$@"; do
  case "$arg" in
    --push) push=1 ;;
    --dry-run) dry=1 ;;
    *) echo "usage: $0 [--push] [--dry-run]" >&2; exit 2 ;;
  esac
done

cpu_base=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)
[ -n "$cpu_base" ] || { echo "$0: no 'ARG BASE_IMAGE=' default in docker/Dockerfile" >&2; exit 1; }
prefix=${MUSICGEN_REGISTRY:+${MUSICGEN_REGISTRY%/}/}

run() {
  if [ "$dry" = 1 ]; then printf '%s\n' "$*"; else "$@"; fi
}

for variant in ${VARIANTS:-cpu gpu}; do
  case "$variant" in
    cpu) base=$cpu_base ;;
    gpu) base=$cpu_base-gpu ;;
    *) echo "$0: unknown variant $variant (cpu or gpu)" >&2; exit 2 ;;
  esac
  tag="${prefix}musicgen:${variant}"
  DOCKER_BUILDKIT=1 run docker build -f docker/Dockerfile --build-arg "BASE_IMAGE=$base" -t "$tag" .
  if [ "$push" = 1 ]; then run docker push "$tag"; fi
done
