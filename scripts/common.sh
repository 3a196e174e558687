# Sourced by scripts/deploy.sh and scripts/images.sh: what both need before they start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DRY_RUN=${DRY_RUN:-0}
TAG=${TAG:-latest}
FUNCTIONS=(auth stock order events)

# require_registry SCRIPT HINT: REGISTRY must be set, except for a dry run.
require_registry() {
  if [[ -z ${REGISTRY:-} ]]; then
    if [[ $DRY_RUN == 1 ]]; then
      REGISTRY=REGISTRY
    else
      echo "$1: set REGISTRY to $2, e.g. REGISTRY=ghcr.io/you" >&2
      exit 2
    fi
  fi
  REGISTRY=${REGISTRY%/}
}
