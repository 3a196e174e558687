#!/usr/bin/env bash
# Build and push one image per function: $REGISTRY/flashsale-<fn>:$TAG.
#
#   REGISTRY=ghcr.io/you scripts/images.sh        build and push all four
#   REGISTRY=ghcr.io/you PUSH=0 scripts/images.sh build only
#   DRY_RUN=1 scripts/images.sh                   print the commands
#
# PYTHON_IMAGE overrides the Dockerfile's pinned base image; PLATFORM (e.g. linux/amd64)
# matters when building on an arm64 laptop for an amd64 cluster.
source "$(dirname "$0")/common.sh"
PUSH=${PUSH:-1}
require_registry images.sh "a registry you can push to"

run() {
  if [[ $DRY_RUN == 1 ]]; then
    local arg line=()
    for arg in "$@"; do
      if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then line+=("$arg"); else line+=("$(printf '%q' "$arg")"); fi
    done
    echo "${line[*]}"
  else
    "$@"
  fi
}

if [[ $DRY_RUN != 1 ]] && ! docker info >/dev/null 2>&1; then
  cat >&2 <<EOF
images.sh: no Docker engine answers ('docker info' failed), so nothing was built.
  Start Docker (or point DOCKER_HOST at a running engine) and run this again,
  or see what would run with: DRY_RUN=1 scripts/images.sh
EOF
  exit 1
fi

build_args=()
if [[ -n ${PYTHON_IMAGE:-} ]]; then build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"); fi
if [[ -n ${PLATFORM:-} ]]; then build_args+=(--platform "$PLATFORM"); fi

for fn in "${FUNCTIONS[@]}"; do
  image="$REGISTRY/flashsale-$fn:$TAG"
  run docker build --build-arg "FUNCTION=$fn" ${build_args[@]+"${build_args[@]}"} --tag "$image" .
  if [[ $PUSH == 1 ]]; then
    run docker push "$image"
  fi
done
