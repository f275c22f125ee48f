#!/usr/bin/env bash
# Weights sync benchmark: `coldctl warm --here` against `hf download` (huggingface_hub's CLI,
# its defaults) and against the raw limit for the same bytes (parallel `curl` ranges written in
# place), all three against one local fake Hub serving a generated model from disk, alternating,
# into a fresh target each run. Every run is timed to durability: the tool, then an fsync of
# every file and directory it wrote (`sync FILE...`, so other processes' dirty pages on the same
# disk do not count against us).
#
# Settings:
#   a  target on this machine's disk, no rate limit
#   b  target on a tmpfs (shows the engine rather than the disk), no rate limit
#   c  the fake Hub paces each connection at --rate-mbps (default 100 MB/s, as CDNs do);
#      target on a tmpfs by default (--c-target disk to change)
#
# Prints each run's seconds and MB/s, the CPU seconds of the tool and of the server, and per
# setting the median speedup over hf (target >= 2 in b and c) and the median time ratio to the
# raw limit (target <= 1.25 in a).
#
# Needs root (tmpfs mount), `scripts/test-env.sh` (the huggingface_hub venv), curl.
#
# Usage: benches/weights.sh [--gb 4] [--runs 3] [--warmup 0] [--settings a,b,c]
#          [--rate-mbps 100] [--c-target tmpfs|disk] [--raw-connections 16]
#          [--connections N] [--chunk-mib M] [--files-at-once F] [--run-timeout 900]
#          [--work DIR] [--no-build] [--keep-model] [--check]
#
# --check sha256-compares every run's files with the model (outside the timing).
# Nothing is dropped from the page cache between runs: the model is the "network" and stays
# cached (it is read once before each run to make sure); targets are deleted between runs, and
# their dirty pages were flushed by the timed fsync, so no run inherits another's writeback.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GB=4
RUNS=3
WARMUP=0
SETTINGS=a,b,c
RATE_MBPS=100
C_TARGET=tmpfs
RAW_CONNS=16
OURS_FLAGS=()
RUN_TIMEOUT=900
WORK="$ROOT/target/bench-cache/weights"
BUILD=1
KEEP_MODEL=0
CHECK=0

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
while [ $# -gt 0 ]; do
    case "$1" in
        --gb) GB=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --settings) SETTINGS=$2; shift 2 ;;
        --rate-mbps) RATE_MBPS=$2; shift 2 ;;
        --c-target) C_TARGET=$2; shift 2 ;;
        --raw-connections) RAW_CONNS=$2; shift 2 ;;
        --connections|--chunk-mib|--files-at-once) OURS_FLAGS+=("$1" "$2"); shift 2 ;;
        --run-timeout) RUN_TIMEOUT=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep-model) KEEP_MODEL=1; shift ;;
        --check) CHECK=1; shift ;;
        -h|--help) usage ;;
        *) echo "weights.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "weights.sh: needs root (tmpfs mount)" >&2; exit 64; }
case "$C_TARGET" in tmpfs|disk) ;; *) echo "--c-target tmpfs|disk" >&2; exit 64 ;; esac
ENVFILE=/opt/coldstart-testenv/env
PY=$(awk '$1 == "python" {print $2}' "$ENVFILE" 2>/dev/null || true)
[ -x "$PY" ] || { echo "weights.sh: no venv python in $ENVFILE; run scripts/test-env.sh" >&2; exit 1; }
HF="$(dirname "$PY")/hf"
[ -x "$HF" ] || { echo "weights.sh: no $HF" >&2; exit 1; }
command -v curl >/dev/null || { echo "weights.sh: needs curl" >&2; exit 1; }

REPO=bench/model
MODEL="$WORK/model-${GB}g"
DISK="$WORK/disk"
TMPFS="$WORK/tmpfs"
LOGS="$WORK/logs"
RESULTS="$WORK/results.tsv"
HUB_PID=
MOUNTED=0

