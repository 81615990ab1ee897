#!/usr/bin/env bash
# Provision the systemd guest for test/guest/systemd-guest.test.ts.
#
#   test/guest/provision-systemd-root.sh [DIR]
#
# DIR defaults to ${NVGRACE_SYSTEMD_ROOT:-/var/cache/nvgrace-vfio-user/systemd-root}.
#
# Builds a Debian trixie root with systemd as PID 1, udev, Debian's Node.js and the cloud
# kernel (from trixie-backports, like the QEMU root's), and leaves in DIR:
#   rootfs.img   the root as a raw ext4 image, made with `mke2fs -d` from the folder (no
#                loop mount); the tests boot it with snapshot=on, so it is never written;
#   vmlinuz      the kernel whose modules are in the image;
#   initrd.cpio  a tiny busybox initramfs: loads virtio_blk, mounts /dev/vda, switch_root.
# The image runs /usr/local/sbin/nvgrace-guest-run once the system is up: it runs
# /opt/nvgrace-test/run.sh from a second disk (mounted on /opt), prints
# `NVGRACE-GUEST END status=N` on the serial console and powers off. Without that disk
# it powers off at once.
#
# QEMU itself comes from the QEMU root (provision-qemu.sh). Same pattern as that script
# (test/helpers/provision-lib.sh): idempotent (a stamp file holds the recipe), built in
# DIR.tmp.<pid> and renamed into place, one builder at a time (flock). Needs root
# (debootstrap, chroot).
set -euo pipefail
PROVISION_NAME=provision-systemd-root
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/provision-lib.sh"

DIR="${1:-${NVGRACE_SYSTEMD_ROOT:-/var/cache/nvgrace-vfio-user/systemd-root}}"
DIR="${DIR%/}"
SUITE=trixie
BACKPORTS="${SUITE}-backports"
PACKAGES=(systemd systemd-sysv udev kmod nodejs busybox-static)
KERNEL_PACKAGES=(linux-image-cloud-amd64)
# Changing this string (or the package lists) makes the next run rebuild.
RECIPE="nvgrace-systemd-root v3 suite=${SUITE} packages=${PACKAGES[*]} backports=${KERNEL_PACKAGES[*]}"
STAMP_NAME=.nvgrace-systemd-root.stamp

is_complete() { stamp_matches "$1" "$STAMP_NAME" "$RECIPE"; }

if is_complete "$DIR"; then
  log "root: $DIR (complete)"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building $DIR needs root (debootstrap, chroot)"

START=$SECONDS
PARENT="$(dirname "$DIR")"
BASE="$(basename "$DIR")"
lock_builds "$PARENT/.$BASE.lock"
if is_complete "$DIR"; then
  log "root: $DIR (complete)"
  exit 0
fi

# ---------------------------------------------------------------------------- host tools
need_pkg debootstrap command -v debootstrap
need_pkg cpio command -v cpio
# mke2fs -d (populate from a folder) needs e2fsprogs >= 1.43
need_pkg e2fsprogs command -v mke2fs

# ------------------------------------------------------------------------------- mirror
MIRROR="$(debian_mirror)"

# ----------------------------------------------------------------------- build and mount
TMP="$DIR.tmp.$$"
ROOT="$TMP/rootfs"
cleanup_on_exit "$TMP"
remove_stale "$DIR"

mkdir -p "$TMP"
debootstrap_root "$PARENT/.$BASE.debootstrap.log" "$ROOT" "$SUITE" "$MIRROR"
write_apt_sources "$ROOT" "$MIRROR" "$SUITE" "$BACKPORTS"
configure_root "$ROOT"
mount_chroot_fs "$ROOT"

# INITRD=No: Debian's kernel hook would build an initramfs-tools image we never boot.
in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C INITRD=No chroot "$ROOT" "$@"; }

install_packages() {
  in_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" &&
    in_root apt-get install -y -qq --no-install-recommends -t "$BACKPORTS" "${KERNEL_PACKAGES[@]}"
}

log "apt-get install ${PACKAGES[*]}; -t $BACKPORTS ${KERNEL_PACKAGES[*]}"
in_root apt-get update -qq
run_logged "$PARENT/.$BASE.apt.log" "apt-get install" install_packages
in_root apt-get clean

unmount_all
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/resolv.conf"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/boot/initrd.img-*

