"""One uv cache format family: the releases that read it, its bucket names, its pointer codec."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

from .pointer import PointerCodec

__all__ = ["ARCHIVE_BUCKET", "BUILT_METADATA", "GIT_SHARDS", "POINTER_SUFFIX", "REVISION_POINTER", "SDIST_SOURCES",
           "CacheFamily", "git_shard_pattern"]

# Unpacked wheels: `archive-v0/<id>/` in every release from 0.9.0 to 0.13.9 (shared by all families).
ARCHIVE_BUCKET = "archive-v0"

# Entry names common to every family from 0.9.0 to 0.13.9 (measured; a family that changes one
# overrides it in its own module):
POINTER_SUFFIX = ".http"  # wheels-vN/<index dir>/<name>/<version-tags>.http beside its archive link
REVISION_POINTER = "revision.http"  # sdists-vN/<index dir>/<name>/<version>/revision.http
BUILT_METADATA = "metadata.msgpack"  # beside each wheel built from an sdist or git
SDIST_SOURCES = "src"  # unpacked sdist sources inside a revision: not needed to install
GIT_SHARDS = "git"  # sdists-vN/git/<digest of the URL>/<commit[:16]>/


def git_shard_pattern(commit: str) -> str:
    """Glob, relative to `<sdists bucket>/git`, of the shards holding wheels built from `commit`."""
    return f"*/{commit[:16]}"


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
