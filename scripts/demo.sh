#!/usr/bin/env bash
# Offline demo of the main job: `coldctl warm --here --image REF` against a private containerd
# and a private registry, both in a temp dir on loopback. The host's containerd is never touched.
#
#   scripts/demo.sh [SUITE]     SUITE: bookworm (1.6), trixie (1.7, default) or sid (2.x)
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${1:-trixie}"
ENV_FILE=$(scripts/test-env.sh)
read -r _ _ VERSION BIN < <(grep "^containerd $SUITE " "$ENV_FILE")

echo "== building coldctl"
cargo build --release -q -p coldctl
COLDCTL="$PWD/target/release/coldctl"

WORK=$(mktemp -d /tmp/coldstart-demo.XXXXXX)
cleanup() {
  [ -n "${CTD_PID:-}" ] && kill -9 "$CTD_PID" 2>/dev/null && wait "$CTD_PID" 2>/dev/null
  [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
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

echo "== coldctl warm --here --image registry.coldstart.test/demo/vllm-like:v1"
"$COLDCTL" warm --here --image registry.coldstart.test/demo/vllm-like:v1 \
  --containerd-socket "$WORK/containerd.sock" --margin-mib 64
echo "== as JSON (second run: already present, re-checked)"
"$COLDCTL" warm --here --image registry.coldstart.test/demo/vllm-like:v1 \
  --containerd-socket "$WORK/containerd.sock" --margin-mib 64 -o json
echo "== what containerd holds in namespace k8s.io (note io.cri-containerd.pinned=pinned)"
"$BIN/ctr" -a "$WORK/containerd.sock" -n k8s.io images ls
