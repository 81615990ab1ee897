# shellcheck shell=bash
# What the provisioning scripts share: test/guest/provision-qemu.sh,
# test/guest/provision-systemd-root.sh and test/arm64/provision-arm64-root.sh each build a
# Debian root the same way (host tools, the host's mirror, debootstrap, a chroot with
# /proc, /sys and /dev bound in, built in DIR.tmp.<pid> under a lock, stamped with the
# recipe and renamed into place, the build dir and its mounts removed however the run
# ends). What each builds stays in the script.
#
# Sourced, not run, after `set -euo pipefail`, with PROVISION_NAME set (the prefix of the
# log lines):
#   PROVISION_NAME=provision-qemu
#   source "$(dirname "${BASH_SOURCE[0]}")/../helpers/provision-lib.sh"
# Sourcing it only defines functions and their state: MOUNTS (mount_in's list) and the
# PROVISION_* globals. Each function takes the paths it works on as parameters.

log() { printf '%s: %s\n' "$PROVISION_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# stamp_matches DIR STAMP-NAME RECIPE: DIR is a complete root of RECIPE.
stamp_matches() {
  [[ -f "$1/$2" ]] && [[ "$(cat "$1/$2")" == "$3" ]]
}

# lock_builds LOCK-FILE: one builder at a time (parallel test workers may all ask for the
# root); the lock is held until the script exits.
lock_builds() {
  mkdir -p "$(dirname "$1")"
  command -v flock >/dev/null || die "flock (util-linux) is missing"
  exec {PROVISION_LOCK_FD}>"$1"
  flock "$PROVISION_LOCK_FD"
}

# ---------------------------------------------------------------------------- host tools
PROVISION_APT_UPDATED=0
need_pkg() { # need_pkg PACKAGE TEST-COMMAND...
  local pkg="$1"; shift
  if ! "$@" >/dev/null 2>&1; then
    if [[ $PROVISION_APT_UPDATED == 0 ]]; then
      log "apt-get update (host)"
      apt-get update -qq
      PROVISION_APT_UPDATED=1
    fi
    log "installing host package $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
}

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
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
      awk '$1 == "deb" && $2 ~ /^https?:\/\// && $2 !~ /security/ && $3 !~ /-security/ { print $2 }'
  done
  shopt -u nullglob
}

# debian_mirror: prints the mirror to build from ($NVGRACE_DEBIAN_MIRROR, else the host's
# Debian one), without a trailing slash, and logs it. MIRROR="$(debian_mirror)".
debian_mirror() {
  local mirror="${NVGRACE_DEBIAN_MIRROR:-}"
  if [[ -z "$mirror" ]]; then
    mirror="$(host_mirror | grep -E '/debian/?$' | head -n 1 || true)"
  fi
  [[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt sources; set NVGRACE_DEBIAN_MIRROR"
  mirror="${mirror%/}"
  log "mirror: $mirror"
  printf '%s\n' "$mirror"
}

# ----------------------------------------------------------------------- build and mount
# Unmount everything below a path, deepest first (also used on stale build dirs).
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
  # --one-file-system: never descend into a mount that survived (e.g. a bound /dev).
  rm -rf --one-file-system "$1"
}

# remove_stale PATH...: the leftovers of interrupted runs, PATH.tmp.* (mounts included).
remove_stale() {
  local prefix stale
  shopt -s nullglob
  for prefix in "$@"; do
    for stale in "$prefix".tmp.*; do
      log "removing stale $stale"
      remove_tree "$stale"
    done
  done
  shopt -u nullglob
}

# The build's mounts, innermost last: unmounted by unmount_all, and on exit whatever happens.
MOUNTS=()
mount_in() { # mount_in TARGET MOUNT-ARGS...
  local target="$1"; shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTS+=("$target")
}

# mount_chroot_fs ROOT: /proc, /sys, /dev and /dev/pts for chroot ROOT.
mount_chroot_fs() {
  mount_in "$1/proc" -t proc proc
  mount_in "$1/sys" -t sysfs sysfs
  mount_in "$1/dev" --bind /dev
  mount_in "$1/dev/pts" --bind /dev/pts
}

# Unmounts the build's mounts, innermost first; a failure is an error.
unmount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}"; done
  MOUNTS=()
}

