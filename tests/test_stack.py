"""Issue 8: `push --base IMAGE`, a cache stacked on a base image: `FROM <stacked>` and nothing copied.

Proven with real builders: buildah (--network none) and dockerd's BuildKit build FROM the stacked
image with `uv sync --frozen --offline --link-mode symlink`; the per-package layers keep their digests
whatever the base, so two services' images share them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import build_context, offline_sync, require_tool
from tests.conftest import ocicache as run_ocicache
from tests.support.builders import Buildah, DockerBuilder

IMPORTS = "import heavy, small_b, sdist_only, gitpkg"


def _manifest(ref: str) -> dict:
    skopeo = require_tool("skopeo")
    out = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                         text=True, check=True).stdout
    manifest = json.loads(out)
    if "manifests" in manifest:  # an index (Docker with containerd's store pushes one): the linux/amd64 image
        (digest,) = [m["digest"] for m in manifest["manifests"]
                     if m.get("platform", {}).get("architecture") == "amd64"]
        return _manifest(f"{ref.rsplit(':', 1)[0]}@{digest}")
    return manifest


@pytest.fixture(scope="module")
def stacked(build_setup, registries) -> dict[str, str]:
    host = registries["plain"].host
    ref = f"{host}/stack/service:1"
    pushed = run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--json").json()
    return {"ref": ref, "digest": pushed["manifest_digest"], "host": host}


def _context(tmp_path: Path, setup: dict, body: str) -> Path:
    return build_context(tmp_path, setup["lock"], body)


def _stacked_dockerfile(ref: str) -> str:
    return (f"FROM {ref}\n"
            "WORKDIR /app\n"
            "COPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project --link-mode symlink\n"
            f"RUN /app/.venv/bin/python -c \"{IMPORTS}; print('imports ok')\" && "
            "test -L /app/.venv/lib/python3.11/site-packages/heavy/data.bin\n")


def test_stacked_image_is_the_base_then_the_cache(stacked, build_setup, registries):
    manifest = _manifest(stacked["ref"])
    base = _manifest(str(build_setup["base"]))
    assert [layer["digest"] for layer in manifest["layers"][: len(base["layers"])]] == \
        [layer["digest"] for layer in base["layers"]]
    ours = manifest["layers"][len(base["layers"]):]
    assert ours and all("dev.ocicache.layer.key" in layer["annotations"] for layer in ours)
    assert manifest["annotations"]["dev.ocicache.stack.root"] == "root/.cache/uv"
    assert manifest["annotations"]["dev.ocicache.stack.base"].endswith("@" + base_digest(build_setup["base"]))
    info = run_ocicache("inspect", stacked["ref"], "--json").json()
    assert info["target"]["python_platform"] == "x86_64-manylinux_2_36"
    assert [layer["kind"] for layer in info["layers"][: len(base["layers"])]] == ["image"] * len(base["layers"])
    assert info["stack_root"] == "root/.cache/uv" and info["stacked_on"].startswith(str(build_setup["base"]))
    table = run_ocicache("inspect", stacked["ref"]).stdout
    assert "(the base image's)" in table and "stacked on " in table
    # the same push again reuses every layer and gives the same manifest
    again = run_ocicache("push", build_setup["lock"], stacked["ref"], "--base", build_setup["base"], "--json").json()
    assert again["manifest_digest"] == stacked["digest"] and again["layers_built"] == 0


def base_digest(ref: str) -> str:
    skopeo = require_tool("skopeo")
    out = subprocess.run([skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)["Digest"]


def test_package_layers_keep_their_digests_whatever_the_base(stacked, build_setup, registries):
    """Another base (a one-layer uv image): the cache layers are the same blobs."""
    other = f"{stacked['host']}/stack/other:1"
    run_ocicache("push", build_setup["lock"], other, "--base", build_setup["uv_image"])
    first = [layer["digest"] for layer in _manifest(stacked["ref"])["layers"] if "annotations" in layer]
    second = [layer["digest"] for layer in _manifest(other)["layers"] if "annotations" in layer]
    assert first == second and len(first) >= 3
    # and they differ from the plain cache image's (rooted at /, not /root/.cache/uv): keys never mix
    plain = [layer["digest"] for layer in _manifest(str(build_setup["cache"]))["layers"]]
    assert not set(first) & set(plain)


def test_pull_of_a_stacked_image_takes_only_the_cache(stacked, build_setup, tmp_path):
    pulled = run_ocicache("pull", stacked["ref"], tmp_path / "cache", "--json").json()
    assert pulled["layers"] == len([layer for layer in _manifest(stacked["ref"])["layers"] if "annotations" in layer])
    assert (tmp_path / "cache" / "archive-v0").is_dir() and not (tmp_path / "cache" / "usr").exists()
    result = offline_sync(build_setup["lock"], tmp_path / "cache", tmp_path / "consumer")
    assert result.returncode == 0, result.stderr[-2000:]


def test_buildah_builds_from_the_stacked_image_offline_with_symlinks(stacked, build_setup, tmp_path):
    require_tool("buildah")
    context = _context(tmp_path, build_setup, _stacked_dockerfile(stacked["ref"]))
    result = Buildah(tmp_path / "buildah").build(context, "localhost/stacked")
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    check = run_ocicache("check", stacked["ref"], build_setup["lock"], "--dockerfile", context / "Dockerfile",
                         "--json").json()
    assert check["ok"], check


@pytest.mark.parametrize("buildkit", [True, False], ids=["buildkit", "classic"])
def test_docker_builds_from_the_stacked_image(buildkit, stacked, build_setup, dockerd, tmp_path):
    """No --mount needed: even Docker's classic builder builds it."""
    context = _context(tmp_path, build_setup, _stacked_dockerfile(stacked["ref"]))
    result = DockerBuilder(dockerd, buildkit=buildkit).build(context, f"stacked-{'bk' if buildkit else 'classic'}")
    output = result.stdout + result.stderr  # BuildKit's plain progress goes to stderr
    assert result.returncode == 0 and "imports ok" in output, output[-3000:]


