"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing half written."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import hermetic_env, ocicache
from tests.support.pkgindex import PackageIndex


def _assert_one_line_error(run, *fragments: str) -> None:
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("ocicache: error: "), run.stderr
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _no_partial(parent: Path) -> None:
    leftovers = [p.name for p in parent.iterdir() if "ocicache-partial" in p.name]
    assert leftovers == []


def test_missing_lock(tmp_path):
    run = ocicache("push", tmp_path / "nope.lock", f"oci:{tmp_path / 'out'}", check=False)
    _assert_one_line_error(run, "no such file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,fragment", [
    (b"\x00\x01 not toml at all [[[", "not valid TOML"),
    (b'[tool.poetry]\nname = "x"\n', "not a uv.lock"),
    (b'version = 7\n[[package]]\nname = "a"\n', "unsupported uv.lock version 7"),
    (b'version = 1\n[[package]]\nname = "a"\nversion = "1"\nsource = { ftp = "x" }\n', "package[0] (a).source"),
    (b'version = 1\n[[package]]\nversion = "1"\n', "package[0]: 'name' must be a string"),
])
def test_not_a_lock(tmp_path, content, fragment):
    lock = tmp_path / "uv.lock"
    lock.write_bytes(content)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", check=False)
    _assert_one_line_error(run, fragment)
    assert not (tmp_path / "out").exists()
    _no_partial(tmp_path)


def test_unknown_uv_version_is_refused_naming_the_supported_ones(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["small-a"])
    fake = tmp_path / "uv"
    fake.write_text("#!/bin/sh\necho 'uv 0.14.0 (x86_64-unknown-linux-gnu)'\n")
    fake.chmod(0o755)
    run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--uv", fake, check=False)
    _assert_one_line_error(run, "uv 0.14.0 is newer than", "0.9.0 to 0.13.9")
    assert not (tmp_path / "out").exists()
    for bad, fragment in (("0.8.24", "uv 0.8.24 is outside"), ("latest", "not a uv version"),
                          ("0.14.1", "upgrade ocicache")):
        run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--uv-version", bad, check=False)
        _assert_one_line_error(run, fragment, "0.9.0 to 0.13.9")
        assert not (tmp_path / "out").exists()
        run = ocicache("check", f"oci:{tmp_path / 'out'}", lock, "--uv-version", bad, check=False)
        _assert_one_line_error(run, fragment)


