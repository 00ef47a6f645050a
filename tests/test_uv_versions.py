"""Issue 7: one cache image serves every uv release from 0.9.0 to 0.13.9, proven per format family.

Each family's first and last release (tests/support/uvreleases.py, downloaded by bootstrap) installs
offline from one image pushed with no uv flag: locally against the unpacked image, and in real
builders (buildah --network none for every release, dockerd BuildKit for three families) with that
release copied from a uv image, as a Dockerfile does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocicache.uvcache import FAMILIES
from tests.conftest import build_context, hermetic_env, ocicache, require_tool, unpack_layout
from tests.support.baseimage import build_uv_image
from tests.support.builders import Buildah, DockerBuilder
from tests.support.uvreleases import RELEASES, uv_release

IMPORTS = "import heavy, small_a, small_b, sdist_only, native, gitpkg"


@pytest.fixture(scope="module")
def project(make_project, git_repo, tmp_path_factory) -> Path:
    sources = {"gitpkg": f'{{ git = "file://{git_repo}", tag = "v0.3.0" }}'}
    return make_project(tmp_path_factory.mktemp("uvv") / "project",
                        ["heavy", "small-b", "sdist-only", "native", "gitpkg"], sources=sources)


def _sync_with(version: str, lock: Path, image_root: Path, work: Path) -> subprocess.CompletedProcess:
    """uv `version` installs the project offline from a private copy of the unpacked image."""
    cache = work / "cache"
    shutil.copytree(image_root, cache, symlinks=True)  # uv writes locks into its cache: one copy each
    project = work / "project"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(lock.parent / name, project / name)
    env = hermetic_env(UV_CACHE_DIR=str(cache), UV_LINK_MODE="copy")
    run = subprocess.run([str(uv_release(version)), "sync", "--frozen", "--offline", "--no-install-project",
                          "--python", sys.executable], cwd=project, capture_output=True, text=True, env=env,
                         timeout=300)
    if run.returncode == 0:
        run = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", IMPORTS], capture_output=True,
                             text=True, timeout=60)
    return run


def _layers(layout: Path, tag: str) -> list[dict]:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    return json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())["layers"]


def test_one_image_serves_every_release_offline(project, tmp_path):
    layout = tmp_path / "layout"
    pushed = ocicache("push", project, f"oci:{layout}:all", "--json").json()
    assert pushed["uv_releases"] == ", ".join(f.releases for f in FAMILIES)
    assert pushed["uv_releases"].startswith("0.9.0-") and pushed["uv_releases"].endswith("0.13.9")
    root = unpack_layout(layout, "all", tmp_path / "unpacked")
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("wheels-")) == \
        ["wheels-v5", "wheels-v6", "wheels-v7", "wheels-v8"]
    failures = {}
    for version in RELEASES:
        run = _sync_with(version, project, root, tmp_path / version)
        if run.returncode != 0:
            failures[version] = run.stderr[-800:]
    assert failures == {}


def test_narrowed_image_serves_only_its_family(project, tmp_path):
    """Guard for the test above: an image for 0.13.0-0.13.8 misses on 0.13.9 and 0.12.24, so the
    hits above come from each family's own pointers, not from some release reading another's."""
    layout = tmp_path / "layout"
    pushed = ocicache("push", project, f"oci:{layout}:v7", "--uv-version", "0.13.8", "--json").json()
    assert pushed["uv_releases"] == "0.13.0-0.13.8"
    root = unpack_layout(layout, "v7", tmp_path / "unpacked")
    assert _sync_with("0.13.0", project, root, tmp_path / "0.13.0").returncode == 0
    assert _sync_with("0.13.8", project, root, tmp_path / "0.13.8").returncode == 0
    for version in ("0.13.9", "0.12.24"):
        run = _sync_with(version, project, root, tmp_path / version)
        assert run.returncode != 0 and "Network connectivity is disabled" in run.stderr, run.stderr[-800:]
    # and `check` predicts both outcomes
    ok = ocicache("check", f"oci:{layout}:v7", project, "--uv-version", "0.13.1", "--json").json()
    assert ok["ok"], ok
    miss = ocicache("check", f"oci:{layout}:v7", project, "--uv-version", "0.13.9", "--json", check=False)
    assert miss.returncode == 1 and any("wheels-v8" in p for p in miss.json()["problems"]), miss.stdout


def test_layers_do_not_depend_on_the_uv_that_fills_the_cache(project, tmp_path):
    """Layer identity: the same wheel and format set give the same layer, whichever release filled
    the cache (0.9 leaves the wheel size out of its pointers; the size comes from the lock)."""
    digests = {}
    for filler in ("0.9.0", "0.12.24", "0.13.9"):
        layout = tmp_path / filler
        pushed = ocicache("push", project, f"oci:{layout}:x", "--uv", uv_release(filler), "--json").json()
        assert pushed["uv_version"] == filler
        digests[filler] = [layer["digest"] for layer in _layers(layout, "x")]
    assert digests["0.9.0"] == digests["0.12.24"] == digests["0.13.9"]


def test_every_family_costs_less_than_two_percent(project, tmp_path):
    """The image for every release against a single-family one: pointers are small, archives shared."""
    sizes = {}
    for name, extra in (("all", ()), ("one", ("--uv-version", "0.13.9"))):
        ocicache("push", project, f"oci:{tmp_path / name}:x", *extra)
        sizes[name] = sum(layer["size"] for layer in _layers(tmp_path / name, "x"))
    growth = sizes["all"] / sizes["one"] - 1
    assert 0 < growth < 0.02, sizes


@pytest.fixture(scope="module")
def uv_images(build_setup, registries, tmp_path_factory) -> dict[str, str]:
    """One image per release holding only /uv (like ghcr.io/astral-sh/uv:X), in the suite's registry."""
    server = registries["plain"]
    work = tmp_path_factory.mktemp("uv-images")
    images = {}
    for version in RELEASES:
        ref = f"{server.host}/base/uv:{version}"
        ocicache("copy", build_uv_image(work / version, str(uv_release(version)), version), ref)
        images[version] = ref
    return images


