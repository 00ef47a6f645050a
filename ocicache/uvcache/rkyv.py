"""The one rkyv shape both pointer framings share (0.7 in uv 0.9-0.12, 0.8 in 0.13): an archived
string, stored out of line before the root and reached by a relative pointer, little endian."""

from __future__ import annotations

import struct

from .pointer import PointerError

__all__ = ["pack_string", "read_string", "string_area"]


def string_area(text: str) -> tuple[bytearray, int]:
    """The bytes before an archived root holding `text` out of line, 8-aligned, and the offset an
    empty Vec after it may point at. Short strings would be stored inline: never a URL here."""
    buf = bytearray(text.encode())
    if len(buf) <= 8:
        raise PointerError("inline rkyv strings are not supported")
    while len(buf) % 4:
        buf.append(0)
    empty_vec_at = len(buf)
    while len(buf) % 8:
        buf.append(0)
    return buf, empty_vec_at


def pack_string(root: bytearray, at: int, length: int, root_start: int) -> None:
    """Write the archived string header at `at` of `root` (which starts at `root_start` in the
    buffer) pointing at the string written at offset 0."""
    struct.pack_into("<Ii", root, at, 0x80 | (length & 0x3F) | ((length >> 6) << 8), -(root_start + at))


def read_string(buf: bytes, at: int) -> str:
    """The archived string whose header is at `at` of `buf` (inline or out of line)."""
    try:
        if buf[at] & 0xC0 != 0x80:  # inline, padded with 0xff
            return buf[at : at + 8].rstrip(b"\xff\x00").decode()
        word, rel = struct.unpack_from("<Ii", buf, at)
        length = (word & 0x3F) | ((word >> 8) << 6)
        if at + rel < 0 or at + rel + length > len(buf):
            raise PointerError("policy URI out of bounds")
        return buf[at + rel : at + rel + length].decode()
    except UnicodeDecodeError:
        raise PointerError("policy URI is not UTF-8") from None
    except (IndexError, struct.error):
        raise PointerError("policy URI truncated") from None
