"""One uv cache format family: the releases that read it, its bucket names, its pointer codec."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

from .pointer import PointerCodec

__all__ = ["ARCHIVE_BUCKET", "CacheFamily"]

# Unpacked wheels: `archive-v0/<id>/` in every release from 0.9.0 to 0.13.9 (shared by all families).
ARCHIVE_BUCKET = "archive-v0"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheFamily:
    """Releases `first`..`last` (inclusive) read and write the same cache entries.

    Every family links `<bucket>/.../<key>` → `archive-v0/<id>` with relative symlinks and names
    archives and revisions with the ids normalisation derives: all releases accept them (measured).
    """

    id: str  # part of every reuse key: layers of two format sets never mix
    first: str
    last: str
    wheels: str
    sdists: str
    codec: PointerCodec

    def serves(self, version: str) -> bool:
        return Version(self.first) <= Version(version) <= Version(self.last)

    @property
    def releases(self) -> str:
        return self.first if self.first == self.last else f"{self.first}-{self.last}"

    @property
    def base_files(self) -> tuple[tuple[str, bytes], ...]:
        """The files `Cache::init` creates in this family's buckets (constant)."""
        return ((f"{self.sdists}/.git", b""), (f"{self.sdists}/.gitignore", b""))
