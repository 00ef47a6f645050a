#!/usr/bin/env bash
# Install what ocicache needs into .venv (the pinned uv comes with it from PyPI).
#   scripts/bootstrap.sh          the tool only
#   scripts/bootstrap.sh --test   also the test extras, the uv releases of the compatibility tests, and the
#                                 Debian packages the tests drive:
#                                 docker-registry, skopeo, umoci, buildah, runc, docker.io (dockerd),
#                                 busybox-static, git, musl (a musl libc for the base-image tests),
#                                 pigz (dockerd gunzips with it when on PATH; the benchmarks compare),
#                                 and Debian 13's Docker engine unpacked into .cache/ (scripts/docker-engine.sh)
# OCICACHE_VENV=DIR uses an existing, prepared virtualenv instead (nothing is installed into it).
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

if [ "$with_tests" = 1 ]; then
  need=()
  for tool in docker-registry:docker-registry skopeo:skopeo umoci:umoci buildah:buildah runc:runc dockerd:docker.io \
              busybox:busybox-static git:git chattr:e2fsprogs \
              unpigz:pigz /lib/ld-musl-x86_64.so.1:musl; do
    { command -v "${tool%%:*}" || [ -e "${tool%%:*}" ]; } >/dev/null 2>&1 || need+=("${tool##*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${need[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  scripts/docker-engine.sh >/dev/null
fi

if [ -z "${OCICACHE_VENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  extras=""
  [ "$with_tests" = 1 ] && extras="[test]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
fi

if [ "$with_tests" = 1 ]; then
  # The uv releases the compatibility tests install with (first and last of every format family),
  # from PyPI into .cache/uv-releases/ (kept between runs).
  "${OCICACHE_VENV:-.venv}/bin/python" -m tests.support.uvreleases
fi
