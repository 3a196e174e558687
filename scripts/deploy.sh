#!/usr/bin/env bash
# Deploy flashsale to the namespace of the current kubectl context.
#
#   REGISTRY=ghcr.io/you scripts/deploy.sh            eventing (the sink resolved), then kn service apply per function
#   REGISTRY=ghcr.io/you MODE=kustomize scripts/deploy.sh   kubectl apply -k knative/ instead
#   DRY_RUN=1 scripts/deploy.sh                       print every command instead of running it
#
# TAG (default latest) picks the images scripts/images.sh pushed. The kn flags are read
# from knative/*.yaml, so the manifests stay the one place the numbers live.
# Before applying anything it checks that the cluster runs Knative Serving and Eventing
# at least MIN_SERVING and MIN_EVENTING (docs/deploy.md says why; KNATIVE_VERSION_CHECK=0
# skips that), and that Kourier, when it is the ingress, passes the client's address
# (KOURIER_CHECK=0 skips that). It also stops when knative/*.yaml differ from the plan of the
# reference figures, or a newer local `make bench` plans them differently (PLAN_CHECK=0 skips).
source "$(dirname "$0")/common.sh"
MODE=${MODE:-kn}
PYTHON=${PYTHON:-python3}
# Serving 1.13 is the first to accept a volume at /tmp (it was a reserved path before);
# Eventing is held to the same release (nothing the manifests use in it is newer).
MIN_SERVING=1.13
MIN_EVENTING=1.13
KNATIVE_VERSION_CHECK=${KNATIVE_VERSION_CHECK:-1}
SINK_WAIT=${SINK_WAIT:-180s}
# One Knative Service per function, and the dead-letter sink, which runs the events image.
SERVICES=("${FUNCTIONS[@]}" dead-letters)
KOURIER_CHECK=${KOURIER_CHECK:-1}
KOURIER_CLASS=kourier.ingress.networking.knative.dev
KOURIER_FIX="kubectl patch configmap/config-kourier -n knative-serving --type merge -p '{\"data\":{\"use-remote-address\":\"true\"}}'"
require_registry deploy.sh "where scripts/images.sh pushed the images"

if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  echo "deploy.sh: $PYTHON cannot import yaml; run \`make setup\` or set PYTHON=.venv/bin/python" >&2
  exit 1
fi

# Runs a command, or with DRY_RUN=1 prints it as a line a shell would run the same way.
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

# The installed version of a Knative component, as https://knative.dev/docs/install/upgrade/check-install-version
# reads it: the namespace's app.kubernetes.io/version label (YAML installs), else the Operator's
# CR; empty when the cluster answers neither (no access, another distribution).
installed_version() {
  local namespace=$1 operator_kind=$2 version
  version=$(kubectl get namespace "$namespace" -o 'go-template={{index .metadata.labels "app.kubernetes.io/version"}}' 2>/dev/null) || version=""
  if [[ -z $version || $version == "<no value>" ]]; then
    version=$(kubectl get "$operator_kind" -n "$namespace" -o 'jsonpath={.items[0].status.version}' 2>/dev/null) || version=""
  fi
  echo "${version#v}"
}

# Stops the deploy when a component is known to be older than flashsale needs; warns when
# its version cannot be read, and goes on.
require_version() {
  local component=$1 namespace=$2 operator_kind=$3 minimum=$4 have lowest
  have=$(installed_version "$namespace" "$operator_kind")
  if [[ ! $have =~ ^[0-9]+\.[0-9]+ ]]; then
    echo "deploy.sh: cannot tell which Knative $component this cluster runs (${have:-no version on namespace $namespace}); flashsale needs $minimum or newer (docs/deploy.md)" >&2
    return 0
  fi
  lowest=$(printf '%s\n%s\n' "$minimum" "$have" | sort -V | head -n 1)
  if [[ $lowest != "$minimum" ]]; then
    echo "deploy.sh: Knative $component $have is older than $minimum, which flashsale needs (docs/deploy.md);" \
      "upgrade it, or set KNATIVE_VERSION_CHECK=0 to deploy anyway" >&2
    exit 1
  fi
  echo "Knative $component $have (>= $minimum)" >&2
}

