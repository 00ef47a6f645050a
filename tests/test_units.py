"""Pure stages with plain values: lock records, targets, plans, tars, uv pointers, layouts."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ocicache
from ocicache.compress import get_codec
from ocicache.dest.layout import Layout, open_layout_for_write
from ocicache.errors import CacheFormatError, LayoutError, LockError, UsageError
from ocicache.lock import read_lock
from ocicache.normalise import base_tree
from ocicache.oci import Descriptor, Digest
from ocicache.pack import pack_layer, write_tar
from ocicache.plan import MAX_LAYERS_CAP, plan_layers
from ocicache.target import make_target
from ocicache.tree import Entry, PackageRef, PackageTree
from ocicache.uvcache import Pointer, PointerError, family_for_uv, format_set, rkyv07, rkyv08

LOCK_ALL_SOURCES = """
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "App"
version = "0.1.0"
source = { virtual = "." }

[[package]]
name = "member"
version = "0.2.0"
source = { editable = "packages/member" }

[[package]]
name = "localdir"
version = "1.0"
source = { directory = "../localdir" }

[[package]]
name = "localfile"
version = "1.0"
source = { path = "dist/localfile-1.0-py3-none-any.whl" }
wheels = [{ filename = "localfile-1.0-py3-none-any.whl", hash = "sha256:aa" }]

[[package]]
name = "fromgit"
version = "0.3.0"
source = { git = "https://git.example/repo?tag=v0.3.0#9fadc1043d64367ea7e00cf14043893a0a37e970" }

[[package]]
name = "direct"
version = "2.0"
source = { url = "https://files.example/direct-2.0.tar.gz" }
sdist = { hash = "sha256:bb" }

