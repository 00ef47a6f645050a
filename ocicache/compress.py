"""Bundled, deterministic layer codecs.

Python's gzip/zlib use the system zlib, whose output differs between builds (zlib vs zlib-ng), so the
same tar could get a different blob digest on another machine. Both codecs here ship their own
library inside the wheel, run single-threaded at a pinned level, and record name, level and library
version in the image annotations (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from .oci import LAYER_GZIP_MEDIA_TYPE, LAYER_TAR_MEDIA_TYPE, LAYER_ZSTD_MEDIA_TYPE

CompressionName = Literal["gzip", "zstd", "none"]
CODEC_NAMES: tuple[CompressionName, ...] = ("gzip", "zstd", "none")

# isal level 2: faster than level 1 here and a better ratio (docs/decisions.md, measured 506 vs 432 MB/s).
GZIP_LEVEL = 2
# zstd level 3 is zstd's own default: 327 MB/s here at a ratio of 0.28.
ZSTD_LEVEL = 3


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Codec:
    name: CompressionName
    media_type: str
    level: int
    library: str

    @property
    def id(self) -> str:
        """What the bytes depend on; part of every layer's reuse key."""
        return f"{self.name}/{self.library}/level={self.level}"

    def compressor(self) -> Compressor:
        if self.name == "gzip":
            from isal import isal_zlib

            # wbits 31: gzip framing; isal writes mtime 0, no file name, OS byte 0xff.
            return _HistoryPrimedGzip(isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, 31),
                                      isal_zlib.Z_SYNC_FLUSH)
        if self.name == "none":
            return _Identity()
        import zstandard

        return zstandard.ZstdCompressor(level=self.level, threads=0).compressobj()


class _Identity:
    """`none`: the blob is the tar itself (its digest is its diff_id)."""

    __slots__ = ()

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


# ISA-L 2.32's level 1/2 x86 body (igzip_icf_body_h1_gr_bt.asm, `.write_first_byte`) hashes input
# position 2 of a stream that has no history from a register still holding the stream's address,
# not from the data: the same bytes can compress differently in another process (once seen in CI:
# 337 vs 339 bytes for one tar). A stream whose first few bytes went through ISA-L's finish path and
# a sync flush has history, and the faulty branch never runs. 4 to 16 bytes do it (the finish path
# takes up to 16); a full flush would drop the history again (docs/decisions.md).
_PRIMER = 8


class _HistoryPrimedGzip:
    """An isal compressobj whose first `_PRIMER` bytes are flushed on their own (Z_SYNC_FLUSH)."""

    __slots__ = ("_inner", "_pending", "_sync")

    def __init__(self, inner: Compressor, sync_flush_mode: int) -> None:
        self._inner = inner
        self._sync = sync_flush_mode
        self._pending: bytearray | None = bytearray()  # None once primed

    def compress(self, data: bytes) -> bytes:
        if self._pending is None:
            return self._inner.compress(data)
        self._pending += data
        if len(self._pending) < _PRIMER:
            return b""
        head, rest = bytes(self._pending[:_PRIMER]), bytes(self._pending[_PRIMER:])
        self._pending = None
        out = self._inner.compress(head) + self._inner.flush(self._sync)  # type: ignore[call-arg]
        return out + self._inner.compress(rest)

    def flush(self) -> bytes:
        out = b""
        if self._pending is not None:  # fewer than _PRIMER bytes in all: the finish path takes them
            out, self._pending = self._inner.compress(bytes(self._pending)), None
        return out + self._inner.flush()


def get_codec(name: str) -> Codec:
    if name == "gzip":
        import isal

        return Codec("gzip", LAYER_GZIP_MEDIA_TYPE, GZIP_LEVEL, f"isal-{isal.__version__}")
    if name == "zstd":
        import zstandard

        return Codec("zstd", LAYER_ZSTD_MEDIA_TYPE, ZSTD_LEVEL, f"zstandard-{zstandard.__version__}")
    if name == "none":
        return Codec("none", LAYER_TAR_MEDIA_TYPE, 0, "tar")
    raise ValueError(f"unknown compression {name!r} (choose {', '.join(CODEC_NAMES)})")
