#!/usr/bin/env bash
# Offline demo of the main job: `coldctl warm MODEL --image REF --here` against a private
# containerd, a private registry and a local Hub server (the in-repo fake Hub serving a generated
# model from disk), all in a temp dir on loopback. The host's containerd is never touched, and
# nothing leaves the machine. The real huggingface_hub client then loads the synced model offline.
#
#   scripts/demo.sh [SUITE]     SUITE: bookworm (1.6), trixie (1.7, default) or sid (2.x)
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${1:-trixie}"
ENV_FILE=$(scripts/test-env.sh)
read -r _ _ VERSION BIN < <(grep "^containerd $SUITE " "$ENV_FILE")

PYTHON=$(awk '$1 == "python" {print $2}' "$ENV_FILE")

echo "== building coldctl and the local Hub server"
cargo build --release -q -p coldctl -p coldstart-fakehub
COLDCTL="$PWD/target/release/coldctl"
FAKEHUB="$PWD/target/release/fake-hub"

WORK=$(mktemp -d /tmp/coldstart-demo.XXXXXX)
cleanup() {
  local rc=$?
  set +e
  [ -n "${CTD_PID:-}" ] && kill -9 "$CTD_PID" 2>/dev/null && wait "$CTD_PID" 2>/dev/null
  [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  [ -n "${HUB_PID:-}" ] && kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null
  grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== private registry on loopback"
REG_PORT=$(free_port)
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$REG_PORT}
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== a 3-layer image (~150 MB of incompressible layers)"
OCI="$WORK/oci"; mkdir -p "$OCI/blobs/sha256"
blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$OCI/blobs/sha256/$d"; echo "$d"; }
LAYERS=""; DIFFS=""
for i in 1 2 3; do
  mkdir -p "$WORK/l$i"; head -c $((50 << 20)) /dev/urandom > "$WORK/l$i/weights-$i.bin"
  tar -C "$WORK/l$i" -cf "$WORK/l$i.tar" .
  DIFFS+="${DIFFS:+,}\"sha256:$(sha256sum "$WORK/l$i.tar" | cut -d' ' -f1)\""
  gzip -1 "$WORK/l$i.tar"; SIZE=$(stat -c%s "$WORK/l$i.tar.gz"); D=$(blob "$WORK/l$i.tar.gz")
  LAYERS+="${LAYERS:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$D\",\"size\":$SIZE}"
done
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$DIFFS" > "$WORK/config.json"
CSIZE=$(stat -c%s "$WORK/config.json"); C=$(blob "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$C" "$CSIZE" "$LAYERS" > "$WORK/manifest.json"
MSIZE=$(stat -c%s "$WORK/manifest.json"); M=$(blob "$WORK/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$M" "$MSIZE" > "$OCI/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$OCI/oci-layout"
skopeo copy -q --dest-tls-verify=false "oci:$OCI" "docker://127.0.0.1:$REG_PORT/demo/vllm-like:v1"

echo "== private containerd $VERSION ($SUITE), registry.coldstart.test mapped to the registry by hosts.toml"
mkdir -p "$WORK/hosts/registry.coldstart.test" "$WORK/cni/conf" "$WORK/cni/bin"
cat > "$WORK/hosts/registry.coldstart.test/hosts.toml" <<TOML
server = "http://127.0.0.1:$REG_PORT"
[host."http://127.0.0.1:$REG_PORT"]
  capabilities = ["pull", "resolve"]
TOML
if [ "${VERSION%%.*}" -ge 2 ]; then
  cat > "$WORK/containerd.toml" <<TOML
version = 3
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$WORK/containerd.sock"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "$WORK/hosts"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dir = "$WORK/cni/bin"
  conf_dir = "$WORK/cni/conf"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
else
  cat > "$WORK/containerd.toml" <<TOML
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$WORK/containerd.sock"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "$WORK/hosts"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$WORK/cni/bin"
  conf_dir = "$WORK/cni/conf"
TOML
fi
PATH="$BIN:$PATH" "$BIN/containerd" --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do "$BIN/ctr" -a "$WORK/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== a local Hub serving demo-org/tiny-llama (two 64 MiB safetensors shards, an index,"
echo "   configs, a tokenizer, and a pytorch_model.bin that vLLM would not load)"
M="$WORK/model"; mkdir -p "$M"
echo '{"model_type":"llama","hidden_size":64}' > "$M/config.json"
echo '{"do_sample":true}' > "$M/generation_config.json"
head -c 300000 /dev/urandom | base64 > "$M/tokenizer.json"
echo '{"chat_template":"{{ messages }}"}' > "$M/tokenizer_config.json"
echo '{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}' > "$M/model.safetensors.index.json"
head -c $((64 << 20)) /dev/urandom > "$M/model-00001-of-00002.safetensors"
head -c $((64 << 20)) /dev/urandom > "$M/model-00002-of-00002.safetensors"
head -c $((8 << 20)) /dev/urandom > "$M/pytorch_model.bin"
"$FAKEHUB" --addr 127.0.0.1:0 --repo "demo-org/tiny-llama=$M" >"$WORK/hub.out" 2>"$WORK/hub.log" &
HUB_PID=$!
for _ in $(seq 300); do grep -q '^listening ' "$WORK/hub.out" 2>/dev/null && break; sleep 0.1; done
HUB=$(awk '$1 == "listening" {print $2}' "$WORK/hub.out")
[ -n "$HUB" ] || { cat "$WORK/hub.log" >&2; echo "the local Hub did not start" >&2; exit 1; }
echo "   $HUB"

ROOT="$WORK/coldstart"   # the agent's layout: $ROOT/hub (the Hub cache) and $ROOT/state
CACHE="$ROOT/hub"
warm() {
  "$COLDCTL" warm demo-org/tiny-llama --image registry.coldstart.test/demo/vllm-like:v1 --here \
    --containerd-socket "$WORK/containerd.sock" --margin-mib 64 \
    --cache-root "$ROOT" --hub-endpoint "$HUB" --cache-margin-mib 64 "$@"
}
echo "== coldctl warm demo-org/tiny-llama --image registry.coldstart.test/demo/vllm-like:v1 --here"
warm
echo "== as JSON (second run: both already present, re-checked, nothing downloaded)"
warm -o json
echo "== what containerd holds in namespace k8s.io (note io.cri-containerd.pinned=pinned)"
"$BIN/ctr" -a "$WORK/containerd.sock" -n k8s.io images ls
echo "== the Hub cache vLLM reads (HF_HUB_CACHE=$CACHE)"
(cd "$CACHE" && find . | sort | sed "s/^/   /")
echo "== the real huggingface_hub client, offline, finds the model (as vLLM would)"
HF_HUB_OFFLINE=1 HF_HUB_CACHE="$CACHE" "$PYTHON" - <<'PY'
from huggingface_hub import snapshot_download, hf_hub_download
import json, os
snap = snapshot_download("demo-org/tiny-llama", allow_patterns=["*.json", "*.safetensors"])
print("   snapshot:", snap)
print("   files:", sorted(os.listdir(snap)))
print("   config:", json.load(open(hf_hub_download("demo-org/tiny-llama", "config.json"))))
PY
echo "== coldctl verify (full hash of every byte)"
"$COLDCTL" verify demo-org/tiny-llama --here --cache-root "$ROOT" --full
