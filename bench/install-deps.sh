#!/usr/bin/env bash
# Debian packages the bench needs: a C compiler for the harness and the floors.
set -euo pipefail
if command -v gcc >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: gcc is missing; install it as root: apt-get install gcc libc6-dev" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends gcc libc6-dev
