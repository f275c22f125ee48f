#!/usr/bin/env bash
# The whole test suite, installing what it needs first (root, fresh Debian machine):
#   scripts/test.sh
# Unit tests run in parallel; system tests (real containerd 1.6/1.7/2.x, real registries) are
# marked #[ignore = "needs ..."] so a plain `cargo test` stays quick, and run here with
# --include-ignored, one at a time (each starts its own containerd and registry on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh >/dev/null
export COLDSTART_TESTENV="${COLDSTART_TESTENV:-/opt/coldstart-testenv}"

echo "== unit tests"
cargo test --workspace --lib --bins
echo "== system tests (real containerd, registries)"
cargo build --workspace --bins   # the system tests drive the real coldctl binary
cargo test --workspace --tests --test '*' -- --include-ignored --test-threads=1
