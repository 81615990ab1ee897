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
# machine's apt sources use, or $NVGRACE_DEBIAN_MIRROR.
set -euo pipefail

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

log() { printf 'provision-arm64: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

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

is_complete() {
  [[ -f "$1/$STAMP_NAME" ]] && [[ "$(cat "$1/$STAMP_NAME")" == "$RECIPE" ]]
}

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
mkdir -p "$PARENT"

exec {LOCK_FD}>"$PARENT/.$BASE.lock"
flock "$LOCK_FD"
if is_complete "$DIR" && qemu_complete; then
  binfmt_ok || register_binfmt
  install_ca "$DIR"
  print_versions "$DIR"
  exit 0
fi

# ---------------------------------------------------------------------------- host tools
APT_UPDATED=0
need_pkg() { # need_pkg PACKAGE TEST-COMMAND...
  local pkg="$1"; shift
  if ! "$@" >/dev/null 2>&1; then
    if [[ $APT_UPDATED == 0 ]]; then
      log "apt-get update (host)"
      apt-get update -qq
      APT_UPDATED=1
    fi
    log "installing host package $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
}
need_pkg debootstrap command -v debootstrap
need_pkg debian-archive-keyring test -e /usr/share/keyrings/debian-archive-keyring.gpg
command -v flock >/dev/null || die "flock (util-linux) is missing"

# ------------------------------------------------------------------------------- mirror
# The first non-security Debian archive URI in this machine's enabled apt sources
# (deb822 *.sources, then one-line *.list).
host_mirror() {
  local f
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && suites !~ /-security/ && uris != "") {
          n = split(uris, u, /[ \t]+/)
          for (i = 1; i <= n; i++) if (u[i] ~ /^https?:\/\// && u[i] !~ /security/) { print u[i]; exit }
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
      awk '$1 == "deb" && $2 ~ /^https?:\/\// && $2 !~ /security/ && $3 !~ /-security/ { print $2 }'
  done
  shopt -u nullglob
}

MIRROR="${NVGRACE_DEBIAN_MIRROR:-}"
if [[ -z "$MIRROR" ]]; then
  MIRROR="$(host_mirror | grep -E '/debian/?$' | head -n 1 || true)"
fi
[[ -n "$MIRROR" ]] || die "no Debian mirror found in /etc/apt sources; set NVGRACE_DEBIAN_MIRROR"
MIRROR="${MIRROR%/}"
log "mirror: $MIRROR"

# ----------------------------------------------------------------------------- qemu-user
TMP="$DIR.tmp.$$"
QTMP="$QEMU_DIR.tmp.$$"
MOUNTS=()

umount_below() {
  local path m
  path="$(realpath -m "$1")"
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
  done < <(awk -v p="$path" '
      { gsub(/\\040/, " ", $5) }
      $5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

remove_tree() {
  [[ -e "$1" ]] || return 0
  umount_below "$1"
  rm -rf --one-file-system "$1"
}

cleanup() {
  local rc=$? i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  MOUNTS=()
  [[ -e "$QTMP" ]] && rm -rf "$QTMP"
  if [[ -e "$TMP" ]]; then
    [[ $rc == 0 ]] || log "build failed (exit $rc); removing $TMP"
    remove_tree "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

shopt -s nullglob
for stale in "$DIR".tmp.* "$QEMU_DIR".tmp.*; do
  log "removing stale $stale"
  remove_tree "$stale"
done
shopt -u nullglob

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
log "debootstrap --arch=arm64 --variant=minbase $SUITE into $TMP"
debootstrap --arch=arm64 --variant=minbase "$SUITE" "$TMP" "$MIRROR" >"$PARENT/.$BASE.debootstrap.log" 2>&1 ||
  { tail -n 30 "$PARENT/.$BASE.debootstrap.log" >&2; die "debootstrap failed (log: $PARENT/.$BASE.debootstrap.log)"; }
umount_below "$TMP"

cat >"$TMP/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
EOF
cat >"$TMP/etc/apt/apt.conf.d/90nvgrace" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
mkdir -p "$TMP/etc/dpkg/dpkg.cfg.d"
cat >"$TMP/etc/dpkg/dpkg.cfg.d/90nvgrace-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
EOF
printf '#!/bin/sh\nexit 101\n' >"$TMP/usr/sbin/policy-rc.d"
chmod 0755 "$TMP/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$TMP/etc/resolv.conf"

mount_in() { # mount_in TARGET MOUNT-ARGS...
  local target="$1"; shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTS+=("$target")
}
mount_in "$TMP/proc" -t proc proc
mount_in "$TMP/sys" -t sysfs sysfs
mount_in "$TMP/dev" --bind /dev
mount_in "$TMP/dev/pts" --bind /dev/pts
mount_in "$TMP/dev/shm" --bind /dev/shm

in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$TMP" "$@"; }

log "apt-get install ${ROOT_PACKAGES[*]} (under emulation)"
in_root apt-get update -qq
(in_root apt-get install -y -qq --no-install-recommends "${ROOT_PACKAGES[@]}") \
  >"$PARENT/.$BASE.apt.log" 2>&1 ||
  { tail -n 30 "$PARENT/.$BASE.apt.log" >&2; die "apt-get install failed (log: $PARENT/.$BASE.apt.log)"; }
in_root apt-get clean

for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}"; done
MOUNTS=()
rm -f "$TMP/usr/sbin/policy-rc.d"

install_ca "$TMP"
mkdir -p "$TMP/work"
in_root /usr/bin/node -e 'if (process.arch !== "arm64") process.exit(1)' ||
  die "node in $TMP is not arm64"

printf '%s' "$RECIPE" >"$TMP/$STAMP_NAME"
if [[ -e "$DIR" ]]; then
  OLD="$DIR.tmp.old.$$"
  mv "$DIR" "$OLD"
  mv "$TMP" "$DIR"
  remove_tree "$OLD"
else
  mv "$TMP" "$DIR"
fi
log "done in $((SECONDS - START)) s ($(du -sh "$DIR" | cut -f1))"
print_versions "$DIR"
