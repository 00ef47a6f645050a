#!/usr/bin/env bash
# Build ocicache's own image with ocicache: lock, push the dependency cache image, build offline.
#   REGISTRY=registry.example scripts/build-image.sh [TAG]
# Uses docker if it can talk to a daemon, buildah otherwise. The lock is made here (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REGISTRY:?set REGISTRY=host[:port] to push the cache image to}"
tag="${1:-latest}"
scripts/bootstrap.sh
.venv/bin/uv lock --quiet
cache="$REGISTRY/ocicache/uvcache:$(sha256sum uv.lock | cut -c1-16)"
.venv/bin/ocicache push uv.lock "$cache" --no-dev --progress always
args=(--network none --build-arg "UV_CACHE_IMAGE=$cache")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${UV_IMAGE:-}" ] && args+=(--build-arg "UV_IMAGE=$UV_IMAGE")
if docker info >/dev/null 2>&1; then
  DOCKER_BUILDKIT=1 docker build "${args[@]}" -t "ocicache:$tag" .
else
  buildah bud --isolation oci --runtime runc "${args[@]}" -t "ocicache:$tag" .
fi
echo "built ocicache:$tag (dependencies from $cache)"
