"""docs/quickstart.md, followed from a fresh clone to an offline Docker build.

The three documented commands run as written, with the suite's registry in place of localhost:5000
and, since there is no Docker Hub here, the suite's base and uv images passed as build arguments.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, hermetic_env, ocicache

STEPS = [
    "./scripts/quickstart.sh",
    ".venv/bin/ocicache copy oci:build/demo-cache:latest localhost:5000/uvcache/demo:latest",
    "docker build --network none --build-arg UV_CACHE_IMAGE=localhost:5000/uvcache/demo:latest examples/demo",
]


def test_quickstart_doc_lists_exactly_these_steps():
    doc = (REPO / "docs" / "quickstart.md").read_text()
    for step in STEPS:
        assert step in doc, step


def test_newcomer_path_from_fresh_clone_to_offline_docker_build(index, registries, build_setup, dockerd, tmp_path):
    server = registries["plain"]
    clone = tmp_path / "ocicache"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = hermetic_env(OCICACHE_VENV=sys.prefix, UV_DEFAULT_INDEX=index.url, UV_CACHE_DIR=str(tmp_path / "uv"))
    first = subprocess.run(STEPS[0].split(), cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    cache = f"{server.host}/uvcache/demo:latest"
    copy_args = STEPS[1].replace("localhost:5000", server.host).split()[1:]  # after ".venv/bin/ocicache"
    ocicache(*copy_args, cwd=clone)

    build = STEPS[2].replace("localhost:5000", server.host).split()[2:]  # after "docker build"
    context = build.pop()
    result = dockerd.docker("build", *build, "--progress", "plain",
                            "--build-arg", f"BASE_IMAGE={build_setup['base']}",
                            "--build-arg", f"UV_IMAGE={build_setup['uv_image']}", context, cwd=clone)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo service ready" in result.stderr
    checked = ocicache("check", cache, clone / "examples/demo/uv.lock", "--json", cwd=clone).json()
    assert checked["ok"], checked
