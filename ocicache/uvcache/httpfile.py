"""uv 0.13 `.http` cache pointers (DataWithCachePolicy): parse, rewrite, rebuild.

Byte layout (uv-client/src/cached_client.rs, see docs/image-format.md):
    payload (msgpack, struct-as-array) | zero pad to 16 | entry_id (16 B) | rkyv CachePolicy
    | crc32 (u32 LE, over pad+entry_id+policy+len) | payload length (u64 LE)
The payload is `Archive = [id, hashes, filename, version, size]` for wheels and
`Revision = [id, hashes, size]` for sdists. Only the first string (the id) is rewritten.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

# ArchivedCachePolicy root (rkyv 0.8, 16-aligned, little endian): 200 bytes at the end of the policy.
_ROOT_SIZE = 200
_CC_PUBLIC, _CC_IMMUTABLE, _CC_MAX_AGE = 1 << 8, 1 << 9, 1 << 10
# Fresh until ~2106 and `immutable`: even `uv sync --refresh` makes no request (docs/image-format.md).
SYNTH_MAX_AGE = 4294967295
_FASTID_ALPHABET = b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SHA256_KEY = b"\xa6Sha256\xd9\x40"


class HttpFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class HttpFile:
    payload: bytes
    entry_id: bytes
    policy: bytes

    @property
    def id(self) -> str:
        """The archive id (wheels) or revision id (sdists)."""
        return _read_str(self.payload, 1)[0]

    @property
    def sha256(self) -> str | None:
        i = self.payload.find(_SHA256_KEY)
        if i < 0:
            return None
        return self.payload[i + len(_SHA256_KEY) : i + len(_SHA256_KEY) + 64].decode()

    @property
    def uri(self) -> str:
        root = len(self.policy) - _ROOT_SIZE
        at = root + 8
        if self.policy[at] & 0xC0 == 0x80:  # rkyv out-of-line string
            word, rel = struct.unpack_from("<Ii", self.policy, at)
            length = (word & 0x3F) | ((word >> 8) << 6)
            return self.policy[at + rel : at + rel + length].decode()
        return self.policy[at : at + 8].rstrip(b"\xff").decode()

    def canonical(self, new_id: str) -> bytes:
        """This pointer with `new_id`, a derived entry id and a synthesised timeless policy."""
        payload = _replace_first_str(self.payload, new_id)
        return build(payload, fastid(b"entry:" + new_id.encode()).encode(), synth_policy(self.uri))


def parse(raw: bytes) -> HttpFile:
    """Split a `.http` file and verify its CRC; raise HttpFileError if it is not one."""
    if len(raw) < 12 + 16:
        raise HttpFileError("too short for a uv cache pointer")
    checksum, data_len = struct.unpack_from("<IQ", raw, len(raw) - 12)
    if data_len > len(raw) - 12:
        raise HttpFileError("bad payload length")
    tail = raw[data_len:-12]
    if zlib.crc32(tail + raw[-8:]) != checksum:
        raise HttpFileError("checksum mismatch")
    pad = _pad16(data_len)
    payload = raw[:data_len]
    if not payload or payload[0] not in (0x95, 0x93):
        raise HttpFileError(f"unexpected payload header {payload[:1].hex()}")
    return HttpFile(payload, tail[pad : pad + 16], tail[pad + 16 :])


def build(payload: bytes, entry_id: bytes, policy: bytes) -> bytes:
    if len(entry_id) != 16:
        raise ValueError("entry id must be 16 bytes")
    tail = b"\0" * _pad16(len(payload)) + entry_id + policy
    length = struct.pack("<Q", len(payload))
    return payload + tail + struct.pack("<I", zlib.crc32(tail + length)) + length


def synth_policy(uri: str, ts: int = 0, max_age: int = SYNTH_MAX_AGE) -> bytes:
    """A canonical CachePolicy: GET uri → 200, `public, immutable, max-age`, no dated headers."""
    encoded = uri.encode()
    if len(encoded) <= 8:
        raise HttpFileError("inline rkyv strings are not supported")
    buf = bytearray(encoded)
    while len(buf) % 4:
        buf.append(0)
    vary_pos = len(buf)
    while len(buf) % 8:
        buf.append(0)
    root = len(buf)
    r = bytearray(_ROOT_SIZE)
    n = len(encoded)
    struct.pack_into("<Ii", r, 8, 0x80 | (n & 0x3F) | ((n >> 6) << 8), -(root + 8))  # request.uri
    struct.pack_into("<Q", r, 72, ts)  # request time
    struct.pack_into("<H", r, 80, 200)  # status
    struct.pack_into("<QQQQH", r, 88, max_age, 0, 0, 0, _CC_PUBLIC | _CC_IMMUTABLE | _CC_MAX_AGE)
    struct.pack_into("<Q", r, 184, ts)  # response time
    struct.pack_into("<iI", r, 192, vary_pos - (root + 192), 0)  # vary: empty
    return bytes(buf + r)


def fastid(seed: bytes) -> str:
    """16 chars of uv_fastid's alphabet derived from `seed` (revision ids are validated as fastids)."""
    digest = hashlib.sha256(seed).digest()[:16]
    return bytes(_FASTID_ALPHABET[b & 63] for b in digest).decode()


def _pad16(n: int) -> int:
    return (16 - n % 16) % 16


def _read_str(buf: bytes, i: int) -> tuple[str, int]:
    b = buf[i]
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return buf[i + 1 : i + 1 + n].decode(), i + 1 + n
    if b == 0xD9:
        n = buf[i + 1]
        return buf[i + 2 : i + 2 + n].decode(), i + 2 + n
    if b == 0xDA:
        n = struct.unpack_from(">H", buf, i + 1)[0]
        return buf[i + 3 : i + 3 + n].decode(), i + 3 + n
    raise HttpFileError(f"expected a msgpack string at {i}, got {b:#x}")


def _pack_str(s: str) -> bytes:
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return bytes([0xD9, len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def _replace_first_str(payload: bytes, new: str) -> bytes:
    _, end = _read_str(payload, 1)
    return payload[:1] + _pack_str(new) + payload[end:]
