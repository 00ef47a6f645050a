"""The benchmark scripts stay runnable: their command lines parse, and bench_build writes the
Dockerfiles its variants name (the benchmarks themselves run outside the suite: docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCHMARKS = sorted(p.name for p in (REPO / "scripts").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_help_runs(script):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def _script(name: str):
    """scripts/<name>.py as a module (registered: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_build_variants_use_their_images():
    bench = _script("bench_build")
    images = {"base": "reg/base", "worker:cache": "reg/worker-cache", "worker:stacked": "reg/worker-stacked",
              "worker:stacked-zstd": "reg/worker-stacked-zstd", "worker:stacked-one": "reg/worker-stacked-one",
              "worker:stacked-venv": "reg/worker-stacked-venv", "worker:stacked-venv-only": "reg/worker-venv-only",
              "worker:stacked-venv-only-zstd": "reg/worker-venv-only-zstd",
              "worker:stacked-venv-only-tar": "reg/worker-venv-only-tar",
              "worker:stacked-venv-only-each": "reg/worker-venv-only-each",
              "worker:venv-archives": "reg/worker-archives"}
    files = {v: bench.dockerfile(v, images, "worker") for v in bench.VARIANTS}
    assert files["guide"].startswith("FROM reg/base\n") and "type=cache" in files["guide"]
    assert "FROM reg/worker-cache AS uvcache" in files["bind"] and "--offline" in files["bind"]
    assert files["stacked"].startswith("FROM reg/worker-stacked\n")
    assert files["stacked-zstd"].startswith("FROM reg/worker-stacked-zstd\n")
    assert files["stacked-one"].startswith("FROM reg/worker-stacked-one\n")
    assert files["stacked-venv"].startswith("FROM reg/worker-stacked-venv\n")
    assert bench.STACKED_PUSH_ARGS["stacked-venv"] == ["--venv", "/app/.venv"]
    assert "WORKDIR /app\n" in files["stacked-venv"]  # where the pushed environment is
    assert all("--link-mode symlink" in files[v] for v in ("stacked", "stacked-zstd", "stacked-one", "stacked-venv"))
    assert files["stacked-venv-only"].startswith("FROM reg/worker-venv-only\n")
    assert bench.STACKED_PUSH_ARGS["stacked-venv-only"] == ["--venv", "/app/.venv", "--venv-only"]
    assert bench.STACKED_PUSH_ARGS["stacked-venv-only-zstd"][-2:] == ["--compression", "zstd"]
    assert bench.STACKED_PUSH_ARGS["stacked-venv-only-tar"][-2:] == ["--compression", "none"]
    assert files["stacked-venv-only-tar"].startswith("FROM reg/worker-venv-only-tar\n")
    assert bench.STACKED_PUSH_ARGS["stacked-venv-only-each"][-2:] == ["--solo-threshold", "0"]
    assert bench.STACKED_PUSH_ARGS["venv-archives"][-1] == "--venv-archives"
    archives = files["venv-archives"]
    assert archives.startswith("FROM reg/base\n") and "from=reg/worker-archives,source=/ocicache/venv" in archives
    assert 'tar -xf "$a" -C /' in archives and archives.rstrip().endswith("--offline")
    assert set(bench.DEFAULT_VARIANTS) <= set(bench.VARIANTS)
    assert not {"stacked-zstd", "stacked-one", "stacked-venv", "stacked-venv-only", "stacked-venv-only-zstd",
                "stacked-venv-only-tar", "stacked-venv-only-each", "venv-archives"} & set(
        bench.DEFAULT_VARIANTS)


def test_bench_build_dockerd_names_say_engine_store_and_gunzip():
    bench = _script("bench_build")
    setup = bench.dockerd_setup
    assert setup("docker") == bench.DockerdSetup(None, False, False)  # the system's 20.10
    assert setup("docker26-pigz") == bench.DockerdSetup("trixie", False, True)
    assert setup("docker28-containerd") == bench.DockerdSetup("forky", True, False)
    assert setup("docker28-containerd-pigz") == bench.DockerdSetup("forky", True, True)
    suites = {setup(b).suite for b in bench.BUILDERS if b != "buildah"} - {None}
    engine_script = (REPO / "scripts" / "docker-engine.sh").read_text()
    assert all(f"{suite}|" in engine_script or f"|{suite})" in engine_script for suite in suites)


def test_bench_apply_archive_is_what_docker_load_reads(tmp_path):
    """The archive names its one layer by the layer's own digest (what dockerd checks), and the layer
    holds the tree's entries with their parents, as ocicache's tar writer makes them."""
    import hashlib
    import json
    import tarfile

    from ocicache.tree import walk_tree

    bench = _script("bench_apply")
    trees = bench.synthetic_tree(tmp_path / "trees", files=30, dirs=4, file_bytes=10, mib=1)
    archive = tmp_path / "files.tar"
    count = bench.docker_archive(list(walk_tree(trees["files"], "opt/files")), archive)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        config = json.load(outer.extractfile("config.json"))
        layer = outer.extractfile("layer.tar").read()
    assert manifest == [{"Config": "config.json", "RepoTags": [bench.TAG], "Layers": ["layer.tar"]}]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    (tmp_path / "layer.tar").write_bytes(layer)
    with tarfile.open(tmp_path / "layer.tar") as inner:
        names = inner.getnames()
    assert count == len(names) == 1 + 1 + 4 + 30  # opt/, opt/files/, the 4 directories, the 30 files
    assert sum(1 for n in names if n.endswith(".py")) == 30