[[package]]
name = "numpy"
version = "2.3.0"
source = { registry = "https://index.example/simple" }
sdist = { url = "https://files.example/numpy-2.3.0.tar.gz", hash = "sha256:cc", size = 10 }
wheels = [
    { url = "https://files.example/numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl", hash = "sha256:dd", size = 5 },
]
"""


def test_lock_reads_every_source_kind(tmp_path):
    path = tmp_path / "uv.lock"
    path.write_text(LOCK_ALL_SOURCES)
    lock = read_lock(path)
    kinds = {p.name: p.source.kind for p in lock.packages}
    assert kinds == {"app": "virtual", "member": "editable", "localdir": "directory", "localfile": "path",
                     "fromgit": "git", "direct": "url", "numpy": "registry"}
    git = lock.find("fromgit", None)
    assert git is not None and git.source.git_commit == "9fadc1043d64367ea7e00cf14043893a0a37e970"
    numpy = lock.find("NumPy", "2.3.0")
    assert numpy is not None and numpy.sdist is not None and numpy.sdist.sha256 == "cc"
    assert numpy.wheels[0].filename == "numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert str(lock.requires_python) == ">=3.11"
    assert {p.name for p in lock.packages if p.is_local} == {"app", "member", "localdir", "localfile"}


def test_lock_errors_name_the_context_path(tmp_path):
    path = tmp_path / "uv.lock"
    path.write_text(LOCK_ALL_SOURCES.replace('hash = "sha256:dd"', "hash = 5"))
    with pytest.raises(LockError, match=r"package\[6\] \(numpy\)\.wheels\[0\]\.hash"):
        read_lock(path)
    path.write_text(LOCK_ALL_SOURCES.replace('version = "2.0"', 'version = "not a version!"'))
    with pytest.raises(LockError, match=r"package\[5\] \(direct\)\.version"):
        read_lock(path)


def test_target_tags_prefer_the_highest_compatible_manylinux():
    target = make_target(platform="linux/amd64", python="3.11", python_platform="x86_64-manylinux_2_36")
    tags = [str(t) for t in target.tags()]
    assert tags.index("cp311-cp311-manylinux_2_34_x86_64") < tags.index("cp311-cp311-manylinux_2_17_x86_64")
    assert "cp311-cp311-manylinux_2_37_x86_64" not in tags
    assert "py3-none-any" in tags and "cp312-cp312-manylinux_2_17_x86_64" not in tags
    assert target.environment()["platform_machine"] == "x86_64"
    assert target.oci_config_platform() == {"os": "linux", "architecture": "amd64"}


def test_target_defaults_and_derivations():
    from packaging.specifiers import SpecifierSet

    t = make_target(platform=None, python=None, python_platform="aarch64-manylinux_2_28",
                    requires_python=SpecifierSet(">=3.12"))
    assert t.oci_platform == "linux/arm64/v8" and t.python_minor == "3.12"
    assert t.python_platform == "aarch64-manylinux_2_28"
    musl = make_target(platform="linux/amd64", python="3.13", python_platform="x86_64-unknown-linux-musl")
    assert musl.platform_tags()[0] == "musllinux_1_2_x86_64"
    with pytest.raises(UsageError):
        make_target(platform=None, python="3.10", python_platform=None, requires_python=SpecifierSet(">=3.11"))


def _tree(name: str, size: int) -> PackageTree:
    ref = PackageRef(name=name, version="1", artifact=f"{name}.whl", hash="sha256:00", key=f"k-{name}")
    return PackageTree(package=ref, known_size=size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.integers(0, 5 << 20)),
                min_size=0, max_size=400, unique_by=lambda t: t[0]),
       st.integers(2, MAX_LAYERS_CAP), st.randoms(use_true_random=False))
def test_plan_holds_the_budget_and_ignores_input_order(items, max_layers, rnd):
    base = base_tree(format_set(["0.13.9"]))
    trees = [_tree(n, s) for n, s in items]
    groups = plan_layers(base, trees, max_layers=max_layers)
    shuffled = trees[:]
    rnd.shuffle(shuffled)
    assert plan_layers(base, shuffled, max_layers=max_layers) == groups
    assert len(groups) <= max_layers
    placed = sorted(t.name for g in groups[1:] for t in g.trees)
    assert placed == sorted(n for n, _ in items)


def test_adding_a_small_package_changes_one_bucket():
    base = base_tree(format_set(["0.13.9"]))
    trees = [_tree(f"pkg{i:03d}", 1000 + i) for i in range(300)] + [_tree("bigone", 50 << 20)]
    before = plan_layers(base, trees)
    after = plan_layers(base, [*trees, _tree("newcomer", 10)])
    changed = [g for g in after if g not in before]
    assert len(changed) == 1 and "newcomer" in [t.name for t in changed[0].trees]
    assert [g.name for g in before if g.kind == "package"] == ["bigone"]


def _entries(tmp_path: Path, rnd: random.Random) -> list[Entry]:
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(20):
        f = src / f"f{i}"
        f.write_bytes(rnd.randbytes(rnd.randint(0, 5000)))
        entries.append(Entry(path=f"archive-v0/x/d{i % 3}/f{i}", kind="file", source=f,
                             size=f.stat().st_size, executable=i % 4 == 0))
    entries.append(Entry(path="wheels-v8/pypi/x/1.0-py3-none-any", kind="symlink", link="../../../archive-v0/x"))
    entries.append(Entry(path="wheels-v8/pypi/x/1.0-py3-none-any.http", kind="file", data=b"pointer", size=7))
    return entries


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 2**31))
def test_pack_is_deterministic_whatever_the_order_and_mtimes(tmp_path_factory, rnd, mtime):
    import os

    tmp_path = tmp_path_factory.mktemp("pack")
    entries = _entries(tmp_path, random.Random(7))
    codec = get_codec("gzip")
    first = pack_layer(entries, tmp_path / "a", codec)
    for e in entries:
        if e.source is not None:
            os.utime(e.source, (mtime, mtime))
            e.source.chmod(0o600 | (0o100 if e.executable else 0))
    rnd.shuffle(entries)
    second = pack_layer(entries, tmp_path / "b", codec)
    assert (first.digest, first.diff_id, first.size) == (second.digest, second.diff_id, second.size)
    blob = (tmp_path / "a").read_bytes()
    assert Digest.of(blob) == first.digest
    import gzip

    raw = gzip.decompress(blob)
    assert Digest.of(raw) == first.diff_id
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
        assert {m.mode for m in members if m.isfile()} <= {0o644, 0o755}
        assert all(m.mode == 0o755 for m in members if m.isdir())
        link = tf.getmember("wheels-v8/pypi/x/1.0-py3-none-any")
        assert link.issym() and link.linkname == "../../../archive-v0/x"
        for e in entries:
            if e.source is not None:
                assert tf.extractfile(e.path).read() == e.source.read_bytes()
                assert (tf.getmember(e.path).mode == 0o755) == e.executable
        assert "archive-v0/x/d0" in names and "archive-v0" in names  # parents included


def test_golden_base_layer_digest():
    """The scaffold tar matches the reference normalisation prototype byte for byte; change on purpose only."""
    buf = io.BytesIO()
    write_tar(base_tree(format_set(["0.13.9"])).entries, buf)
    assert hashlib.sha256(buf.getvalue()).hexdigest() == \
        "96bc48ad28787a90b383bde27b26b028a74b7c19e20e86d161845a5fdaa22d3f"


@pytest.mark.parametrize("source", ["file", "zip member"])
def test_pack_memory_does_not_grow_with_layer_size(tmp_path, source):
    """A 256 MiB layer packs within a few MiB of extra peak memory (streaming, bounded buffers),
    from a file or inflated from a wheel's zip member (zeros: 1 MiB of input inflates to ~1 GiB
    unbounded, so the inflater's output bound is what is tested)."""
    import subprocess
    import sys
    import zipfile

    big = tmp_path / "big.bin"
    if source == "file":
        with open(big, "wb") as f:
            for _ in range(256):
                f.write(random.Random(1).randbytes(1 << 20))
        entry = "[file_entry('archive-v0/x/big.bin', Path(sys.argv[1]))]"
    else:
        with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("big.bin", "w", force_zip64=True) as f:
            for _ in range(256):
                f.write(bytes(1 << 20))
        entry = "[e for e in wheel_archive_entries(Path(sys.argv[1]), 'archive-v0/x') if e.kind == 'file']"
    script = (
        "import resource, sys; from pathlib import Path\n"
        "from ocicache.compress import get_codec; from ocicache.pack import pack_layer; "
        "from ocicache.tree import file_entry; from ocicache.uvcache.unzip import wheel_archive_entries\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"packed = pack_layer({entry}, Path(sys.argv[2]), get_codec('gzip'))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, packed.uncompressed_size)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(big), str(tmp_path / "out")], capture_output=True,
                         text=True, check=True)
    grown_kib, size = map(int, out.stdout.split())
    assert size > 256 << 20
    assert grown_kib < 32 * 1024, f"peak RSS grew by {grown_kib} KiB while packing 256 MiB"


