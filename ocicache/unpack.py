"""Reading layers back: verified streams and safe extraction.

Every byte read from a blob is hashed: the compressed stream against the layer digest, the
decompressed stream against its diff_id. Extraction refuses absolute paths, `..`, links that would
leave the destination, hardlinks and device files, and writes canonical modes.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import oci
from .errors import OcicacheError
from .oci import Descriptor

__all__ = ["UnsafeLayerError", "VerificationError", "extract_members", "open_layer"]

_CHUNK = 1 << 20


class VerificationError(OcicacheError):
    pass


class UnsafeLayerError(OcicacheError):
    pass


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        while self.readinto(bytearray(_CHUNK)):
            pass


def _decompressed(stream: BinaryIO, media_type: str) -> BinaryIO:
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream)  # type: ignore[return-value]
    if media_type.endswith(".tar") or media_type.endswith("tar"):
        return stream
    raise VerificationError(f"unsupported layer media type {media_type}")


def _codec_errors() -> tuple[type[Exception], ...]:
    import zstandard

    return (zstandard.ZstdError,)


@contextmanager
def open_layer(open_blob: Callable[[], BinaryIO], desc: Descriptor, where: str) -> Iterator[tarfile.TarFile]:
    """A streaming tar reader over a layer blob; on leaving, both digests are checked.

    The diff_id comes from the layer's `dev.ocicache.layer.diff-id` annotation when present.
    Raises VerificationError if the registry or the disk gave bytes that are not the blob.
    """
    with open_blob() as raw:
        compressed = _HashingReader(raw)
        buffered = io.BufferedReader(compressed, _CHUNK)
        try:
            plain = _HashingReader(_decompressed(buffered, desc.media_type))  # type: ignore[arg-type]
            with tarfile.open(fileobj=io.BufferedReader(plain, _CHUNK), mode="r|") as tf:
                yield tf
            plain.drain()
            compressed.drain()
        except (OSError, EOFError, tarfile.TarError, zlib.error, ValueError, *_codec_errors()) as exc:
            raise VerificationError(f"{where}: layer {desc.digest} has wrong bytes (it does not decompress: "
                                    f"{exc}); the blob is corrupt or the registry returned other data") from None
    if "sha256:" + compressed.hash.hexdigest() != str(desc.digest) or compressed.size != desc.size:
        raise VerificationError(f"{where}: layer {desc.digest} has wrong bytes (digest or size mismatch); "
                                "the blob is corrupt or the registry returned other data")
    diff_id = desc.annotations.get(oci.A_LAYER_DIFF_ID)
    if diff_id and "sha256:" + plain.hash.hexdigest() != diff_id:
        raise VerificationError(f"{where}: layer {desc.digest} decompresses to the wrong content")


def _check_name(name: str, where: str) -> str:
    clean = posixpath.normpath(name) if name else "."
    if name.startswith("/") or clean == ".." or clean.startswith("../"):
        raise UnsafeLayerError(f"{where}: refusing unsafe path {name!r}")
    return clean


def _check_inside(root: Path, path: Path, name: str, where: str) -> None:
    """The nearest existing ancestor of `path` must resolve inside `root` (no escape through links)."""
    probe = path.parent
    while not probe.exists() and probe != root:
        probe = probe.parent
    resolved = probe.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeLayerError(f"{where}: {name!r} resolves outside the destination")


def extract_members(tf: tarfile.TarFile, dest: Path, where: str,
                    wanted: Callable[[str], bool] = lambda _n: True, strip: str = "") -> list[str]:
    """Extract the members `wanted` selects into `dest`; return their paths. Refuses anything unsafe.

    `strip`: only members under this directory, re-rooted at `dest` (a stacked image's cache).
    """
    written = []
    root = dest.resolve()
    for member in tf:
        name = _check_name(member.name, where)
        if strip:
            if name == strip or not name.startswith(strip + "/"):
                continue
            name = name[len(strip) + 1:]
        if name == "." or not wanted(name):
            continue
        target = root / name
        _check_inside(root, target, name, where)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o755)
        elif member.isreg():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_dir():
                raise UnsafeLayerError(f"{where}: {name!r} would replace a link or directory")
            src = tf.extractfile(member)
            assert src is not None
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
        elif member.issym():
            link = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
            if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
                raise UnsafeLayerError(f"{where}: refusing link {name!r} -> {link!r} (leaves the directory)")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(link, target)
        else:
            kind = "hardlink" if member.islnk() else "special file"
            raise UnsafeLayerError(f"{where}: refusing {kind} {name!r}")
        written.append(name)
    return written