def test_docker_26_with_containerds_image_store_builds_from_the_stacked_image(stacked, build_setup,
                                                                             dockerd_containerd, tmp_path):
    context = _context(tmp_path, build_setup, _stacked_dockerfile(stacked["ref"]))
    result = DockerBuilder(dockerd_containerd, buildkit=True).build(context, "stacked-26")
    assert result.returncode == 0 and "imports ok" in result.stderr, result.stderr[-3000:]


def test_check_catches_a_symlinked_venv_copied_out_of_its_stage(stacked, build_setup, tmp_path):
    body = (f"FROM {stacked['ref']} AS build\n"
            "WORKDIR /app\n"
            "COPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project --link-mode symlink\n"
            f"FROM {build_setup['base']}\n"
            "COPY --from=build /app/.venv /app/.venv\n")
    context = _context(tmp_path, build_setup, body)
    run = run_ocicache("check", stacked["ref"], build_setup["lock"], "--dockerfile", context / "Dockerfile", "--json",
                       check=False)
    assert run.returncode == 1
    (problem,) = run.json()["problems"]
    assert "Dockerfile:6:" in problem and "dangling links" in problem
    # and that is what happens: the copied venv's files are links to a cache the stage does not have
    # (`import heavy` would even succeed, as a namespace package: the damage shows later)
    require_tool("buildah")
    data = "/app/.venv/lib/python3.11/site-packages/heavy/data.bin"
    (context / "Dockerfile").write_text(body + f"RUN test -L {data} && test ! -e {data} && echo dangling\n")
    result = Buildah(tmp_path / "buildah").build(context, "localhost/dangling")
    assert result.returncode == 0 and "dangling" in result.stdout, result.stdout[-3000:]


