"""Canonical per-package trees: what a layer holds, as paths relative to the cache root.

A tree is virtual: file entries point at files in the raw uv cache (or carry small rewritten bytes),
so normalising copies nothing and packing streams straight from the populated cache.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from .bytecode import Compiler

EntryKind = Literal["dir", "file", "symlink"]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipMember:
    """A file's bytes inside a zip (a wheel): where its data starts, how it is compressed."""

    offset: int
    compressed_size: int
    method: int  # 0 stored, 8 deflate
    crc32: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """A file made from another entry when its layer is packed: the pyc of a `.py` (bytecode.py)."""

    source: Entry
    compiler: Compiler


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One tar entry. Exactly one of `source`/`data`/`compiled` for files (with `member`, `source` is a
    zip and the file is that member; a compiled file's `size` is 0 until packed); `link` for symlinks."""

    path: str
    kind: EntryKind
    executable: bool = False
    source: Path | None = None
    data: bytes | None = None
    link: str | None = None
    size: int = 0
    member: ZipMember | None = None
    compiled: Compiled | None = None

    def __post_init__(self) -> None:
        if self.path.startswith("/") or ".." in self.path.split("/") or not self.path:
            raise ValueError(f"unsafe tree path: {self.path!r}")
        if self.kind == "file" and [self.source, self.data, self.compiled].count(None) != 2:
            raise ValueError(f"file entry {self.path!r} needs exactly one of source/data/compiled")
        if self.kind == "symlink" and not self.link:
            raise ValueError(f"symlink entry {self.path!r} needs a target")

    @property
    def mode(self) -> int:
        if self.kind == "dir":
            return 0o755
        if self.kind == "symlink":
            return 0o777
        return 0o755 if self.executable else 0o644


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageRef:
    """What a tree holds, as written into layer annotations."""

    name: str
    version: str
    artifact: str  # wheel/sdist filename, or the git URL for git sources
    hash: str  # "sha256:<hex>" of the artifact, or "git:<commit>"
    key: str  # reuse key (keys.py)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "artifact": self.artifact,
                "hash": self.hash, "key": self.key}


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageTree:
    package: PackageRef | None  # None for the constant cache scaffold ("base")
    entries: tuple[Entry, ...] = field(default_factory=tuple)
    # Set for a package known from an existing layer and not populated (yet): its recorded size.
    known_size: int | None = None

    @property
    def size(self) -> int:
        """Unpacked bytes, the pycs of --compile-bytecode left out (known only once packed); what the
        planner weighs, the same whether the tree was populated or taken out of a known layer."""
        return self.known_size if self.known_size is not None else sum(e.size for e in self.entries)

    @property
    def is_placeholder(self) -> bool:
        return self.known_size is not None and not self.entries

    def owned_paths(self) -> list[str]:
        """The roots of this tree: entries whose parent is not itself an entry (what a bundle
        layer's extraction selects; a directory root stands for everything under it)."""
        paths = {e.path for e in self.entries}
        return sorted(p for p in paths if p.rsplit("/", 1)[0] not in paths or "/" not in p)

    def to_annotation(self) -> dict[str, object]:
        assert self.package is not None
        return {**self.package.to_json(), "size": self.size, "paths": self.owned_paths()}

    @property
    def name(self) -> str:
        return self.package.name if self.package else "_base"


def read_chunks(entry: Entry) -> Iterator[bytes]:
    """The bytes of a file entry whose content is in `source`, in chunks of at most 1 MiB; OSError if
    they are not the `size` bytes the entry promises (a file changed meanwhile, a corrupt zip member)."""
    assert entry.source is not None
    with open(entry.source, "rb") as f:
        if entry.member is not None:
            f.seek(entry.member.offset)
            try:
                yield from _member_chunks(f, entry.member, entry.size)
            except OSError as exc:
                raise OSError(f"{entry.path}: {exc}") from None
            return
        left = entry.size
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise OSError(f"{entry.source}: changed while it was read (shorter than {entry.size} bytes)")
            left -= len(chunk)
            yield chunk


def _member_chunks(f: BinaryIO, member: ZipMember, size: int) -> Iterator[bytes]:
    """A zip member's data, inflated with ISA-L (what packing spends most of its time on besides
    compressing), its CRC-32 checked at the end."""
    from isal import isal_zlib

    crc, produced, left = 0, 0, member.compressed_size
    inflater = isal_zlib.decompressobj(-15) if member.method == 8 else None
    while left or (inflater is not None and inflater.unconsumed_tail):
        if inflater is not None and inflater.unconsumed_tail:
            data = inflater.unconsumed_tail
        else:
            data = f.read(min(left, _CHUNK))
            if not data:
                raise OSError("the zip ends inside a member")
            left -= len(data)
        try:
            out = data if inflater is None else inflater.decompress(data, _CHUNK)
        except isal_zlib.error as exc:
            raise OSError(f"the zip member does not inflate ({exc})") from None
        crc = isal_zlib.crc32(out, crc)
        produced += len(out)
        if produced > size:
            raise OSError("a zip member inflates to more bytes than its header says")
        yield out
    if inflater is not None:
        try:
            out = inflater.flush()
        except isal_zlib.error as exc:
            raise OSError(f"the zip member does not inflate ({exc})") from None
        crc = isal_zlib.crc32(out, crc)
        produced += len(out)
        yield out
    if produced != size or crc != member.crc32:
        raise OSError("a zip member does not match its CRC-32 or size (a corrupt wheel)")


def file_entry(path: str, source: Path) -> Entry:
    st = source.stat()
    return Entry(path=path, kind="file", source=source, size=st.st_size,
                 executable=bool(st.st_mode & 0o111))


def walk_tree(src: Path, dest: str) -> Iterator[Entry]:
    """Entries for every file, symlink and directory under `src`, re-rooted at `dest` (sorted)."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        base = dest if rel_dir == "." else f"{dest}/{rel_dir}"
        yield Entry(path=base, kind="dir")
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = Path(dirpath, name)
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield Entry(path=f"{base}/{name}", kind="symlink", link=os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                yield Entry(path=f"{base}/{name}", kind="file", source=full, size=st.st_size,
                            executable=bool(st.st_mode & 0o111))
            # anything else (fifos, devices) never belongs in a uv archive: left out


def rooted(entries: Iterable[Entry], root: str) -> list[Entry]:
    """`entries` moved under `root` (a stacked image's cache directory, e.g. `root/.cache/uv`)."""
    if not root:
        return list(entries)
    return [replace(e, path=f"{root}/{e.path}") for e in entries]


def ancestors(root: str) -> frozenset[str]:
    """The directories above `root`: a stacked layer leaves them to the base image (whose /root
    keeps its own mode and owner)."""
    parts = root.split("/") if root else []
    return frozenset("/".join(parts[:i]) for i in range(1, len(parts)))


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries plus every missing parent directory, sorted by path, duplicates removed."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        by_path.setdefault(e.path, e)
        parts = e.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            by_path.setdefault(parent, Entry(path=parent, kind="dir"))
    return [by_path[p] for p in sorted(by_path)]
