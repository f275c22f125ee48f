#!/usr/bin/env bash
# Builds the coldstart-agent runtime image offline, reproducibly, with no container engine:
#
#   scripts/build-image.sh [--bin-dir DIR] [--out DIR] [--no-strip] [--name REF]
#                          [--source URL] [--gzip-level N]
#
#   --bin-dir DIR   where coldstart-agent and coldctl are (default target/release; the system
#                   tests use target/debug, stripped)
#   --out DIR       output directory, replaced (default target/image):
#                     rootfs/                 the root tree (the Containerfile COPYs it)
#                     oci/                    an OCI image layout
#                     coldstart-agent.oci.tar the same layout as an OCI archive
#   --no-strip      keep the binaries' symbols (stripped copies by default; target/ is untouched)
#   --name REF      image name (default deploy/base/kustomization.yaml's newName, tag VERSION)
#   --source URL    org.opencontainers.image.source (default the Containerfile's)
#   --gzip-level N  layer compression, 1-9 (default 9)
#
# The tree: /usr/local/bin/{coldstart-agent,coldctl}, the shared libraries ldd finds for them
# (copied to their canonical directories, with the host's /lib -> usr/lib style links so the
# binaries' interpreter path resolves), /etc/ssl/certs/ca-certificates.crt from the machine's
# ca-certificates, /etc/nsswitch.conf and /tmp. No shell, no /etc/passwd. NVML is not in it:
# the NVIDIA runtime mounts the host driver's libnvidia-ml.so.1 (or pass --nvml-library).
#
# Labels: version from Cargo.toml, revision and created (the commit time, also every file's
# mtime) from git; SOURCE_DATE_EPOCH overrides the time. Two builds of one commit on one machine
# give the same manifest digest (tests/image.rs checks it); another machine's glibc, CA bundle or
# zlib may differ.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

bin_dir="$repo/target/release"
out="$repo/target/image"
strip=1
name=""
source_url=""
level=9
while [ "$#" -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-strip) strip=0; shift ;;
    --strip) strip=1; shift ;;
    --name) name=$2; shift 2 ;;
    --source) source_url=$2; shift 2 ;;
    --gzip-level) level=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

die() { echo "build-image: $*" >&2; exit 1; }
for tool in ldd python3 "${STRIP:-strip}"; do
  command -v "$tool" >/dev/null || die "$tool missing (binutils, libc-bin, python3)"
done
for bin in coldstart-agent coldctl; do
  [ -x "$bin_dir/$bin" ] || die "$bin_dir/$bin missing: cargo build --release -p coldstart-agent -p coldctl first"
done
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || die "$ca missing: install ca-certificates"

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["workspace"]["package"]["version"])' "$repo/Cargo.toml")
if git -C "$repo" rev-parse --verify -q HEAD >/dev/null; then
  revision=$(git -C "$repo" rev-parse HEAD)
  git -C "$repo" diff --quiet HEAD -- || revision="$revision-dirty"
  epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct HEAD)}
else
  revision=unknown
  epoch=${SOURCE_DATE_EPOCH:?not a git checkout: set SOURCE_DATE_EPOCH}
fi
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
if [ -z "$name" ]; then
  # One place names the release image: the kustomization the DaemonSet is deployed with.
  image_repo=$(awk '$1 == "newName:" { print $2; exit }' "$repo/deploy/base/kustomization.yaml")
  [ -n "$image_repo" ] || die "no images[].newName in deploy/base/kustomization.yaml: pass --name"
  name="$image_repo:$version"
fi

# Replaced, so only an empty directory or an earlier output of this script.
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -d "$out/rootfs" ]; then
  die "$out is not empty and holds no earlier image build: refusing to replace it"
fi
rm -rf "$out"
root="$out/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"

for bin in coldstart-agent coldctl; do
  if [ "$strip" = 1 ]; then
    "${STRIP:-strip}" --strip-all -o "$root/usr/local/bin/$bin" "$bin_dir/$bin"
  else
    cp "$bin_dir/$bin" "$root/usr/local/bin/$bin"
  fi
done

# Every library the binaries load, and the interpreter: `name => /path (addr)` and `/path (addr)`.
# ldd runs the host's loader, so this needs binaries of the host's architecture.
libs=$(for bin in coldstart-agent coldctl; do
  out_ldd=$(ldd "$bin_dir/$bin") || die "ldd $bin_dir/$bin failed: $out_ldd"
  if grep -q 'not found' <<<"$out_ldd"; then die "$bin: $(grep 'not found' <<<"$out_ldd")"; fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out_ldd"
done | sort -u)
[ -n "$libs" ] || die "ldd found no libraries (a static build needs none: drop this check)"
for lib in $libs; do
  # /lib/x86_64-linux-gnu/libc.so.6 -> usr/lib/x86_64-linux-gnu/libc.so.6 (the real file).
  dir=$(realpath "$(dirname "$lib")")
  mkdir -p "$root$dir"
  cp -L "$lib" "$root$dir/$(basename "$lib")"
  # Keep the path the binaries (PT_INTERP) and the loader name working: /lib64 -> usr/lib64.
  top=/$(cut -d/ -f2 <<<"$lib")
  if [ -L "$top" ] && [ ! -e "$root$top" ]; then
    ln -s "$(readlink "$top")" "$root$top"
  fi
done

cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
# glibc reads no nsswitch.conf as `hosts: dns files`; /etc/hosts (the kubelet's) goes first.
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"

args=(--arg "VERSION=$version" --arg "REVISION=$revision" --arg "CREATED=$created")
[ -n "$source_url" ] && args+=(--arg "SOURCE=$source_url")
python3 "$repo/scripts/oci_image.py" --rootfs "$root" --containerfile "$repo/Containerfile" \
  --epoch "$epoch" --name "$name" --layout "$out/oci" --archive "$out/coldstart-agent.oci.tar" \
  --gzip-level "$level" "${args[@]}"
echo "wrote $out/{rootfs,oci,coldstart-agent.oci.tar}"
