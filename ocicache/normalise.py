"""Raw uv cache → canonical, relocatable per-package trees (docs/image-format.md, "Normalisation").

What varies between two populations of the same lock (random archive and revision ids, the random
entry id and timestamps in `.http` pointers, mtimes, modes from the umask) is rewritten:
archive ids become the wheel's sha256 (or a digest of the built tree), revision ids a fastid derived
from the sdist's sha256, pointers are rebuilt from their fields with a synthesised timeless policy.
The cache is read in the format of the uv that filled it and written in every family of the format
set: the unpacked archives once, each family's pointers and links beside them (uvcache/).
Nothing is copied: the trees point at the raw cache's files. Locks, interpreter info, index
snapshots, built `.whl` files, sdist sources and git checkouts are left out: `uv sync --frozen`
does not read them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .errors import OcicacheError
from .selection import Selected
from .tree import Entry, PackageRef, PackageTree, file_entry, walk_tree
from .uvcache import (
    ARCHIVE_BUCKET,
    BUILT_METADATA,
    GIT_SHARDS,
    POINTER_SUFFIX,
    REVISION_POINTER,
    SDIST_SOURCES,
    CacheFamily,
    FormatSet,
    Pointer,
    PointerError,
    fastid,
    git_shard_pattern,
)
from .uvcache.digest import wheel_cache_key
from .uvcache.pointer import PointerKind
from .uvcache.unzip import NotPlainWheelError, wheel_archive_entries

__all__ = ["NormaliseError", "WheelWatch", "base_tree", "index_dir_of", "normalise_cache", "unpacked_wheel_tree"]


class NormaliseError(OcicacheError):
    pass


@dataclass(frozen=True, slots=True)
class _Found:
    rel_dir: str  # directory of the .http file, relative to its bucket
    filename: str
    pointer: Pointer


@dataclass(frozen=True, slots=True)
class _BuiltWheel:
    rel_link: str  # the link's path relative to the revision or git shard directory
    archive: Path  # the unpacked wheel it points at
    metadata: Path | None  # uv's metadata.msgpack beside it


def base_tree(formats: FormatSet) -> PackageTree:
    """The constant scaffold uv creates in every cache (its own layer, identical everywhere)."""
    return PackageTree(package=None, entries=tuple(
        Entry(path=p, kind="file", data=d, size=len(d)) for p, d in formats.base_files))


def normalise_cache(
    cache: Path,
    populated: CacheFamily,
    formats: FormatSet,
    packages: list[tuple[Selected, str]],
    progress: Callable[[str], None] = lambda _msg: None,
    reader: _Reader | None = None,
) -> list[PackageTree]:
    """One canonical tree per (selected package, reuse key), in the order given.

    `populated` is the family of the uv that filled `cache`. Raises NormaliseError if a package's
    entry is missing (uv chose another artifact than the selection, or the cache is damaged).
    """
    reader = reader or _Reader(cache, populated, formats)
    trees = []
    for selected, key in packages:
        ref = PackageRef(name=selected.name, version=selected.version, artifact=selected.artifact,
                         hash=selected.hash, key=key)
        if selected.kind == "wheel":
            entries = reader.wheel(selected)
        elif selected.kind == "sdist":
            entries = reader.sdist(selected)
        else:
            entries = reader.git(selected)
        trees.append(PackageTree(package=ref, entries=_unique(entries)))
        progress(selected.name)
    return trees


def unpacked_wheel_tree(selected: Selected, key: str, wheel: Path, index_dir: str,
                        formats: FormatSet) -> PackageTree:
    """The tree uv's cache would hold for `selected`, a wheel from an index, read from the `.whl`
    itself (no uv run, nothing unpacked to disk): its archive as uv unzips it, and each family's
    pointer and link in `<wheels bucket>/<index_dir>/<name>/`. `index_dir` is the directory uv
    keys the index by (`index/<digest>`), learnt from a wheel of the same index uv filled
    (fill.py checks the two ways agree on that wheel). Raises NotPlainWheelError for a wheel to
    leave to uv."""
    assert selected.sha256 is not None and selected.url is not None
    entry_key = wheel_cache_key(selected.artifact)
    if entry_key is None:
        raise NotPlainWheelError(f"{selected.artifact}: a filename uv may key differently")
    new_id = selected.sha256
    pointer = Pointer(kind="wheel", id=new_id, hashes=(("Sha256", selected.sha256),), uri=selected.url,
                      filename=selected.artifact, size=selected.size)
    entries = wheel_archive_entries(wheel, f"{ARCHIVE_BUCKET}/{new_id}")
    for family in formats.families:
        where = f"{family.wheels}/{index_dir}/{canonicalize_name(selected.name)}"
        entries.append(_data_entry(f"{where}/{entry_key}{POINTER_SUFFIX}", family.codec.write(pointer)))
        entries.append(_link_entry(f"{where}/{entry_key}", new_id))
    ref = PackageRef(name=selected.name, version=selected.version, artifact=selected.artifact,
                     hash=selected.hash, key=key)
    return PackageTree(package=ref, entries=_unique(entries))


def index_dir_of(tree: PackageTree, formats: FormatSet) -> str | None:
    """The index directory (`index/<digest>`) of a wheel's tree uv filled: where its pointer is."""
    assert tree.package is not None
    bucket = formats.families[0].wheels + "/"
    name_dir = "/" + canonicalize_name(tree.package.name) + "/"
    for entry in tree.entries:
        if entry.path.startswith(bucket) and entry.path.endswith(POINTER_SUFFIX) and name_dir in entry.path:
            rel = entry.path[len(bucket):]
            return rel[: rel.rindex(name_dir)]
    return None


