#!/usr/bin/env bash
# Provision the QEMU test root for the real-QEMU guest tests.
#
#   test/guest/provision-qemu.sh [DIR]
#
# DIR defaults to ${NVGRACE_QEMU_ROOT:-/var/cache/nvgrace-vfio-user/qemu-root}.
#
# Builds a minimal Debian trixie root holding QEMU (>= 10.1, with vfio-user-pci) from
# trixie-backports, SeaBIOS, a static busybox and the cloud kernel. QEMU is run from the
# host through the root's own dynamic loader (see test/guest/qemu-env.ts), no chroot.
#
# For arm64 guests the root also holds qemu-system-aarch64 (qemu-system-arm) with its UEFI
# firmware (qemu-efi-aarch64), and under arm64/ files taken from Debian's arm64 packages
# without installing them (dpkg --add-architecture arm64, apt-get download, dpkg-deb):
# the kernel images with 4 KiB and 16 KiB pages (arm64/4k, arm64/16k) and a static busybox
# (arm64/busybox). The host gets gcc-aarch64-linux-gnu to build static aarch64 programs.
#
# Idempotent: a complete root carries a stamp file; a second run only prints the QEMU
# version. The root is built in DIR.tmp.<pid> and renamed into place when complete, so an
# interrupted run never leaves a DIR that looks finished. Needs root (debootstrap, chroot).
#
# The Debian mirror is the one this machine's apt sources use (read at run time), or
# $NVGRACE_DEBIAN_MIRROR when set.
set -euo pipefail
PROVISION_NAME=provision-qemu
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/provision-lib.sh"

DIR="${1:-${NVGRACE_QEMU_ROOT:-/var/cache/nvgrace-vfio-user/qemu-root}}"
DIR="${DIR%/}"
SUITE=trixie
BACKPORTS="${SUITE}-backports"
GUEST_PACKAGES=(qemu-system-x86 qemu-system-arm qemu-efi-aarch64 seabios qemu-system-data busybox-static linux-image-cloud-amd64)
# arm64 packages unpacked (not installed) under arm64/: the kernel meta packages are
# followed to the package holding the image; the folder is named by the page size.
ARM64_KERNELS=(4k:linux-image-arm64 16k:linux-image-arm64-16k)
ARM64_BUSYBOX=busybox-static
# Changing this string (or the package lists) makes the next run rebuild the root.
RECIPE="nvgrace-qemu-root v2 suite=${SUITE} backports=${BACKPORTS} packages=${GUEST_PACKAGES[*]} arm64=${ARM64_KERNELS[*]} ${ARM64_BUSYBOX}"
STAMP_NAME=.nvgrace-qemu-root.stamp

# Run the root's QEMU from the host through the root's dynamic loader.
root_qemu_arch() {
  local root="$1" arch="$2"; shift 2
  "$root/usr/lib64/ld-linux-x86-64.so.2" \
    --library-path "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" \
    "$root/usr/bin/qemu-system-$arch" "$@"
}
root_qemu() { local root="$1"; shift; root_qemu_arch "$root" x86_64 "$@"; }

print_version() {
  local root="$1" version
  version="$(root_qemu "$root" --version | head -n 1)" || die "QEMU in $root does not run"
  log "root: $root"
  log "arm64: $(root_qemu_arch "$root" aarch64 --version | head -n 1); kernels: $(cd "$root/arm64" && echo */vmlinuz-*)"
  printf '%s\n' "$version"
}

is_complete() { stamp_matches "$1" "$STAMP_NAME" "$RECIPE"; }

# Fast path: nothing to do (no lock, no root needed).
if is_complete "$DIR"; then
  print_version "$DIR"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building $DIR needs root (debootstrap, chroot); run as root or set QEMU=/path/to/qemu-system-x86_64 (>= 10.1)"

START=$SECONDS
PARENT="$(dirname "$DIR")"
BASE="$(basename "$DIR")"
# One builder at a time (parallel test workers may all ask for the root).
lock_builds "$PARENT/.$BASE.lock"
if is_complete "$DIR"; then
  print_version "$DIR"
  exit 0