# ------------------------------------------------------------------------ configure root
KVER="$(basename "$(ls -d "$ROOT"/lib/modules/* | sort -V | tail -n 1)")"
[[ -f "$ROOT/boot/vmlinuz-$KVER" ]] || die "no kernel $KVER in $ROOT/boot"
BUSYBOX="$ROOT/usr/bin/busybox"
[[ -x "$BUSYBOX" ]] || BUSYBOX="$ROOT/bin/busybox"
[[ -x "$BUSYBOX" ]] || die "no busybox in $ROOT"
getent() { chroot "$ROOT" getent "$@"; }
getent group kvm >/dev/null || log "note: the root has no group kvm"

echo nvgrace-sd >"$ROOT/etc/hostname"
# A set machine-id: an empty one is a first boot, whose systemd-firstboot would prompt.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$ROOT/etc/machine-id"
echo >>"$ROOT/etc/machine-id"
cat >"$ROOT/etc/fstab" <<'EOF'
/dev/vda  /  ext4  rw  0 0
EOF

# Nothing on the console but the test's own output; nothing that runs on a timer; none of
# the first-boot-after-update work (hwdb, ldconfig, catalog), which costs seconds under TCG.
for unit in serial-getty@ttyS0.service getty@tty1.service getty.target systemd-firstboot.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
  systemd-tmpfiles-clean.timer systemd-hwdb-update.service ldconfig.service \
  systemd-journal-catalog-update.service systemd-update-done.service e2scrub_reap.service \
  systemd-pstore.service; do
  ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done

cat >"$ROOT/usr/local/sbin/nvgrace-guest-run" <<'EOF'
#!/bin/sh
# Mounts the test's disk (the project checkout and the guest script) read-only on /opt,
# runs the script, then powers the guest off. The disk is mounted here rather than from
# fstab: its device unit would wait for udev's coldplug.
echo "NVGRACE-GUEST START $(cut -d' ' -f1 /proc/uptime)"
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
if mount -o ro /dev/vdb /opt && [ -f /opt/nvgrace-test/run.sh ]; then
  /bin/sh /opt/nvgrace-test/run.sh
  echo "NVGRACE-GUEST END status=$?"
else
  echo "NVGRACE-GUEST END status=127 (no /dev/vdb with nvgrace-test/run.sh)"
fi
sync
systemctl poweroff -ff
EOF
chmod 0755 "$ROOT/usr/local/sbin/nvgrace-guest-run"
cat >"$ROOT/etc/systemd/system/nvgrace-guest-run.service" <<'EOF'
[Unit]
Description=nvgrace-vfio-user guest test script
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nvgrace-guest-run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/nvgrace-guest-run.service "$ROOT/etc/systemd/system/multi-user.target.wants/nvgrace-guest-run.service"

# ----------------------------------------------------------------------------- initramfs
IRD="$TMP/initrd"
mkdir -p "$IRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$IRD/bin/busybox"
ln -s busybox "$IRD/bin/sh"
MODS=()
# modules.dep lists a module's dependencies; load them first, deepest last-listed first.
mod_line="$(grep -E '(^|/)virtio_blk\.ko(\.xz|\.gz|\.zst)?:' "$ROOT/lib/modules/$KVER/modules.dep" || true)"
if [[ -n "$mod_line" ]]; then
  read -r -a parts <<<"${mod_line/:/ }"
  for ((i = ${#parts[@]} - 1; i >= 1; i--)); do MODS+=("${parts[i]}"); done
  MODS+=("${parts[0]}")
fi
: >"$IRD/modules"
for m in "${MODS[@]}"; do
  name="$(basename "$m")"
  name="${name%.xz}"
  case "$m" in
    *.xz) "$BUSYBOX" xzcat "$ROOT/lib/modules/$KVER/$m" >"$IRD/lib/modules/$name" ;;
    *.ko) cp "$ROOT/lib/modules/$KVER/$m" "$IRD/lib/modules/$name" ;;
    *) die "unsupported module compression: $m" ;;
  esac
  echo "$name" >>"$IRD/modules"
done
cat >"$IRD/init" <<'EOF'
#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /modules); do /bin/busybox insmod /lib/modules/$m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; /bin/busybox poweroff -f; }
/bin/busybox umount /proc /sys /dev
exec /bin/busybox switch_root /newroot /sbin/init
EOF
chmod 0755 "$IRD/init"
(cd "$IRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$TMP/initrd.cpio"

cp "$ROOT/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
chmod 0644 "$TMP/vmlinuz"
echo "$KVER" >"$TMP/kernel-version"

# -------------------------------------------------------------------------------- image
# The root's size plus room for the journal, /var and the test's files (writes go to
# QEMU's snapshot overlay, not to the image).
used_mib=$(du -sm --apparent-size "$ROOT" | cut -f1)
size_mib=$((used_mib + used_mib / 4 + 256))
log "mke2fs -d: ${used_mib} MiB into a ${size_mib} MiB ext4 image"
truncate -s "${size_mib}M" "$TMP/rootfs.img"
mke2fs -q -F -t ext4 -L nvgrace-root -d "$ROOT" "$TMP/rootfs.img" ||
  die "mke2fs -d failed"
remove_tree "$ROOT"

publish_root "$TMP" "$DIR" "$STAMP_NAME" "$RECIPE"
log "done in $((SECONDS - START)) s ($(du -sh "$DIR" | cut -f1) on disk, kernel $KVER)"
