#!/usr/bin/env bash
# Issue 17's spike: can containerd 2.1.9 + runc + CRIU 4.x checkpoint a container through CRI
# and restore it into a new pod, on this machine, with no kubelet, no CNI and no crictl?
#
#   scripts/spike/criu-cri.sh        (root; after scripts/test-env.sh)
#
# Steps, each printed with what it did; the last line is PASS or FAIL at <step>:
#   criu       CRIU from Debian $CRIU_SUITE (default sid), unpacked with its library closure into
#              $COLDSTART_TESTENV/criu-$CRIU_SUITE and run through that tree's own ld.so by a
#              wrapper bin/criu, which is put first on containerd's PATH; `criu check`.
#   images     a static pause program and a static counter program (scripts/spike/*.c), each
#              packed by scripts/oci_image.py; pause imported with ctr, counter pushed with skopeo
#              to a docker-registry on 127.0.0.1 (restore on 2.1.9 pulls the base image by
#              name@digest with the default resolver, which speaks plain HTTP to loopback only).
#   containerd a private containerd 2.1.9 (own root, state, socket, config), CRI with the pause
#              image as sandbox image; the counter image pulled through CRI (so it has a repo
#              digest, which the checkpoint records as the base image).
#   run        RunPodSandbox (host network: no CNI) + CreateContainer + StartContainer of the
#              counter; the time until its first count line is the cold start.
#   checkpoint CRI CheckpointContainer to an archive; time, size, entries, dump.log.
#   image      the archive turned into a checkpoint image (scripts/spike/checkpoint_image.py),
#              imported into k8s.io with ctr; the original pod is removed.
#   restore    a new pod; CreateContainer + StartContainer naming the checkpoint image; the
#              restored process's first count must be the one after the count CRIU froze (the
#              last line of the archive's container.log), with the same memory checksum and no
#              second "loaded" line.
#
# containerd's CRI config: version 3, host network so no CNI, pinned_images.sandbox = the local
# pause image, restrict_oom_score_adj = true (root here lacks CAP_SYS_RESOURCE, so the sandbox's
# oom_score_adj -998 cannot be set), no restore switch (2.1.x has none).
#
# Logs (containerd, registry, CRIU dump and restore, container logs) are copied to
# $SPIKE_LOGS (default /var/tmp/coldstart-criu-spike-logs); everything else is removed on exit.
# Knobs: SPIKE_MIB (memory the counter fills, default 256), CRIU_SUITE (sid or trixie).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TESTENV="${COLDSTART_TESTENV:-/opt/coldstart-testenv}"
CRIU_SUITE="${CRIU_SUITE:-sid}"
SPIKE_MIB="${SPIKE_MIB:-256}"
LOGS="${SPIKE_LOGS:-/var/tmp/coldstart-criu-spike-logs}"
PAUSE_IMAGE=coldstart.test/spike/pause:1
CKPT_IMAGE=coldstart.test/spike/counter-checkpoint:1
STEP=setup
WORK=
CD_PID=
REG_PID=
SOCK=
PODS=()
CTRS=()

say() { echo "[$STEP] $*"; }
now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
fail() { say "ERROR: $*"; exit 1; }

# --- cleanup ------------------------------------------------------------------------------------

# The shim restores with CRIU's work dir = its own work dir under containerd's root
# (runc option criu_work_path unset), where restore.log stays until the container is removed.
copy_restore_log() {
  cp -f "$WORK/root/io.containerd.runtime.v2.task/k8s.io/$1/restore.log" \
    "$WORK/ckpt-restore-$1.log" 2>/dev/null || true
}