@pytest.mark.parametrize("codec", [rkyv07.CODEC, rkyv08.CODEC], ids=["rkyv07", "rkyv08"])
def test_pointer_codecs_round_trip_and_rebuild_canonically(codec):
    uri = "https://files.example/packages/ab/cd/" + "six-1.17.0-py2.py3-none-any.whl" * 3  # > 63 bytes
    wheel = Pointer(kind="wheel", id="RANDOMarchiveid1", hashes=(("Sha256", "ab" * 32),), uri=uri,
                    filename="six-1.17.0-py2.py3-none-any.whl", size=1234)
    raw = codec.write(wheel)
    back = codec.read(raw, "wheel")
    assert (back.id, back.sha256, back.uri, back.filename) == (wheel.id, "ab" * 32, uri, wheel.filename)
    assert codec.write(back) == raw  # rebuilding from the fields is byte-stable
    assert codec.write(back.canonical("ab" * 32, 1234)) != raw
    revision = Pointer(kind="revision", id="x" * 16, hashes=(("Sha256", "cd" * 32),), uri=uri, size=77)
    assert codec.read(codec.write(revision), "revision").id == "x" * 16
    with pytest.raises(PointerError):
        codec.read(raw[: len(raw) // 2], "wheel")


def test_rkyv08_pointer_checksum_is_verified():
    uri = "https://files.example/packages/six-1.17.0-py2.py3-none-any.whl"
    raw = rkyv08.CODEC.write(Pointer(kind="wheel", id="a" * 64, hashes=(("Sha256", "ab" * 32),), uri=uri,
                                     filename="six-1.17.0-py2.py3-none-any.whl", size=None))
    corrupt = bytearray(raw)
    corrupt[-20] ^= 1
    with pytest.raises(PointerError, match="checksum"):
        rkyv08.CODEC.read(bytes(corrupt), "wheel")
    _crc, length = struct.unpack_from("<IQ", raw, len(raw) - 12)
    assert raw[:length].startswith(b"\x95")


def test_uv_releases_map_to_their_format_family_and_unknown_ones_are_refused():
    assert [family_for_uv(v).id for v in ("0.9.0", "0.9.30", "0.10.0", "0.11.7", "0.12.24", "0.13.0", "0.13.8",
                                          "0.13.9")] == ["wheels-v5", "wheels-v5", "wheels-v6", "wheels-v6",
                                                         "wheels-v6", "wheels-v7", "wheels-v7", "wheels-v8"]
    with pytest.raises(CacheFormatError, match=r"uv 0\.14\.0 is newer than .*0\.9\.0 to 0\.13\.9"):
        family_for_uv("0.14.0")
    with pytest.raises(CacheFormatError, match=r"uv 0\.8\.24 is outside"):
        family_for_uv("0.8.24")
    with pytest.raises(CacheFormatError, match="not a uv version"):
        family_for_uv("latest")
    assert format_set().id == "wheels-v5+wheels-v6+wheels-v7+wheels-v8"
    assert format_set(["0.13.8", "0.13.1"]).id == "wheels-v7"
    assert format_set(["0.13.9", "0.9.3"]).id == "wheels-v5+wheels-v8"
    # 0.9.x and 0.10-0.12 share sdists-v9: its scaffold files appear once
    paths = [p for p, _ in format_set(["0.9.0", "0.10.0"]).base_files]
    assert paths == sorted(set(paths)) and "sdists-v9/.git" in paths


def test_layout_put_blob_refuses_wrong_bytes_and_leaves_no_temp(tmp_path):
    with open_layout_for_write(tmp_path / "layout") as layout:
        good = b"hello"
        desc = Descriptor(media_type="application/octet-stream", digest=Digest.of(good), size=5)
        layout.put_blob(desc, lambda: io.BytesIO(good))
        bad = Descriptor(media_type="application/octet-stream", digest=Digest.of(b"other"), size=5)
        with pytest.raises(LayoutError):
            layout.put_blob(bad, lambda: io.BytesIO(good))
        layout.put_manifest(desc, good, tag="t")
    names = sorted(p.name for p in (tmp_path / "layout" / "blobs" / "sha256").iterdir())
    assert names == [desc.digest.hex]
    assert Layout.open(tmp_path / "layout").resolve("t").digest == desc.digest


def test_new_layout_appears_only_when_the_write_completes(tmp_path):
    with pytest.raises(RuntimeError), open_layout_for_write(tmp_path / "layout") as layout:
        assert layout.path != tmp_path / "layout"
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_public_api_exports_and_version_match_the_package():
    import tomllib

    assert ocicache.__all__ == sorted(ocicache.__all__)
    assert all(hasattr(ocicache, name) for name in ocicache.__all__)
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    assert ocicache.__version__ == project["version"]
    from ocicache.uvcache import PINNED_UV_VERSION

    assert f"uv=={PINNED_UV_VERSION}" in project["dependencies"]


def test_git_urls_lose_their_credentials_before_reaching_annotations():
    from ocicache.selection import without_credentials

    assert without_credentials("https://x-token:s3cret@git.example/org/repo") == "https://git.example/org/repo"
    assert without_credentials("file:///tmp/repo") == "file:///tmp/repo"


def test_narrowing_maps_to_uv_export_flags():
    from ocicache.populate import Narrowing

    assert Narrowing().export_args() == ["--all-packages", "--all-extras", "--all-groups"]
    assert Narrowing(no_dev=True).export_args() == ["--all-packages", "--all-extras", "--all-groups",
                                                    "--no-group", "dev"]
    assert Narrowing(packages=("api",), extras=("s3",), groups=("lint",)).export_args() == \
        ["--package", "api", "--extra", "s3", "--group", "lint"]


@pytest.mark.parametrize("member,kind", [
    ("/etc/evil", "file"), ("../outside", "file"), ("a/../../outside", "file"),
    ("escape", "symlink-out"), ("hard", "hardlink"), ("dev", "device"),
])
def test_extraction_refuses_unsafe_members(tmp_path, member, kind):
    from ocicache.unpack import UnsafeLayerError, extract_members

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(member)
        if kind == "file":
            info.size = 2
            tf.addfile(info, io.BytesIO(b"no"))
        elif kind == "symlink-out":
            info.type, info.linkname = tarfile.SYMTYPE, "../../etc"
            tf.addfile(info)
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "somewhere"
            tf.addfile(info)
        else:
            info.type = tarfile.CHRTYPE
            tf.addfile(info)
    buf.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    with tarfile.open(fileobj=buf, mode="r|") as tf, pytest.raises(UnsafeLayerError):
        extract_members(tf, dest, "test layer")
    assert not (tmp_path / "outside").exists() and list(dest.iterdir()) == []


def test_extraction_refuses_writing_through_an_inside_link_that_points_out(tmp_path):
    from ocicache.unpack import UnsafeLayerError, extract_members

    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)  # already in the cache directory being merged into
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("link/file")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r|") as tf, pytest.raises(UnsafeLayerError):
        extract_members(tf, dest, "test layer")
    assert list(outside.iterdir()) == []


def test_worker_processes_pack_the_same_bytes_as_in_process(tmp_path, monkeypatch):
    from ocicache import pack, push
    from ocicache.plan import LayerGroup
    from ocicache.progress import Progress

    groups = []
    for i in range(3):
        entries = tuple(_entries(tmp_path / f"g{i}", random.Random(i)))
        ref = PackageRef(name=f"p{i}", version="1", artifact="a.whl", hash="sha256:00", key=f"sha256:{i:064x}")
        groups.append(LayerGroup(kind="package", name=f"p{i}", trees=(PackageTree(package=ref, entries=entries),)))
    results = {}
    for label, threshold in (("in-process", 1 << 62), ("workers", 0)):
        monkeypatch.setattr(pack, "_PARALLEL_PACK_BYTES", threshold)
        state = push._SharedState()
        blob_dir = tmp_path / label
        blob_dir.mkdir()
        push._pack_groups(groups, get_codec("gzip"), "wheels-v8", "", blob_dir, 2, state, Progress(enabled=False))
        results[label] = {k: (d.digest, d.diff_id, d.size) for k, (d, _path) in state.packed.items()}
    assert results["in-process"] == results["workers"] and len(results["workers"]) == 3


def test_a_stacked_layer_is_rooted_and_leaves_the_directories_above_to_the_base(tmp_path):
    """`--base`: the cache under root/.cache/uv, without entries for /root and /root/.cache (the base
    image's /root keeps its own mode); extraction with `strip` gives the cache-relative tree back."""
    from ocicache.unpack import extract_members

    entries = [Entry(path="archive-v0/x/mod.py", kind="file", data=b"x = 1\n", size=6),
               Entry(path="wheels-v8/pypi/x/1.0-py3-none-any", kind="symlink", link="../../../archive-v0/x")]
    plain = pack_layer(entries, tmp_path / "plain", get_codec("gzip"))
    stacked = pack_layer(entries, tmp_path / "stacked", get_codec("gzip"), root="root/.cache/uv")
    assert stacked.digest == pack_layer(entries, tmp_path / "again", get_codec("gzip"), root="root/.cache/uv").digest
    assert stacked.diff_id != plain.diff_id
    with tarfile.open(tmp_path / "stacked") as tf:
        names = tf.getnames()
    assert "root" not in names and "root/.cache" not in names
    assert names[0] == "root/.cache/uv" and "root/.cache/uv/archive-v0/x/mod.py" in names
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(tmp_path / "stacked") as tf:
        extract_members(tf, out, "test", strip="root/.cache/uv")
    assert (out / "archive-v0/x/mod.py").read_bytes() == b"x = 1\n"
    assert (out / "wheels-v8/pypi/x/1.0-py3-none-any/mod.py").read_bytes() == b"x = 1\n"
    assert not (out / "root").exists()


def test_solo_layers_come_biggest_first_so_a_small_bump_repulls_little():
    """dockerd re-pulls every layer after a changed one: big packages go first (scenario c of
    scripts/bench_build.py re-pulled 40 MB of scipy for a redis bump when layers were in name order)."""
    base = base_tree(format_set(["0.13.9"]))
    trees = [_tree("redis", 2 << 20), _tree("scipy", 90 << 20), _tree("numpy", 40 << 20), _tree("six", 10_000)]
    groups = plan_layers(base, trees)
    assert [g.name for g in groups[:4]] == ["_base", "scipy", "numpy", "redis"]
    assert groups[-1].kind == "bucket" and [t.name for t in groups[-1].trees] == ["six"]


def test_solo_picks_are_the_big_ones_and_stay_within_the_budget():
    """The rule of the cache image's solo layers and of --venv-only's (on installed sizes)."""
    from ocicache.plan import pick_solos

    sizes = {"numpy": 16 << 20, "pandas": 12 << 20, "six": 11_000, "idna": 70_000, "mid": 1 << 20}
    assert pick_solos(sizes, 1 << 20, 63) == {"numpy", "pandas", "mid"}
    assert pick_solos(sizes, 1 << 20, 2) == {"numpy", "pandas"}  # the budget keeps the biggest
    assert pick_solos(sizes, 0, 63) == set(sizes)  # --solo-threshold 0: a layer per package
    assert pick_solos(sizes, 0, 0) == set()
    many = {f"p{i:04d}": 2 << 20 for i in range(500)}  # a 500-package lock still fits Docker's 125 layers
    assert len(pick_solos(many, 1 << 20, 60)) == 60
    assert pick_solos(dict(reversed(list(sizes.items()))), 1 << 20, 3) == pick_solos(sizes, 1 << 20, 3)


def test_venv_only_small_packages_ride_in_uv_s_layer_which_comes_last():
    from ocicache.assemble import LayerDescription
    from ocicache.venv import _group, layer_order

    def files(*paths: str) -> list[Entry]:
        return [Entry(path=p, kind="file", data=b"x") for p in paths]

    site = ".venv/lib/python3.11/site-packages"
    split = {None: files(".venv/pyvenv.cfg"), ("numpy", "2.0"): files(f"{site}/numpy/a.py"),
             ("six", "1.16"): files(f"{site}/six.py"), ("idna", "3.7"): files(f"{site}/idna/b.py")}
    groups = _group(split, frozenset({"numpy"}))
    assert set(groups) == {None, "numpy"}
    assert groups[None][0] == [("six", "1.16"), ("idna", "3.7")]
    assert {e.path for e in groups[None][1]} == {".venv/pyvenv.cfg", f"{site}/six.py", f"{site}/idna/b.py"}
    assert [e.path for e in groups["numpy"][1]] == [f"{site}/numpy/a.py"]

    def layer(key: str, size: int, *names: str) -> LayerDescription:
        return LayerDescription(digest=Digest.from_hex(hashlib.sha256(key.encode()).hexdigest()),
                                diff_id=Digest.from_hex("0" * 64), size=size, media_type="x", kind="venv", key=key,
                                packages=tuple({"name": n, "version": "1"} for n in names))

    uv_layer = layer("venv-k", 9 << 20, "six", "idna")  # the biggest, yet last: it changes with any bump
    ordered = layer_order([layer("venv-s", 1 << 20, "scipy"), uv_layer, layer("venv-n", 5 << 20, "numpy")],
                          "venv-k")
    assert [x.key for x in ordered] == ["venv-n", "venv-s", "venv-k"]


def test_dockerfile_image_names_become_registry_references():
    from ocicache.refs import docker_reference

    assert docker_reference("python:3.12-slim") == "registry-1.docker.io/library/python:3.12-slim"
    assert docker_reference("astral-sh/uv") == "registry-1.docker.io/astral-sh/uv:latest"
    assert docker_reference("docker.io/library/python:3.11") == "registry-1.docker.io/library/python:3.11"
    assert docker_reference("ghcr.io/astral-sh/uv:0.13.8") == "ghcr.io/astral-sh/uv:0.13.8"
    assert docker_reference("127.0.0.1:5000/base/python") == "127.0.0.1:5000/base/python:latest"
    digest = "sha256:" + "a" * 64
    assert docker_reference(f"localhost/x@{digest}") == f"localhost/x@{digest}"


def _tarfile_reference(entries: list, fileobj: io.BytesIO, root: str = "") -> None:
    """The writer pack.py had before its own headers: tarfile in PAX format. The oracle."""
    import tarfile

    from ocicache.pack import _tarinfo
    from ocicache.tree import ancestors, rooted, with_parents

    above = ancestors(root)
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
        for entry in with_parents(rooted(entries, root)):
            if entry.path in above:
                continue
            info = _tarinfo(entry, len(entry.data) if entry.data is not None else entry.size)
            if entry.kind != "file":
                tf.addfile(info)
            elif entry.data is not None:
                tf.addfile(info, io.BytesIO(entry.data))
            else:
                with open(entry.source, "rb") as f:
                    tf.addfile(info, f)


_NAME_PART = st.text(alphabet=st.sampled_from("abcXYZ019._-é€ü"), min_size=1, max_size=40).filter(
    lambda s: s not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_NAME_PART, min_size=1, max_size=6), st.sampled_from(["file", "data", "dir",
                                                                                          "symlink"]),
                          st.integers(min_value=0, max_value=3000), st.booleans(), _NAME_PART,
                          st.integers(min_value=0, max_value=4)),
                min_size=1, max_size=12),
       st.sampled_from(["", "root/.cache/uv"]))
