"""Fixtures that start real components: a package index on 127.0.0.1, uv projects locked against it.

Every subprocess gets a dead proxy for anything that is not loopback, so a test that silently
reached the internet would fail instead of passing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.baseimage import build_base_image, build_uv_image
from tests.support.builders import Dockerd, unpacked_docker_engine
from tests.support.pkgindex import PackageIndex, corrupt_wheel_bytes, odd_wheel_bytes, source_tree
from tests.support.registry import PASSWORD, RegistryServer

REPO = Path(__file__).resolve().parent.parent
DEAD_PROXY = "http://127.0.0.1:9"


def hermetic_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, ALL_PROXY=DEAD_PROXY,
               NO_PROXY="127.0.0.1,localhost", UV_PYTHON_DOWNLOADS="never")
    env.update(extra)
    return env


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def require_tool(name: str) -> str:
    """Image tools are installed by scripts/bootstrap.sh; a missing one is a loud failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh (it installs the Debian packages)")
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def ocicache(*args: str | Path, cwd: Path | None = None, check: bool = True, env: dict | None = None,
             input: str | None = None) -> Run:
    proc = subprocess.run([sys.executable, "-m", "ocicache", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env or hermetic_env(), timeout=600, input=input)
    result = Run(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"ocicache {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return result


def heavy_files(name: str, size: int, seed: int) -> dict[str, bytes]:
    """A module plus incompressible data: a package big enough for a layer of its own."""
    module = name.replace("-", "_")
    return {f"{module}/__init__.py": b"", f"{module}/data.bin": random.Random(seed).randbytes(size)}


@pytest.fixture(scope="session")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("git") / "gitpkg"
    repo.mkdir()
    for path, data in source_tree("gitpkg", "0.3.0").items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "v0.3.0"], cwd=repo, check=True,
                   env={**os.environ, "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
                        "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z"})
    subprocess.run([*git, "tag", "v0.3.0"], cwd=repo, check=True)
    return repo


@pytest.fixture(scope="session")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    idx = PackageIndex(tmp_path_factory.mktemp("index"))
    idx.add_wheel("heavy", "1.0", files=heavy_files("heavy", 1536 * 1024, 1))
    idx.add_wheel("small-a", "1.0")
    idx.add_wheel("small-b", "2.0", deps=["small-a"])
    idx.add_wheel("small-c", "3.0")
    idx.add_sdist("sdist-only", "0.5")
    idx.add_sdist("compiled", "1.0", compiled=True)  # a C extension: its built wheel fits one target only
    for tag in ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp311-cp311-manylinux_2_34_x86_64",
                "cp311-cp311-manylinux_2_17_aarch64", "cp312-cp312-manylinux_2_17_x86_64"):
        idx.add_wheel("native", "1.0", tag=tag)
    idx.add_wheel("armonly", "1.0", tag="py3-none-manylinux_2_17_aarch64")
    idx.add(*odd_wheel_bytes())  # zip features the other wheels lack (tests/test_unpack_wheels.py)
    idx.add(*corrupt_wheel_bytes())
    for n, version in enumerate(("1.0", "2.0", "3.0")):  # upgraded round by round (tests/test_gc.py)
        idx.add_wheel("gc-alpha", version, files=heavy_files("gc-alpha", 1100 * 1024, 10 + n))
        idx.add_wheel("gc-beta", version)
    # The names the README's example project uses, so the quick start runs against this index.
    idx.add_wheel("numpy", "2.3.0", files=heavy_files("numpy", 1200 * 1024, 2))
    idx.add_wheel("requests", "2.32.0", deps=["certifi", "idna", "urllib3", "charset-normalizer"])
    for name, version in (("certifi", "2026.1.1"), ("idna", "3.10"), ("urllib3", "2.5.0"),
                          ("charset-normalizer", "3.4.0"), ("rich", "14.0.0")):
        idx.add_wheel(name, version)
    idx.serve()
    yield idx
    idx.close()


@pytest.fixture(scope="session")
def lock_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-lock-cache")


