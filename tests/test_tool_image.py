"""The top-level Dockerfile: ocicache's own image, its dependencies installed offline from an ocicache
cache image of its own lock, then run with `docker run … ocicache push …`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO, ocicache, require_tool, uv_bin
from tests.support.builders import Buildah
from tests.support.pkgindex import PackageIndex
from tests.support.repack import repack

RUNTIME = ["uv", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "packaging", "isal", "zstandard",
           "typing_extensions", "cryptography", "cffi", "pycparser"]


def _tool_project(tmp_path: Path, index: PackageIndex) -> Path:
    """This repository's project, locked against a local index of its real (repacked) dependencies."""
    project = tmp_path / "ocicache-src"
    project.mkdir()
    shutil.copytree(REPO / "ocicache", project / "ocicache", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Dockerfile", project / "Dockerfile")
    text = (REPO / "pyproject.toml").read_text()
    text = re.sub(r"\[project\.optional-dependencies\]\n(?:.+\n)+", "", text)  # test tools are not in the index
    text += f'\n[[tool.uv.index]]\nname = "local"\nurl = "{index.url}"\ndefault = true\n'
    (project / "pyproject.toml").write_text(text)
    subprocess.run([uv_bin(), "lock", "--quiet"], cwd=project, check=True, timeout=300,
                   env={"PATH": "/usr/bin:/bin", "UV_CACHE_DIR": str(tmp_path / "lock-cache"),
                        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                        "NO_PROXY": "127.0.0.1"})
    return project


def test_tool_image_builds_offline_and_pushes(registries, build_setup, dockerd, index, make_project, tmp_path):
    require_tool("buildah")
    server = registries["plain"]
    deps = PackageIndex(tmp_path / "deps-index")
    for name in RUNTIME:
        path = repack(name, deps.root / "files")
        assert path.is_file()
    deps.serve()
    try:
        project = _tool_project(tmp_path, deps)
        cache = f"{server.host}/ocicache/uvcache:test"
        pushed = ocicache("push", project / "uv.lock", cache, "--python", "3.11", "--json").json()
        assert "uv" in {p for layer in pushed["layers"] for p in layer["packages"]}

        # buildah, --network none: every dependency from the cache image
        built = Buildah(tmp_path / "buildah").build(project, "localhost/ocicache-tool", build_args={
            "UV_CACHE_IMAGE": cache, "BASE_IMAGE": str(build_setup["base"]),
            "UV_IMAGE": str(build_setup["uv_image"])})
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        assert "ocicache 0.1.0 (uv 0.13.9)" in built.stdout

        # dockerd (BuildKit), then `docker run … push` against the suite's index, into a layout
        image = "ocicache-tool:test"
        result = dockerd.docker("build", "--network", "none", "--progress", "plain", "-t", image,
                                "--build-arg", f"UV_CACHE_IMAGE={cache}", "--build-arg",
                                f"BASE_IMAGE={build_setup['base']}", "--build-arg",
                                f"UV_IMAGE={build_setup['uv_image']}", ".", cwd=project)
        assert result.returncode == 0, result.stderr[-3000:]
        lock = make_project(tmp_path / "app", ["heavy", "small-b"])
        work = lock.parent
        run = dockerd.docker("run", "--rm", "--network", "host", "-v", f"{work}:/work", "-w", "/work", image,
                             "push", "uv.lock", "oci:/work/out:v1", "--json")
        assert run.returncode == 0, run.stderr[-3000:]
        in_container = json.loads(run.stdout)
        on_host = ocicache("push", lock, f"oci:{tmp_path / 'host-out'}:v1", "--json").json()
        assert in_container["manifest_digest"] == on_host["manifest_digest"]  # same bytes, in or out of Docker
        skopeo = subprocess.run([require_tool("skopeo"), "inspect", f"oci:{work / 'out'}:v1"], capture_output=True,
                                text=True)
        assert skopeo.returncode == 0, skopeo.stderr
    finally:
        deps.close()
