#!/usr/bin/env bash
# Which Debian kernels have CONFIG_IOMMUFD? Downloads the kernel packages that carry the
# build config (linux-image-*-unsigned for 6.x, linux-base-* for 7.x) of the newest trixie
# and trixie-backports kernel, every flavour on amd64 and arm64, and greps their config.
# Uses a private apt state under a temporary folder: the host's apt setup is not touched.
#
#   test/guest/iommufd-kernels.sh            prints one line per package
#
# Not part of npm test (it downloads about 400 MB); its result is in test/guest/README.md.
set -euo pipefail

# The host's Debian archive (deb822 URIs: or one-line deb), from enabled source files only.
host_mirror() {
  shopt -s nullglob
  grep -hoE '^(URIs:|deb)( \[[^]]*\])? +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -n 1 || true
}
MIRROR="${NVGRACE_DEBIAN_MIRROR:-$(host_mirror)}"
[[ -n "$MIRROR" ]] || { echo "iommufd-kernels: no Debian mirror in the apt sources; set NVGRACE_DEBIAN_MIRROR" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/etc/sources.list.d" "$WORK/etc/preferences.d" "$WORK/debs"
touch "$WORK/state/status"
cat > "$WORK/etc/sources.list" <<LIST
deb [arch=amd64,arm64] $MIRROR trixie main
deb [arch=amd64,arm64] $MIRROR trixie-backports main
LIST
cat > "$WORK/apt.conf" <<CONF
Dir::State "$WORK/state";
Dir::State::status "$WORK/state/status";
Dir::Cache "$WORK/cache";
Dir::Etc::SourceList "$WORK/etc/sources.list";
Dir::Etc::SourceParts "$WORK/etc/sources.list.d";
Dir::Etc::Preferences "$WORK/etc/preferences";
Dir::Etc::PreferencesParts "$WORK/etc/preferences.d";
APT::Architecture "amd64";
APT::Architectures { "amd64"; "arm64"; };
APT::Sandbox::User "root";
CONF
export APT_CONFIG="$WORK/apt.conf"
apt-get update -qq

# Newest version of each series: trixie's own (6.x) and backports' newest.
versions() { apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' | awk '{print $1}' | sed -E 's/^linux-image-(.*)-cloud-amd64$/\1/' | sort -V; }
TRIXIE="$(versions | grep '^6\.12\.' | tail -n 1)"
NEWEST="$(versions | tail -n 1)"
PKGS=()
for v in $TRIXIE $NEWEST; do
  for f in amd64 cloud-amd64 rt-amd64 arm64 arm64-16k cloud-arm64 rt-arm64; do
    arch=amd64; [[ $f == *arm64* ]] && arch=arm64
    if apt-cache show "linux-base-$v-$f:$arch" >/dev/null 2>&1; then PKGS+=("linux-base-$v-$f:$arch")
    else PKGS+=("linux-image-$v-$f-unsigned:$arch"); fi
  done
done
(cd "$WORK/debs" && apt-get download -q "${PKGS[@]}" >/dev/null)
found=0
for deb in "$WORK"/debs/*.deb; do
  line="$(dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards --no-anchored 'boot/config-*' 'modules/*/config' 2>/dev/null |
    grep -E '^(# )?CONFIG_(IOMMUFD|VFIO_DEVICE_CDEV)[ =]' | tr '\n' ' ')" || true
  printf '%s: %s\n' "$(basename "$deb" .deb)" "${line:-no config found}"
  [[ "$line" == *CONFIG_IOMMUFD=[ym]* ]] && found=1
done
echo "iommufd-kernels: CONFIG_IOMMUFD $([[ $found == 1 ]] && echo 'IS set in at least one' || echo 'is set in none') of ${#PKGS[@]} packages (trixie $TRIXIE, newest $NEWEST)"
