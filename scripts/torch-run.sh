#!/usr/bin/env bash
# Runs a command inside a Debian tree (the torch tree of scripts/torch-tree.sh) with chroot, in a
# private mount namespace: /proc, /sys (read-only), a minimal /dev and a fresh /tmp are mounted
# for the command alone, and so is each host directory given with --bind (read-write) or --ro
# (read-only), at the same path inside the tree. The mounts belong to the namespace and vanish
# when the command exits, however it exits (even SIGKILL): nothing to unmount, nothing leaked to
# the host, and runs in parallel on one tree do not see each other's mounts. The command's
# process is this script's process (exec all the way down), so a caller's timeout kills it.
#
# Usage: scripts/torch-run.sh TREE [--bind DIR[:TARGET]]... [--ro DIR[:TARGET]]... -- CMD [ARG...]
# The environment passes through (e.g. TORCHINDUCTOR_CACHE_DIR), except PATH and HOME, which
# are the tree's, and variables that would point the tree's Python or loader at host files.
# The command starts in / inside the tree. Root only.
set -euo pipefail
log() { echo "torch-run: $*" >&2; }

if [ "${COLDSTART_TORCH_RUN_NS:-}" != 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (chroot, mounts)"
    exit 1
  fi
  export COLDSTART_TORCH_RUN_NS=1
  exec unshare --mount --propagation private -- "$0" "$@"
fi
unset COLDSTART_TORCH_RUN_NS

# In the private mount namespace from here on.
[ $# -ge 1 ] || { log "usage: torch-run.sh TREE [--bind DIR]... [--ro DIR]... -- CMD..."; exit 2; }
tree=$(realpath -e -- "$1"); shift
[ -x "$tree/usr/bin/env" ] || { log "$tree is not a Debian tree (no usr/bin/env)"; exit 2; }
binds=() targets=() modes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bind|--ro)
      [ $# -ge 2 ] || { log "$1 needs a directory"; exit 2; }
      # DIR, or DIR:TARGET to mount DIR at TARGET inside the tree (a pod's mount path).
      src=${2%%:*} dst=${2#*:}
      [ "$src" != "$2" ] || dst=
      dir=$(realpath -e -- "$src")
      [ -d "$dir" ] || { log "$src is not a directory"; exit 2; }
      [ "$dir" != / ] || { log "refusing to bind /"; exit 2; }
      if [ -n "$dst" ]; then
        case "$dst" in /*) ;; *) log "target $dst is not absolute"; exit 2 ;; esac
        case "/$dst/" in */../*|*/./*) log "target $dst has . or .. parts"; exit 2 ;; esac
      else
        dst=$dir
      fi
      binds+=("$dir"); targets+=("$dst"); modes+=("$1"); shift 2 ;;
    --) shift; break ;;
    *) log "unexpected argument $1 (the command follows --)"; exit 2 ;;
  esac
done
[ $# -ge 1 ] || { log "no command after --"; exit 2; }

mount -t proc proc "$tree/proc"
mount -t sysfs -o ro sysfs "$tree/sys"
mount -t tmpfs -o mode=1777 tmpfs "$tree/tmp"
mount -t tmpfs -o mode=755 tmpfs "$tree/dev"
for node in null zero full random urandom tty; do
  touch "$tree/dev/$node"
  mount --bind "/dev/$node" "$tree/dev/$node"
done
mkdir -p "$tree/dev/shm" "$tree/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$tree/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$tree/dev/pts"
ln -s pts/ptmx "$tree/dev/ptmx"
ln -s /proc/self/fd "$tree/dev/fd"
ln -s /proc/self/fd/0 "$tree/dev/stdin"
ln -s /proc/self/fd/1 "$tree/dev/stdout"
ln -s /proc/self/fd/2 "$tree/dev/stderr"
# Targets under /tmp land on the tmpfs above; others are created in the tree (empty dirs).
for i in "${!binds[@]}"; do
  target="$tree${targets[$i]}"
  mkdir -p "$target"
  mount --bind "${binds[$i]}" "$target"
  if [ "${modes[$i]}" = --ro ]; then
    mount -o remount,bind,ro "$target"
  fi
done

exec chroot "$tree" /usr/bin/env \
  -u LD_LIBRARY_PATH -u LD_PRELOAD -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP \
  -u VIRTUAL_ENV -u CONDA_PREFIX \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