def test_own_tar_headers_are_byte_for_byte_tarfile_s(tmp_path_factory, specs, root):
    """pack.write_tar writes ustar headers itself (tarfile's header code cost 40 % of packing); every
    entry shape (long and non-ASCII names and targets, sizes around block edges, under a root) must
    give tarfile's exact bytes, or every layer digest would change."""
    work = tmp_path_factory.mktemp("tar")
    entries, seen = [], set()
    for n, (parts, kind, size, executable, target, repeat) in enumerate(specs):
        path = "/".join(parts)
        if path in seen or any(path.startswith(s + "/") or s.startswith(path + "/") for s in seen):
            continue
        seen.add(path)
        if kind == "file":
            source = work / f"f{n}"
            source.write_bytes(bytes([n % 251]) * size)
            entries.append(Entry(path=path, kind="file", source=source, size=size, executable=executable))
        elif kind == "data":
            entries.append(Entry(path=path, kind="file", data=b"x" * size, size=size))
        elif kind == "dir":
            entries.append(Entry(path=path, kind="dir"))
        else:
            entries.append(Entry(path=path, kind="symlink", link="/".join([".."] * repeat + [target] * (repeat + 1))))
    ours, theirs = io.BytesIO(), io.BytesIO()
    write_tar(entries, ours, root)
    _tarfile_reference(entries, theirs, root)
    assert ours.getvalue() == theirs.getvalue()