if [[ $KNATIVE_VERSION_CHECK == 1 ]]; then
  if [[ $DRY_RUN == 1 ]]; then
    echo "# checks first: Knative Serving >= $MIN_SERVING and Eventing >= $MIN_EVENTING (namespace version labels, or the Operator's CRs)"
  else
    require_version Serving knative-serving knativeservings.operator.knative.dev "$MIN_SERVING"
    require_version Eventing knative-eventing knativeeventings.operator.knative.dev "$MIN_EVENTING"
  fi
fi

# auth's TRUSTED_PROXIES (knative/config.yaml) counts three X-Forwarded-For entries: the client's,
# appended by the ingress gateway, then the gateway's and the activator's. Kourier's Envoy appends
# the client's only with use-remote-address: "true" in config-kourier, which net-kourier reads from
# its controller's namespace, knative-serving (net-kourier pkg/reconciler/ingress/config/kourier.go;
# default false, config/200-config.yaml). Stops the deploy when Kourier is the ingress and the key
# is not true; warns and goes on when the ingress is another or the ConfigMaps cannot be read.
require_kourier_client_address() {
  local class remote
  class=$(kubectl get configmap config-network -n knative-serving -o 'go-template={{with .data}}{{or (index . "ingress-class") (index . "ingress.class") ""}}{{end}}' 2>/dev/null) || class=""
  if [[ -z $class ]]; then
    echo "deploy.sh: cannot read the ingress class (configmap config-network, namespace knative-serving);" \
      "check that auth sees TRUSTED_PROXIES X-Forwarded-For entries (docs/deploy.md, \"The client address\")" >&2
    return 0
  fi
  if [[ $class != "$KOURIER_CLASS" ]]; then
    echo "deploy.sh: the ingress is $class, not Kourier: count the X-Forwarded-For entries auth sees and set" \
      "TRUSTED_PROXIES in knative/config.yaml to it (docs/deploy.md, \"The client address\")" >&2
    return 0
  fi
  if ! remote=$(kubectl get configmap config-kourier -n knative-serving -o 'go-template={{with .data}}{{or (index . "use-remote-address") ""}}{{end}}' 2>/dev/null); then
    echo "deploy.sh: cannot read configmap config-kourier (namespace knative-serving); make sure use-remote-address is \"true\" there" >&2
    return 0
  fi
  case $remote in
    1 | t | T | true | TRUE | True) echo "Kourier appends the client's address (use-remote-address: $remote)" >&2 ;;
    *)
      echo "deploy.sh: Kourier's use-remote-address is '${remote:-unset, so false}' (configmap config-kourier, namespace knative-serving):" \
        "its gateway does not append the client's address to X-Forwarded-For, so auth (TRUSTED_PROXIES 3) cannot tell callers apart" \
        "and the per-address login limit does not hold. Fix it with:" >&2
      echo "  $KOURIER_FIX" >&2
      echo "or set KOURIER_CHECK=0 to deploy anyway (docs/deploy.md, \"The client address\")" >&2
      exit 1
      ;;
  esac
}

if [[ $KOURIER_CHECK == 1 ]]; then
  if [[ $DRY_RUN == 1 ]]; then
    echo "# checks next: with Kourier as the ingress, use-remote-address is \"true\" in configmap config-kourier (namespace knative-serving), or: $KOURIER_FIX"
  else
    require_kourier_client_address
  fi
fi