@dataclass
class ProjectFactory:
    index: PackageIndex
    lock_cache: Path

    def __call__(self, path: Path, deps: Sequence[str], *, extras: dict[str, list[str]] | None = None,
                 groups: dict[str, list[str]] | None = None, sources: dict[str, str] | None = None,
                 requires_python: str = ">=3.11") -> Path:
        """A virtual uv project at `path`, locked against the local index; returns its uv.lock."""
        path.mkdir(parents=True, exist_ok=True)
        lines = ["[project]", 'name = "demo"', 'version = "0"', f'requires-python = "{requires_python}"',
                 f"dependencies = {json.dumps(list(deps))}"]
        if extras:
            lines += ["", "[project.optional-dependencies]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in extras.items()]
        if groups:
            lines += ["", "[dependency-groups]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in groups.items()]
        lines += ["", "[tool.uv]", "package = false"]
        if sources:
            lines += ["", "[tool.uv.sources]"]
            lines += [f"{k} = {v}" for k, v in sources.items()]
        lines += ["", "[[tool.uv.index]]", 'name = "local"', f'url = "{self.index.url}"', "default = true", ""]
        (path / "pyproject.toml").write_text("\n".join(lines))
        subprocess.run([uv_bin(), "lock", "--quiet"], cwd=path, check=True, timeout=300,
                       env=hermetic_env(UV_CACHE_DIR=str(self.lock_cache)))
        return path / "uv.lock"


@pytest.fixture(scope="session")
def make_project(index: PackageIndex, lock_cache: Path) -> ProjectFactory:
    return ProjectFactory(index, lock_cache)


def build_context(directory: Path, lock: Path, dockerfile: str) -> Path:
    """A Docker build context: the project's pyproject.toml and uv.lock, and `dockerfile`."""
    context = directory / "context"
    context.mkdir(parents=True)
    shutil.copy(lock, context / "uv.lock")
    shutil.copy(lock.parent / "pyproject.toml", context / "pyproject.toml")
    (context / "Dockerfile").write_text(dockerfile)
    return context


def unpack_layout(layout: Path, tag: str, dest: Path) -> Path:
    """Unpack with umoci (an independent OCI implementation); return the rootfs: the uv cache."""
    umoci = require_tool("umoci")
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{layout}:{tag}", str(dest)], check=True,
                   capture_output=True, timeout=300)
    return dest / "rootfs"


def offline_sync(project_lock: Path, cache: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The consumer: a fresh copy of the project, `uv sync --frozen --offline`, dead proxy."""
    workdir.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(project_lock.parent / name, workdir / name)
    return subprocess.run([uv_bin(), "sync", "--frozen", "--offline", "--no-install-project",
                           "--python", sys.executable, *extra],
                          cwd=workdir, capture_output=True, text=True, timeout=300,
                          env=hermetic_env(UV_CACHE_DIR=str(cache), UV_LINK_MODE="copy"))


@pytest.fixture(scope="session")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RegistryServer]]:
    """One running registry of each kind, shared by the session (tests use distinct repositories)."""
    require_tool("docker-registry")
    servers = {}
    try:
        for kind in ("plain", "htpasswd", "tls", "token"):
            server = RegistryServer(tmp_path_factory.mktemp(f"registry-{kind}"), kind)
            server.start()
            servers[kind] = server
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A fresh plain registry of this test's own (to stop, restart or corrupt)."""
    require_tool("docker-registry")
    server = RegistryServer(tmp_path / "registry", "plain")
    server.start()
    yield server
    server.close()


def push_to(server: RegistryServer, *args: str | Path, check: bool = True) -> Run:
    """`ocicache push ... --json` with the server's credentials (password on stdin)."""
    auth = server.cli_auth()
    return ocicache("push", *args, *auth, "--json", check=check, input=PASSWORD if "--password-stdin" in auth else None)


@pytest.fixture(scope="session")
def build_setup(registries, make_project, tmp_path_factory, git_repo) -> dict[str, object]:
    """The base image and a cache image in the registry, and the project the builds install."""
    server = registries["plain"]
    work = tmp_path_factory.mktemp("dockerfile")
    base_layout = build_base_image(work / "base-layout", uv_bin())
    base = f"{server.host}/base/python:3.11"
    ocicache("copy", base_layout, base)
    uv_image = f"{server.host}/base/uv:0.13.9"
    ocicache("copy", build_uv_image(work / "uv-layout", uv_bin()), uv_image)
    sources = {"gitpkg": f'{{ git = "file://{git_repo}", tag = "v0.3.0" }}'}
    lock = make_project(work / "project", ["heavy", "small-b", "sdist-only", "gitpkg"], sources=sources)
    cache = f"{server.host}/cache/service:py311"
    ocicache("push", lock, cache, "--python", "3.11", "--python-platform", "x86_64-manylinux_2_36")
    return {"base": base, "uv_image": uv_image, "cache": cache, "lock": lock}


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """Debian's dockerd with its own storage and socket, for the session."""
    require_tool("dockerd")
    daemon = Dockerd(Path(tmp_path_factory.mktemp("dockerd")))
    yield daemon
    daemon.stop()


def docker_engine() -> Path:
    """Debian 13's Docker (scripts/bootstrap.sh --test unpacks it; fetched here too if missing, never
    skipped)."""
    try:
        return unpacked_docker_engine()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def dockerd_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """dockerd 26.1 with containerd's image store: what Docker Engine 29 and later use on a fresh
    install (a fresh CI runner), the closest engine the package registries here have."""
    daemon = Dockerd(Path(tmp_path_factory.mktemp("dockerd26")), docker_engine(), containerd_store=True)
    yield daemon
    daemon.stop()
