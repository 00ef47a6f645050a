"""Wheels ocicache downloads and packs straight from the `.whl` (fill.py, uvcache/unzip.py): the
layers must be the bytes uv's own fill gives, the consumer's real uv must install from them offline,
and whatever ocicache cannot do as uv does goes to uv."""

from __future__ import annotations

import io
import json
import os
import random
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicache.fetch import Download, fetch_all
from ocicache.tree import read_chunks
from ocicache.uvcache.digest import cache_digest, wheel_cache_key
from ocicache.uvcache.unzip import NotPlainWheelError, wheel_archive_entries
from tests.conftest import hermetic_env, ocicache, offline_sync, unpack_layout, uv_bin
from tests.support.pkgindex import ODD_TAG, odd_wheel_bytes

DEPS = ["odd", "heavy", "numpy", "small-b"]  # small-a comes with small-b: five wheels, one index


def _push(lock: Path, dest: Path, *extra: str, driver: str | None = None) -> tuple[dict, str]:
    """`ocicache push --json`, optionally through a driver that patches ocicache first."""
    args = ["push", str(lock), f"oci:{dest}:v1", "--json", "--progress", "always", *extra]
    if driver is None:
        run = ocicache(*args)
        return run.json(), run.stderr
    code = driver + "\nfrom ocicache.cli import main\nimport sys\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([os.sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=hermetic_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def reference(make_project, tmp_path_factory) -> tuple[Path, dict]:
    """The lock, and its image filled by uv alone."""
    tmp = tmp_path_factory.mktemp("unpack")
    lock = make_project(tmp / "project", DEPS)
    result, _ = _push(lock, tmp / "by-uv", "--uv-unpacks-all")
    assert result["packages_unpacked"] == 0 and result["packages_populated"] == 5
    return lock, result


def test_unpacked_wheels_are_the_layers_uv_fills_and_install_offline(reference, tmp_path, index):
    lock, by_uv = reference
    ours, log = _push(lock, tmp_path / "ours")
    assert ours["packages_unpacked"] == 4  # every wheel but the index's probe, which uv fills too
    assert ours["manifest_digest"] == by_uv["manifest_digest"]  # byte for byte, annotations included
    assert "downloading 5 wheels" in log

    cache = unpack_layout(tmp_path / "ours", "v1", tmp_path / "cache")
    # uv keys the odd wheel by a digest of its tags, and the index by a digest of its URL
    (pointer,) = cache.glob(f"wheels-v8/index/*/odd/1.0-{cache_digest(ODD_TAG)}.http")
    assert pointer.parent.parent.name == cache_digest(index.url.rstrip("/"))
    sync = offline_sync(lock, cache, tmp_path / "consumer")
    assert sync.returncode == 0, sync.stderr
    (site,) = (tmp_path / "consumer").glob(".venv/lib/python3*/site-packages")
    assert os.stat(site / "odd" / "tool.sh").st_mode & stat.S_IXUSR
    _, data = odd_wheel_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert (site / "odd" / "data" / "blob.bin").read_bytes() == zf.read("odd/data/blob.bin")
    assert (site / "odd" / "\u00fcn\u00ef.py").read_text() == "X = 1\n"


def test_a_probe_uv_disagrees_with_leaves_the_index_to_uv(reference, tmp_path):
    """If ocicache's tree of the probe wheel is not uv's, no wheel of that index is unpacked by ocicache."""
    lock, by_uv = reference
    driver = (
        "import dataclasses, ocicache.fill as fill\n"
        "real = fill.unpacked_wheel_tree\n"
        "def skewed(*args, **kwargs):\n"
        "    tree = real(*args, **kwargs)\n"
        "    entries = [dataclasses.replace(e, executable=not e.executable) if e.kind == 'file' else e\n"
        "               for e in tree.entries]\n"
        "    return dataclasses.replace(tree, entries=tuple(entries))\n"
        "fill.unpacked_wheel_tree = skewed\n")
    result, log = _push(lock, tmp_path / "skewed", driver=driver)
    assert result["packages_unpacked"] == 0 and result["packages_populated"] == 5
    assert result["manifest_digest"] == by_uv["manifest_digest"]
    assert "uv unpacks the wheels of" in log and "differs" in log


def test_a_wheel_that_fails_to_download_goes_to_uv(reference, tmp_path):
    lock, by_uv = reference
    driver = (
        "import httpx, ocicache.fetch as fetch\n"
        "real = fetch._stream\n"
        "def flaky(client, url, *rest):\n"
        "    if 'numpy' in url:\n"
        "        raise httpx.ConnectError('refused')\n"
        "    return real(client, url, *rest)\n"
        "fetch._stream = flaky\n")
    result, _ = _push(lock, tmp_path / "flaky", driver=driver)
    assert result["packages_unpacked"] == 3  # numpy went to uv
    assert result["manifest_digest"] == by_uv["manifest_digest"]