# knative/*.yaml must carry the plan of the reference figures they were made from, and no newer
# `make bench` on this machine may plan them differently (scripts/plan_manifests.py --deploy-check
# says which); local, so it runs in a dry run too. PLAN_CHECK=0 deploys anyway.
if [[ ${PLAN_CHECK:-1} == 1 ]] && ! "$PYTHON" scripts/plan_manifests.py --deploy-check; then
  echo "deploy.sh: stopped before applying anything; PLAN_CHECK=0 deploys the manifests as they are" >&2
  exit 1
fi

# Prints, NUL-separated, the `kn service apply` arguments equivalent to one knative/<service>.yaml,
# its image in REGISTRY ($2) with TAG ($3).
kn_args() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys

import yaml

path, registry, tag = sys.argv[1], sys.argv[2], sys.argv[3]
with open(path) as f:
    service = yaml.safe_load(f)
template = service["spec"]["template"]
annotations = dict(template.get("metadata", {}).get("annotations", {}))
spec = template["spec"]
(container,) = spec["containers"]
port = container["ports"][0]["containerPort"]

# The image the manifest names (flashsale-dead-letters runs flashsale-events), in the registry.
image = f"{registry}/{container['image']}:{tag}"
args = ["kn", "service", "apply", service["metadata"]["name"], "--image", image, "--port", str(port)]

for key, value in service["metadata"].get("labels", {}).items():
    if key == "networking.knative.dev/visibility" and value == "cluster-local":
        args += ["--cluster-local"]
    else:
        args += ["--label-service", f"{key}={value}"]

for source in container.get("envFrom", []):
    if "configMapRef" in source:
        args += ["--env-from", "config-map:" + source["configMapRef"]["name"]]
    else:
        args += ["--env-from", "secret:" + source["secretRef"]["name"]]
for env in container.get("env", []):
    if "value" in env:
        args += ["--env", f"{env['name']}={env['value']}"]
    elif "secretKeyRef" in env["valueFrom"]:
        ref = env["valueFrom"]["secretKeyRef"]
        args += ["--env-value-from", f"{env['name']}=secret:{ref['name']}:{ref['key']}"]
    else:
        ref = env["valueFrom"]["configMapKeyRef"]
        args += ["--env-value-from", f"{env['name']}=config-map:{ref['name']}:{ref['key']}"]

volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
for mount in container.get("volumeMounts", []):
    volume = volumes[mount["name"]]
    if "emptyDir" in volume:
        source = "emptyDir:" + volume["name"]
    elif "configMap" in volume:
        source = "config-map:" + volume["configMap"]["name"]
    else:
        source = "secret:" + volume["secret"]["secretName"]
    args += ["--mount", f"{mount['mountPath']}={source}"]

for kind in ("requests", "limits"):
    resources = container.get("resources", {}).get(kind, {})
    if resources:
        flag = "--request" if kind == "requests" else "--limit"
        args += [flag, ",".join(f"{name}={value}" for name, value in resources.items())]
PROBE_OPTIONS = {
    "initialDelaySeconds": "InitialDelaySeconds",
    "periodSeconds": "PeriodSeconds",
    "timeoutSeconds": "TimeoutSeconds",
    "successThreshold": "SuccessThreshold",
    "failureThreshold": "FailureThreshold",
}
for probe, flag in (("readinessProbe", "--probe-readiness"), ("livenessProbe", "--probe-liveness")):
    if probe in container:
        args += [flag, f"http::{port}:{container[probe]['httpGet']['path']}"]
        options = [f"{name}={container[probe][key]}" for key, name in PROBE_OPTIONS.items() if key in container[probe]]
        if options:
            args += [flag + "-opts", ",".join(options)]
# kn's strict context is runAsNonRoot, no privilege escalation, no capabilities and
# RuntimeDefault seccomp; it cannot make the root filesystem read-only (docs/deploy.md).
args += ["--security-context", "strict"]

if "timeoutSeconds" in spec:
    args += ["--timeout", str(spec["timeoutSeconds"])]
if spec.get("containerConcurrency"):
    args += ["--concurrency-limit", str(spec["containerConcurrency"])]

