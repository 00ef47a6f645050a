"""The only package that knows uv's private cache format.

uv versions its cache buckets per release and ignores (even prunes) buckets of another version, so
support is a table of format families, like uv's own `CacheBucket` enum: one module per family
(`v5` … `v8`, named after the wheels bucket), each naming the releases that read it, its buckets and
its pointer codec (`rkyv07` for uv 0.9-0.12, `rkyv08` for 0.13). Unpacked wheels (`archive-v0`) are
common to every family, so an image holds them once and each family's pointers beside them.
`unzip` is how every release unpacks a wheel, and `digest` uv's `cache_digest` and a wheel's cache
key: what lets ocicache write a wheel's entries without running uv (fill.py checks them against uv
on every push).

Adding the next uv (say 0.14 with `wheels-v9`): write `v9.py` (copy `v8.py`, change the buckets and
the releases; a new codec module only if the `.http` framing changed, an override in it only if an
entry name of `family.py` changed) and append it to `FAMILIES`. Its first and last release then join
the releases tests/support/uvreleases.py downloads, and tests/test_uv_versions.py installs offline
with each of them, locally and in real builders (docs/uv-versions.md). If the new release unpacks
wheels or keys them differently, fill.py's probe sees it on the first push (every index then goes
to uv) and tests/test_unpack_wheels.py fails: teach `unzip`/`digest` the family's way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ..errors import CacheFormatError
from . import v5, v6, v7, v8
from .family import (
    ARCHIVE_BUCKET,
    BUILT_METADATA,
    GIT_SHARDS,
    POINTER_SUFFIX,
    REVISION_POINTER,
    SDIST_SOURCES,
    CacheFamily,
    git_shard_pattern,
)
from .pointer import Pointer, PointerError, fastid

__all__ = [
    "ARCHIVE_BUCKET",
    "BUILT_METADATA",
    "FAMILIES",
    "GIT_SHARDS",
    "PINNED_UV_VERSION",
    "POINTER_SUFFIX",
    "REVISION_POINTER",
    "SDIST_SOURCES",
    "CacheFamily",
    "FormatSet",
    "Pointer",
    "PointerError",
    "families_of",
    "family_for_uv",
    "fastid",
    "format_set",
    "git_shard_pattern",
    "supported_range",
]

# Oldest first. A release belongs to at most one family.
FAMILIES: tuple[CacheFamily, ...] = (v5.FAMILY, v6.FAMILY, v7.FAMILY, v8.FAMILY)

# The uv installed with ocicache (pyproject.toml pins the same version): it fills every cache.
PINNED_UV_VERSION = "0.13.9"

_ROOT_FILES = (("CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55"), (".gitignore", b"*"))


def supported_range() -> str:
    return f"{FAMILIES[0].first} to {FAMILIES[-1].last}"


def family_for_uv(version: str) -> CacheFamily:
    """The family uv `version` reads; CacheFormatError naming the supported range if none."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise CacheFormatError(
            f"uv {version!r} is not a uv version (expected X.Y.Z, from {supported_range()})") from None
    for family in FAMILIES:
        if family.serves(str(parsed)):
            return family
    newer = parsed > Version(FAMILIES[-1].last)
    raise CacheFormatError(
        f"uv {version} {'is newer than' if newer else 'is outside'} the cache formats ocicache knows "
        f"(uv {supported_range()}){'; a newer uv may change its cache format: upgrade ocicache' if newer else ''}"
    )


@dataclass(frozen=True, slots=True)
class FormatSet:
    """The families an image serves: one set of pointers each, the archives once."""

    families: tuple[CacheFamily, ...]

    def __post_init__(self) -> None:
        if not self.families:
            raise ValueError("a format set needs at least one family")

    @property
    def id(self) -> str:
        """Part of every reuse key and the `dev.ocicache.uv.cache-format` annotation."""
        return "+".join(f.id for f in self.families)

    @property
    def releases(self) -> str:
        """The uv releases that read the image, e.g. `0.9.0-0.9.30, 0.13.9`."""
        return ", ".join(f.releases for f in self.families)

    @property
    def base_files(self) -> tuple[tuple[str, bytes], ...]:
        files = dict(_ROOT_FILES)
        for family in self.families:
            files.update(family.base_files)
        return tuple(sorted(files.items()))

    def serves(self, version: str) -> bool:
        try:
            return any(f.serves(version) for f in self.families)
        except InvalidVersion:
            return False


def families_of(format_id: str) -> tuple[CacheFamily, ...]:
    """The known families named in an image's `dev.ocicache.uv.cache-format` (unknown ids dropped)."""
    ids = set(format_id.split("+"))
    return tuple(f for f in FAMILIES if f.id in ids)


def format_set(uv_versions: Iterable[str] = ()) -> FormatSet:
    """The families of `uv_versions` (each refused if unknown); every family if none is given."""
    versions = list(uv_versions)
    if not versions:
        return FormatSet(FAMILIES)
    wanted = {family_for_uv(v).id for v in versions}
    return FormatSet(tuple(f for f in FAMILIES if f.id in wanted))
