#!/usr/bin/env bash
# Provision the arm64 (aarch64) root the suite runs in under user-mode emulation.
#
#   test/arm64/provision-arm64-root.sh [DIR]
#
# DIR defaults to ${NVGRACE_ARM64_ROOT:-/var/cache/nvgrace-vfio-user/arm64-root}.
#
# 1. Fetches Debian trixie's static qemu-user (10.x) into DIR.qemu-user/ (apt-get download
#    with a private apt state; the host's apt sources are not touched) and registers it as
#    the binfmt_misc interpreter for aarch64 ELF files, flag F (the kernel opens it once, so
#    it also runs inside a chroot). Bookworm's qemu-user 7.2 lacks huge-page memfd mmap,
#    ENOTTY for unknown ioctls and cheap MAP_NORESERVE; trixie's has them.
# 2. debootstraps a minimal trixie arm64 root and installs nodejs, npm, build-essential
#    and python3 in it (no recommends), with npm trusting the host npm's CA bundle.
#
# Idempotent: a complete root carries a stamp file with the recipe; a second run only
# (re)registers binfmt if needed, refreshes the CA bundle and prints the versions. The root
# is built in DIR.tmp.<pid> and renamed into place when complete; a lock makes parallel
# callers wait. Needs root (binfmt_misc, debootstrap, chroot).
#
# Prints, on the last line of stdout, the root's path. The Debian mirror is the one this
# machine's apt sources use, or $NVGRACE_DEBIAN_MIRROR. What it shares with the other
# provisioning scripts is in test/helpers/provision-lib.sh.
set -euo pipefail
PROVISION_NAME=provision-arm64
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/provision-lib.sh"

DIR="${1:-${NVGRACE_ARM64_ROOT:-/var/cache/nvgrace-vfio-user/arm64-root}}"
DIR="${DIR%/}"
SUITE=trixie
QEMU_USER_SUITE=trixie
QEMU_USER_PACKAGE=qemu-user # static binaries in trixie (qemu-user-static is transitional)
# systemd: the offline tools test/service uses (systemd-analyze, systemd-socket-activate).
ROOT_PACKAGES=(nodejs npm build-essential python3 ca-certificates systemd)
# Changing this string (or the package list) makes the next run rebuild the root.
RECIPE="nvgrace-arm64-root v1 suite=${SUITE} arch=arm64 qemu-user=${QEMU_USER_SUITE}/${QEMU_USER_PACKAGE} packages=${ROOT_PACKAGES[*]}"
STAMP_NAME=.nvgrace-arm64-root.stamp
QEMU_DIR="$DIR.qemu-user"
QEMU_BIN="$QEMU_DIR/qemu-aarch64"
# QEMU from 9.0 on ignores QEMU_PAGESIZE (the emulated page is the host's); bookworm's 7.2
# still reports another page size to the program, so the 16 KiB runs use it (see
# test/arm64/arm64-root.ts, withPageSizeInterpreter).
QEMU_PAGESIZE_SUITE=bookworm
QEMU_PAGESIZE_PACKAGE=qemu-user-static
QEMU_PAGESIZE_BIN="$QEMU_DIR/qemu-aarch64-pagesize"
QEMU_STAMP="$QEMU_DIR/.stamp"
QEMU_RECIPE="$QEMU_USER_SUITE/$QEMU_USER_PACKAGE $QEMU_PAGESIZE_SUITE/$QEMU_PAGESIZE_PACKAGE amd64"
BINFMT=/proc/sys/fs/binfmt_misc
BINFMT_NAME=qemu-aarch64
# The ELF header of an aarch64 executable (as in QEMU's qemu-binfmt-conf.sh).
AARCH64_MAGIC='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
AARCH64_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
# Where the root keeps the host's CA bundle (npm's cafile, NODE_EXTRA_CA_CERTS).
ROOT_CA=/etc/nvgrace/host-ca.crt

# ------------------------------------------------------------------------- binfmt, CA
# Either of our interpreters (a 16 KiB run switches to the other one for its duration).
binfmt_ok() {
  [[ -f "$BINFMT/$BINFMT_NAME" ]] &&
    grep -qx 'enabled' "$BINFMT/$BINFMT_NAME" &&
    grep -qx -e "interpreter $QEMU_BIN" -e "interpreter $QEMU_PAGESIZE_BIN" "$BINFMT/$BINFMT_NAME" &&
    grep -q '^flags: .*F' "$BINFMT/$BINFMT_NAME"
}

