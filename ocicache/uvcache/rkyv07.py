"""Pointers as uv 0.9 through 0.12 write them: msgpack payload, rkyv 0.7 cache policy, length.

Byte layout (measured on 0.9.0, 0.9.30, 0.10.x, 0.11.x, 0.12.x; uv-client's `cached_client.rs`
before 0.13):
    payload (msgpack) | rkyv 0.7 CachePolicy (root of 320 bytes at its end) | policy length (u64 LE)
No padding, entry id or checksum. Payloads written: a wheel's `Archive` as the array
`[id, [[alg, hex]], filename, 0]` and a revision as `[id, [[alg, hex]]]`, the shapes 0.9.0 through
0.11.x write and every release through 0.12.24 reads (0.12.0's five-element array is refused by
0.11.x, measured). Read: arrays of 4 or 5 and 0.12's maps.
"""

from __future__ import annotations

import struct

from .msgpack import MsgpackError, Value, pack, unpack
from .pointer import Pointer, PointerError, PointerKind
from .rkyv import pack_string, read_string, string_area

__all__ = ["CODEC"]

# ArchivedCachePolicy root, rkyv 0.7 (8-aligned, little endian). CacheControl is 88 bytes:
# max_age Option<u64> +0, three bools +16, max_stale +24, min_fresh +40, six bools +56 (public +61),
# s_maxage +64, immutable +80.
_ROOT_SIZE = 320
_URI, _STATUS, _RESPONSE_CC, _VARY = 8, 128, 136, 312
_REQUEST_TIME, _RESPONSE_TIME = 120, 304
_CC_PUBLIC, _CC_IMMUTABLE = 61, 80
# Fresh until ~2106 and `immutable`: even `uv sync --refresh` makes no request (docs/image-format.md).
SYNTH_MAX_AGE = 4294967295


class _Rkyv07:
    def read(self, raw: bytes, kind: PointerKind) -> Pointer:
        if len(raw) < 8 + _ROOT_SIZE:
            raise PointerError("too short for a uv cache pointer")
        (policy_len,) = struct.unpack_from("<Q", raw, len(raw) - 8)
        if policy_len < _ROOT_SIZE or policy_len > len(raw) - 8:
            raise PointerError("bad policy length")
        payload, policy = raw[: len(raw) - 8 - policy_len], raw[len(raw) - 8 - policy_len : -8]
        try:
            value: Value = unpack(payload)
        except MsgpackError as exc:
            raise PointerError(f"pointer payload: {exc}") from None
        return Pointer.from_payload(value, kind, read_string(policy, len(policy) - _ROOT_SIZE + _URI))

    def write(self, pointer: Pointer) -> bytes:
        hashes: list[Value] = [[alg, digest] for alg, digest in pointer.hashes]
        if pointer.kind == "wheel":
            payload = pack([pointer.id, hashes, pointer.filename, 0])
        else:
            payload = pack([pointer.id, hashes])
        policy = synth_policy(pointer.uri)
        return payload + policy + struct.pack("<Q", len(policy))


def synth_policy(uri: str, ts: int = 0, max_age: int = SYNTH_MAX_AGE) -> bytes:
    """A canonical rkyv 0.7 CachePolicy: GET uri → 200, `public, immutable, max-age`, no dated headers."""
    buf, vary_pos = string_area(uri)
    root = len(buf)
    r = bytearray(_ROOT_SIZE)
    pack_string(r, _URI, len(uri.encode()), root)
    struct.pack_into("<Q", r, _REQUEST_TIME, ts)
    struct.pack_into("<H", r, _STATUS, 200)
    struct.pack_into("<BxxxxxxxQ", r, _RESPONSE_CC, 1, max_age)  # Some(max_age)
    r[_RESPONSE_CC + _CC_PUBLIC] = 1
    r[_RESPONSE_CC + _CC_IMMUTABLE] = 1
    struct.pack_into("<Q", r, _RESPONSE_TIME, ts)
    struct.pack_into("<iI", r, _VARY, vary_pos - (root + _VARY), 0)
    return bytes(buf + r)


CODEC = _Rkyv07()
