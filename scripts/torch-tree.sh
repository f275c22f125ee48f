#!/usr/bin/env bash
# Builds, once, a Debian sid tree with the CPU build of PyTorch (python3-torch) and g++ (the
# compiler of Inductor's CPU backend), for the compile-cache tests: they run real torch.compile
# inside it with scripts/torch-run.sh. The upstream x86_64 torch wheels would drag ~3 GB of CUDA.
#
# Usage: scripts/torch-tree.sh        build if needed (root), then print the tree's path
# The tree is "$COLDSTART_TESTENV/torch-sid" (default /opt/coldstart-testenv/torch-sid). Its
# stamp file records what was asked for and the versions installed; a tree whose stamp asks for
# the same is reused as is. A build happens in torch-sid.tmp and is renamed into place when
# complete, so an interrupted run leaves no half tree behind (the next run starts over).
set -euo pipefail

TESTENV="${COLDSTART_TESTENV:-/opt/coldstart-testenv}"
SUITE=sid
TREE="$TESTENV/torch-$SUITE"
STAMP=.coldstart-torch-tree
# libtorch-dev: the C++ headers Inductor's generated kernels include (torch/csrc/inductor/
# cpp_prefix.h, ATen, c10); python3-torch only links to them. Python.h is not needed.
PACKAGES=(python3-torch libtorch-dev g++)
HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "torch-tree: $*" >&2; }
# shellcheck source=scripts/lib/debian.sh
. "$HERE/lib/debian.sh"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (debootstrap, chroot)"
    exit 1
  fi
}

# What a tree must have been built for: the stamp's first line.
wanted() { echo "suite=$SUITE packages=${PACKAGES[*]}"; }

tree_ok() {
  [ -f "$TREE/$STAMP" ] && [ "$(head -n1 "$TREE/$STAMP")" = "$(wanted)" ]
}

# Nothing may be mounted under a directory about to be deleted (torch-run.sh and debootstrap
# mount in private namespaces, so this guards against other hands).
no_mounts_under() {
  if findmnt -rn -o TARGET | grep -qE "^$1(/|\$)"; then
    log "something is mounted under $1; refusing to delete it"
    exit 1
  fi
}

build() {
  local uri tmp="$TREE.tmp" t0=$SECONDS
  uri=$(debian_uri)
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  no_mounts_under "$tmp"
  rm -rf "$tmp"
  log "debootstrap $SUITE into $tmp"
  # debootstrap mounts /proc and /sys in the target: keep those mounts private to this run.
  unshare --mount --propagation private -- \
    debootstrap --variant=minbase "$SUITE" "$tmp" "$uri" > "$TESTENV/torch-debootstrap.log" 2>&1 \
    || { log "debootstrap failed; tail of $TESTENV/torch-debootstrap.log:"; tail -n 20 "$TESTENV/torch-debootstrap.log" >&2; exit 1; }
  log "debootstrap done in $((SECONDS - t0)) s; installing ${PACKAGES[*]}"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  # The mirror may serve a frozen snapshot of sid, whose Release has expired (test-env.sh
  # fetches containerd the same way).
  echo 'Acquire::Check-Valid-Until "false";' > "$tmp/etc/apt/apt.conf.d/99coldstart"
  "$HERE/torch-run.sh" "$tmp" -- sh -ec "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ${PACKAGES[*]} >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/*
  " >&2
  local torch
  torch=$("$HERE/torch-run.sh" "$tmp" -- python3 -c 'import torch; print(torch.__version__)')
  {
    wanted
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$((SECONDS - t0)) torch=$torch"
    "$HERE/torch-run.sh" "$tmp" -- dpkg-query -W -f '${Package} ${Version}\n' "${PACKAGES[@]}"
  } > "$tmp/$STAMP"
  no_mounts_under "$TREE"
  rm -rf "$TREE"
  mv "$tmp" "$TREE"
  log "built $TREE in $((SECONDS - t0)) s: torch $torch, $(du -sh "$TREE" | cut -f1)"
}

main() {
  need_root
  mkdir -p "$TESTENV"
  # One builder at a time (test-env.sh and a test run may both ask).
  exec 9> "$TESTENV/torch-$SUITE.lock"
  flock 9
  if ! tree_ok; then
    build
  fi
  echo "$TREE"
}

main "$@"