def test_fetch_checks_the_lock_hash_and_keeps_nothing_it_refuses(index, tmp_path):
    filename, data = odd_wheel_bytes()
    import hashlib

    good = hashlib.sha256(data).hexdigest()
    url = f"{index.url.rstrip('/').rsplit('/', 1)[0]}/files/{filename}"
    out = fetch_all([Download(url, good, len(data), tmp_path / "good.whl"),
                     Download(url, "0" * 64, len(data), tmp_path / "bad.whl"),
                     Download(url + "-missing", "1" * 64, None, tmp_path / "missing.whl")])
    assert out[good] is None and (tmp_path / "good.whl").read_bytes() == data
    assert "sha256" in (out["0" * 64] or "") and out["1" * 64] == "HTTP 404"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.whl"]


# --- the zip reader -------------------------------------------------------------------------------

def test_uv_cache_digests_match_uvs_own_test_vectors():
    # uv-distribution-filename's `cache_key` test
    assert wheel_cache_key("django_allauth-0.51.0-py3-none-any.whl") == "0.51.0-py3-none-any"
    assert (wheel_cache_key("numpy-1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
            == "1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    assert (wheel_cache_key("numpy-1.26.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.musllinux_1_2.whl")
            == "1.26.2-5a2adc379b2dc214")
    assert wheel_cache_key("example-" + "1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0.1.2.1.2.3.4.5.6.7.8.9.0.1.1.2"
                           "-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl") == \
        "1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0.1.2.1.2-80bf8598e9647cf7"
    assert wheel_cache_key("weird-1.0.0.RC1-py3-none-any.whl") is None  # not normalised: left to uv


def _zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode, method in members:
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


_names = st.lists(st.text("abcxyz_\u00e9", min_size=1, max_size=4), min_size=1, max_size=3).map("/".join)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_names, st.tuples(st.binary(max_size=3000), st.sampled_from([0o644, 0o755, 0o600, 0]),
                                         st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
                       min_size=1, max_size=8))
