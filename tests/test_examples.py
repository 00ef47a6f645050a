"""The monorepo example: the second service uploads only its own layers and builds offline."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, hermetic_env, require_tool


def test_monorepo_second_service_uploads_only_its_own_layers(index, tmp_path):
    require_tool("buildah")
    env = hermetic_env(UV_DEFAULT_INDEX=index.url, UV_CACHE_DIR=str(tmp_path / "uv-cache"), TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, str(REPO / "examples" / "monorepo" / "build.py")], capture_output=True,
                         text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    api, worker = summary["api"], summary["worker"]
    assert api["numpy_layer"] == "uploaded" and worker["numpy_layer"] == "mounted"
    assert worker["bytes_uploaded"] < worker["cache_bytes"]
    assert worker["packages_populated"] == 1  # rich only: numpy came from the pool
    # the first build pulled base, uv and its cache image; the second only its own new layers
    assert api["build_pulled_bytes"] > api["cache_bytes"]
    assert 0 < worker["build_pulled_bytes"] < worker["cache_bytes"]
