#!/usr/bin/env bash
# make test-debian13: the README's two commands, `make demo` and `make test`, on Debian 13
# (trixie: ParaView 5.13, Python 3.13, numpy 2 from Debian, torch from PyPI), in a Debian 13
# root made by debootstrap in a cache folder outside the repository and reused by later runs.
#
#   scripts/test-debian13.sh              build the root if needed, copy the working tree in,
#                                         run make demo and make test there, print the summary
#   scripts/test-debian13.sh --run CMD    the same root and copy, CMD instead (for debugging)
#   scripts/test-debian13.sh --clean      delete the cache folder (the root, its venv, logs)
#
# STSR_DEBIAN13_CACHE: the cache folder (default /var/cache/stsr-debian13: the root in root/,
# each run's log in logs/); STSR_DEBIAN_MIRROR: the Debian mirror. Needs root (debootstrap,
# chroot, mounts). The mounts live in a mount namespace of their own (unshare), so they end
# with the run, whatever way it ends, and nothing under the cache folder stays mounted.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${STSR_DEBIAN13_CACHE:-/var/cache/stsr-debian13}
ROOT=$CACHE/root
MIRROR=${STSR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SRC=/root/stsr-inr                       # the working tree's copy inside the root
START=$(date +%s)

say() { printf '[test-debian13 %4ds] %s\n' $(($(date +%s) - START)) "$*"; }
fail() { echo "test-debian13: error: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, chroot and mounts need it)"

mounted_under() { awk -v d="$1" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo; }

remove_tree() {         # refuses while anything is mounted below (a bind of /dev, /proc...)
  [ -n "$(mounted_under "$1")" ] && fail "still mounted under $1: $(mounted_under "$1")"
  rm -rf --one-file-system "$1"
}

MODE=test
CMD=""
case "${1:-}" in
  "") ;;
  --run) [ $# -ge 2 ] || fail "--run needs a command"; MODE=run; CMD=$2 ;;
  --clean) remove_tree "$CACHE"; say "removed $CACHE"; exit 0 ;;
  *) fail "unknown option '$1' (options: --run CMD, --clean)" ;;
esac

# 1. The root: a minimal Debian 13 with make (the README's commands start with it), git (a
# clone has it; the benchmarks record the commit) and the CA certificates; everything else is installed by `make setup` inside it, as on a fresh
# machine. Built once; its .venv and Debian packages stay for the next run.
if [ ! -e "$ROOT/.stsr-root-complete" ]; then
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap on this machine"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
  fi
  mkdir -p "$CACHE"
  remove_tree "$ROOT"
  remove_tree "$ROOT.partial"
  say "debootstrap trixie into $ROOT ($MIRROR)"
  debootstrap --variant=minbase --include=make,git,ca-certificates trixie "$ROOT.partial" \
    "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log"; \
    fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  touch "$ROOT.partial/.stsr-root-complete"
  mv "$ROOT.partial" "$ROOT"
fi

# 2. What the root needs from this machine: name resolution (its resolver, and its own name
# in /etc/hosts, as any installed machine has), and the certificates this
# machine trusts (where its network passes through a proxy that signs with its own CA, pip
# in the root would refuse PyPI with the root's bundle alone).
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp -L /etc/hosts "$ROOT/etc/hosts"          # this machine's name resolves (torchrun needs it)
cp -L /etc/hostname "$ROOT/etc/hostname" 2>/dev/null || true
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
CA_ENV=()
if [ -f "$HOST_CA" ]; then
  cp -L "$HOST_CA" "$ROOT/etc/ssl/certs/stsr-host-ca.crt"
  CA_ENV=(PIP_CERT=/etc/ssl/certs/stsr-host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/stsr-host-ca.crt
          REQUESTS_CA_BUNDLE=/etc/ssl/certs/stsr-host-ca.crt)
fi

# 3. A clone of the repository's HEAD (as CI's fresh clone: the benchmarks' harness records
# the commit) with the working tree's changes laid over it (tracked and untracked files git
# does not ignore), made afresh each run; the copy's .venv and .pyvista-site from the last
# run stay (torch is a 4.6 GB download there).
mkdir -p "$ROOT$SRC"
find "$ROOT$SRC" -mindepth 1 -maxdepth 1 ! -name .venv ! -name .pyvista-site \
  -exec rm -rf --one-file-system {} +
rm -rf "$ROOT$SRC.clone"
git clone -q --depth 1 "file://$REPO" "$ROOT$SRC.clone"
(cd "$ROOT$SRC.clone" && tar -cf - .) | tar -C "$ROOT$SRC" -xf -
rm -rf "$ROOT$SRC.clone"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
  | tar -C "$REPO" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$ROOT$SRC" -xf -
git -C "$REPO" ls-files -z --deleted | (cd "$ROOT$SRC" && xargs -0 -r rm -f)
say "copied $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || \
  echo ' + uncommitted changes') to $ROOT$SRC"

# What a fresh machine that cloned the repository has besides Debian's minimal system:
# make, git and the CA certificates (in the root from debootstrap; a root made before they
# were all listed gets them here)
PREREQ='dpkg -s make git ca-certificates >/dev/null 2>&1 || { apt-get update -qq &&
  apt-get install -y -qq --no-install-recommends make git ca-certificates >/dev/null; }'
if [ "$MODE" = test ]; then
  # the README's two commands, each timed; then apt's downloaded packages, not needed again
  CMD="$PREREQ"' && cd '"$SRC"' && s=$(date +%s) && make demo && d=$(date +%s) &&
       make test && e=$(date +%s) &&
       echo "[test-debian13] make demo: $((d - s)) s, make test: $((e - d)) s" &&
       apt-get clean'
else
  CMD="$PREREQ && $CMD"
fi

# 4. In the root, in a mount and PID namespace of its own: /proc, /sys, /dev, a fresh
# /dev/shm (MPI), and a clean environment (no variable of this machine's but the CA's).
mkdir -p "$CACHE/logs"
LOG=$CACHE/logs/$(date +%Y%m%d-%H%M%S)-$MODE.log
say "running in the root (log: $LOG)"
set +e
unshare --mount --pid --fork --kill-child bash -c '
  set -e
  R=$1; shift
  mount -t proc proc "$R/proc"
  mount -t sysfs sysfs "$R/sys"
  mount --bind /dev "$R/dev"
  mount --bind /dev/pts "$R/dev/pts"
  mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
  exec chroot "$R" "$@"' _ "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 "${CA_ENV[@]}" \
  bash -c "$CMD" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

if [ "$MODE" = test ]; then
  echo
  echo "== test-debian13 summary ($(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - START)) s in all)"
  grep -E "^\[test-debian13\]|^\[setup\] ok|tests passed|tests failed|Total Test time|^ *[0-9]+/[0-9]+ Test +#" \
    "$LOG" || true
  echo "log: $LOG"
fi
exit "$status"
