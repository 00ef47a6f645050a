"""Extraction of layers that try to leave their directory, and errors that blame the right thing."""

from __future__ import annotations

import errno
import io
import os
import tarfile
from pathlib import Path

import pytest

from ocicache.errors import OcicacheError
from ocicache.oci import LAYER_GZIP_MEDIA_TYPE, Descriptor, Digest
from ocicache.unpack import UnsafeLayerError, VerificationError, extract_members, open_layer
from tests.conftest import ocicache
from tests.support.handmade import tar_bytes, write_layout


def _extract(tar: bytes, dest: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r|") as tf:
        return extract_members(tf, dest, "test layer")


def test_a_link_through_a_link_that_leaves_the_directory_is_refused_and_removed(tmp_path):
    """Issue 9: `a/esc -> up/..` with `a/up -> ..` passed the textual check and pointed outside."""
    dest = tmp_path / "cache"
    dest.mkdir()
    tar = tar_bytes([("a", "dir", b""), ("a/up", "symlink", ".."), ("a/esc", "symlink", "up/..")])
    with pytest.raises(UnsafeLayerError, match="resolves outside"):
        _extract(tar, dest)
    assert not (dest / "a" / "esc").is_symlink()


def test_the_same_chain_built_in_the_other_order_is_refused_too(tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    tar = tar_bytes([("a", "dir", b""), ("a/esc", "symlink", "b/.."), ("a/b", "symlink", "..")])
    with pytest.raises(UnsafeLayerError, match="resolves outside"):
        _extract(tar, dest)


def test_relative_links_that_stay_inside_are_kept(tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    tar = tar_bytes([("archive-v0/x/f.py", "file", b"x"), ("wheels/p", "symlink", "../archive-v0/x")])
    _extract(tar, dest)
    assert (dest / "wheels" / "p" / "f.py").read_bytes() == b"x"


def test_pull_resolves_links_against_what_the_cache_directory_already_holds(tmp_path):
    """A cache that already has `a/up -> ..` must not receive `a/esc -> up/..` from an image."""
    layout = tmp_path / "img"
    write_layout(layout, "t", [tar_bytes([("a", "dir", b""), ("a/esc", "symlink", "up/.."),
                                          ("a/ok.txt", "file", b"fine")])])
    cache = tmp_path / "home" / "cache"
    (cache / "a").mkdir(parents=True)
    os.symlink("..", cache / "a" / "up")
    run = ocicache("pull", f"oci:{layout}:t", cache, check=False)
    assert run.returncode == 1, run.stderr
    assert "resolves outside" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (cache / "a" / "esc").is_symlink()


def test_an_escaping_link_in_a_relative_cache_directory_is_one_clear_line(tmp_path):
    """The refusal names the link relative to DIR even when DIR is given as a relative path."""
    write_layout(tmp_path / "img", "t", [tar_bytes([("a", "dir", b""), ("a/esc", "symlink", "up/..")])])
    (tmp_path / "cache" / "a").mkdir(parents=True)
    os.symlink("..", tmp_path / "cache" / "a" / "up")
    run = ocicache("pull", "oci:img:t", "cache", cwd=tmp_path, check=False)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "refusing link a/esc -> 'up/..'" in run.stderr


def _layer(data: bytes) -> Descriptor:
    return Descriptor(media_type=LAYER_GZIP_MEDIA_TYPE, digest=Digest.of(data), size=len(data))


def test_a_local_write_error_is_not_called_a_corrupt_blob(tmp_path):
    """Issue 9: any OSError while reading a layer became "the blob is corrupt"."""
    import gzip

    blob = gzip.compress(tar_bytes([("d/f.txt", "file", b"data")]))
    dest = tmp_path / "not-a-dir"
    dest.write_text("a file where the destination should be")
    with pytest.raises(OcicacheError) as info, \
            open_layer(lambda: io.BytesIO(blob), _layer(blob), where="test") as tf:
        extract_members(tf, dest, "test")
    assert not isinstance(info.value, VerificationError)
    assert "cannot write" in str(info.value) and "corrupt" not in str(info.value)


def test_a_local_read_error_is_not_called_a_corrupt_blob():
    import gzip

    blob = gzip.compress(tar_bytes([("f.txt", "file", b"data" * 1000)]))

    class FailingDisk(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OcicacheError) as info, \
            open_layer(lambda: io.BufferedReader(FailingDisk()), _layer(blob), where="test") as tf:
        list(tf)
    assert "cannot read layer" in str(info.value) and "Input/output error" in str(info.value)
    assert "corrupt" not in str(info.value)


def test_bytes_that_do_not_decompress_are_still_called_corrupt():
    blob = b"\x1f\x8b not really gzip" * 10
    with pytest.raises(VerificationError, match="corrupt"), \
            open_layer(lambda: io.BytesIO(blob), _layer(blob), where="test") as tf:
        list(tf)


def test_a_decompression_bomb_is_stopped_long_before_it_is_unpacked(tmp_path):
    """A tiny, correctly described gzip layer that would unpack to 512 MiB of zeros."""
    import gzip
    import time

    size = 512 << 20
    header = tarfile.TarInfo("bomb.bin")
    header.size = size
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(header.tobuf())
        zeros = bytes(1 << 20)
        for _ in range(size >> 20):
            gz.write(zeros)
        gz.write(bytes(1024))
    blob = raw.getvalue()
    assert len(blob) < size // 500
    started = time.monotonic()
    with pytest.raises(VerificationError, match="decompression bomb"), \
            open_layer(lambda: io.BytesIO(blob), _layer(blob), where="test") as tf:
        extract_members(tf, tmp_path, "test")
    assert time.monotonic() - started < 30
    from ocicache.unpack import MAX_EXPANSION

    # refused at its header, which declares 512 MiB: not a byte of it written
    assert max(len(blob) * MAX_EXPANSION, 64 << 20) < size and not (tmp_path / "bomb.bin").exists()


def test_a_bomb_of_empty_members_is_stopped_by_the_stream_limit():
    """Headers declare nothing, yet 150,000 of them decompress to 75 MB from a few hundred KB: the
    byte count of the decompressed stream stops it."""
    import gzip

    from ocicache.unpack import MAX_EXPANSION

    raw = io.BytesIO()
    header = tarfile.TarInfo("d/empty").tobuf()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        for _ in range(150_000):
            gz.write(header)
    blob = raw.getvalue()
    assert max(len(blob) * MAX_EXPANSION, 64 << 20) < 150_000 * 512
    with pytest.raises(VerificationError, match="decompression bomb"), \
            open_layer(lambda: io.BytesIO(blob), _layer(blob), where="test") as tf:
        for _ in tf:
            pass