def test_own_tar_headers_match_tarfile_on_a_real_cache(make_project, tmp_path):
    """The same comparison on what a push packs: a cache uv filled (wheels, an sdist build, links)."""
    from ocicache.tree import walk_tree
    from tests.conftest import ocicache as run

    lock = make_project(tmp_path / "p", ["heavy", "small-b", "sdist-only", "native"])
    run("push", lock, f"oci:{tmp_path / 'l'}:v1")
    run("pull", f"oci:{tmp_path / 'l'}:v1", tmp_path / "cache")
    entries = list(walk_tree(tmp_path / "cache", "cache"))
    assert sum(1 for e in entries if e.kind == "symlink") > 0 and sum(1 for e in entries if e.kind == "file") > 10
    ours, theirs = io.BytesIO(), io.BytesIO()
    write_tar(entries, ours)
    _tarfile_reference(entries, theirs)
    assert ours.getvalue() == theirs.getvalue()


def test_a_packer_process_that_dies_is_one_clear_error():
    """A packing process killed mid-layer (the OOM killer, kill -9) surfaced as a BrokenProcessPool
    traceback; now it is one error naming the layer's packages (a real process, really killed)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from ocicache.errors import PopulateError
    from ocicache.pack import packed_result

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(os._exit, 9)
        with pytest.raises(PopulateError, match=r"packing process died .* numpy, pandas .*run the push again"):
            packed_result(future, "numpy, pandas")


def test_project_settings_are_read_where_uv_reads_them(tmp_path):
    from ocicache.project_settings import read_build_settings

    (tmp_path / "pyproject.toml").write_text('[tool.uv]\nno-binary-package = ["Foo_Bar", 3]\n')
    settings = read_build_settings(tmp_path)
    assert settings.builds_from_sdist("foo-bar") and not settings.builds_from_sdist("baz")
    assert settings.pip_args() == ["--no-binary", "foo-bar"]
    # uv.toml wins over [tool.uv] (uv ignores the latter then)
    (tmp_path / "uv.toml").write_text("no-binary = true\n")
    settings = read_build_settings(tmp_path)
    assert settings.builds_from_sdist("baz") and settings.pip_args() == ["--no-binary", ":all:"]
    (tmp_path / "uv.toml").write_text("no-binary = [\n")  # unreadable: nothing (uv reports it when it runs)
    assert not read_build_settings(tmp_path)
    assert not read_build_settings(tmp_path / "missing")
