"""A wheel's unpacked archive (`archive-v0/<id>/`) as uv writes it, read straight from the `.whl`.

uv unzips a wheel as it is: every file of the zip at its path, a directory for every directory
entry and every parent, each file 0644 plus the execute bits when the zip's Unix mode has any
(`uv-extract`, the same in 0.9.0 to 0.13.9). Nothing is added or left out. So the archive's tree can
be had without writing it to disk: file entries point at their zip member, and packing inflates
them (tree.py). Anything unusual (names uv would sanitise or skip, symlinks, a method other than
stored or deflate, encryption, duplicates, local and central headers that disagree) raises
`NotPlainWheelError`: ocicache then lets uv unpack that wheel, whose behaviour there is the reference.
"""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from ..tree import Entry, ZipMember

__all__ = ["NotPlainWheelError", "wheel_archive_entries"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class NotPlainWheelError(Exception):
    """A wheel ocicache does not unpack itself (the reason is the message)."""


def wheel_archive_entries(wheel: Path, root: str) -> list[Entry]:
    """The entries of `wheel` unpacked under `root` (e.g. `archive-v0/<id>`): `root`, every directory
    below it (as the tree of uv's unpacked copy has them) and every file, sorted by path."""
    dirs: set[str] = set()
    files: dict[str, Entry] = {}
    try:
        with zipfile.ZipFile(wheel) as zf, open(wheel, "rb") as raw:
            for info in zf.infolist():
                name = info.filename.rstrip("/") if info.is_dir() else info.filename
                _check_name(info, name)
                if name in files or (name in dirs and not info.is_dir()):
                    raise NotPlainWheelError(f"{info.filename!r} is in the zip twice")
                parts = name.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
                if info.is_dir():  # twice is harmless: uv creates it once
                    dirs.add(name)
                    continue
                mode = info.external_attr >> 16
                if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                    raise NotPlainWheelError(f"{info.filename!r} is not a regular file in the zip")
                if info.compress_type not in _METHODS or info.flag_bits & 0x1:
                    raise NotPlainWheelError(
                        f"{info.filename!r}: compression method {info.compress_type}, or encrypted")
                files[name] = Entry(path=f"{root}/{name}", kind="file", source=wheel, size=info.file_size,
                                    executable=bool(mode & 0o111), member=_member(raw, info))
    except (zipfile.BadZipFile, OSError, EOFError, struct.error, UnicodeError) as exc:
        raise NotPlainWheelError(f"not a zip ocicache reads ({exc})") from None
    both = dirs & files.keys()
    if both:
        raise NotPlainWheelError(f"{min(both)!r} is both a file and a directory in the zip")
    entries = [Entry(path=root, kind="dir"), *(Entry(path=f"{root}/{d}", kind="dir") for d in dirs),
               *files.values()]
    return sorted(entries, key=lambda e: e.path)


def _check_name(info: zipfile.ZipInfo, name: str) -> None:
    if not info.flag_bits & 0x800 and not info.filename.isascii():
        raise NotPlainWheelError(f"{info.filename!r}: a non-UTF-8 name")  # zipfile read it as cp437; uv as UTF-8
    parts = name.split("/")
    if not name or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise NotPlainWheelError(f"{info.filename!r}: a name uv would sanitise or skip")


def _member(raw: BinaryIO, info: zipfile.ZipInfo) -> ZipMember:
    """Where the member's data starts, from its local header (which must name the same file)."""
    raw.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_MAGIC:
        raise NotPlainWheelError(f"{info.filename!r}: no local header where the central directory says")
    name_len, extra_len = fields[9], fields[10]
    local_name = raw.read(name_len)
    if local_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise NotPlainWheelError(f"{info.filename!r}: local and central headers name different files")
    return ZipMember(offset=info.header_offset + _LOCAL_HEADER.size + name_len + extra_len,
                     compressed_size=info.compress_size, method=info.compress_type, crc32=info.CRC)
