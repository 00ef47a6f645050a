"""Bundled, deterministic layer codecs.

Python's gzip/zlib use the system zlib, whose output differs between builds (zlib vs zlib-ng), so the
same tar could get a different blob digest on another machine. Both codecs here ship their own
library inside the wheel, run single-threaded at a pinned level, and record name, level and library
version in the image annotations (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from .oci import LAYER_GZIP_MEDIA_TYPE, LAYER_ZSTD_MEDIA_TYPE

CompressionName = Literal["gzip", "zstd"]

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
            return isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, 31)
        import zstandard

        return zstandard.ZstdCompressor(level=self.level, threads=0).compressobj()


def get_codec(name: str) -> Codec:
    if name == "gzip":
        import isal

        return Codec("gzip", LAYER_GZIP_MEDIA_TYPE, GZIP_LEVEL, f"isal-{isal.__version__}")
    if name == "zstd":
        import zstandard

        return Codec("zstd", LAYER_ZSTD_MEDIA_TYPE, ZSTD_LEVEL, f"zstandard-{zstandard.__version__}")
    raise ValueError(f"unknown compression {name!r} (choose gzip or zstd)")