class WheelWatch:
    """The wheels a cache holds so far, while uv is still filling it (uv writes a wheel's pointer,
    atomically, only once its unpacked archive is in place); each pointer is read once."""

    def __init__(self, cache: Path, populated: CacheFamily) -> None:
        self.cache, self.populated = cache, populated
        self._read: set[str] = set()
        self.found: dict[str, _Found] = {}  # sha256 → pointer

    def scan(self) -> set[str]:
        """The sha256 of every wheel cached so far."""
        root = self.cache / self.populated.wheels
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not name.endswith(POINTER_SUFFIX) or path in self._read:
                    continue
                try:
                    pointer = self.populated.codec.read(Path(path).read_bytes(), "wheel")
                except (OSError, PointerError):
                    continue  # not there yet, or not for us: looked at again next time
                self._read.add(path)
                if pointer.sha256:
                    self.found[pointer.sha256] = _Found(os.path.relpath(dirpath, root), name, pointer)
        return set(self.found)

    def normalise(self, formats: FormatSet, wheels: list[tuple[Selected, str]]) -> list[PackageTree]:
        """Like `normalise_cache`, for wheels `scan` found."""
        return normalise_cache(self.cache, self.populated, formats, wheels, reader=_Reader(
            self.cache, self.populated, formats, wheels=self.found))


class _Reader:
    def __init__(self, cache: Path, populated: CacheFamily, formats: FormatSet,
                 wheels: dict[str, _Found] | None = None) -> None:
        self.cache, self.populated, self.formats = cache, populated, formats
        if wheels is not None:  # found by a WheelWatch: wheels only
            self.wheels, self.revisions = wheels, {}
        else:
            self.wheels = self._pointers(populated.wheels, "wheel", lambda name: name.endswith(POINTER_SUFFIX))
            self.revisions = self._pointers(populated.sdists, "revision", lambda name: name == REVISION_POINTER)
        self._built_ids: dict[Path, str] = {}

    def _built_id(self, archive: Path) -> str:
        """A built archive's stable id: `b` + 63 hex of a digest over its tree (hashed once)."""
        if archive not in self._built_ids:
            self._built_ids[archive] = "b" + _tree_digest(archive)[:63]
        return self._built_ids[archive]

    def _pointers(self, bucket: str, kind: PointerKind, wanted: Callable[[str], bool]) -> dict[str, _Found]:
        """sha256 → pointer, for every valid pointer under `bucket` (sdist sources skipped)."""
        out: dict[str, _Found] = {}
        root = self.cache / bucket
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames
                                 if d != SDIST_SOURCES and not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                if not wanted(name):
                    continue
                try:
                    pointer = self.populated.codec.read(Path(dirpath, name).read_bytes(), kind)
                except PointerError:
                    continue  # a broken entry uv itself would ignore; the package is reported missing
                if pointer.sha256:
                    out[pointer.sha256] = _Found(os.path.relpath(dirpath, root), name, pointer)
        return out

    def wheel(self, selected: Selected) -> list[Entry]:
        assert selected.sha256 is not None
        found = self.wheels.get(selected.sha256)
        if found is None:
            raise _missing(selected, "wheel")
        new_id = selected.sha256  # cannot collide with uv's 16/21-char random or 24-char dirhash ids
        pointer = found.pointer.canonical(new_id, selected.size)
        key = found.filename[: -len(POINTER_SUFFIX)]
        entries = _archive_entries(self.cache / ARCHIVE_BUCKET / found.pointer.id, new_id)
        for family in self.formats.families:
            where = f"{family.wheels}/{found.rel_dir}"
            entries.append(_data_entry(f"{where}/{found.filename}", family.codec.write(pointer)))
            entries.append(_link_entry(f"{where}/{key}", new_id))
        return entries

    def sdist(self, selected: Selected) -> list[Entry]:
        assert selected.sha256 is not None
        found = self.revisions.get(selected.sha256)
        if found is None:
            raise _missing(selected, "sdist")
        new_rev = fastid(b"revision:" + selected.sha256.encode())  # must stay a valid uv fastid
        built = _built_wheels(self.cache / self.populated.sdists / found.rel_dir / found.pointer.id)
        if not built:
            raise NormaliseError(f"{selected.name} {selected.version}: uv cached the sdist but no built wheel")
        pointer = found.pointer.canonical(new_rev, selected.size)
        entries = self._built_entries(built)
        for family in self.formats.families:
            where = f"{family.sdists}/{found.rel_dir}"
            entries.append(_data_entry(f"{where}/{found.filename}", family.codec.write(pointer)))
            entries += self._link_entries(family, built, f"{where}/{new_rev}")
        return entries

    def git(self, selected: Selected) -> list[Entry]:
        """sdists-vN/git/<digest(url)>/<commit[:16]>/: keyed by commit, no revision id to rewrite."""
        assert selected.commit is not None
        git_root = self.cache / self.populated.sdists / GIT_SHARDS
        shards = sorted(git_root.glob(git_shard_pattern(selected.commit))) if git_root.is_dir() else []
        for shard in shards:
            built = _built_wheels(shard)
            if built:
                rel = os.path.relpath(shard, self.cache / self.populated.sdists)
                entries = self._built_entries(built)
                for family in self.formats.families:
                    entries += self._link_entries(family, built, f"{family.sdists}/{rel}")
                return entries
        raise _missing(selected, "a wheel built from")

    def _built_entries(self, built: list[_BuiltWheel]) -> list[Entry]:
        return [e for b in built for e in _archive_entries(b.archive, self._built_id(b.archive))]

    def _link_entries(self, family: CacheFamily, built: list[_BuiltWheel], shard_out: str) -> list[Entry]:
        entries = []
        for b in built:
            entries.append(_link_entry(f"{shard_out}/{b.rel_link}", self._built_id(b.archive)))
            # uv's metadata of the built wheel: the same bytes whichever release (0.9.0 to 0.13.9) wrote
            # it (measured), so every family gets it and the layer does not depend on the filler.
            if b.metadata is not None:
                parent = os.path.dirname(b.rel_link)
                entries.append(file_entry(f"{shard_out}/{parent + '/' if parent else ''}{BUILT_METADATA}",
                                          b.metadata))
        return entries