def test_package_without_wheel_for_target_or_sdist(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["armonly", "small-a"])
    run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--platform", "linux/amd64", check=False)
    _assert_one_line_error(run, "armonly", "linux/amd64")
    assert not (tmp_path / "out").exists()
    _no_partial(tmp_path)
    # the same lock works for the platform that has the wheel
    ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--platform", "linux/arm64")
    config = json.loads(ocicache("inspect", f"oci:{tmp_path / 'out'}", "--json").stdout)
    assert config["platform"] == "linux/arm64/v8"


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory even root cannot write in (chattr +i)."""
    path = tmp_path / "readonly"
    path.mkdir()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_destination(make_project, tmp_path, immutable_dir, index):
    lock = make_project(tmp_path / "project", ["heavy"])
    before = dict(index.downloads)
    run = ocicache("push", lock, f"oci:{immutable_dir / 'layout'}:v1", check=False)
    _assert_one_line_error(run, "permission denied")
    assert list(immutable_dir.iterdir()) == []
    assert dict(index.downloads) == before  # refused before downloading anything

    file_parent = tmp_path / "a-file"
    file_parent.write_text("x")
    run = ocicache("push", lock, f"oci:{file_parent / 'layout'}:v1", check=False)
    _assert_one_line_error(run)


def test_a_failed_push_leaves_an_existing_layout_untouched(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["small-a"])
    layout = tmp_path / "layout"
    ocicache("push", lock, f"oci:{layout}:v1")
    index_before = (layout / "index.json").read_bytes()
    blobs_before = sorted(os.listdir(layout / "blobs" / "sha256"))

    # A second project whose index goes away before the push: uv fails mid-populate.
    gone = PackageIndex(tmp_path / "gone-index")
    gone.add_wheel("vanishing", "1.0")
    gone.serve()
    from tests.conftest import ProjectFactory

    lock_2 = ProjectFactory(gone, tmp_path / "lock-cache")(tmp_path / "project-2", ["vanishing"])
    gone.close()
    no_retries = hermetic_env(UV_HTTP_RETRIES="0")  # uv's retries of a dead index only cost time here
    run = ocicache("push", lock_2, f"oci:{layout}:v2", check=False, env=no_retries)
    _assert_one_line_error(run, "uv pip install")
    assert (layout / "index.json").read_bytes() == index_before
    assert sorted(os.listdir(layout / "blobs" / "sha256")) == blobs_before
    assert [p.name for p in layout.iterdir() if p.name.startswith(".")] == []

    # and a new layout is not created at all
    run = ocicache("push", lock_2, f"oci:{tmp_path / 'new'}:v1", check=False, env=no_retries)
    assert run.returncode != 0 and not (tmp_path / "new").exists()
    _no_partial(tmp_path)


@pytest.mark.parametrize("args,fragment", [
    (["--platform", "windows/amd64"], "--platform"),
    (["--python-platform", "x86_64-manylinux_2_99"], "--python-platform"),
    (["--python", "2.7"], "--python"),
    (["--platform", "linux/arm64", "--python-platform", "x86_64-manylinux_2_36"], "does not match"),
])
def test_bad_target_options(make_project, tmp_path, args, fragment):
    lock = make_project(tmp_path / "project", ["small-a"])
    run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", *args, check=False)
    _assert_one_line_error(run, fragment)
    assert run.returncode == 2


def test_bad_destination_and_not_a_layout(make_project, tmp_path):
    lock = make_project(tmp_path / "project", ["small-a"])
    run = ocicache("push", lock, "just-a-name", check=False)
    _assert_one_line_error(run, "oci:DIR")
    not_layout = tmp_path / "stuff"
    not_layout.mkdir()
    (not_layout / "precious.txt").write_text("keep me")
    run = ocicache("push", lock, f"oci:{not_layout}", check=False)
    _assert_one_line_error(run, "not an OCI image layout")
    assert [p.name for p in not_layout.iterdir()] == ["precious.txt"]
    run = ocicache("inspect", f"oci:{tmp_path / 'missing'}:v1", check=False)
    _assert_one_line_error(run, "not an OCI image layout")


def test_inspect_says_when_an_image_is_not_a_cache_image(tmp_path):
    """An ordinary image (a base image for --base) printed "read by uv None ... CPython None None"."""
    import gzip
    import io
    import tarfile

    from ocicache import oci
    from ocicache.assemble import Image
    from ocicache.dest import BlobOrigin, write_image
    from ocicache.dest.layout import open_layout_for_write
    from ocicache.oci import Descriptor, Digest, canonical_json

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, mtime=0)
    (tmp_path / "layer").write_bytes(blob)
    layer = Descriptor(media_type=oci.LAYER_GZIP_MEDIA_TYPE, digest=Digest.of(blob), size=len(blob))
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(tar_bytes))]}})
    config_desc = Descriptor(media_type=oci.CONFIG_MEDIA_TYPE, digest=Digest.of(config), size=len(config))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE,
                               "config": config_desc.to_json(), "layers": [layer.to_json()]})
    image = Image(config=config, config_descriptor=config_desc, manifest=manifest, layers=(layer,),
                  manifest_descriptor=Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest),
                                                 size=len(manifest)))
    with open_layout_for_write(tmp_path / "base") as layout:
        write_image(layout, image, [(layer, BlobOrigin(path=tmp_path / "layer"))], "v1")
    text = ocicache("inspect", f"oci:{tmp_path / 'base'}:v1").stdout
    assert "None" not in text and "not a cache image written by ocicache" in text and "linux/amd64" in text
    assert "cache scaffold" not in text
    assert ocicache("inspect", f"oci:{tmp_path / 'base'}:v1", "--json").json()["ocicache_image"] is False
