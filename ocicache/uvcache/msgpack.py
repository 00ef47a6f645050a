"""The msgpack subset uv's cache pointers use (rmp_serde output): str, uint, nil, bool, array, map.

Encoding picks the smallest representation, as rmp_serde does, so a pointer rebuilt from its fields
is byte-identical to the one uv wrote.
"""

from __future__ import annotations

import struct

__all__ = ["MsgpackError", "Value", "pack", "unpack"]

Value = str | int | bool | None | list["Value"] | dict[str, "Value"]


class MsgpackError(ValueError):
    pass


def pack(value: Value) -> bytes:
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(value: Value, out: bytearray) -> None:
    if value is None:
        out.append(0xC0)
    elif value is True or value is False:
        out.append(0xC3 if value else 0xC2)
    elif isinstance(value, int):
        if value < 0:
            raise MsgpackError("negative integers are not used in uv's pointers")
        if value < 0x80:
            out.append(value)
        elif value <= 0xFF:
            out += b"\xcc" + struct.pack(">B", value)
        elif value <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", value)
        elif value <= 0xFFFFFFFF:
            out += b"\xce" + struct.pack(">I", value)
        else:
            out += b"\xcf" + struct.pack(">Q", value)
    elif isinstance(value, str):
        raw = value.encode()
        n = len(raw)
        if n < 32:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += bytes([0xD9, n])
        elif n <= 0xFFFF:
            out += b"\xda" + struct.pack(">H", n)
        else:
            out += b"\xdb" + struct.pack(">I", n)
        out += raw
    elif isinstance(value, list):
        _header(len(value), 0x90, 0xDC, out)
        for item in value:
            _pack(item, out)
    elif isinstance(value, dict):
        _header(len(value), 0x80, 0xDE, out)
        for key, item in value.items():
            _pack(key, out)
            _pack(item, out)
    else:
        raise MsgpackError(f"cannot encode {type(value).__name__}")


def _header(n: int, fix: int, wide: int, out: bytearray) -> None:
    if n < 16:
        out.append(fix | n)
    elif n <= 0xFFFF:
        out += bytes([wide]) + struct.pack(">H", n)
    else:
        out += bytes([wide + 1]) + struct.pack(">I", n)


def unpack(buf: bytes) -> Value:
    """Decode one value that must span all of `buf`."""
    value, end = _unpack(buf, 0, 0)
    if end != len(buf):
        raise MsgpackError(f"{len(buf) - end} trailing bytes")
    return value


_MAX_DEPTH = 32  # uv's pointers nest three levels; deeper is not a pointer, and would exhaust the stack


def _unpack(buf: bytes, i: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise MsgpackError(f"msgpack nested deeper than {_MAX_DEPTH} levels")
    try:
        b = buf[i]
        if b < 0x80:
            return b, i + 1
        if 0xA0 <= b <= 0xBF:
            return _str(buf, i + 1, b & 0x1F)
        if 0x90 <= b <= 0x9F:
            return _array(buf, i + 1, b & 0x0F, depth)
        if 0x80 <= b <= 0x8F:
            return _map(buf, i + 1, b & 0x0F, depth)
        if b == 0xC0:
            return None, i + 1
        if b in (0xC2, 0xC3):
            return b == 0xC3, i + 1
        widths = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q"}
        if b in widths:
            fmt = widths[b]
            return struct.unpack_from(fmt, buf, i + 1)[0], i + 1 + struct.calcsize(fmt)
        if b == 0xD9:
            return _str(buf, i + 2, buf[i + 1])
        if b == 0xDA:
            return _str(buf, i + 3, struct.unpack_from(">H", buf, i + 1)[0])
        if b == 0xDC:
            return _array(buf, i + 3, struct.unpack_from(">H", buf, i + 1)[0], depth)
        if b == 0xDE:
            return _map(buf, i + 3, struct.unpack_from(">H", buf, i + 1)[0], depth)
    except (IndexError, struct.error):
        raise MsgpackError("truncated msgpack") from None
    raise MsgpackError(f"unexpected msgpack byte {b:#x} at {i}")


def _str(buf: bytes, start: int, n: int) -> tuple[str, int]:
    if start + n > len(buf):
        raise MsgpackError("truncated msgpack string")
    try:
        return buf[start : start + n].decode(), start + n
    except UnicodeDecodeError:
        raise MsgpackError("msgpack string is not UTF-8") from None


def _array(buf: bytes, i: int, n: int, depth: int) -> tuple[list[Value], int]:
    items = []
    for _ in range(n):
        item, i = _unpack(buf, i, depth + 1)
        items.append(item)
    return items, i


def _map(buf: bytes, i: int, n: int, depth: int) -> tuple[dict[str, Value], int]:
    out: dict[str, Value] = {}
    for _ in range(n):
        key, i = _unpack(buf, i, depth + 1)
        if not isinstance(key, str):
            raise MsgpackError("msgpack map key is not a string")
        out[key], i = _unpack(buf, i, depth + 1)
    return out, i