def _missing(selected: Selected, what: str) -> NormaliseError:
    return NormaliseError(
        f"{selected.name} {selected.version}: uv did not cache {what} {selected.artifact}; "
        "the uv version or target may not match the selection (a bug worth reporting)"
    )


def _data_entry(path: str, data: bytes) -> Entry:
    return Entry(path=path, kind="file", data=data, size=len(data))


def _link_entry(path: str, archive_id: str) -> Entry:
    """`path` → `archive-v0/<id>`, relative as uv makes it (and as every release reads it)."""
    return Entry(path=path, kind="symlink",
                 link=os.path.relpath(f"{ARCHIVE_BUCKET}/{archive_id}", os.path.dirname(path)))


def _archive_entries(src: Path, archive_id: str) -> list[Entry]:
    if not src.is_dir():
        raise NormaliseError(f"cache archive {src} is missing")
    return list(walk_tree(src, f"{ARCHIVE_BUCKET}/{archive_id}"))


def _built_wheels(shard: Path) -> list[_BuiltWheel]:
    """Built-wheel symlinks (and their metadata) in an sdist revision or git shard directory."""
    out: list[_BuiltWheel] = []
    for dirpath, dirnames, filenames in os.walk(shard):
        dirnames.sort()
        links = [n for n in sorted(dirnames + filenames) if os.path.islink(os.path.join(dirpath, n))]
        dirnames[:] = [d for d in dirnames if d != SDIST_SOURCES and d not in links]
        rel = os.path.relpath(dirpath, shard)
        metadata = Path(dirpath, BUILT_METADATA) if BUILT_METADATA in filenames else None
        for name in links:
            out.append(_BuiltWheel(rel_link=name if rel == "." else f"{rel}/{name}",
                                   archive=Path(os.path.realpath(os.path.join(dirpath, name))), metadata=metadata))
    return out


def _unique(entries: list[Entry]) -> tuple[Entry, ...]:
    """Entries by path once: families that share a bucket (0.9.x and 0.10-0.12 share `sdists-v9`)
    write the same bytes at the same path."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        seen = by_path.setdefault(entry.path, entry)
        if seen is not entry and (seen.data, seen.link, seen.source) != (entry.data, entry.link, entry.source):
            raise NormaliseError(f"two cache formats disagree on {entry.path} (a bug worth reporting)")
    return tuple(by_path.values())


def _tree_digest(path: Path) -> str:
    """sha256 over paths, types, exec bits and contents."""
    h = hashlib.sha256()
    for entry in walk_tree(path, "."):
        if entry.kind == "symlink":
            h.update(b"L" + entry.path.encode() + b"\0" + (entry.link or "").encode() + b"\0")
        elif entry.kind == "dir":
            h.update(b"D" + entry.path.encode() + b"\0")
        else:
            assert entry.source is not None
            with open(entry.source, "rb") as f:
                h.update(b"F" + (b"x" if entry.executable else b"-") + entry.path.encode() + b"\0"
                         + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()
