#!/usr/bin/env bash
# Install ocicache, lock the example project (examples/demo) and build its uv-cache image into an
# OCI image layout directory (no registry needed), then show what the image holds.
#   scripts/quickstart.sh [DEST]      DEST defaults to oci:build/demo-cache:latest
# The example is locked here, at run time, against your configured package index (UV_DEFAULT_INDEX
# to choose another one).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-oci:build/demo-cache:latest}"

scripts/bootstrap.sh
venv="${OCICACHE_VENV:-.venv}"
mkdir -p build

echo "==> locking examples/demo with the pinned uv" >&2
"$venv/bin/uv" lock --quiet --directory examples/demo

echo "==> ocicache push examples/demo/uv.lock $dest" >&2
"$venv/bin/ocicache" push examples/demo/uv.lock "$dest" --progress always

echo "==> ocicache inspect $dest" >&2
"$venv/bin/ocicache" inspect "$dest"
cat >&2 <<MSG

Done. The layout directory is an OCI image whose filesystem is a uv cache. Next steps:
  skopeo copy ${dest} docker://<registry>/<repo>:<tag>     # or: ocicache push to a registry
  docs/dockerfile-patterns.md                               # use it in a Dockerfile
MSG