def test_base_for_another_platform_is_refused(build_setup, tmp_path):
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--base", build_setup["base"],
                       "--platform", "linux/arm64", check=False)
    assert run.returncode == 2 and "is linux/amd64; the cache targets linux/arm64" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


def test_two_services_stacked_images_share_the_package_layer(stacked, build_setup, make_project, tmp_path):
    """The final images of two services (other locks, one shared wheel) hold the same heavy layer."""
    lock = make_project(tmp_path / "other-service", ["heavy", "small-c"])
    other = f"{stacked['host']}/stack/other-service:1"
    run_ocicache("push", lock, other, "--base", build_setup["base"])

    def heavy_layer(ref: str) -> str:
        (digest,) = [layer["digest"] for layer in _manifest(ref)["layers"]
                     if '"name":"heavy"' in layer.get("annotations", {}).get("dev.ocicache.layer.packages", "")]
        return digest

    assert heavy_layer(other) == heavy_layer(stacked["ref"])


@pytest.mark.parametrize("builder", ["buildah", "docker", "docker26-containerd"])
def test_the_pushed_final_image_reuses_the_stacked_layers(builder, stacked, build_setup, request, tmp_path):
    """A service built FROM the stacked image and pushed (a CI job's last step) references the stacked
    image's layers by their digests, its own layers after them: the push uploads only the build's own
    layers and every service's final image shares the package layers (docs/benchmarks.md, run 13)."""
    context = _context(tmp_path, build_setup, _stacked_dockerfile(stacked["ref"]))
    final = f"{stacked['host']}/stack/final-{builder}:1"
    if builder == "buildah":
        buildah = Buildah(tmp_path / "buildah")
        result = buildah.build(context, final)
        assert result.returncode == 0, result.stderr[-3000:]
        push = subprocess.run([require_tool("buildah"), "--root", str(buildah.root / "root"), "--runroot",
                               str(buildah.root / "run"), "--storage-driver", "vfs", "push", "--tls-verify=false",
                               final, f"docker://{final}"], capture_output=True, text=True, timeout=600)
    else:  # Docker 20.10 on overlay2, or 26.1 with containerd's image store
        daemon = request.getfixturevalue("dockerd" if builder == "docker" else "dockerd_containerd")
        result = DockerBuilder(daemon, buildkit=True).build(context, final)
        assert result.returncode == 0, result.stderr[-3000:]
        push = daemon.docker("push", final)
    assert push.returncode == 0, push.stderr[-3000:]
    stacked_layers = [layer["digest"] for layer in _manifest(stacked["ref"])["layers"]]
    final_layers = [layer["digest"] for layer in _manifest(final)["layers"]]
    assert final_layers[:len(stacked_layers)] == stacked_layers
    assert len(final_layers) > len(stacked_layers)  # the build's own layers (WORKDIR, COPY, RUN) after them


def test_a_stacked_push_takes_the_packages_of_a_cache_image_in_its_pool_instead_of_building_them(
        stacked, build_setup):
    """The team's cache image is in the pool: the first stacked push of the same lock re-roots its
    packages (the same files under /root/.cache/uv) instead of downloading and building them again
    (the sdists and the git package), and the image is the one a populating push makes."""
    pool = f"{stacked['host']}/stack/reroot-pool"
    run_ocicache("push", build_setup["lock"], f"{stacked['host']}/stack/reroot-cache:1", "--pool", pool)
    pushed = run_ocicache("push", build_setup["lock"], f"{stacked['host']}/stack/reroot:1", "--base",
                          build_setup["base"], "--pool", pool, "--json").json()
    assert pushed["packages_populated"] == 0 and pushed["packages_extracted"] == 5, pushed
    assert [layer["digest"] for layer in _manifest(f"{stacked['host']}/stack/reroot:1")["layers"]] == \
        [layer["digest"] for layer in _manifest(stacked["ref"])["layers"]]
