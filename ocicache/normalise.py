"""Raw uv cache → canonical, relocatable per-package trees (docs/image-format.md, "Normalisation").

What varies between two populations of the same lock (random archive and revision ids, the random
entry id and timestamps in `.http` pointers, mtimes, modes from the umask) is rewritten:
archive ids become the wheel's sha256 (or a digest of the built tree), revision ids a fastid derived
from the sdist's sha256, pointers get a derived entry id and a synthesised timeless policy. Nothing is
copied: the trees point at the raw cache's files. Locks, interpreter info, index snapshots, built
`.whl` files, sdist sources and git checkouts are left out: `uv sync --frozen` does not read them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OcicacheError
from .selection import Selected
from .tree import Entry, PackageRef, PackageTree, file_entry, walk_tree
from .uvcache import CacheFormat
from .uvcache.httpfile import HttpFile, HttpFileError, fastid, parse

__all__ = ["NormaliseError", "base_tree", "normalise_cache"]


class NormaliseError(OcicacheError):
    pass


@dataclass(frozen=True, slots=True)
class _Pointer:
    rel_dir: str  # directory of the .http file, relative to the cache root
    filename: str
    http: HttpFile


def base_tree(fmt: CacheFormat) -> PackageTree:
    """The constant scaffold uv creates in every cache (its own layer, identical everywhere)."""
    return PackageTree(package=None, entries=tuple(
        Entry(path=p, kind="file", data=d, size=len(d)) for p, d in fmt.base_files))


def normalise_cache(
    cache: Path,
    fmt: CacheFormat,
    packages: list[tuple[Selected, str]],
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[PackageTree]:
    """One canonical tree per (selected package, reuse key), in the order given.

    Raises NormaliseError if a package's entry is missing (uv chose another artifact than the
    selection, or the cache is damaged).
    """
    wheels = _pointers(cache, fmt.wheels, lambda name: name.endswith(".http"))
    revisions = _pointers(cache, fmt.sdists, lambda name: name == "revision.http")
    trees = []
    for selected, key in packages:
        ref = PackageRef(name=selected.name, version=selected.version, artifact=selected.artifact,
                         hash=selected.hash, key=key)
        if selected.kind == "wheel":
            entries = _wheel_entries(cache, fmt, wheels, selected)
        elif selected.kind == "sdist":
            entries = _sdist_entries(cache, fmt, revisions, selected)
        else:
            entries = _git_entries(cache, fmt, selected)
        trees.append(PackageTree(package=ref, entries=tuple(entries)))
        progress(selected.name)
    return trees


def _pointers(cache: Path, bucket: str, wanted: Callable[[str], bool]) -> dict[str, _Pointer]:
    """sha256 → pointer, for every valid pointer under `bucket` (sdist sources skipped)."""
    out: dict[str, _Pointer] = {}
    root = cache / bucket
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "src" and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if not wanted(name):
                continue
            try:
                http = parse(Path(dirpath, name).read_bytes())
            except HttpFileError:
                continue  # a broken entry uv itself would ignore; the package is reported missing
            if http.sha256:
                out[http.sha256] = _Pointer(os.path.relpath(dirpath, cache), name, http)
    return out


def _missing(selected: Selected, what: str) -> NormaliseError:
    return NormaliseError(
        f"{selected.name} {selected.version}: uv did not cache {what} {selected.artifact}; "
        "the uv version or target may not match the selection (a bug worth reporting)"
    )


def _archive_entries(src: Path, archive_rel: str) -> list[Entry]:
    if not src.is_dir():
        raise NormaliseError(f"cache archive {src} is missing")
    return list(walk_tree(src, archive_rel))


def _wheel_entries(cache: Path, fmt: CacheFormat, wheels: dict[str, _Pointer], selected: Selected) -> list[Entry]:
    assert selected.sha256 is not None
    pointer = wheels.get(selected.sha256)
    if pointer is None:
        raise _missing(selected, "wheel")
    new_id = selected.sha256  # cannot collide with uv's 16-char random or 24-char dirhash ids
    key = pointer.filename[: -len(".http")]
    archive_rel = f"{fmt.archive}/{new_id}"
    return [
        Entry(path=f"{pointer.rel_dir}/{pointer.filename}", kind="file",
              data=(data := pointer.http.canonical(new_id)), size=len(data)),
        Entry(path=f"{pointer.rel_dir}/{key}", kind="symlink",
              link=os.path.relpath(archive_rel, pointer.rel_dir)),
        *_archive_entries(cache / fmt.archive / pointer.http.id, archive_rel),
    ]


def _built_wheel_entries(cache: Path, fmt: CacheFormat, shard: Path, shard_rel: str) -> list[Entry]:
    """Built-wheel symlinks (and their metadata) in an sdist revision or git shard directory."""
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(shard):
        dirnames.sort()
        links = [n for n in sorted(dirnames + filenames) if os.path.islink(os.path.join(dirpath, n))]
        dirnames[:] = [d for d in dirnames if d != "src" and d not in links]
        rel = os.path.relpath(dirpath, shard)
        out_dir = shard_rel if rel == "." else f"{shard_rel}/{rel}"
        for name in links:
            target = Path(os.path.realpath(os.path.join(dirpath, name)))
            new_id = "b" + _tree_digest(target)[:63]
            archive_rel = f"{fmt.archive}/{new_id}"
            entries.append(Entry(path=f"{out_dir}/{name}", kind="symlink",
                                 link=os.path.relpath(archive_rel, out_dir)))
            entries += _archive_entries(target, archive_rel)
        if links and "metadata.msgpack" in filenames:
            entries.append(file_entry(f"{out_dir}/metadata.msgpack", Path(dirpath, "metadata.msgpack")))
    return entries


def _sdist_entries(cache: Path, fmt: CacheFormat, revisions: dict[str, _Pointer], selected: Selected) -> list[Entry]:
    assert selected.sha256 is not None
    pointer = revisions.get(selected.sha256)
    if pointer is None:
        raise _missing(selected, "sdist")
    new_rev = fastid(b"revision:" + selected.sha256.encode())  # must stay a valid uv fastid
    built = _built_wheel_entries(cache, fmt, cache / pointer.rel_dir / pointer.http.id,
                                 f"{pointer.rel_dir}/{new_rev}")
    if not built:
        raise NormaliseError(f"{selected.name} {selected.version}: uv cached the sdist but no built wheel")
    data = pointer.http.canonical(new_rev)
    return [Entry(path=f"{pointer.rel_dir}/{pointer.filename}", kind="file", data=data, size=len(data)), *built]


def _git_entries(cache: Path, fmt: CacheFormat, selected: Selected) -> list[Entry]:
    """sdists/git/<digest(url)>/<commit[:16]>/: keyed by commit, no revision id to rewrite."""
    assert selected.commit is not None
    git_root = cache / fmt.sdists / "git"
    shards = sorted(git_root.glob(f"*/{selected.commit[:16]}")) if git_root.is_dir() else []
    for shard in shards:
        built = _built_wheel_entries(cache, fmt, shard, os.path.relpath(shard, cache))
        if built:
            return built
    raise _missing(selected, "a wheel built from")


def _tree_digest(path: Path) -> str:
    """sha256 over paths, types, exec bits and contents: a built archive's stable id."""
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
