#!/usr/bin/env bash
# Renders a kustomization and validates every object offline for Kubernetes 1.33 (our minimum):
# built-in kinds with kubernetes-validate (strict), custom kinds against our generated CRDs in
# deploy/crds, KEDA, Karpenter and Prometheus Operator kinds with the validators the
# @kubernetes-models npm packages generate from the upstream CRDs, InterceptorRoutes field by
# field (see scripts/validate_manifests.py). COLDSTART_SCHEMAS may name a directory of upstream
# CRD yaml to check against as well (a developer's extra; the suite needs none). Needs kubectl
# (kustomize v5), node and the venv and npm packages of scripts/test-env.sh.
#
#   scripts/validate-manifests.sh                      deploy/ and deploy/examples/*.yaml
#   scripts/validate-manifests.sh DIR [FILE...]        another kustomization (and files)
set -euo pipefail
cd "$(dirname "$0")/.."

TESTENV="${COLDSTART_TESTENV:-/opt/coldstart-testenv}"
PY="$TESTENV/venv/bin/python"
KUBE_VERSION="${COLDSTART_KUBE_VERSION:-1.33.0}"
if [ ! -x "$PY" ]; then
  echo "validate-manifests: $PY missing: run scripts/test-env.sh" >&2
  exit 2
fi
command -v kubectl >/dev/null || { echo "validate-manifests: kubectl missing: run scripts/test-env.sh" >&2; exit 2; }
command -v node >/dev/null || { echo "validate-manifests: node missing: run scripts/test-env.sh" >&2; exit 2; }
MODELS="$TESTENV/npm/node_modules"
for pkg in keda karpenter prometheus-operator; do
  if [ ! -f "$MODELS/@kubernetes-models/$pkg/package.json" ]; then
    echo "validate-manifests: $MODELS/@kubernetes-models/$pkg missing: run scripts/test-env.sh" >&2
    exit 2
  fi
done
extra=()
if [ -n "${COLDSTART_SCHEMAS:-}" ]; then
  [ -d "$COLDSTART_SCHEMAS" ] || { echo "validate-manifests: COLDSTART_SCHEMAS=$COLDSTART_SCHEMAS is not a directory" >&2; exit 2; }
  extra=(--crds "$COLDSTART_SCHEMAS")
fi

if [ "$#" -eq 0 ]; then
  set -- deploy deploy/examples/*.yaml
fi
dir=$1; shift
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
kubectl kustomize "$dir" > "$work/rendered.yaml"
echo "rendered $dir: $(grep -c '^kind:' "$work/rendered.yaml") objects"
"$PY" scripts/validate_manifests.py --crds deploy/crds "${extra[@]}" --models "$MODELS" \
  --kube-version "$KUBE_VERSION" \
  "$work/rendered.yaml" "$@"