register_binfmt() {
  [[ -x "$QEMU_BIN" ]] || die "no qemu-user at $QEMU_BIN"
  if [[ ! -e "$BINFMT/register" ]]; then
    modprobe binfmt_misc 2>/dev/null || true
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc on $BINFMT"
  fi
  # Another aarch64 handler (e.g. bookworm's qemu-user-static) would shadow ours.
  local f
  for f in "$BINFMT"/*; do
    [[ -f "$f" && "$f" != */register && "$f" != */status ]] || continue
    if grep -q '^magic 7f454c460201010000000000000000000200b700' "$f"; then
      log "removing binfmt handler $(basename "$f") ($(sed -n 's/^interpreter //p' "$f"))"
      echo -1 >"$f"
    fi
  done
  printf ':%s:M::%s:%s:%s:FP' "$BINFMT_NAME" "$AARCH64_MAGIC" "$AARCH64_MASK" "$QEMU_BIN" >"$BINFMT/register"
  binfmt_ok || die "binfmt registration of $QEMU_BIN did not take"
  log "binfmt: aarch64 -> $QEMU_BIN"
}

# The CA bundle the host's npm trusts (its cafile setting, else the system bundle).
host_ca() {
  local ca=""
  if command -v npm >/dev/null 2>&1; then
    ca="$(npm config get cafile 2>/dev/null || true)"
    [[ "$ca" == "null" || "$ca" == "undefined" ]] && ca=""
  fi
  [[ -n "$ca" && -f "$ca" ]] || ca="${NODE_EXTRA_CA_CERTS:-}"
  [[ -n "$ca" && -f "$ca" ]] || ca=/etc/ssl/certs/ca-certificates.crt
  [[ -f "$ca" ]] && printf '%s\n' "$ca"
}

install_ca() { # install_ca ROOT
  local root="$1" ca
  ca="$(host_ca)" || { log "warning: no host CA bundle found; npm in the root uses its own"; return 0; }
  mkdir -p "$root$(dirname "$ROOT_CA")"
  cmp -s "$ca" "$root$ROOT_CA" || cp "$ca" "$root$ROOT_CA"
  # Debian's npm reads /etc/npmrc as its global config.
  printf 'cafile=%s\nfund=false\naudit=false\nupdate-notifier=false\n' "$ROOT_CA" >"$root/etc/npmrc"
}

print_versions() {
  local root="$1" node
  node="$(chroot "$root" /usr/bin/node --version 2>/dev/null)" || die "node in $root does not run (binfmt?)"
  log "root: $root (node $node, $("$QEMU_BIN" --version | head -n 1))"
  printf '%s\n' "$root"
}

is_complete() { stamp_matches "$1" "$STAMP_NAME" "$RECIPE"; }

qemu_complete() {
  [[ -x "$QEMU_BIN" && -x "$QEMU_PAGESIZE_BIN" && "$(cat "$QEMU_STAMP" 2>/dev/null)" == "$QEMU_RECIPE" ]]
}

# Fast path.
if is_complete "$DIR" && qemu_complete && binfmt_ok; then
  [[ -w "$DIR/etc" ]] && install_ca "$DIR"
  print_versions "$DIR"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building $DIR (or registering binfmt) needs root; run as root"

START=$SECONDS
PARENT="$(dirname "$DIR")"
BASE="$(basename "$DIR")"
lock_builds "$PARENT/.$BASE.lock"
if is_complete "$DIR" && qemu_complete; then
  binfmt_ok || register_binfmt
  install_ca "$DIR"
  print_versions "$DIR"
  exit 0
fi

# ---------------------------------------------------------------------------- host tools
need_pkg debootstrap command -v debootstrap
need_pkg debian-archive-keyring test -e /usr/share/keyrings/debian-archive-keyring.gpg

# ------------------------------------------------------------------------------- mirror
MIRROR="$(debian_mirror)"

