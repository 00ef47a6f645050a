"""Deterministic tar → compressed blob, in one streaming pass.

Entries flow through tarfile into a sink that hashes the uncompressed bytes (diff_id), compresses
them, hashes the compressed bytes (digest) and writes them to a file. Memory stays bounded by the
buffer sizes below, whatever the layer size.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import tarfile
from collections.abc import Iterable
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .bytecode import pyc_bytes
from .compress import Codec, Compressor
from .errors import PopulateError
from .oci import Digest
from .tree import Entry, ancestors, read_chunks, rooted, with_parents

_FLUSH_AT = 1 << 20  # the compressor is fed blocks of exactly this size (_HashingSink)
_PARALLEL_PACK_BYTES = 64 << 20  # below this, one in-process packer beats starting workers


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
        while len(self._pending) >= _FLUSH_AT:
            self._compress(bytes(self._pending[:_FLUSH_AT]))
            del self._pending[:_FLUSH_AT]
        return len(data)

    def _compress(self, chunk: bytes) -> None:
        # ISA-L's output depends on how its input is cut: always whole 1 MiB blocks, so the blob is
        # a function of the tar bytes alone, however they were read (a file, an inflated zip member)
        self.diff_hash.update(chunk)
        self.raw_size += len(chunk)
        self._emit(self._compressor.compress(chunk))

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob_hash.update(data)
            self.blob_size += len(data)
            self._out.write(data)

    def finish(self) -> None:
        self._compress(bytes(self._pending))
        self._pending.clear()
        self._emit(self._compressor.flush())


def _tarinfo(entry: Entry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link or ""
    else:
        info.size = size
    return info


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads the archive to whole records
_TYPES = {"file": b"0", "dir": b"5", "symlink": b"2"}
_TAIL = b"ustar\x0000" + b"\0" * (32 + 32 + 8 + 8 + 155)  # magic, version, uname, gname, devices, prefix


def _field(value: bytes, length: int) -> bytes:
    return value + b"\0" * (length - len(value))


def _ustar(name: bytes, mode: int, size: int, kind: bytes, link: bytes) -> bytes:
    block = b"".join((_field(name, 100), b"%07o\0" % mode, b"0000000\0", b"0000000\0", b"%011o\0" % size,
                      b"00000000000\0", b"        ", kind, _field(link, 100), _TAIL))
    block += b"\0" * (_BLOCK - len(block))
    return block[:148] + b"%06o\0" % sum(block) + block[155:]  # the checksum, over spaces in its field


def _pax_records(pax: dict[str, str]) -> bytes:
    """PAX records as tarfile writes them: `<length> <key>=<value>\\n`, the length counting itself."""
    out = b""
    for key, value in pax.items():
        body = b" " + key.encode() + b"=" + value.encode() + b"\n"
        length = len(body)
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode() + body
    return out


def _header(entry: Entry, size: int) -> bytes:
    """The header block(s) Python 3.11's tarfile writes in PAX format for `entry` (mtime, uid and gid 0,
    no user or group names), built here: tarfile's header code cost 40 % of a layer's packing, and
    pinning the bytes here keeps them whatever another interpreter's tarfile would do. Long or
    non-ASCII names and targets get tarfile's PAX record (`././@PaxHeader`, then the ustar header
    with the name cut to 100 bytes); names that are not valid UTF-8 still go through tarfile itself.
    tests/test_units.py compares the bytes with tarfile's."""
    name = entry.path + "/" if entry.kind == "dir" else entry.path
    link = (entry.link or "") if entry.kind == "symlink" else ""
    pax = {key: value for key, value in (("path", name), ("linkpath", link))
           if len(value) > 100 or not value.isascii()}
    try:
        records = _pax_records(pax) if pax else b""
    except UnicodeEncodeError:  # surrogate-escaped bytes: tarfile's hdrcharset=BINARY path
        return _tarinfo(entry, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if size >= 8 ** 11:  # over 8 GiB: tarfile's PAX size record
        return _tarinfo(entry, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    out = b""
    if records:
        out = _ustar(b"././@PaxHeader", 0, len(records), b"x", b"") + records
        if len(records) % _BLOCK:
            out += b"\0" * (_BLOCK - len(records) % _BLOCK)
    return out + _ustar(name.encode("ascii", "replace")[:100], entry.mode & 0o7777, size, _TYPES[entry.kind],
                        link.encode("ascii", "replace")[:100])


def write_tar(entries: Iterable[Entry], fileobj: io.RawIOBase, root: str = "") -> None:
    """Write the deterministic tar of `entries` (parents added, sorted) to `fileobj`, under `root`
    if given (the directories above `root` are left out: they belong to the base image).

    The bytes are those of tarfile in PAX format (integer mtimes: no PAX time records), then two
    zero blocks and padding to a 10 KiB record, as tarfile closes an archive.
    """
    above = ancestors(root)
    written = 0
    for entry in with_parents(rooted(entries, root)):
        if entry.path in above:
            continue
        data = entry.data
        if entry.compiled is not None:
            data = pyc_bytes(entry.compiled)
            if data is None:
                continue  # a source that does not compile: no pyc, as uv's own compile step would do
        size = 0 if entry.kind != "file" else len(data) if data is not None else entry.size
        header = _header(entry, size)
        fileobj.write(header)
        written += len(header)
        if entry.kind != "file":
            continue
        if data is not None:
            fileobj.write(data)
        else:
            for chunk in read_chunks(entry):
                fileobj.write(chunk)
        written += size
        if size % _BLOCK:
            fileobj.write(b"\0" * (_BLOCK - size % _BLOCK))
            written += _BLOCK - size % _BLOCK
    fileobj.write(b"\0" * (2 * _BLOCK))
    written += 2 * _BLOCK
    if written % _RECORD:
        fileobj.write(b"\0" * (_RECORD - written % _RECORD))


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


def tar_workers(jobs: int, total_bytes: int) -> Executor:
    """Where tar work (packing, applying layers) runs: `jobs` worker processes for `total_bytes` worth
    of it, else one thread. Processes, because tarfile's per-member work holds the GIL: two threads
    packed no faster than one on a 43-package image (3.1 s either way; 1.7 s with two processes)."""
    if jobs > 1 and total_bytes >= _PARALLEL_PACK_BYTES:
        # spawn, not fork: safe when ocicache runs inside a threaded program
        return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    return ThreadPoolExecutor(max_workers=1)


def packed_result(future: Future[PackedLayer], what: str) -> PackedLayer:
    """A `tar_workers` packing's layer, or one clear error naming `what` it held (a file gone, a
    corrupt wheel, a worker killed)."""
    try:
        return future.result()
    except OSError as exc:
        raise PopulateError(f"cannot pack the layer of {what}: {exc}") from None
    except BrokenExecutor:  # a packer process died (killed, out of memory)
        raise PopulateError(f"a packing process died while packing the layer of {what} (killed, or out of "
                            "memory?); no tag was written: run the push again") from None
