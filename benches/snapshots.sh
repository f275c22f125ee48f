#!/usr/bin/env bash
# Snapshot restore benchmark (issue 17): restore time of a stateful container against its cold
# start, on real CRIU (Debian sid 4.2.1) and real containerd 2.1.9, no kubelet.
#
# Runs the system test tests/snapshots.rs (capture through a test kubelet endpoint and through
# CRI, checkpoint image imported pinned, restore in new pods, count and checksum verified) with
# the counter of scripts/spike/counter.c filling --mib MiB over a load of --load-ms, --runs
# times, and prints per run and as medians:
#   cold     CreateContainer + StartContainer until the first count (fill + load + start)
#   capture  CRI CheckpointContainer (CRIU dump + archive), snapshot (layer) size
#   import   validated layer into containerd's content store, unpacked, pinned
#   restore  CreateContainer + StartContainer from the checkpoint image until the first count
#   ratio    restore / cold (target <= 0.1)
#
# The load stands for reading weights and warming up: a real model's cold start is tens of
# seconds (58 s published for an 8B model); the fill is the memory CRIU has to dump and restore.
#
# Needs root and scripts/test-env.sh. Usage: benches/snapshots.sh [--mib 1024] [--load-ms 20000]
#   [--runs 3]
set -euo pipefail
MIB=1024
LOAD_MS=20000
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) MIB=$2; shift 2 ;;
    --load-ms) LOAD_MS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo test -q --test snapshots --no-run 2>/dev/null
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; kernel $(uname -r)"
echo "counter: ${MIB} MiB filled, ${LOAD_MS} ms load"
lines=()
for ((i = 1; i <= RUNS; i++)); do
  line=$(COLDSTART_SNAPSHOT_MIB=$MIB SPIKE_LOAD_MS=$LOAD_MS \
    cargo test -q --test snapshots capture_through -- --include-ignored --nocapture 2>&1 |
    grep '^bench:' || true)
  [ -n "$line" ] || { echo "run $i failed (run the test by hand to see why)" >&2; exit 1; }
  echo "run $i: ${line#bench: }"
  lines+=("$line")
done
printf '%s\n' "${lines[@]}" | python3 -c '
import statistics, sys
runs = [dict(kv.split("=") for kv in l.split()[1:]) for l in sys.stdin if l.strip()]
m = {k: statistics.median(float(r[k]) for r in runs) for k in runs[0]}
print("median: cold {:.2f} s, capture {:.2f} s, snapshot {:.0f} MiB, import {:.2f} s, restore {:.2f} s, restore/cold {:.3f} (target <= 0.1)".format(
    m["cold_ms"] / 1000, m["capture_ms"] / 1000, m["layer_bytes"] / 2**20, m["import_ms"] / 1000,
    m["restore_ms"] / 1000, m["ratio"]))
'