SCALE_FLAGS = {
    "autoscaling.knative.dev/min-scale": "--scale-min",
    "autoscaling.knative.dev/max-scale": "--scale-max",
    "autoscaling.knative.dev/initial-scale": "--scale-init",
    "autoscaling.knative.dev/target": "--scale-target",
    "autoscaling.knative.dev/target-utilization-percentage": "--scale-utilization",
    "autoscaling.knative.dev/activation-scale": "--scale-activation",
    "autoscaling.knative.dev/window": "--scale-window",
}
for key, flag in SCALE_FLAGS.items():
    if key in annotations:
        args += [flag, str(annotations.pop(key))]
# The rest (class, metric, scale-down-delay, target-burst-capacity, ...) have no kn flag of
# their own; --annotation-revision puts them where the manifests do, on the revision template.
for key, value in annotations.items():
    args += ["--annotation-revision", f"{key}={value}"]

sys.stdout.write("\0".join(args) + "\0")
PY
}

# The Broker, the SinkBinding and the Trigger go first, and the deploy waits until the binding
# has resolved the Broker's address: eventing's webhook then puts K_SINK into flashsale-order
# when kn or kubectl creates it, so order's first revision posts events. Applied after the
# Services (as before), the binding patched order afterwards: a second revision, which
# Knative serves only once it has min-scale ready pods, the first one without K_SINK until
# then (docs/deploy.md, "Event delivery").
apply_eventing_first() {
  run kubectl apply -f knative/eventing.yaml
  if ! run kubectl wait --for=condition=SinkProvided sinkbinding/flashsale-order --timeout="$SINK_WAIT"; then
    echo "deploy.sh: the SinkBinding flashsale-order has no sink after $SINK_WAIT: is the Broker 'default' ready?" \
      "(kubectl get broker default); no Service was applied, so order will not start without K_SINK" >&2
    exit 1
  fi
}

case $MODE in
  kn)
    run kubectl apply -f knative/config.yaml
    apply_eventing_first
    for fn in "${SERVICES[@]}"; do
      args=()
      while IFS= read -r -d '' arg; do args+=("$arg"); done \
        < <(kn_args "knative/$fn.yaml" "$REGISTRY" "$TAG")
      if [[ ${#args[@]} -eq 0 ]]; then
        echo "deploy.sh: could not read knative/$fn.yaml" >&2
        exit 1
      fi
      run "${args[@]}"
    done
    ;;
  kustomize)
    # An overlay in a scratch folder sets the images, so knative/kustomization.yaml is not edited.
    overlay=$(mktemp -d)
    trap 'rm -rf "$overlay"' EXIT
    "$PYTHON" - "$PWD/knative" "$overlay" "$REGISTRY" "$TAG" <<'PY'
import os
import sys

import yaml

base, overlay, registry, tag = sys.argv[1:]
with open(os.path.join(base, "kustomization.yaml")) as f:
    images = yaml.safe_load(f)["images"]
kustomization = {
    # kustomize honours sortOptions only in the kustomization it renders, not in a base:
    # the overlay keeps the base's order (the SinkBinding before the Services).
    "sortOptions": {"order": "fifo"},
    # kustomize takes a base only by relative path.
    "resources": [os.path.relpath(base, overlay)],
    # Matched on the names the base already rewrote its images to.
    "images": [
        {"name": image.get("newName", image["name"]), "newName": f"{registry}/{image['name']}", "newTag": tag}
        for image in images
    ],
}
with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
    yaml.safe_dump(kustomization, f, sort_keys=False)
PY
    if [[ $DRY_RUN == 1 ]]; then
      sed 's/^/# /' "$overlay/kustomization.yaml"
    fi
    apply_eventing_first
    run kubectl apply -k "$overlay"
    ;;
  *)
    echo "deploy.sh: MODE must be kn or kustomize, not '$MODE'" >&2
    exit 2
    ;;
esac