def test_zip_members_read_as_zipfile_extracts_them(tmp_path_factory, members):
    names = set(members)
    if any(n.startswith(m + "/") for n in names for m in names):
        return  # a file that is also a directory: refused, tested below
    wheel = tmp_path_factory.mktemp("zip") / "w.whl"
    wheel.write_bytes(_zip([(n, d, mode, method) for n, (d, mode, method) in members.items()]))
    entries = wheel_archive_entries(wheel, "root")
    files = {e.path[len("root/"):]: e for e in entries if e.kind == "file"}
    assert files.keys() == names
    for name, (data, mode, _method) in members.items():
        assert b"".join(read_chunks(files[name])) == data
        assert files[name].executable == bool(mode & 0o111)
    dirs = {e.path for e in entries if e.kind == "dir"}
    assert dirs == {"root"} | {"root/" + "/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    assert [e.path for e in entries] == sorted(e.path for e in entries)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_corrupt_member_fails_its_crc_or_does_not_inflate(tmp_path, method):
    content = random.Random(3).randbytes(20000)
    data = bytearray(_zip([("a.py", content, 0o644, method)]))
    start = data.index(b"a.py") + len("a.py")  # the local header's name, then the member's data
    for i in range(start + 100, start + 140):
        data[i] ^= 0x5A
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(bytes(data))
    (entry,) = [e for e in wheel_archive_entries(wheel, "r") if e.kind == "file"]
    with pytest.raises(OSError, match=r"r/a\.py: .*(CRC-32|does not inflate)"):
        b"".join(read_chunks(entry))


@pytest.mark.parametrize("members, why", [
    ([("a.py", b"1", 0o644, 8), ("a.py", b"2", 0o644, 8)], "twice"),
    ([("../a.py", b"1", 0o644, 8)], "sanitise"),
    ([("/a.py", b"1", 0o644, 8)], "sanitise"),
    ([("a\\b.py", b"1", 0o644, 8)], "sanitise"),
    ([("a/./b.py", b"1", 0o644, 8)], "sanitise"),
    ([("link", b"target", 0o120777, 8)], "regular"),
    ([("a", b"1", 0o644, 8), ("a/b", b"2", 0o644, 8)], "both a file and a directory"),
    ([("a.py", b"1", 0o644, zipfile.ZIP_BZIP2)], "method"),
])
def test_zips_uv_would_treat_otherwise_are_left_to_uv(tmp_path, members, why):
    import warnings

    wheel = tmp_path / "w.whl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wheel.write_bytes(_zip(members))
    with pytest.raises(NotPlainWheelError, match=why):
        wheel_archive_entries(wheel, "r")
    (tmp_path / "junk.whl").write_bytes(b"PK not a zip")
    with pytest.raises(NotPlainWheelError):
        wheel_archive_entries(tmp_path / "junk.whl", "r")


def test_wheels_packed_as_they_download_are_the_layers_packed_after(reference, tmp_path):
    """A slow network: the big wheels are packed while the others still download (the early
    packer); the image must be the one a push that packs everything at the end writes."""
    lock, by_uv = reference
    driver = (
        "import time, ocicache.fetch as fetch\n"
        "real = fetch._stream\n"
        "def slow(*args):\n"
        "    time.sleep(0.4)\n"
        "    return real(*args)\n"
        "fetch._stream = slow\n")
    result, _ = _push(lock, tmp_path / "slow", "--jobs", "2", driver=driver)
    assert result["layers_packed_early"] >= 1 and result["packages_unpacked"] == 4
    assert result["manifest_digest"] == by_uv["manifest_digest"]


def test_a_corrupt_wheel_is_one_clear_error_and_no_image(make_project, tmp_path):
    """A damaged zip the index serves and the lock pins: uv refuses to install it, so must the push
    (ocicache finds it while packing, having unpacked it itself)."""
    lock = make_project(tmp_path / "project", ["corrupt", "certifi"])  # certifi is the probe (no sizes: by name)
    run = ocicache("push", lock, f"oci:{tmp_path / 'layout'}:v1", check=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("ocicache: error: cannot pack the layer of corrupt") and "CRC-32" in line
    assert not (tmp_path / "layout").exists()
    # and uv, installing it from the index, refuses it too: the error is not ocicache's own
    uv = subprocess.run([uv_bin(), "sync", "--frozen", "--no-install-project", "--python", os.sys.executable],
                        cwd=lock.parent, capture_output=True, text=True, timeout=300,
                        env=hermetic_env(UV_CACHE_DIR=str(tmp_path / "uv-cache")))
    assert uv.returncode != 0 and "corrupt" in uv.stderr.lower()


def test_a_failing_uv_does_not_wait_for_the_downloads(reference, tmp_path):
    """uv fails (here: made to) while wheels are still downloading: the push ends with uv's error at
    once, not after the downloads, which would take 30 s here."""
    lock, _ = reference
    driver = (
        "import time, ocicache.fetch as fetch, ocicache.push as push\n"
        "from ocicache.errors import PopulateError\n"
        "real = fetch._stream\n"
        "def stalled(client, url, part, stop, *rest):\n"
        "    stop.wait(30)\n"
        "    return real(client, url, part, stop, *rest)\n"
        "fetch._stream = stalled\n"
        "def failing(*args, **kwargs):\n"
        "    raise PopulateError('uv pip install (filling the cache) failed: made to')\n"
        "push.populate_cache = failing\n"
        "from ocicache.cli import main\nimport sys\nsys.exit(main(sys.argv[1:]))\n")
    started = time.monotonic()
    proc = subprocess.run([os.sys.executable, "-c", driver, "push", str(lock), f"oci:{tmp_path / 'x'}:v1"],
                          capture_output=True, text=True, env=hermetic_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == \
        "ocicache: error: uv pip install (filling the cache) failed: made to"
    assert time.monotonic() - started < 15
    assert not (tmp_path / "x").exists()


def test_an_index_that_redirects_to_its_files(lock_cache, tmp_path_factory):
    """Indexes that keep their files elsewhere answer with a redirect: ocicache follows it (it sends
    no credentials to follow), and the image is still uv's."""
    from tests.conftest import ProjectFactory
    from tests.support.pkgindex import PackageIndex

    tmp = tmp_path_factory.mktemp("moved")
    moved = PackageIndex(tmp / "index", redirect_files=True)
    moved.add(*odd_wheel_bytes())
    moved.add_wheel("small-a", "1.0")
    moved.add_wheel("small-b", "2.0", deps=["small-a"])
    moved.serve()
    try:
        lock = ProjectFactory(moved, lock_cache)(tmp / "project", ["odd", "small-b"])
        assert "/moved/" in lock.read_text()
        by_uv, _ = _push(lock, tmp / "by-uv", "--uv-unpacks-all")
        ours, _ = _push(lock, tmp / "ours")
    finally:
        moved.close()
    assert ours["packages_unpacked"] == 2 and ours["manifest_digest"] == by_uv["manifest_digest"]