fi

# ---------------------------------------------------------------------------- host tools
need_pkg debootstrap command -v debootstrap
need_pkg cpio command -v cpio
need_pkg gcc command -v gcc
need_pkg libc6-dev test -e /usr/include/stdio.h -a -e /usr/lib/x86_64-linux-gnu/libc.a
# Static aarch64 guest programs (bar-check) are cross-compiled on the host.
need_pkg gcc-aarch64-linux-gnu command -v aarch64-linux-gnu-gcc
need_pkg libc6-dev-arm64-cross test -e /usr/aarch64-linux-gnu/lib/libc.a

# ------------------------------------------------------------------------------- mirror
MIRROR="$(debian_mirror)"

# ----------------------------------------------------------------------- build and mount
TMP="$DIR.tmp.$$"
cleanup_on_exit --may-keep-failed "$TMP"

# Leftovers from interrupted runs.
remove_stale "$DIR"

debootstrap_root "$PARENT/.$BASE.debootstrap.log" "$TMP" "$SUITE" "$MIRROR"
write_apt_sources "$TMP" "$MIRROR" "$SUITE" "$BACKPORTS"
# (qemu-efi-aarch64's 64 MiB pflash images and QEMU's 32-bit machines are not used: the
# arm64 guests boot QEMU_EFI.fd with -bios, or no firmware at all.)
configure_root "$TMP" '/usr/share/AAVMF/*' /usr/bin/qemu-system-arm /usr/bin/qemu-system-i386
mount_chroot_fs "$TMP"

in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$TMP" "$@"; }

log "apt-get install -t $BACKPORTS ${GUEST_PACKAGES[*]}"
APT_START=$SECONDS
# arm64 first, so that one update fetches both architectures' lists (arm64's are only
# used to download the arm64 files below).
in_root dpkg --add-architecture arm64
in_root apt-get update -qq
run_logged "$PARENT/.$BASE.apt.log" "apt-get install" \
  in_root apt-get install -y -qq --no-install-recommends -t "$BACKPORTS" "${GUEST_PACKAGES[@]}"
log "installed in $((SECONDS - APT_START)) s"

