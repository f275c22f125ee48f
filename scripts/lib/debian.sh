# Sourced by scripts/test-env.sh, scripts/torch-tree.sh and scripts/spike/criu-cri.sh (bash):
# Debian helpers.

# The Debian mirror URI this machine already uses (deb822 or one-line format), so that the
# repository never names a package host itself.
debian_uri() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null \
          | awk '{for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
          | grep -v -- '-security' | head -n1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "cannot find a Debian mirror URI in /etc/apt" >&2
    return 1
  fi
  echo "$uri"
}