# cleanup_on_exit [--may-keep-failed] TMP [SCRATCH...]: on exit (and on SIGINT, SIGTERM)
# unmounts the build's mounts, removes each SCRATCH and then TMP, the build dir.
# --may-keep-failed: NVGRACE_PROVISION_KEEP_FAILED=1 keeps a failed build's TMP.
cleanup_on_exit() {
  PROVISION_KEEP_FAILED_OK=0
  if [[ "$1" == --may-keep-failed ]]; then
    PROVISION_KEEP_FAILED_OK=1
    shift
  fi
  PROVISION_TMP="$1"; shift
  PROVISION_SCRATCH=("$@")
  trap provision_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

provision_cleanup() {
  local rc=$? i s
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  MOUNTS=()
  for s in "${PROVISION_SCRATCH[@]}"; do
    [[ -e "$s" ]] && rm -rf "$s"
  done
  if [[ -e "$PROVISION_TMP" && $rc != 0 && $PROVISION_KEEP_FAILED_OK == 1 &&
    "${NVGRACE_PROVISION_KEEP_FAILED:-}" == 1 ]]; then
    log "build failed (exit $rc); kept $PROVISION_TMP to look at (the next run removes it)"
  elif [[ -e "$PROVISION_TMP" ]]; then
    [[ $rc == 0 ]] || log "build failed (exit $rc); removing $PROVISION_TMP"
    remove_tree "$PROVISION_TMP"
  fi
  exit "$rc"
}

# run_logged LOG-FILE WHAT COMMAND...: runs COMMAND (a function too) with its output in
# LOG-FILE; on failure shows the log's tail and dies saying WHAT failed.
run_logged() {
  local logfile="$1" what="$2"; shift 2
  # (A subshell: a redirected function call would also redirect this shell's traps.)
  ("$@") >"$logfile" 2>&1 ||
    { tail -n 30 "$logfile" >&2; die "$what failed (log: $logfile)"; }
}

# debootstrap_root LOG-FILE TARGET SUITE MIRROR [OPTION...]: debootstrap --variant=minbase
# SUITE into TARGET (the OPTIONs first, e.g. --arch=arm64), its output in LOG-FILE.
debootstrap_root() {
  local logfile="$1" target="$2" suite="$3" mirror="$4"; shift 4
  local opts=("$@" --variant=minbase)
  log "debootstrap ${opts[*]} $suite into $target"
  run_logged "$logfile" debootstrap debootstrap "${opts[@]}" "$suite" "$target" "$mirror"
  umount_below "$target" # debootstrap may leave its own mounts behind in containers
}

# write_apt_sources ROOT MIRROR SUITE [SUITE...]: the first SUITE's main in
# etc/apt/sources.list, each other's in etc/apt/sources.list.d/SUITE.list.
write_apt_sources() {
  local root="$1" mirror="$2" suite="$3"; shift 3
  printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"
  for suite in "$@"; do
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list.d/$suite.list"
  done
}

# configure_root ROOT [PATH-EXCLUDE...]: apt without recommends, suggests or translations;
# dpkg without documentation (nor the PATH-EXCLUDE patterns); no daemon may start inside
# the build root (policy-rc.d, for the script to remove when done); the host's resolv.conf.
configure_root() {
  local root="$1" p; shift
  cat >"$root/etc/apt/apt.conf.d/90nvgrace" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
  # Documentation is dead weight here.
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
  {
    cat <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
EOF
    for p in "$@"; do printf 'path-exclude=%s\n' "$p"; done
  } >"$root/etc/dpkg/dpkg.cfg.d/90nvgrace-nodoc"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
}

# publish_root TMP DIR STAMP-NAME RECIPE: stamps the finished build TMP with RECIPE and
# renames it to DIR (a DIR already there is moved aside first, then removed).
publish_root() {
  local tmp="$1" dir="$2" old
  printf '%s' "$4" >"$tmp/$3"
  if [[ -e "$dir" ]]; then
    old="$dir.tmp.old.$$"
    mv "$dir" "$old"
    mv "$tmp" "$dir"
    remove_tree "$old"
  else
    mv "$tmp" "$dir"
  fi
}
