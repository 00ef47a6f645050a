"""The only package that knows uv's private cache format.

uv versions its cache buckets per release (`wheels-v8`, `sdists-v11`, `archive-v0` in 0.13.9) and an
older uv ignores, even prunes, a newer cache. So support is a table: one entry per uv version whose
layout ocicache has proven (populate, normalise, install offline in tests/). When a uv release
changes a bucket version or the `.http` layout, add a format here and a test that proves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CacheFormatError

__all__ = ["PINNED_UV_VERSION", "SUPPORTED_FORMATS", "CacheFormat", "format_for_uv"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheFormat:
    id: str  # part of every reuse key: layers of two formats never mix
    wheels: str
    sdists: str
    archive: str
    base_files: tuple[tuple[str, bytes], ...]  # constant scaffold uv creates in every cache


_BASE_FILES = (
    ("CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55"),
    (".gitignore", b"*"),
)

UV_0_13_9 = CacheFormat(
    id="uv-0.13.9",
    wheels="wheels-v8",
    sdists="sdists-v11",
    archive="archive-v0",
    base_files=(*_BASE_FILES, ("sdists-v11/.git", b""), ("sdists-v11/.gitignore", b"")),
)

# The uv installed with ocicache (pyproject.toml pins the same version).
PINNED_UV_VERSION = "0.13.9"
SUPPORTED_FORMATS: dict[str, CacheFormat] = {"0.13.9": UV_0_13_9}


def format_for_uv(version: str) -> CacheFormat:
    try:
        return SUPPORTED_FORMATS[version]
    except KeyError:
        supported = ", ".join(sorted(SUPPORTED_FORMATS))
        raise CacheFormatError(
            f"uv {version} writes a cache format ocicache does not know; supported uv versions: "
            f"{supported} (use the pinned uv, or pass --uv PATH to a supported one)"
        ) from None
