"""uv's `cache_digest` and the cache key of a wheel filename (same in every family, 0.9.0 to 0.13.9).

`cache_digest(s)` is SeaHash (seahash 4, default seeds) over `s`'s bytes followed by 0xff (Rust's
`Hash for str`), written as the little-endian bytes of the u64 in hex (`uv-cache-key/src/digest.rs`).
tests/test_unpack_wheels.py checks it against the vectors of uv's own tests and against a cache
real uv reads offline.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

__all__ = ["cache_digest", "wheel_cache_key"]

_MASK = (1 << 64) - 1
_SEEDS = (0x16F11FE89B0D677C, 0xB480A793D8E6C86C, 0x6FE2E5AAF078EBC9, 0x14F994A4C5259381)
_CACHE_KEY_MAX_LEN = 64
# name-version[-build]-python-abi-platform.whl, the parts as uv splits them
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?"
                    r"-(?P<tags>[^-]+-[^-]+-[^-]+)\.whl$")


def _diffuse(x: int) -> int:
    x = (x * 0x6EED0E9DA4D94A4F) & _MASK
    x ^= (x >> 32) >> (x >> 60)
    return (x * 0x6EED0E9DA4D94A4F) & _MASK


def _seahash(data: bytes) -> int:
    lanes = list(_SEEDS)
    for n, i in enumerate(range(0, len(data), 8)):
        lanes[n % 4] = _diffuse(lanes[n % 4] ^ int.from_bytes(data[i:i + 8], "little"))
    return _diffuse(lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3] ^ len(data))


def cache_digest(text: str) -> str:
    """uv's `cache_digest` of a string (16 hex characters)."""
    return _seahash(text.encode() + b"\xff").to_bytes(8, "little").hex()


def wheel_cache_key(filename: str) -> str | None:
    """`WheelFilename::cache_key()`: the name of a wheel's entry in its package directory,
    `{version}-{tags}`, or the version cut short and a digest of the tags when that is longer than
    64 characters. None for a filename uv might parse differently (ocicache then lets uv unpack it)."""
    m = _WHEEL.match(filename)
    if m is None:
        return None
    version, tags = m.group("version"), m.group("tags")
    try:
        if str(Version(version)) != version:  # uv writes the normalised version: not worth guessing
            return None
    except InvalidVersion:
        return None
    full = f"{version}-{tags}"
    if len(full) <= _CACHE_KEY_MAX_LEN:
        return full
    short = version[: _CACHE_KEY_MAX_LEN - 1 - 16].rstrip(".+")
    return f"{short}-{cache_digest(tags)}"
