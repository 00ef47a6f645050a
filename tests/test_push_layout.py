"""Issue 2 acceptance, end to end: real uv, a real package index on 127.0.0.1, real image tools."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import hermetic_env, ocicache, offline_sync, require_tool, unpack_layout


def _manifest(layout: Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    return json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())


def _config(layout: Path, manifest: dict) -> dict:
    return json.loads((layout / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())


def _layer_of(manifest: dict, package: str) -> dict:
    for layer in manifest["layers"]:
        names = [p["name"] for p in json.loads(layer["annotations"].get("dev.ocicache.layer.packages", "[]"))]
        if package in names:
            return layer
    raise AssertionError(f"{package} is in no layer")


def test_same_lock_in_fresh_directories_gives_same_manifest_digest(make_project, tmp_path, git_repo):
    deps = ["heavy", "small-b", "sdist-only", "native", "gitpkg"]
    sources = {"gitpkg": f'{{ git = "file://{git_repo}", tag = "v0.3.0" }}'}
    lock = make_project(tmp_path / "project", deps, sources=sources)
    # The second build: another copy of the project at another path, another umask, another scratch.
    other = tmp_path / "elsewhere" / "copy"
    other.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock"):
        (other / name).write_bytes((lock.parent / name).read_bytes())

    first = ocicache("push", lock, f"oci:{tmp_path / 'a'}:v1", "--json").json()
    env = hermetic_env(TMPDIR=str(tmp_path))
    second = subprocess.run(
        ["sh", "-c", 'umask 0002 && exec "$0" -m ocicache push "$1" "$2" --json', os.sys.executable,
         str(other / "uv.lock"), f"oci:{tmp_path / 'b'}:v1"], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert first["manifest_digest"] == json.loads(second.stdout)["manifest_digest"]
    assert first["packages_populated"] == 6  # small-a comes with small-b
    blobs_a = sorted(p.name for p in (tmp_path / "a" / "blobs" / "sha256").iterdir())
    blobs_b = sorted(p.name for p in (tmp_path / "b" / "blobs" / "sha256").iterdir())
    assert blobs_a == blobs_b


def test_two_locks_pinning_the_same_wheel_share_its_layer(make_project, tmp_path):
    lock_1 = make_project(tmp_path / "one", ["heavy", "small-a"])
    lock_2 = make_project(tmp_path / "two", ["heavy", "small-c", "native"])
    ocicache("push", lock_1, f"oci:{tmp_path / 'l1'}:x")
    ocicache("push", lock_2, f"oci:{tmp_path / 'l2'}:x", "--python", "3.12")
    m1, m2 = _manifest(tmp_path / "l1", "x"), _manifest(tmp_path / "l2", "x")
    assert m1 != m2
    heavy_1, heavy_2 = _layer_of(m1, "heavy"), _layer_of(m2, "heavy")
    assert heavy_1["annotations"]["dev.ocicache.layer.kind"] == "package"
    assert heavy_1["digest"] == heavy_2["digest"]
    assert heavy_1["annotations"]["dev.ocicache.layer.key"] == heavy_2["annotations"]["dev.ocicache.layer.key"]
    # and the scaffold layer is the same everywhere
    assert m1["layers"][0]["digest"] == m2["layers"][0]["digest"]


def test_layout_serves_offline_sync_for_wheels_sdist_and_git(make_project, index, tmp_path, git_repo):
    deps = ["heavy", "small-b", "sdist-only", "native", "gitpkg"]
    sources = {"gitpkg": f'{{ git = "file://{git_repo}", tag = "v0.3.0" }}'}
    lock = make_project(tmp_path / "project", deps, sources=sources)
    layout = tmp_path / "layout"
    result = ocicache("push", lock, f"oci:{layout}:main", "--python-platform", "x86_64-manylinux_2_36",
                      "--python", "3.11", "--json").json()
    assert [{k: v for k, v in t.items() if k != "manifest_digest"} for t in result["targets"]] == [
        {"platform": "linux/amd64", "python": "3.11.0", "python_platform": "x86_64-manylinux_2_36"}]
    assert result["targets"][0]["manifest_digest"] == result["manifest_digest"]

    skopeo = require_tool("skopeo")
    inspected = json.loads(subprocess.run([skopeo, "inspect", f"oci:{layout}:main"], capture_output=True,
                                          text=True, check=True).stdout)
    assert inspected["Digest"] == result["manifest_digest"]
    assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"
    assert len(inspected["Layers"]) == len(result["layers"])

    cache = unpack_layout(layout, "main", tmp_path / "bundle")
    assert (cache / "CACHEDIR.TAG").is_file()
    downloads_before = sum(index.downloads.values())
    sync = offline_sync(lock, cache, tmp_path / "consumer")
    assert sync.returncode == 0, sync.stderr
    for name in ("heavy", "small-a", "small-b", "sdist-only", "native", "gitpkg"):
        assert f"+ {name}==" in sync.stderr, sync.stderr
    assert sum(index.downloads.values()) == downloads_before
    site = next((tmp_path / "consumer" / ".venv" / "lib").glob("python3.*/site-packages"))
    assert (site / "sdist_only" / "__init__.py").is_file()
    assert (site / "gitpkg" / "__init__.py").is_file()
    # the manylinux_2_34 wheel: what a glibc 2.36 consumer prefers
    assert any("manylinux_2_34" in p.name for p in site.glob("native-1.0.dist-info/WHEEL")) or \
        "manylinux_2_34" in (site / "native-1.0.dist-info" / "WHEEL").read_text()


def test_the_cache_of_an_empty_cache_misses_offline(make_project, tmp_path):
    """Guard for the test above: the consumer check does fail without the cache image."""
    lock = make_project(tmp_path / "project", ["small-a"])
    sync = offline_sync(lock, tmp_path / "empty-cache", tmp_path / "consumer")
    assert sync.returncode != 0


def test_unchanged_lock_pushed_again_reuses_every_layer(make_project, index, tmp_path):
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "small-c", "native"])
    dest = f"oci:{tmp_path / 'layout'}:v1"
    first = ocicache("push", lock, dest, "--json").json()
    before = dict(index.downloads)
    again = ocicache("push", lock, dest, "--json").json()
    assert again["manifest_digest"] == first["manifest_digest"]
    assert again["packages_populated"] == 0 and again["layers_built"] == 0
    assert again["blobs_uploaded"] == 0 and again["blobs_present"] == len(again["layers"])
    assert dict(index.downloads) == before


def test_changing_one_small_package_rebuilds_only_its_bucket(make_project, index, tmp_path):
    index.add_wheel("small-c", "3.1")
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "small-c==3.0"])
    dest = f"oci:{tmp_path / 'layout'}:v1"
    first = ocicache("push", lock, dest, "--json").json()
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "small-c==3.1"])
    second = ocicache("push", lock, dest, "--json").json()
    changed = [r for r in second["layers"] if not r["reused"]]
    assert [r["packages"] for r in changed] == [["small-c"]]
    assert second["packages_populated"] == 1
    assert len(second["layers"]) == len(first["layers"])


def test_several_tags_in_one_layout_each_readable_by_skopeo_and_umoci(make_project, tmp_path):
    lock_1 = make_project(tmp_path / "one", ["small-a"])
    lock_2 = make_project(tmp_path / "two", ["small-c"])
    layout = tmp_path / "layout"
    ocicache("push", lock_1, f"oci:{layout}:one")
    ocicache("push", lock_2, f"oci:{layout}:two")
    index = json.loads((layout / "index.json").read_text())
    tags = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert tags == ["one", "two"]
    skopeo = require_tool("skopeo")
    for tag in tags:
        subprocess.run([skopeo, "inspect", f"oci:{layout}:{tag}"], check=True, capture_output=True)
        rootfs = unpack_layout(layout, tag, tmp_path / f"bundle-{tag}")
        assert any((rootfs / "wheels-v8").rglob("*.http"))


def test_zstd_layers(make_project, tmp_path):
    import hashlib
    import io
    import tarfile

    import zstandard

    lock = make_project(tmp_path / "project", ["small-a", "heavy"])
    layout = tmp_path / "layout"
    ocicache("push", lock, f"oci:{layout}:z", "--compression", "zstd")
    manifest = _manifest(layout, "z")
    config = _config(layout, manifest)
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        blob = (layout / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        data = zstandard.ZstdDecompressor().decompressobj().decompress(blob)

        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tf.getmembers())
    skopeo = require_tool("skopeo")
    subprocess.run([skopeo, "inspect", f"oci:{layout}:z"], check=True, capture_output=True)


def test_uncompressed_layers_are_their_own_diff_ids_and_pull_back(make_project, tmp_path):
    """`--compression none`: each blob is the tar itself, so its digest is its diff_id; pull reads it."""
    lock = make_project(tmp_path / "project", ["small-a", "heavy"])
    layout = tmp_path / "layout"
    ocicache("push", lock, f"oci:{layout}:t", "--compression", "none")
    manifest = _manifest(layout, "t")
    config = _config(layout, manifest)
    digests = [layer["digest"] for layer in manifest["layers"]]
    assert digests == config["rootfs"]["diff_ids"]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}
    gzip_layout = tmp_path / "gzip"
    ocicache("push", lock, f"oci:{gzip_layout}:g")
    # the same tars, only not compressed
    assert _config(gzip_layout, _manifest(gzip_layout, "g"))["rootfs"]["diff_ids"] == digests
    cache = tmp_path / "cache"
    ocicache("pull", f"oci:{layout}:t", str(cache))
    assert any((cache / "wheels-v8").rglob("*.http"))
    skopeo = require_tool("skopeo")
    subprocess.run([skopeo, "inspect", f"oci:{layout}:t"], check=True, capture_output=True)


def test_inspect_table_and_json(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["heavy", "small-b"])
    layout = tmp_path / "layout"
    pushed = ocicache("push", lock, f"oci:{layout}:v1", "--json").json()
    info = ocicache("inspect", f"oci:{layout}:v1", "--json").json()
    assert info["manifest_digest"] == pushed["manifest_digest"]
    assert info["uv_version"] == "0.13.9"
    assert info["target"]["python_platform"].endswith("manylinux_2_36")
    names = sorted(p["name"] for layer in info["layers"] for p in layer["packages"])
    assert names == ["heavy", "small-a", "small-b"]
    heavy = [layer for layer in info["layers"] if layer["kind"] == "package"]
    assert heavy and heavy[0]["packages"][0]["artifact"] == "heavy-1.0-py3-none-any.whl"
    assert heavy[0]["packages"][0]["hash"].startswith("sha256:")
    table = ocicache("inspect", f"oci:{layout}:v1").stdout
    assert "heavy 1.0" in table and pushed["manifest_digest"] in table and "0.13.9" in table


def test_every_extra_and_group_by_default_and_narrowing(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["small-a"], extras={"fast": ["heavy"]},
                        groups={"dev": ["small-c"], "docs": ["small-b"]})
    layout = tmp_path / "layout"

    def packages(*args: str) -> list[str]:
        result = ocicache("push", lock, f"oci:{layout}:t", "--json", *args).json()
        return sorted(p for layer in result["layers"] for p in layer["packages"])

    assert packages() == ["heavy", "small-a", "small-b", "small-c"]
    assert packages("--no-dev") == ["heavy", "small-a", "small-b"]
    # as with `uv sync --group docs`, the default group (dev) stays in unless --no-dev
    assert packages("--group", "docs") == ["heavy", "small-a", "small-b", "small-c"]
    assert packages("--group", "docs", "--no-dev") == ["heavy", "small-a", "small-b"]
    assert packages("--extra", "fast", "--group", "dev") == ["heavy", "small-a", "small-c"]


def test_several_targets_make_an_index_sharing_pure_layers(make_project, index, tmp_path):
    lock = make_project(tmp_path / "project", ["heavy", "native", "small-a"])
    layout = tmp_path / "layout"
    args = ("--python", "3.11", "--python-platform", "x86_64-manylinux_2_36",
            "--python-platform", "aarch64-manylinux_2_36", "--json")
    first = ocicache("push", lock, f"oci:{layout}:multi", *args).json()
    assert [t["platform"] for t in first["targets"]] == ["linux/amd64", "linux/arm64/v8"]
    by_platform = {}
    for row in first["layers"]:
        by_platform.setdefault(row["platform"], {})[tuple(row["packages"])] = row["digest"]
    amd, arm = by_platform["linux/amd64"], by_platform["linux/arm64/v8"]
    assert amd[("heavy",)] == arm[("heavy",)]  # the pure wheel: one layer for both platforms
    native_amd = next(d for p, d in amd.items() if "native" in p)
    native_arm = next(d for p, d in arm.items() if "native" in p)
    assert native_amd != native_arm
    assert index.downloads["heavy-1.0-py3-none-any.whl"] >= 1

    skopeo = require_tool("skopeo")
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", f"oci:{layout}:multi"], capture_output=True,
                                    text=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json" and len(raw["manifests"]) == 2
    for arch in ("amd64", "arm64"):
        inspected = json.loads(subprocess.run([skopeo, "--override-arch", arch, "inspect", f"oci:{layout}:multi"],
                                              capture_output=True, text=True, check=True).stdout)
        assert inspected["Architecture"] == arch

    info = ocicache("inspect", f"oci:{layout}:multi", "--platform", "linux/arm64", "--json").json()
    assert info["platforms"] == ["linux/amd64", "linux/arm64/v8"] and info["platform"] == "linux/arm64/v8"
    pulled = tmp_path / "arm-cache"
    ocicache("pull", f"oci:{layout}:multi", pulled, "--platform", "linux/arm64")
    assert list(pulled.glob("wheels-v8/*/*/native/1.0-cp311-cp311-manylinux_2_17_aarch64.http"))

    before = dict(index.downloads)
    again = ocicache("push", lock, f"oci:{layout}:multi", *args).json()
    assert again["manifest_digest"] == first["manifest_digest"] and again["packages_populated"] == 0
    assert dict(index.downloads) == before


def test_layers_packed_while_uv_fills_the_cache_are_the_layers_packed_after(make_project, tmp_path):
    """Big wheels are packed as soon as uv has cached them (issue 8): the image must not change.
    uv is made to look slow (polls keep coming after it has cached everything), so the early packer
    certainly runs; a --jobs 1 push (no early packing) gives the reference digest. --uv-unpacks-all:
    the early packer packs what uv fills, and by default uv fills one wheel per index only."""
    lock = make_project(tmp_path / "project", ["heavy", "numpy", "small-b", "sdist-only"])
    reference = ocicache("push", lock, f"oci:{tmp_path / 'ref'}:v1", "--jobs", "1", "--json").json()
    assert reference["packages_unpacked"] > 0  # the default fill: this digest is also the cross-check
    assert reference["layers_packed_early"] == 0
    driver = (
        "import sys, time\n"
        "import ocicache.push as push_module\n"
        "from ocicache.cli import main\n"
        "real = push_module.populate_cache\n"
        "def slow_uv(uv, pylock, target, cache, work, while_running=None, *rest):\n"
        "    real(uv, pylock, target, cache, work, None, *rest)\n"
        "    for _ in range(100):\n"
        "        if while_running is not None:\n"
        "            while_running()\n"
        "        time.sleep(0.02)\n"
        "push_module.populate_cache = slow_uv\n"

        "sys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([os.sys.executable, "-c", driver, "push", str(lock), f"oci:{tmp_path / 'early'}:v1",
                          "--json", "--uv-unpacks-all"], capture_output=True, text=True, env=hermetic_env(),
                         timeout=300)
    assert run.returncode == 0, run.stderr
    early = json.loads(run.stdout)
    assert early["layers_packed_early"] == 2  # heavy and numpy, the solo layers; the rest after uv
    assert early["packages_unpacked"] == 0
    assert early["manifest_digest"] == reference["manifest_digest"]
