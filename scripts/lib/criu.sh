# shellcheck shell=bash
# CRIU from a Debian suite (default sid), unpacked with its whole library closure (glibc
# included: sid's criu needs glibc 2.38, bookworm has 2.36) into $TESTENV/criu-$suite, and run
# through that tree's own loader by a wrapper bin/criu, so nothing on the host changes. Debian
# bookworm's /usr/sbin/criu 3.17 fails on this machine's kernel. containerd 2.x finds `criu` on
# its PATH (the runc option criu_path is gone), so tests put $TESTENV/criu-$suite/bin first.
#
# Sourced by scripts/test-env.sh and scripts/spike/criu-cri.sh, after scripts/lib/debian.sh:
#   install_criu TESTENV SUITE    prints the bin directory holding the wrapper
install_criu() {
  local testenv=$1 suite=$2
  local dir="$testenv/criu-$suite"
  if [ ! -x "$dir/bin/criu" ]; then
    echo "fetching criu and its libraries from $suite" >&2
    local uri work
    uri=$(debian_uri) || { echo "cannot find a Debian mirror URI in /etc/apt" >&2; return 1; }
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    echo "deb [trusted=yes] $uri $suite main" > "$work/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
                -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
                -o "Dir::Cache=$work" -o "Dir::State::status=/dev/null"
                -o "Acquire::Check-Valid-Until=false" -o "APT::Get::AllowUnauthenticated=true"
                -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -qq >/dev/null
    local pkgs
    pkgs=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
             --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | grep -v '<' | sort -u)
    # shellcheck disable=SC2086
    (cd "$work" && apt-get "${opts[@]}" download -qq $pkgs 2>/dev/null)
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/bin"
    local deb
    for deb in "$work"/*.deb; do dpkg -x "$deb" "$dir.tmp"; done
    rm -rf "$work"
    cat > "$dir.tmp/bin/criu" <<WRAP
#!/bin/sh
# CRIU from Debian $suite with its own glibc (written by scripts/lib/criu.sh).
exec "$dir/usr/lib64/ld-linux-x86-64.so.2" --library-path "$dir/usr/lib/x86_64-linux-gnu" "$dir/usr/sbin/criu" "\$@"
WRAP
    chmod 755 "$dir.tmp/bin/criu"
    # The wrapper names the final path; the tree moves there as a whole.
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  "$dir/bin/criu" --version >/dev/null 2>&1 || { echo "$dir/bin/criu does not run" >&2; return 1; }
  echo "$dir/bin"
}
