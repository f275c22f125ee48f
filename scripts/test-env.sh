#!/usr/bin/env bash
# Installs what coldstart's tests, demo and benchmarks need on a fresh Debian machine (root):
# Debian packages, containerd from bookworm, trixie and sid unpacked side by side, and a Debian
# sid tree with the CPU build of PyTorch and g++ (scripts/torch-tree.sh) for the compile-cache
# tests.
#
# Usage: scripts/test-env.sh            install (idempotent), then print the env file path
# The result is described by "$COLDSTART_TESTENV/env" (default /opt/coldstart-testenv/env),
# which the test harness reads to find each containerd version.
set -euo pipefail

TESTENV="${COLDSTART_TESTENV:-/opt/coldstart-testenv}"
SUITES=(bookworm trixie sid)
log() { echo "test-env: $*" >&2; }
# shellcheck source=scripts/lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"
# shellcheck source=scripts/lib/criu.sh
. "$(dirname "$0")/lib/criu.sh"
# CRIU for the snapshot tests: the suite whose criu runs on this kernel (bookworm's 3.17 does not).
CRIU_SUITE="${CRIU_SUITE:-sid}"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages, tests start containerd)"
    exit 1
  fi
}

install_debs() {
  local missing=()
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v runc >/dev/null || missing+=(runc)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  # htpasswd -B: bcrypt password files for the registry-auth tests (docker-registry wants bcrypt).
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  # scripts/build-image.sh (tests/image.rs): strip, and the CA bundle the image carries.
  command -v strip >/dev/null || missing+=(binutils)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian's docker-registry package may start a system instance on :5000; tests run their own.
  if command -v service >/dev/null && pgrep -x docker-registry >/dev/null; then
    service docker-registry stop >/dev/null 2>&1 || true
  fi
}

fetch_containerd() {
  local suite=$1 uri=$2 dir="$TESTENV/containerd-$suite"
  if [ -x "$dir/usr/bin/containerd" ]; then
    return
  fi
  log "fetching containerd from $suite"
  local work; work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb [trusted=yes] $uri $suite main" > "$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
              -o "Acquire::Check-Valid-Until=false" -o "APT::Get::AllowUnauthenticated=true"
              -o "Debug::NoLocking=1")
  apt-get "${opts[@]}" update -qq >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download -qq containerd >/dev/null)
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  dpkg -x "$work"/containerd_*.deb "$dir.tmp"
  rm -rf "$work"
  mv "$dir.tmp" "$dir"
}

# The Hub's own Python client (the cache-layout oracle, and `hf download` for benchmarks) and
# olah (an independent Hub implementation), pinned, in a venv of their own.
install_python() {
  local venv="$TESTENV/venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c 'import huggingface_hub, olah, sys; sys.exit(0 if huggingface_hub.__version__.startswith("2.4.") else 1)' 2>/dev/null; then
    log "installing huggingface_hub 2.4 and olah"
    "$venv/bin/pip" install -q 'huggingface_hub==2.4.*' 'olah==0.5.*'
  fi
  # Offline validation of built-in Kubernetes kinds (schemas for 1.25-1.37; we check 1.33).
  if ! "$venv/bin/python" -c 'import kubernetes_validate, sys; sys.exit(0 if kubernetes_validate.__version__ == "1.37.0" else 1)' 2>/dev/null; then
    log "installing kubernetes-validate 1.37.0"
    "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
  fi
}

# Offline validation of third-party kinds with the validators the @kubernetes-models packages
# generate from the upstream CRDs, pinned, in a directory of their own
# ($TESTENV/npm/node_modules, where tests/observability.rs and scripts/validate_manifests.py
# look): the Prometheus Operator's (deploy/observability), KEDA's and Karpenter's (the
# scale-from-zero bundle). npm reaches its registry by package name.
NPM_PACKAGES=(
  "@kubernetes-models/prometheus-operator@6.0.0"
  "@kubernetes-models/keda@2.0.0"
  "@kubernetes-models/karpenter@2.0.0"
)
install_npm() {
  local dir="$TESTENV/npm"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  local missing=() spec name version pkg
  for spec in "${NPM_PACKAGES[@]}"; do
    name=${spec%@*}; version=${spec##*@}
    pkg="$dir/node_modules/$name/package.json"
    if ! { [ -f "$pkg" ] && node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' "$pkg" "$version"; }; then
      missing+=("$spec")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return
  fi
  log "installing ${missing[*]}"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --silent "${missing[@]}" >/dev/null
}

# kubectl renders deploy/ (its built-in kustomize). The machine image ships kubectl 1.32 with
# kustomize v5; Debian's kubernetes-client is 1.20, whose kustomize v2 cannot read our
# kustomization (`labels:`), so it is no substitute: say so rather than install it.
check_kubectl() {
  if ! command -v kubectl >/dev/null; then
    log "kubectl (with kustomize v5) is needed to render deploy/ and is not installed"
    exit 1
  fi
  local kustomize
  kustomize=$(kubectl version --client 2>/dev/null | awk '/Kustomize Version/ {print $3}')
  case "$kustomize" in
    v5.*|v6.*) ;;
    *) log "kubectl's kustomize is ${kustomize:-unknown}; deploy/ needs v5 (kubectl 1.27+)"; exit 1 ;;
  esac
}

write_env() {
  local tmp="$TESTENV/env.tmp"
  : > "$tmp"
  for suite in "${SUITES[@]}"; do
    local bin="$TESTENV/containerd-$suite/usr/bin"
    local version
    # Detect, never assume: sid moves.
    version=$("$bin/containerd" --version | awk '{print $3}' | sed 's/^v//; s/~.*//; s/+.*//')
    echo "containerd $suite $version $bin" >> "$tmp"
  done
  # CRIU for the snapshot tests (tests/snapshots.rs): first on containerd 2.1.9's PATH.
  echo "criu $CRIU_SUITE $("$CRIU_BIN/criu" --version | awk '/^Version/ {print $2}') $CRIU_BIN" >> "$tmp"
  echo "python $TESTENV/venv/bin/python" >> "$tmp"
  # The torch tree: tests run its python3 with scripts/torch-run.sh.
  echo "torch $TORCH_TREE" >> "$tmp"
  mv "$tmp" "$TESTENV/env"
}

main() {
  need_root
  install_debs
  mkdir -p "$TESTENV"
  local uri; uri=$(debian_uri)
  for suite in "${SUITES[@]}"; do
    fetch_containerd "$suite" "$uri"
  done
  CRIU_BIN=$(install_criu "$TESTENV" "$CRIU_SUITE")
  install_python
  install_npm
  check_kubectl
  # Last: the one slow step of a fresh machine (about 3-4 minutes cold; a stamp check after).
  TORCH_TREE=$(COLDSTART_TESTENV="$TESTENV" "$(dirname "$0")/torch-tree.sh")
  write_env
  log "ready:"; cat "$TESTENV/env" >&2
  echo "$TESTENV/env"
}

main "$@"