# ----------------------------------------------------------------------------- qemu-user
TMP="$DIR.tmp.$$"
QTMP="$QEMU_DIR.tmp.$$"
cleanup_on_exit "$TMP" "$QTMP"
remove_stale "$DIR" "$QEMU_DIR"

# fetch_qemu SUITE PACKAGE OUT: qemu-aarch64 of a Debian amd64 package, with a private apt state.
fetch_qemu() {
  local suite="$1" pkg="$2" out="$3" t="$QTMP/$1" src
  log "fetching $pkg from $suite"
  mkdir -p "$t"/{etc,lists/partial,cache/archives/partial,deb,x}
  : >"$t/status"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$MIRROR" "$suite" >"$t/etc/sources.list"
  local apto=(-o "Dir::Etc::sourcelist=$t/etc/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$t/lists" -o "Dir::Cache=$t/cache"
    -o "Dir::State::status=$t/status" -o APT::Architecture=amd64
    -o APT::Architectures::=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root)
  apt-get "${apto[@]}" update -qq >/dev/null || die "apt-get update for $suite failed"
  (cd "$t/deb" && apt-get "${apto[@]}" download -qq "$pkg" >/dev/null) || die "apt-get download $pkg ($suite) failed"
  dpkg-deb -x "$t"/deb/*.deb "$t/x"
  src="$t/x/usr/bin/qemu-aarch64"
  [[ -x "$src" ]] || src="$t/x/usr/bin/qemu-aarch64-static"
  [[ -x "$src" ]] || die "no qemu-aarch64 in $pkg ($suite)"
  LC_ALL=C "$src" --version >/dev/null 2>&1 || die "$src does not run"
  cp "$src" "$QTMP/out.new"
  chmod 0755 "$QTMP/out.new"
  mv "$QTMP/out.new" "$out"
  rm -rf "$t"
  log "qemu-user: $("$out" --version | head -n 1)"
}

if ! qemu_complete; then
  mkdir -p "$QTMP" "$QEMU_DIR"
  rm -f "$QEMU_STAMP"
  # The registered interpreter is replaced by rename: binfmt (flag F) keeps the old file open.
  fetch_qemu "$QEMU_USER_SUITE" "$QEMU_USER_PACKAGE" "$QEMU_BIN.fetched"
  fetch_qemu "$QEMU_PAGESIZE_SUITE" "$QEMU_PAGESIZE_PACKAGE" "$QEMU_PAGESIZE_BIN"
  mv "$QEMU_BIN.fetched" "$QEMU_BIN"
  printf '%s' "$QEMU_RECIPE" >"$QEMU_STAMP"
  rm -rf "$QTMP"
  # (binfmt_ok holds for the old file of the same name: register the new one.)
  [[ -e "$BINFMT/$BINFMT_NAME" ]] && echo -1 >"$BINFMT/$BINFMT_NAME"
fi
binfmt_ok || register_binfmt
if is_complete "$DIR"; then
  install_ca "$DIR"
  print_versions "$DIR"
  exit 0
fi

# ------------------------------------------------------------------------------- the root
debootstrap_root "$PARENT/.$BASE.debootstrap.log" "$TMP" "$SUITE" "$MIRROR" --arch=arm64
write_apt_sources "$TMP" "$MIRROR" "$SUITE"
configure_root "$TMP"
mount_chroot_fs "$TMP"
mount_in "$TMP/dev/shm" --bind /dev/shm

in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$TMP" "$@"; }

log "apt-get install ${ROOT_PACKAGES[*]} (under emulation)"
in_root apt-get update -qq
run_logged "$PARENT/.$BASE.apt.log" "apt-get install" \
  in_root apt-get install -y -qq --no-install-recommends "${ROOT_PACKAGES[@]}"
in_root apt-get clean

unmount_all
rm -f "$TMP/usr/sbin/policy-rc.d"

install_ca "$TMP"
mkdir -p "$TMP/work"
in_root /usr/bin/node -e 'if (process.arch !== "arm64") process.exit(1)' ||
  die "node in $TMP is not arm64"

publish_root "$TMP" "$DIR" "$STAMP_NAME" "$RECIPE"
log "done in $((SECONDS - START)) s ($(du -sh "$DIR" | cut -f1))"
print_versions "$DIR"
