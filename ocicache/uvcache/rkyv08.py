"""Pointers as uv 0.13 writes them (DataWithCachePolicy with an entry id and a checksum).

Byte layout (uv-client/src/cached_client.rs; the same in 0.13.0 and 0.13.9, measured):
    payload (msgpack, struct-as-array) | zero pad to 16 | entry_id (16 B) | rkyv 0.8 CachePolicy
    | crc32 (u32 LE, over pad+entry_id+policy+len) | payload length (u64 LE)
The payload is `Archive = [id, [{alg: hex}], filename, 0, size]` for wheels and
`Revision = [id, [{alg: hex}], size]` for sdists.
"""

from __future__ import annotations

import struct
import zlib

from .msgpack import MsgpackError, Value, pack, unpack
from .pointer import Pointer, PointerError, PointerKind, fastid
from .rkyv import pack_string, read_string, string_area

__all__ = ["CODEC", "build", "synth_policy"]

# ArchivedCachePolicy root (rkyv 0.8, 16-aligned, little endian): 200 bytes at the end of the policy.
_ROOT_SIZE = 200
_CC_PUBLIC, _CC_IMMUTABLE, _CC_MAX_AGE = 1 << 8, 1 << 9, 1 << 10
# Fresh until ~2106 and `immutable`: even `uv sync --refresh` makes no request (docs/image-format.md).
SYNTH_MAX_AGE = 4294967295


class _Rkyv08:
    def read(self, raw: bytes, kind: PointerKind) -> Pointer:
        payload, _entry_id, policy = split(raw)
        try:
            value: Value = unpack(payload)
        except MsgpackError as exc:
            raise PointerError(f"pointer payload: {exc}") from None
        if not isinstance(value, list) or not value:
            raise PointerError("pointer payload is not an array")
        return Pointer.from_payload(value, kind, read_string(policy, len(policy) - _ROOT_SIZE + 8))

    def write(self, pointer: Pointer) -> bytes:
        hashes: list[Value] = [{alg: digest} for alg, digest in pointer.hashes]
        if pointer.kind == "wheel":
            payload = pack([pointer.id, hashes, pointer.filename, 0, pointer.size])
        else:
            payload = pack([pointer.id, hashes, pointer.size])
        return build(payload, fastid(b"entry:" + pointer.id.encode()).encode(), synth_policy(pointer.uri))


def split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(payload, entry id, policy) of a pointer, its CRC verified; PointerError if it is not one."""
    if len(raw) < 12 + 16:
        raise PointerError("too short for a uv cache pointer")
    checksum, data_len = struct.unpack_from("<IQ", raw, len(raw) - 12)
    if data_len > len(raw) - 12:
        raise PointerError("bad payload length")
    tail = raw[data_len:-12]
    if zlib.crc32(tail + raw[-8:]) != checksum:
        raise PointerError("checksum mismatch")
    pad = _pad16(data_len)
    if len(tail) < pad + 16 + _ROOT_SIZE:
        raise PointerError("too short for a uv 0.13 cache policy")
    return raw[:data_len], tail[pad : pad + 16], tail[pad + 16 :]


def build(payload: bytes, entry_id: bytes, policy: bytes) -> bytes:
    if len(entry_id) != 16:
        raise ValueError("entry id must be 16 bytes")
    tail = b"\0" * _pad16(len(payload)) + entry_id + policy
    length = struct.pack("<Q", len(payload))
    return payload + tail + struct.pack("<I", zlib.crc32(tail + length)) + length


def synth_policy(uri: str, ts: int = 0, max_age: int = SYNTH_MAX_AGE) -> bytes:
    """A canonical CachePolicy: GET uri → 200, `public, immutable, max-age`, no dated headers."""
    buf, vary_pos = string_area(uri)
    root = len(buf)
    r = bytearray(_ROOT_SIZE)
    pack_string(r, 8, len(uri.encode()), root)  # request.uri
    struct.pack_into("<Q", r, 72, ts)  # request time
    struct.pack_into("<H", r, 80, 200)  # status
    struct.pack_into("<QQQQH", r, 88, max_age, 0, 0, 0, _CC_PUBLIC | _CC_IMMUTABLE | _CC_MAX_AGE)
    struct.pack_into("<Q", r, 184, ts)  # response time
    struct.pack_into("<iI", r, 192, vary_pos - (root + 192), 0)  # vary: empty
    return bytes(buf + r)


def _pad16(n: int) -> int:
    return (16 - n % 16) % 16


CODEC = _Rkyv08()