cleanup() {
    set +e
    stop_hub
    [ "$MOUNTED" = 1 ] && umount "$TMPFS"
    rm -rf "$DISK" "$WORK/hf-home"
    [ "$KEEP_MODEL" = 1 ] || rm -rf "$MODEL"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# --- build and model --------------------------------------------------------------------------

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --workspace --bins)
fi
COLDCTL="$ROOT/target/release/coldctl"
FAKEHUB="$ROOT/target/release/fake-hub"
for b in "$COLDCTL" "$FAKEHUB"; do
    [ -x "$b" ] || { echo "weights.sh: no $b (cargo build --release --workspace --bins)" >&2; exit 1; }
done

mkdir -p "$WORK" "$LOGS"
rm -rf "$LOGS"/* "$DISK"

# Three shards (55%, 30%, 15% of --gb; the first is >= 2 GB at --gb 4), the index naming them
# (so the default vLLM selection takes exactly these files, as hf downloads everything), a
# config and a tokenizer. Random bytes: nothing compresses or dedups.
make_model() {
    local total=$(( $(awk "BEGIN{printf \"%d\", $GB * 1000}") * 1000 * 1000 ))
    local sizes=( $(( total * 55 / 100 )) $(( total * 30 / 100 )) )
    sizes+=( $(( total - sizes[0] - sizes[1] )) )
    rm -rf "$MODEL" "$MODEL.tmp"
    mkdir -p "$MODEL.tmp"
    local i n=${#sizes[@]} map=""
    for i in $(seq 1 "$n"); do
        local name
        name=$(printf 'model-%05d-of-%05d.safetensors' "$i" "$n")
        head -c "${sizes[i-1]}" /dev/urandom > "$MODEL.tmp/$name"
        map+="\"layers.$i.weight\": \"$name\","
    done
    printf '{"metadata": {"total_size": %d}, "weight_map": {%s}}\n' "$total" "${map%,}" \
        > "$MODEL.tmp/model.safetensors.index.json"
    printf '{"architectures": ["BenchForCausalLM"], "model_type": "bench"}\n' \
        > "$MODEL.tmp/config.json"
    head -c 3000000 /dev/urandom | base64 -w 0 | sed 's/^/{"vocab": "/; s/$/"}/' \
        > "$MODEL.tmp/tokenizer.json"
    mv "$MODEL.tmp" "$MODEL"
}
[ -f "$MODEL/model.safetensors.index.json" ] || { echo "generating a ${GB} GB model in $MODEL" >&2; make_model; }
FILES=()
while IFS= read -r f; do FILES+=("$f"); done < <(cd "$MODEL" && find . -type f -printf '%P\n' | sort)
MODEL_BYTES=$(cd "$MODEL" && find . -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s}')
echo "model: ${#FILES[@]} files, $MODEL_BYTES bytes" >&2

# --- the fake Hub -----------------------------------------------------------------------------

# start_hub [RATE_BYTES_PER_SEC]: serves $MODEL from disk on 127.0.0.1, sets EP and HUB_PID.
start_hub() {
    local log="$LOGS/fake-hub.$1.log" args=(--addr 127.0.0.1:0 --repo "$REPO=$MODEL")
    [ -n "${2:-}" ] && args+=(--rate-limit-per-connection "$2")
    "$FAKEHUB" "${args[@]}" > "$log" 2> "$LOGS/fake-hub.$1.err" &
    HUB_PID=$!
    local i
    for i in $(seq 1 600); do
        EP=$(awk '$1 == "listening" {print $2}' "$log")
        [ -n "$EP" ] && return 0
        kill -0 "$HUB_PID" 2>/dev/null || { cat "$LOGS/fake-hub.$1.err" >&2; exit 1; }
        sleep 0.5
    done
    echo "weights.sh: fake-hub did not start in 300 s" >&2; exit 1
}
stop_hub() {
    if [ -n "$HUB_PID" ]; then
        kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null
        HUB_PID=
    fi
}
# CPU seconds (user + system) the fake Hub has used so far; fails loudly if it died.
hub_cpu() {
    if ! kill -0 "$HUB_PID" 2>/dev/null; then
        local st=0
        wait "$HUB_PID" || st=$?
        echo "weights.sh: fake-hub (pid $HUB_PID) is gone, exit status $st" >&2
        exit 1
    fi
    awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$HUB_PID/stat"
}

# --- the three tools --------------------------------------------------------------------------
# Each run is bounded: `timeout` around ours and hf, `--max-time` on every curl.

run_ours() {
    timeout -k 10 "$RUN_TIMEOUT" "$COLDCTL" warm "$REPO" --here --cache-dir "$1/hub" \
        --state-dir "$1/state" --endpoint "$EP" "${OURS_FLAGS[@]}" -o json
}
run_hf() {
    HF_ENDPOINT="$EP" HF_HOME="$WORK/hf-home" HF_HUB_DISABLE_PROGRESS_BARS=1 \
        HF_HUB_DISABLE_TELEMETRY=1 timeout -k 10 "$RUN_TIMEOUT" "$HF" download "$REPO" \
        --cache-dir "$1/hub"
}
# One curl per range, RAW_CONNS ranges over all bytes (no range smaller than a file's share),
# each writing at its offset of a pre-sized file: curl's stdout is the file descriptor,
# positioned by a tiny exec wrapper, so no byte is copied through a pipe.
run_raw() {
    local dir=$1/raw piece=$(( (MODEL_BYTES + RAW_CONNS - 1) / RAW_CONNS )) pids=() f
    mkdir -p "$dir"
    for f in "${FILES[@]}"; do
        local size off=0
        size=$(stat -c %s "$MODEL/$f")
        mkdir -p "$(dirname "$dir/$f")"
        truncate -s "$size" "$dir/$f"
        while [ "$off" -lt "$size" ]; do
            local end=$(( off + piece - 1 ))
            [ "$end" -ge "$size" ] && end=$(( size - 1 ))
            "$PY" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY); os.lseek(fd, int(sys.argv[2]), 0); os.dup2(fd, 1)
os.execvp("curl", ["curl", "-sS", "--fail", "--max-time", sys.argv[3], "-r", sys.argv[4], sys.argv[5]])' \
                "$dir/$f" "$off" "$RUN_TIMEOUT" "$off-$end" "$EP/$REPO/resolve/main/$f" &
            pids+=($!)
            off=$(( end + 1 ))
        done
    done
    local p rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ "${#pids[@]}" -gt 0 ] && return $rc
}

# The bytes a run left, to catch a tool that silently fetched less.
run_bytes() {
    case "$1" in
        raw) find "$2/raw" -type f -printf '%s\n' ;;
        *) find "$2/hub" -path '*/blobs/*' -type f -printf '%s\n' ;;
    esac | awk '{s+=$1} END {printf "%.0f", s}'
}
check_content() {
    local f dir=$2/raw
    for f in "${FILES[@]}"; do
        [ "$1" = raw ] || dir=$(echo "$2"/hub/models--bench--model/snapshots/*)
        cmp -s "$MODEL/$f" "$dir/$f" || { echo "weights.sh: $1: $f differs" >&2; return 1; }
    done
}

# time_run SETTING TOOL ROUND BASE: one timed run into a fresh BASE/run.
time_run() {
    local setting=$1 tool=$2 round=$3 dir=$4/run
    rm -rf "$dir" && mkdir -p "$dir"
    sync -f "$dir"
    cat "${FILES[@]/#/$MODEL/}" > /dev/null # the source stays in the page cache
    local log="$LOGS/$setting.$tool.$round" cpu0 t0 t1 cpu1 rc=0 load
    load=$(cut -d' ' -f1 /proc/loadavg) # other processes' load shows here
    cpu0=$(hub_cpu)
    t0=$(now)
    # `time` reports the tool's own CPU (children included: hf's threads, curl processes).
    { TIMEFORMAT='%U %S'; time "run_$tool" "$dir" > "$log.out" 2> "$log.err"; } \
        2> "$log.cpu" || rc=$?
    find "$dir" \( -type f -o -type d \) -print0 | xargs -0 -r sync
    t1=$(now)
    cpu1=$(hub_cpu)
    if [ "$rc" != 0 ]; then
        echo "weights.sh: $tool failed (exit $rc) in setting $setting round $round:" >&2
        tail -5 "$log.err" >&2
        exit 1
    fi
    local got
    got=$(run_bytes "$tool" "$dir")
    [ "$got" = "$MODEL_BYTES" ] || { echo "weights.sh: $tool wrote $got bytes, want $MODEL_BYTES" >&2; exit 1; }
    [ "$CHECK" = 1 ] && check_content "$tool" "$dir"
    rm -rf "$dir"
    [ "$round" = warmup ] && return 0
    local secs tcpu
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    tcpu=$(awk '{printf "%.1f", $1 + $2}' "$log.cpu")
    printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%.1f\t%s\n' "$setting" "$tool" "$round" "$secs" \
        "$(awk -v b="$MODEL_BYTES" -v s="$secs" 'BEGIN {print b / s / 1e6}')" "$tcpu" \
        "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}')" "$load" | tee -a "$RESULTS"
}

# --- settings ---------------------------------------------------------------------------------

mount_tmpfs() {
    [ "$MOUNTED" = 1 ] && return 0
    mkdir -p "$TMPFS"
    # Room for the model, hf's temporary files and our default 1 GiB free-space margin.
    local mb=$(( MODEL_BYTES / 1000000 * 3 / 2 + 1600 ))
    mount -t tmpfs -o "size=${mb}m,mode=0700" coldstart-bench "$TMPFS"
    MOUNTED=1
}

TOOLS=(ours hf raw)
echo "# ours: coldctl warm ${OURS_FLAGS[*]:-(defaults)}; raw: $RAW_CONNS curl ranges" >&2
printf 'setting\ttool\tround\tseconds\tMB/s\ttool_cpu_s\thub_cpu_s\tload1\n' | tee "$RESULTS"
IFS=, read -r -a SETS <<< "$SETTINGS"
for s in "${SETS[@]}"; do
    case "$s" in
        a) base=$DISK; rate= ;;
        b) mount_tmpfs; base=$TMPFS; rate= ;;
        c) rate=$(( RATE_MBPS * 1000000 ))
           if [ "$C_TARGET" = tmpfs ]; then mount_tmpfs; base=$TMPFS; else base=$DISK; fi ;;
        *) echo "weights.sh: unknown setting $s" >&2; exit 64 ;;
    esac
    mkdir -p "$base"
    start_hub "$s" "$rate"
    echo "# setting $s: target $base, endpoint $EP${rate:+, $RATE_MBPS MB/s per connection}" >&2
    for w in $(seq 1 "$WARMUP"); do
        for t in "${TOOLS[@]}"; do time_run "$s" "$t" warmup "$base"; done
    done
    for r in $(seq 1 "$RUNS"); do
        # Rotate the order each round so no tool always runs first or last.
        for i in 0 1 2; do
            time_run "$s" "${TOOLS[(i + r - 1) % 3]}" "$r" "$base"
        done
    done
    stop_hub
done

# --- summary ----------------------------------------------------------------------------------

"$PY" - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for r in rows:
    med.setdefault((r["setting"], r["tool"]), []).append(float(r["seconds"]))
print("\nsetting  ours s  hf s   raw s   hf/ours (target)   ours/raw (target)")
for s in sorted({k[0] for k in med}):
    if any((s, t) not in med for t in ("ours", "hf", "raw")):
        continue
    o, h, w = (statistics.median(med[(s, t)]) for t in ("ours", "hf", "raw"))
    ht = ">= 2" if s in "bc" else ""
    wt = "<= 1.25" if s == "a" else ""
    print(f"{s:<8} {o:6.2f} {h:6.2f} {w:6.2f}   {h / o:5.2f}x {ht:<10}   {o / w:5.2f}x {wt}")
EOF