# ------------------------------------------------------------------ arm64 guest files
# Foreign-architecture packages are only downloaded and unpacked: nothing arm64 runs here.
log "arm64: kernels (${ARM64_KERNELS[*]}) and $ARM64_BUSYBOX"
ARM64_START=$SECONDS
ARM64_DL="$TMP/var/cache/nvgrace-arm64"
mkdir -p "$ARM64_DL" "$TMP/arm64"
# Downloads PACKAGE:arm64 (the newest, backports included) into ARM64_DL; prints the .deb.
arm64_download() {
  local pkg="$1" before after
  before="$(ls "$ARM64_DL")"
  (in_root sh -c "cd /var/cache/nvgrace-arm64 && apt-get download -qq -t $BACKPORTS '$pkg:arm64'") \
    >>"$PARENT/.$BASE.apt.log" 2>&1 || die "apt-get download $pkg:arm64 failed (log: $PARENT/.$BASE.apt.log)"
  after="$(ls "$ARM64_DL")"
  comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed -n "1s|^|$ARM64_DL/|p"
}
# The package that holds the image: the meta package, then the linux-image-<ver> or
# linux-binary-<ver> it depends on (from 7.x the image is usr/lib/modules/<ver>/vmlinuz
# in linux-binary-<ver>; before, boot/vmlinuz-<ver> in linux-image-<ver>).
arm64_kernel() {
  local flavour="$1" pkg="$2" deb depth listing member version dest
  dest="$TMP/arm64/$flavour"
  for depth in 1 2 3 4; do
    deb="$(arm64_download "$pkg")"
    [[ -n "$deb" ]] || die "apt-get download $pkg:arm64 gave no file"
    # (Whole outputs, no early exit in a pipe: pipefail would take a SIGPIPE for a failure.)
    listing="$(dpkg-deb -c "$deb")"
    member="$(awk '$6 ~ /^\.\/(boot\/vmlinuz-[^\/]+|usr\/lib\/modules\/[^\/]+\/vmlinuz)$/ { print $6 }' <<<"$listing" | sed -n 1p)"
    if [[ -n "$member" ]]; then
      version="$(basename "$member")"
      [[ "$version" == vmlinuz ]] && version="$(basename "$(dirname "$member")")" || version="${version#vmlinuz-}"
      mkdir -p "$dest"
      dpkg-deb --fsys-tarfile "$deb" | tar -x -O "$member" >"$dest/vmlinuz-$version"
      chmod 0644 "$dest/vmlinuz-$version"
      check_arm64_page_size "$dest/vmlinuz-$version" "$flavour"
      log "arm64 $flavour kernel: vmlinuz-$version (from $(basename "$deb"))"
      return 0
    fi
    pkg="$(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed -e 's/^ *//' -e 's/[ (].*//' |
      awk '/^linux-(image|binary)-[0-9]/ { print }' | sed -n 1p)"
    [[ -n "$pkg" ]] || die "arm64 kernel: $(basename "$deb") holds no image and depends on none"
  done
  die "arm64 kernel: no image found following $2"
}
# The arm64 Image header says the page size: flags (offset 24) bits 1-2, 1: 4K, 2: 16K,
# 3: 64K; "ARM\x64" at offset 56. A compressed image cannot be checked this way.
check_arm64_page_size() {
  local image="$1" want="$2" magic flags got
  magic="$(od -A n -t x1 -j 56 -N 4 "$image" | tr -d ' \n')"
  [[ "$magic" == 41524d64 ]] || { log "warning: $image is not a plain arm64 Image; page size not checked"; return 0; }
  flags="$(od -A n -t u1 -j 24 -N 1 "$image" | tr -d ' ')"
  case $(((flags >> 1) & 3)) in 1) got=4k ;; 2) got=16k ;; 3) got=64k ;; *) got=unspecified ;; esac
  [[ "$got" == "$want" ]] || die "$image has $got pages, not $want"
}
for k in "${ARM64_KERNELS[@]}"; do arm64_kernel "${k%%:*}" "${k#*:}"; done
deb="$(arm64_download "$ARM64_BUSYBOX")"
dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/bin/busybox >"$TMP/arm64/busybox" 2>/dev/null ||
  dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./bin/busybox >"$TMP/arm64/busybox"
chmod 0755 "$TMP/arm64/busybox"
[[ -s "$TMP/arm64/busybox" ]] || die "no busybox in $(basename "$deb")"
rm -rf "$ARM64_DL"
log "arm64 files in $((SECONDS - ARM64_START)) s"
in_root apt-get clean
# The package lists (over 100 MB with arm64's) serve no one once the root is built.
rm -rf "$TMP"/var/lib/apt/lists/*

unmount_all
rm -f "$TMP/usr/sbin/policy-rc.d"

# Debian installs the kernel image 0600; the tests may run as another user. The
# distribution's initrd is never used (the tests build their own).
chmod 0644 "$TMP"/boot/vmlinuz-* 2>/dev/null || true
rm -f "$TMP"/boot/initrd.img-*
ls "$TMP"/boot/vmlinuz-* >/dev/null 2>&1 || die "no kernel in $TMP/boot"
[[ -x "$TMP/usr/bin/busybox" || -x "$TMP/bin/busybox" ]] || die "no busybox in $TMP"
root_qemu "$TMP" -device help 2>/dev/null | grep '"vfio-user-pci"' >/dev/null ||
  die "the QEMU in $TMP has no vfio-user-pci device"
root_qemu_arch "$TMP" aarch64 -device help 2>/dev/null | grep '"vfio-user-pci"' >/dev/null ||
  die "the qemu-system-aarch64 in $TMP has no vfio-user-pci device"

publish_root "$TMP" "$DIR" "$STAMP_NAME" "$RECIPE"
log "done in $((SECONDS - START)) s ($(du -sh "$DIR" | cut -f1))"
print_version "$DIR"
