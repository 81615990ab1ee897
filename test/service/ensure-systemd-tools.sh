#!/usr/bin/env bash
# Makes sure systemd-analyze and systemd-socket-activate exist (Debian's
# systemd package). Needs root when they are missing. systemd does not have to
# run as PID 1: both tools work offline.
set -euo pipefail
if command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "systemd-analyze/systemd-socket-activate missing; run as root: apt-get install systemd" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd >/dev/null
command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null
