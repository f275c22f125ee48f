#!/usr/bin/env bash
# Measures the agent image a release would publish: builds the release binaries (unless
# --no-build), the image from them (scripts/build-image.sh, stripped, gzip -9) into
# target/image-release, and prints its compressed size, the sum of its layer blobs (what a node
# downloads, besides a few hundred bytes of config and manifest), and its unpacked size.
# Fails when the compressed size is over --max-mb (default 40, the goal).
#
#   scripts/image-size.sh [--no-build] [--max-mb N]
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
max_mb=40
while [ "$#" -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --max-mb) max_mb=$2; shift 2 ;;
    *) echo "image-size: unknown argument $1" >&2; exit 64 ;;
  esac
done

if [ "$build" = 1 ]; then
  cargo build --release --locked -p coldstart-agent -p coldctl --bins
fi
out=target/image-release
scripts/build-image.sh --bin-dir target/release --out "$out" >/dev/null
python3 - "$out/oci" "$out/rootfs" "$max_mb" <<'EOF'
import json, os, pathlib, sys

layout, rootfs, max_mb = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
blob = lambda d: layout / "blobs" / "sha256" / d.split(":", 1)[1]
index = json.loads((layout / "index.json").read_text())
manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
layers = sum(l["size"] for l in manifest["layers"])
for l in manifest["layers"]:
    assert blob(l["digest"]).stat().st_size == l["size"], l
unpacked = sum(
    os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(rootfs) for f in fs
)
mb = lambda n: n / 1e6
print("manifest  %s" % index["manifests"][0]["digest"])
print("compressed (layers): %d bytes = %.1f MB" % (layers, mb(layers)))
print("unpacked (files):    %d bytes = %.1f MB" % (unpacked, mb(unpacked)))
if mb(layers) > max_mb:
    sys.exit("image-size: %.1f MB compressed is over the %.0f MB goal" % (mb(layers), max_mb))
EOF
