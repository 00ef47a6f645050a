"""Issue 4: real Dockerfile builds install from the cache image with --network none.

Builders: buildah (runc) and Debian's dockerd (BuildKit, and the classic builder for the COPY
patterns it supports). The base image holds this machine's Debian CPython 3.11 and the pinned uv
(tests/support/baseimage.py), pushed to the suite's registry with `ocicache copy`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import build_context, docker_engine, require_tool
from tests.support.builders import Buildah, DockerBuilder, Dockerd

IMPORTS = "import heavy, small_a, small_b, sdist_only, gitpkg"
PATTERNS = {
    # name: (Dockerfile body after the FROM lines, whether the cache stays in the final image)
    "copy-from-ref": ("COPY --from={cache} / /root/.cache/uv\n"
                      "RUN uv sync --frozen --offline --no-install-project --python /usr/bin/python3.11\n", True),
    "stage-copy": ("COPY --from=uvcache / /root/.cache/uv\n"
                   "RUN uv sync --frozen --offline --no-install-project --python /usr/bin/python3.11\n", True),
    "bind-mount": ("RUN --mount=type=bind,from={cache},target=/root/.cache/uv,rw \\\n"
                   "    uv sync --frozen --offline --no-install-project --python /usr/bin/python3.11\n", False),
    "cache-mount": ("RUN --mount=type=cache,from=uvcache,source=/,target=/root/.cache/uv \\\n"
                    "    uv sync --frozen --offline --no-install-project --python /usr/bin/python3.11\n", False),
}
CLASSIC_PATTERNS = ("copy-from-ref", "stage-copy")  # the classic builder has no RUN --mount


def dockerfile(pattern: str, base: str, cache: str) -> str:
    body, keeps_cache = PATTERNS[pattern]
    check = "test -d /root/.cache/uv/archive-v0" if keeps_cache else "test ! -e /root/.cache/uv/archive-v0"
    return (f"FROM {cache} AS uvcache\n"
            f"FROM {base}\n"
            "WORKDIR /app\n"
            "COPY pyproject.toml uv.lock /app/\n"
            "ENV UV_LINK_MODE=copy\n"
            + body.format(cache=cache)
            + f'RUN {check} && /app/.venv/bin/python -c "{IMPORTS}; print(\'imports ok\')"\n')


def _context(tmp_path: Path, setup: dict, pattern: str) -> Path:
    return build_context(tmp_path, setup["lock"], dockerfile(pattern, str(setup["base"]), str(setup["cache"])))


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_buildah_builds_offline_from_the_cache_image(pattern, build_setup, tmp_path):
    require_tool("buildah")
    require_tool("runc")
    result = Buildah(tmp_path / "buildah").build(_context(tmp_path, build_setup, pattern), f"localhost/t-{pattern}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "imports ok" in result.stdout


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_docker_buildkit_builds_offline_from_the_cache_image(pattern, build_setup, dockerd, tmp_path):
    result = DockerBuilder(dockerd, buildkit=True).build(_context(tmp_path, build_setup, pattern), f"t-{pattern}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imports ok" in result.stderr  # BuildKit's plain progress goes to stderr


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_docker_26_with_containerds_image_store_builds_offline_from_the_cache_image(pattern, build_setup,
                                                                                    dockerd_containerd, tmp_path):
    """The image store of a fresh Docker 29 install (containerd's), through the buildx CLI."""
    result = DockerBuilder(dockerd_containerd, buildkit=True).build(_context(tmp_path, build_setup, pattern),
                                                                    f"t26-{pattern}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imports ok" in result.stderr


@pytest.mark.parametrize("pattern", CLASSIC_PATTERNS)
def test_docker_classic_builder_builds_the_copy_patterns(pattern, build_setup, dockerd, tmp_path):
    result = DockerBuilder(dockerd, buildkit=False).build(_context(tmp_path, build_setup, pattern), f"c-{pattern}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "imports ok" in result.stdout


def test_without_the_cache_the_offline_build_fails(build_setup, tmp_path):
    """Guard: the same build with an empty cache cannot install (so the tests above prove the cache)."""
    context = _context(tmp_path, build_setup, "bind-mount")
    text = (context / "Dockerfile").read_text().replace(
        "--mount=type=bind,from=" + str(build_setup["cache"]) + ",target=/root/.cache/uv,rw",
        "--mount=type=tmpfs,target=/root/.cache/uv")
    (context / "Dockerfile").write_text(text)
    result = Buildah(tmp_path / "buildah").build(context, "localhost/t-nocache")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # uv fails on whichever missing package it reaches first: a registry wheel or the git source
    assert "Network connectivity is disabled" in output or "Failed to download and build" in output, output


def _codec_setup(build_setup: dict, codec: str) -> dict:
    """build_setup with its cache image pushed again with `--compression codec` (a tag of its own)."""
    from tests.conftest import ocicache

    cache = str(build_setup["cache"]).replace(":py311", f":py311-{codec}")
    pushed = ocicache("push", build_setup["lock"], cache, "--python", "3.11", "--compression", codec,
                      "--json").json()
    assert pushed["layers"]
    return {**build_setup, "cache": cache}


def _build_on_a_fresh_daemon(setup: dict, directory: Path, tag: str, *daemon_args: object, **daemon_options: object):
    """A bind-mount build on a daemon of its own: the session's daemon already holds these layers'
    content (the same diff_ids as the gzip image) and would never need to unpack the blobs."""
    short = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))  # socket paths must stay short
    daemon = Dockerd(short, *daemon_args, **daemon_options)
    try:
        return DockerBuilder(daemon, buildkit=True).build(_context(directory, setup, "bind-mount"), tag)
    finally:
        daemon.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_uncompressed_cache_image_builds_with_buildah_and_docker_20_10(build_setup, tmp_path):
    """`--compression none`: the tar itself as the blob; both builders unpack it."""
    setup = _codec_setup(build_setup, "none")
    result = Buildah(tmp_path / "buildah").build(_context(tmp_path / "b", setup, "bind-mount"), "localhost/t-tar")
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    result = _build_on_a_fresh_daemon(setup, tmp_path / "d", "t-tar")
    assert result.returncode == 0 and "imports ok" in result.stderr, result.stderr[-3000:]


def test_zstd_cache_image_buildah_and_docker_26_read_it_docker_20_10_does_not(build_setup, tmp_path):
    """`--compression zstd`: buildah 1.28 and dockerd 26.1 build from it; Debian 12's dockerd 20.10 cannot
    unpack zstd layers (measured; the reason gzip stays the default, docs/dockerfile-patterns.md)."""
    setup = _codec_setup(build_setup, "zstd")
    result = Buildah(tmp_path / "buildah").build(_context(tmp_path / "b", setup, "bind-mount"), "localhost/t-zstd")
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    result = _build_on_a_fresh_daemon(setup, tmp_path / "d", "t-zstd")
    assert result.returncode != 0 and "failed to register layer" in result.stderr, result.stderr[-3000:]
    # a newer engine reads it
    result = _build_on_a_fresh_daemon(setup, tmp_path / "n", "t26-zstd", docker_engine(), containerd_store=True)
    assert result.returncode == 0 and "imports ok" in result.stderr, result.stderr[-3000:]
