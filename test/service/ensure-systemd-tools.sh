#!/usr/bin/env bash
# Makes sure systemd-analyze and systemd-socket-activate exist (Debian's
# systemd package). Needs root when they are missing. systemd does not have to
# run as PID 1: both tools work offline.
set -euo pipefail
have() { command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null; }
have && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "systemd-analyze/systemd-socket-activate missing; run as root: apt-get install systemd" >&2
  exit 1
fi
# Test files run in parallel: one installs, the others wait and find the tools.
exec 9>"${TMPDIR:-/tmp}/nvgrace-ensure-systemd-tools.lock"
flock 9
have && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd >/dev/null
have
