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

__all__ = ["UnsafeLayerError", "VerificationError", "check_links_inside", "extract_members", "open_layer"]

_CHUNK = 1 << 20


class VerificationError(OcicacheError):
    pass


class UnsafeLayerError(OcicacheError):
    pass


class _BadBytesError(Exception):
    """The layer's bytes do not decompress or parse: the blob is wrong, not the machine."""


class _UnreadableSourceError(Exception):
    """Reading the blob itself failed locally (e.g. an I/O error on the layout's disk)."""


class _TooBigError(Exception):
    """The stream decompresses to more than any honest layer of its size would."""


# A layer of unpacked wheels compresses 2-5x; zero-filled data files, rarely, far more. Past this
# ratio (and a floor for tiny layers) the stream is a decompression bomb, stopped before it fills the disk.
MAX_EXPANSION = 200
_EXPANSION_FLOOR = 64 << 20


class _BoundedTarFile(tarfile.TarFile):
    """Refuses an archive whose members declare more bytes than `allowance`, at the header, before
    a byte of them is written (the stream's own limit then only catches what headers hide)."""

    allowance = 0
    _declared = 0

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        if member is not None:
            self._declared += member.size
            if self._declared > self.allowance:
                raise _TooBigError(self.allowance)
        return member


class _HashingReader(io.RawIOBase):
    """Hashes what passes through; `failure` says what a read error means at this level."""

    def __init__(self, raw: BinaryIO, failure: type[Exception], limit: int | None = None) -> None:
        self._raw = raw
        self._failure = failure
        self._limit = limit
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._raw.read(len(b))
        except OcicacheError:
            raise  # already clear (e.g. a registry stream that could not be resumed)
        except (OSError, EOFError, zlib.error, ValueError, *_codec_errors()) as exc:
            raise self._failure(exc) from exc
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        self.size += n
        if self._limit is not None and self.size > self._limit:
            raise _TooBigError(self._limit)
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
        compressed = _HashingReader(raw, _UnreadableSourceError)
        buffered = io.BufferedReader(compressed, _CHUNK)
        try:
            limit = max(desc.size * MAX_EXPANSION, _EXPANSION_FLOOR)
            plain = _HashingReader(_decompressed(buffered, desc.media_type), _BadBytesError,  # type: ignore[arg-type]
                                   limit=limit)
            bounded = type("_Bounded", (_BoundedTarFile,), {"allowance": limit})
            with bounded.open(fileobj=io.BufferedReader(plain, _CHUNK), mode="r|") as tf:
                yield tf
            plain.drain()
            compressed.drain()
        except _TooBigError as exc:
            raise VerificationError(f"{where}: layer {desc.digest} ({desc.size} bytes) decompresses to more than "
                                    f"{exc.args[0]} bytes ({MAX_EXPANSION}x): refusing a decompression bomb") from None
        except _UnreadableSourceError as exc:
            cause = exc.__cause__
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
            raise OcicacheError(f"{where}: cannot read layer {desc.digest}: {detail}") from None
        except (_BadBytesError, tarfile.TarError) as exc:
            cause = exc.__cause__ or exc
            raise VerificationError(f"{where}: layer {desc.digest} has wrong bytes (it does not decompress: "
                                    f"{cause}); the blob is corrupt or the registry returned other data") from None
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
    try:
        return _extract(tf, dest, where, wanted, strip)
    except OSError as exc:  # the destination, never the layer: those errors are _BadBytesError
        raise OcicacheError(f"{where}: cannot write {exc.filename or dest}: {exc.strerror or exc}") from None


def _extract(tf: tarfile.TarFile, dest: Path, where: str, wanted: Callable[[str], bool], strip: str) -> list[str]:
    written: list[str] = []
    links: list[Path] = []
    root = dest.resolve()
    try:
        _extract_members(tf, root, where, wanted, strip, written, links)
    except BaseException:
        _remove_escaping(root, links)  # a refused layer leaves no link pointing out
        raise
    # The text of each link stayed inside, but links through links (a/up -> .., then a/esc -> up/..)
    # only show where they lead once all are on disk: resolve every one against what is there.
    check_links_inside(root, links, where)
    return written


def _extract_members(tf: tarfile.TarFile, root: Path, where: str, wanted: Callable[[str], bool], strip: str,
                     written: list[str], links: list[Path]) -> None:
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
            if target.is_symlink():  # mkdir and chmod would follow it
                raise UnsafeLayerError(f"{where}: directory {name!r} would replace a link")
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
            # the layer's mtime, as a builder's extraction keeps it: the pycs of --compile-bytecode
            # are valid for exactly that source mtime
            os.utime(target, (member.mtime, member.mtime))
        elif member.issym():
            link = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
            if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
                raise UnsafeLayerError(f"{where}: refusing link {name!r} -> {link!r} (leaves the directory)")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                raise UnsafeLayerError(f"{where}: link {name!r} would replace a directory")
            os.symlink(link, target)
            links.append(target)
            check_links_inside(root, [target], where)  # through links already on disk
        else:
            kind = "hardlink" if member.islnk() else "special file"
            raise UnsafeLayerError(f"{where}: refusing {kind} {name!r}")
        written.append(name)


def _remove_escaping(root: Path, links: list[Path]) -> list[tuple[Path, str]]:
    """Remove every link of `links` that resolves (through whatever is on disk) outside `root`."""
    real = Path(os.path.realpath(root))
    removed = []
    for link in links:
        if link.is_symlink() and not resolves_inside(real, link):
            removed.append((Path(os.path.relpath(link, root)), os.readlink(link)))
            link.unlink()
    return removed


def resolves_inside(root: Path, path: Path) -> bool:
    resolved = Path(os.path.realpath(path))
    return resolved == root or root in resolved.parents


def check_links_inside(root: Path, links: list[Path], where: str) -> None:
    """Every link in `links` must resolve inside `root`; those that do not are removed and refused."""
    removed = _remove_escaping(root, links)
    if removed:
        name, text = removed[0]
        raise UnsafeLayerError(f"{where}: refusing link {name!s} -> {text!r} "
                               "(it resolves outside the directory through another link)")
