"""Deterministic tar → compressed blob, in one streaming pass.

Entries flow through tarfile into a sink that hashes the uncompressed bytes (diff_id), compresses
them, hashes the compressed bytes (digest) and writes them to a file. Memory stays bounded by the
buffer sizes below, whatever the layer size.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .compress import Codec, Compressor
from .oci import Digest
from .tree import Entry, ancestors, rooted, with_parents

_FLUSH_AT = 1 << 20  # batch tarfile's many small writes before compressing
_COPY_BUFSIZE = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PackedLayer:
    path: Path
    digest: Digest
    diff_id: Digest
    size: int
    uncompressed_size: int
    media_type: str


class _HashingSink(io.RawIOBase):
    def __init__(self, out: io.BufferedWriter, compressor: Compressor) -> None:
        self._out = out
        self._compressor = compressor
        self._pending = bytearray()
        self.diff_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256()
        self.raw_size = 0
        self.blob_size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw_size + len(self._pending)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._pending += data
        if len(self._pending) >= _FLUSH_AT:
            self._drain()
        return len(data)

    def _drain(self) -> None:
        chunk = bytes(self._pending)
        self._pending.clear()
        self.diff_hash.update(chunk)
        self.raw_size += len(chunk)
        self._emit(self._compressor.compress(chunk))

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob_hash.update(data)
            self.blob_size += len(data)
            self._out.write(data)

    def finish(self) -> None:
        self._drain()
        self._emit(self._compressor.flush())


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link or ""
    else:
        info.size = len(entry.data) if entry.data is not None else entry.size
    return info


def write_tar(entries: Iterable[Entry], fileobj: io.RawIOBase, root: str = "") -> None:
    """Write the deterministic tar of `entries` (parents added, sorted) to `fileobj`, under `root`
    if given (the directories above `root` are left out: they belong to the base image).

    PAX format for long paths; integer mtimes mean no PAX time records.
    """
    above = ancestors(root)
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT,
                      copybufsize=_COPY_BUFSIZE) as tf:
        for entry in with_parents(rooted(entries, root)):
            if entry.path in above:
                continue
            info = _tarinfo(entry)
            if entry.kind != "file":
                tf.addfile(info)
            elif entry.data is not None:
                tf.addfile(info, io.BytesIO(entry.data))
            else:
                assert entry.source is not None
                with open(entry.source, "rb") as f:
                    tf.addfile(info, f)


def pack_layer(entries: Iterable[Entry], out_path: Path, codec: Codec, root: str = "") -> PackedLayer:
    """Tar and compress `entries` (under `root`) into `out_path`; return digests and sizes. Reads each
    file once."""
    with open(out_path, "wb") as out:
        sink = _HashingSink(out, codec.compressor())  # type: ignore[arg-type]
        write_tar(entries, sink, root)
        sink.finish()
    return PackedLayer(
        path=out_path,
        digest=Digest.from_hex(sink.blob_hash.hexdigest()),
        diff_id=Digest.from_hex(sink.diff_hash.hexdigest()),
        size=sink.blob_size,
        uncompressed_size=sink.raw_size,
        media_type=codec.media_type,
    )
