#!/usr/bin/env bash
# Unpack a newer Docker engine than Debian 12's (docker.io 20.10, BuildKit 0.8) beside the system's, for the
# build benchmark and the tests that build with it: a Debian suite's docker.io, containerd, its CLI and
# the buildx plugin. Nothing is installed system-wide: apt fetches the packages with a state directory
# of its own (signatures checked against the system's Debian keyring) and dpkg-deb unpacks them into
# the directory printed on stdout:
#   scripts/docker-engine.sh          -> .cache/docker-engine/trixie/root  Debian 13: dockerd 26.1, containerd 1.7
#   scripts/docker-engine.sh forky    -> .cache/docker-engine/forky/root   Debian testing: dockerd 28.5, containerd 2.1
#                                        (on 2026-12-03; testing moves: `dockerd --version` says which)
# The tests use trixie's (a stable release); the build benchmark can also measure forky's. Their
# binaries need glibc >= 2.34 (Debian 12 has 2.36) and run with the system's runc.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=${1:-trixie}
case "$suite" in
  trixie|forky) ;;
  *) echo "docker-engine: unknown suite '$suite' (trixie: Docker 26.1, forky: Docker 28.x)" >&2; exit 2 ;;
esac
packages=(docker.io containerd docker-cli docker-buildx)
base="$PWD/.cache/docker-engine/$suite"
root="$base/root"

if [ -x "$root/usr/sbin/dockerd" ] && [ -x "$root/usr/bin/containerd" ] && [ -x "$root/usr/bin/docker" ]; then
  echo "$root"
  exit 0
fi

# The system's Debian mirror, so a machine that reaches only its configured mirror still works.
mirror=$(sed -n 's/^URIs: *\(.*\/debian\)$/\1/p; s/^deb \+\(http[^ ]*\/debian\) .*/\1/p' \
  /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

state="$base/apt"
rm -rf "$state" "$root.partial"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs" "$root.partial"
echo "deb $mirror $suite main" >"$state/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=$state/none"
          -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "Dir::State::status=/dev/null"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1" -o "Acquire::Languages=none")
echo "docker-engine: fetching ${packages[*]} from $mirror $suite" >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$state/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}" >&2)
for deb in "$state/debs"/*.deb; do
  dpkg-deb -x "$deb" "$root.partial"
done
rm -rf "$root"
mv "$root.partial" "$root"
rm -rf "$state"
echo "$root"