collect_logs() {
  [ -n "$WORK" ] && [ -d "$WORK" ] || return 0
  local id
  for id in "${CTRS[@]}"; do copy_restore_log "$id"; done
  mkdir -p "$LOGS"
  cp -f "$WORK/containerd.log" "$WORK/registry.log" "$WORK/config.toml" "$LOGS/" 2>/dev/null || true
  cp -rf "$WORK/podlogs" "$LOGS/" 2>/dev/null || true
  cp -f "$WORK"/ckpt-*.log "$WORK/cri.log" "$LOGS/" 2>/dev/null || true
  # CRIU's logs from the shims' bundles and work dirs (restore.log, criu-dump.log, ...).
  if [ -d "$WORK/state" ]; then
    find "$WORK/state" "$WORK/root/io.containerd.grpc.v1.cri" -type f \( -name '*.log' -o -name 'log.json' \) 2>/dev/null |
      while read -r f; do
        cp -f "$f" "$LOGS/$(echo "${f#"$WORK"/}" | tr / _)" 2>/dev/null || true
      done
  fi
}

cleanup() {
  local rc=$?
  set +e
  collect_logs
  if [ -n "$SOCK" ] && [ -S "$SOCK" ] && [ -n "$CD_PID" ]; then
    for p in "${PODS[@]}"; do
      "$CRI" "$SOCK" stopp "$p" >/dev/null 2>&1
      "$CRI" "$SOCK" rmp "$p" >/dev/null 2>&1
    done
  fi
  # Whatever the CRI calls did not remove: runc's state for these ids (the shim's default root).
  for id in "${CTRS[@]}" "${PODS[@]}"; do
    runc --root /run/containerd/runc/k8s.io delete -f "$id" >/dev/null 2>&1
  done
  [ -n "$CD_PID" ] && kill -9 "$CD_PID" 2>/dev/null && wait "$CD_PID" 2>/dev/null
  if [ -n "$SOCK" ]; then
    # The shims this containerd started: `-address $SOCK` in their command line.
    for d in /proc/[0-9]*; do
      if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q -- "containerd-shim.* -address $SOCK"; then
        kill -9 "${d#/proc/}" 2>/dev/null
      fi
    done
  fi
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # Deepest mounts first.
    awk -v w="$WORK" '$2 ~ "^"w {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null
    done
    rm -rf "$WORK"
  fi
  echo "logs: $LOGS"
  if [ $rc -eq 0 ]; then echo PASS; else echo "FAIL at step: $STEP"; fi
  exit $rc
}

# --- criu ---------------------------------------------------------------------------------------

# debian_uri: the Debian mirror this machine already uses, never a named host.
# shellcheck source=scripts/lib/debian.sh
. "$REPO/scripts/lib/debian.sh"

# shellcheck source=scripts/lib/criu.sh
. "$REPO/scripts/lib/criu.sh"

criu_step() {
  CRIU_BIN=$(install_criu "$TESTENV" "$CRIU_SUITE") || fail "cannot install criu from $CRIU_SUITE"
  say "$("$CRIU_BIN/criu" --version | head -1) at $CRIU_BIN/criu"
  say "criu check: $("$CRIU_BIN/criu" check 2>&1 | tail -1)"
  "$CRIU_BIN/criu" check >/dev/null 2>&1 || fail "criu check failed"
}

# --- helpers ------------------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One CRI call; its stderr (with the RPC's duration) goes to cri.log, and a failure is shown.
cri() {
  if ! "$CRI" "$SOCK" "$@" 2>>"$WORK/cri.log"; then
    echo "[$STEP] CRI $1 failed: $(tail -1 "$WORK/cri.log")" >&2
    return 1
  fi
}

ctr_() { "$CD_BIN/ctr" -a "$SOCK" -n k8s.io "$@"; }

# Waits (up to $2 s) for a line matching $3 in container log $1 (CRI format: TIME STREAM TAG MSG).
wait_log() {
  local file=$1 secs=$2 pattern=$3 i
  for ((i = 0; i < secs * 50; i++)); do
    if [ -f "$file" ] && grep -q -- "$pattern" "$file"; then return 0; fi
    sleep 0.02
  done
  return 1
}

last_count() { grep -o 'count=[0-9]*' "$1" | tail -1 | cut -d= -f2; }
first_count() { grep -o 'count=[0-9]*' "$1" | head -1 | cut -d= -f2; }
last_sum() { grep -o 'sum=[0-9a-f]*' "$1" | tail -1 | cut -d= -f2; }

# --- main ---------------------------------------------------------------------------------------

main() {
  [ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
  trap cleanup EXIT
  for tool in runc gcc python3 skopeo docker-registry cargo apt-get dpkg; do
    command -v "$tool" >/dev/null || fail "$tool not found (run scripts/test-env.sh)"
  done
  [ -f "$TESTENV/env" ] || fail "$TESTENV/env missing (run scripts/test-env.sh)"
  CD_BIN=$(awk '$1 == "containerd" && $2 == "sid" {print $4}' "$TESTENV/env")
  [ -x "$CD_BIN/containerd" ] || fail "containerd from sid not found in $TESTENV/env"
  # Restore through CreateContainer is 2.1-2.3 only (switched off by default from 2.2.7/2.3.4).
  awk '$1 == "containerd" && $2 == "sid" {print $3}' "$TESTENV/env" | grep -q '^2\.1\.' ||
    fail "this spike is for containerd 2.1.x; $TESTENV/env has $(awk '$2 == "sid" {print $3}' "$TESTENV/env")"
  rm -rf "$LOGS"; mkdir -p "$LOGS"
  WORK=$(mktemp -d /var/tmp/coldstart-criu-spike.XXXXXX)
  say "work dir $WORK, logs $LOGS"
  say "capabilities: CapBnd $(awk '/^CapBnd/ {print $2}' /proc/self/status) (CAP_SYS_RESOURCE $( (( 0x$(awk '/^CapBnd/ {print $2}' /proc/self/status) >> 24 & 1 )) && echo present || echo absent))"
  say "kernel $(uname -r); cgroup: $(stat -fc %T /sys/fs/cgroup) ($(grep -c cgroup2 /proc/self/mounts || true) cgroup2 mounts)"
  say "$("$CD_BIN/containerd" --version); $(runc --version | head -1)"

  say "building the CRI client (tests/cri-spike)"
  (cd "$REPO" && cargo build -q -p coldstart-cri-spike)
  CRI="${CARGO_TARGET_DIR:-$REPO/target}/debug/cri-spike"
  [ -x "$CRI" ] || fail "$CRI not built"

  STEP=criu
  criu_step

  STEP=images
  local img="$WORK/img"
  mkdir -p "$img/pause/rootfs" "$img/counter/rootfs"
  gcc -static -O2 -o "$img/pause/rootfs/pause" "$REPO/scripts/spike/pause.c"
  gcc -static -O2 -o "$img/counter/rootfs/counter" "$REPO/scripts/spike/counter.c"
  printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/pause"]\n' > "$img/pause/Containerfile"
  printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/counter"]\n' > "$img/counter/Containerfile"
  local port; port=$(free_port)
  COUNTER_IMAGE="127.0.0.1:$port/spike/counter:1"
  for name in pause counter; do
    local ref=$PAUSE_IMAGE
    [ $name = counter ] && ref=$COUNTER_IMAGE
    python3 "$REPO/scripts/oci_image.py" --rootfs "$img/$name/rootfs" \
      --containerfile "$img/$name/Containerfile" --epoch 0 --name "$ref" \
      --layout "$img/$name/layout" --archive "$img/$name.tar" | sed "s/^/[$STEP]   /"
  done
  mkdir -p "$WORK/registry"
  cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
  secret: coldstart-spike
EOF
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null || fail "registry did not answer on 127.0.0.1:$port"
  skopeo copy -q --dest-tls-verify=false "oci-archive:$img/counter.tar" "docker://$COUNTER_IMAGE"
  say "pushed $COUNTER_IMAGE to the registry on 127.0.0.1:$port"

  STEP=containerd
  SOCK="$WORK/containerd.sock"
  mkdir -p "$WORK/root" "$WORK/state" "$WORK/tmp" "$WORK/opt" "$WORK/cdi" "$WORK/cni-bin" \
    "$WORK/cni-conf" "$WORK/hosts/127.0.0.1:$port" "$WORK/podlogs"
  # CRI pulls read hosts.toml; the restore's own pull (default resolver) does not.
  cat > "$WORK/hosts/127.0.0.1:$port/hosts.toml" <<EOF
server = "http://127.0.0.1:$port"
[host."http://127.0.0.1:$port"]
  capabilities = ["pull", "resolve"]
EOF
  # Config version 3 (containerd 2.x). Restore through CreateContainer needs no switch on
  # 2.1.x; 2.2.7+ and 2.3.4+ would need enable_experimental_restore_via_create = true in
  # [plugins."io.containerd.cri.v1.runtime"].
  cat > "$WORK/config.toml" <<EOF
version = 3
root = "$WORK/root"
state = "$WORK/state"
temp = "$WORK/tmp"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
required_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.overlayfs"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$WORK/hosts"

[plugins."io.containerd.cri.v1.runtime"]
  # Root on this machine lacks CAP_SYS_RESOURCE (absent from the bounding set), so runc cannot
  # lower oom_score_adj to the sandbox's -998: keep every adj at or above containerd's own.
  restrict_oom_score_adj = true
  enable_cdi = false
  cdi_spec_dirs = ["$WORK/cdi"]
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$WORK/cni-bin"]
    conf_dir = "$WORK/cni-conf"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.image-verifier.v1.bindir"]
  bin_dir = "$WORK/opt/image-verifier/bin"

[plugins."io.containerd.transfer.v1.local"]
  config_path = "$WORK/hosts"
EOF
  PATH="$CRIU_BIN:$CD_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    TMPDIR="$WORK/tmp" "$CD_BIN/containerd" --config "$WORK/config.toml" \
    >"$WORK/containerd.log" 2>&1 </dev/null &
  CD_PID=$!
  for ((i = 0; i < 300; i++)); do
    "$CD_BIN/ctr" -a "$SOCK" version >/dev/null 2>&1 && break
    kill -0 "$CD_PID" 2>/dev/null || fail "containerd exited; see $LOGS/containerd.log"
    sleep 0.1
  done
  say "$(cri version) on $SOCK; PATH starts with $CRIU_BIN"
  ctr_ images import "$img/pause.tar" >/dev/null
  say "imported $PAUSE_IMAGE (sandbox image)"
  local ref; ref=$(cri pull "$COUNTER_IMAGE")
  say "CRI PullImage $COUNTER_IMAGE -> $ref"

  STEP=run
  local log1="$WORK/podlogs/a/counter.log"
  mkdir -p "$WORK/podlogs/a" "$WORK/podlogs/b"
  local t0; t0=$(now)
  local pod1; pod1=$(cri runp spike-a uid-a "$WORK/podlogs/a")
  PODS+=("$pod1")
  say "RunPodSandbox (host network) -> $pod1 in $(ms_since "$t0") ms"
  t0=$(now)
  local ctr1; ctr1=$(cri create "$pod1" spike-a uid-a "$WORK/podlogs/a" counter \
    "$COUNTER_IMAGE" counter.log "SPIKE_MIB=$SPIKE_MIB")
  CTRS+=("$ctr1")
  cri start "$ctr1"
  wait_log "$log1" 60 'count=1 ' || fail "the counter printed no count within 60 s"
  COLD_MS=$(ms_since "$t0")
  say "CreateContainer + StartContainer -> $ctr1; first count after $COLD_MS ms (cold start, $SPIKE_MIB MiB load)"
  say "  $(grep -o 'loaded.*' "$log1")"
  wait_log "$log1" 60 'count=10 ' || fail "the counter stopped before count=10"

  STEP=checkpoint
  local cp="$WORK/cp.tar"
  local before; before=$(last_count "$log1")
  local sum1; sum1=$(last_sum "$log1")
  t0=$(now)
  cri checkpoint "$ctr1" "$cp" 120 || fail "CheckpointContainer failed"
  CKPT_MS=$(ms_since "$t0")
  local after; after=$(last_count "$log1")
  local size; size=$(stat -c %s "$cp")
  say "CheckpointContainer -> $cp in $CKPT_MS ms, $((size / 1024 / 1024)) MiB (mode $(stat -c %a "$cp")); count was $before before, $after after"
  tar -tvf "$cp" | awk '{print $1, $3, $6}' | sed "s/^/[$STEP]   /" | grep -v '/pages-\|checkpoint/[a-z-]*[0-9]*\.img' || true
  say "  ($(tar -tf "$cp" | grep -c '^checkpoint/') entries under checkpoint/)"
  tar -xOf "$cp" dump.log >"$WORK/ckpt-dump.log" 2>/dev/null || true
  say "  dump.log: $(grep -m1 -o 'Version: [0-9.]*' "$WORK/ckpt-dump.log" || true); $(grep -m1 'Dumping finished' "$WORK/ckpt-dump.log" || tail -1 "$WORK/ckpt-dump.log")"
  local st; st=$(cri status "$ctr1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  say "original container state after checkpoint: $st (1 = RUNNING)"

  STEP=image
  python3 "$REPO/scripts/spike/checkpoint_image.py" --archive "$cp" --name "$CKPT_IMAGE" \
    --container-name counter --out "$WORK/ckpt-oci.tar" | sed "s/^/[$STEP]   /"
  t0=$(now)
  ctr_ images import "$WORK/ckpt-oci.tar" >/dev/null
  say "imported $CKPT_IMAGE in $(ms_since "$t0") ms: $(ctr_ images ls -q | grep -c .) images in k8s.io"
  rm -f "$WORK/ckpt-oci.tar"
  cri stop "$ctr1"
  cri rm "$ctr1"
  cri stopp "$pod1"
  cri rmp "$pod1"
  say "removed the original container and pod $pod1"

  STEP=restore
  # containerd copies the archive's container.log to the new container's log path before the
  # restore; the restored process's own lines come after it.
  local log2="$WORK/podlogs/b/counter.log"
  tar -xOf "$cp" container.log >"$WORK/ckpt-container.log"
  local pre; pre=$(wc -l <"$WORK/ckpt-container.log")
  local frozen; frozen=$(last_count "$WORK/ckpt-container.log")
  say "the archive's container.log: $pre lines, last count=$frozen (the state CRIU froze)"
  local pod2; pod2=$(cri runp spike-b uid-b "$WORK/podlogs/b")
  PODS+=("$pod2")
  say "RunPodSandbox (host network) -> $pod2"
  t0=$(now)
  local ctr2
  ctr2=$(cri create "$pod2" spike-b uid-b "$WORK/podlogs/b" counter "$CKPT_IMAGE" counter.log) ||
    fail "CreateContainer from the checkpoint image failed"
  CTRS+=("$ctr2")
  local create_ms; create_ms=$(ms_since "$t0")
  cri start "$ctr2" || fail "StartContainer (the restore) failed"
  local start_ms; start_ms=$(ms_since "$t0")
  copy_restore_log "$ctr2"
  local i
  for ((i = 0; i < 3000; i++)); do
    tail -n +$((pre + 1)) "$log2" 2>/dev/null | grep -q 'count=' && break
    sleep 0.02
  done
  RESTORE_MS=$(ms_since "$t0")
  tail -n +$((pre + 1)) "$log2" > "$WORK/restored-lines"
  grep -q 'count=' "$WORK/restored-lines" || fail "the restored container printed no count within 60 s"
  say "CreateContainer($CKPT_IMAGE) -> $ctr2 in $create_ms ms, + StartContainer at $start_ms ms, first new count at $RESTORE_MS ms"
  if [ -s "$WORK/ckpt-restore-$ctr2.log" ]; then
    say "  restore.log: $(grep -m1 -o 'Version: [0-9.]*' "$WORK/ckpt-restore-$ctr2.log" || true); $(grep -m1 'Restore finished' "$WORK/ckpt-restore-$ctr2.log" || tail -1 "$WORK/ckpt-restore-$ctr2.log")"
  fi
  sleep 1
  tail -n +$((pre + 1)) "$log2" > "$WORK/restored-lines"
  local first; first=$(first_count "$WORK/restored-lines")
  local sum2; sum2=$(last_sum "$WORK/restored-lines")
  say "restored process's first lines: $(head -3 "$WORK/restored-lines" | cut -d' ' -f4- | tr '\n' '|')"
  say "count frozen at $frozen; first count after restore $first; now $(last_count "$WORK/restored-lines")"
  say "memory checksum at checkpoint $sum1, after restore $sum2"
  grep -q 'loaded ' "$WORK/restored-lines" && fail "the restored container loaded again (started over)"
  [ "$first" -eq $((frozen + 1)) ] || fail "count did not go on from $frozen: first is $first"
  [ "$sum1" = "$sum2" ] || fail "memory checksum changed: $sum1 -> $sum2"
  local ann; ann=$(cri status "$ctr2" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["state"], s["image"]["image"], s["annotations"].get("restored"), s["annotations"].get("checkpointImage"))')
  say "status (state image restored checkpointImage): $ann"
  say "timings: cold start $COLD_MS ms; checkpoint $CKPT_MS ms ($((size / 1024 / 1024)) MiB archive); restore $RESTORE_MS ms; restore/cold $(awk -v r="$RESTORE_MS" -v c="$COLD_MS" 'BEGIN { printf "%.2f", r / c }')"
  STEP=done
}

main "$@"