def _context(tmp_path: Path, setup: dict, uv_image: str) -> Path:
    return build_context(tmp_path, setup["lock"],
        f"FROM {setup['cache']} AS uvcache\n"
        f"FROM {uv_image} AS uv\n"
        f"FROM {setup['base']}\n"
        "COPY --from=uv /uv /usr/local/bin/uv\n"
        "WORKDIR /app\n"
        "COPY pyproject.toml uv.lock /app/\n"
        "RUN --mount=type=bind,from=uvcache,target=/root/.cache/uv,rw \\\n"
        "    uv --version && UV_LINK_MODE=copy uv sync --frozen --offline --no-install-project "
        "--python /usr/bin/python3.11\n"
        "RUN /app/.venv/bin/python -c \"import heavy, small_b, sdist_only, gitpkg; print('imports ok')\"\n")


@pytest.mark.parametrize("version", RELEASES)
def test_buildah_builds_offline_with_every_release(version, build_setup, uv_images, tmp_path):
    require_tool("buildah")
    require_tool("runc")
    result = Buildah(tmp_path / "buildah").build(_context(tmp_path, build_setup, uv_images[version]),
                                                 f"localhost/uvv-{version}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"uv {version}" in output and "imports ok" in output


@pytest.mark.parametrize("version", ["0.9.30", "0.12.0", "0.13.0"])
def test_docker_buildkit_builds_offline_with_releases_of_three_families(version, build_setup, uv_images, dockerd,
                                                                        tmp_path):
    result = DockerBuilder(dockerd, buildkit=True).build(_context(tmp_path, build_setup, uv_images[version]),
                                                         f"uvv-{version}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"uv {version}" in result.stderr and "imports ok" in result.stderr
