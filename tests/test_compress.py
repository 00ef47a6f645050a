"""The gzip codec's bytes depend on the input only, not on where its compressor lives in memory."""

from __future__ import annotations

import random
import struct
import zlib

from isal import isal_zlib

from ocicache.compress import get_codec


def _crc32c_u32(value: int) -> int:
    """The x86 `crc32` instruction on a 32-bit operand (initial value 0, no final xor): ISA-L's hash."""
    crc = 0
    for byte in struct.pack("<I", value & 0xFFFFFFFF):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def _bucket(data: bytes) -> int:
    return _crc32c_u32(struct.unpack("<I", data)[0]) & 0x7FFF  # level 2: 15 hash bits


def _address_bucket(compressobj: object) -> int:
    """The bucket ISA-L 2.32's level-2 x86 body uses for input position 2 of a stream with no history:
    computed from the stream's address (`&zst`, after the 16-byte object header), not from the data."""
    inner = getattr(compressobj, "_inner", compressobj)  # ours wraps isal's
    return _crc32c_u32((id(inner) + 16) >> 16) & 0x7FFF


def _filler(seed: int, n: int) -> bytes:
    """Bytes with no repeated 4-byte sequence, so the only match is the one planted."""
    rng = random.Random(seed)
    while True:
        f = bytes(0x30 + rng.getrandbits(4) for _ in range(n))
        grams = [f[i:i + 4] for i in range(n - 3)]
        if len(set(grams)) == len(grams):
            return f


def _input_hitting(bucket: int) -> bytes:
    """A stream whose first 4 bytes hash to `bucket` and recur later: where the faulty hash decides a match."""
    rng = random.Random(11)
    while True:
        head = bytes(rng.randrange(0xC0, 0x100) for _ in range(4))
        if _bucket(head) == bucket:
            return head + b"\x90\x91\x92" + _filler(5, 300) + head + b"\xa0\xa1\xa2\xa3" + _filler(7, 300)


def _two_with_other_buckets(make) -> tuple[object, object]:
    kept = [make() for _ in range(8)]  # alive, so their addresses differ
    first = kept[0]
    second = next((c for c in kept[1:] if _address_bucket(c) != _address_bucket(first)), None)
    assert second is not None, "eight compressors, one address bucket: cannot show the defect"
    return first, second


def test_the_same_bytes_compress_the_same_in_compressors_at_other_addresses():
    """Failed before the fix: the raw isal compressobj gives 368 vs 363 bytes for this input."""
    raw_a, raw_b = _two_with_other_buckets(lambda: isal_zlib.compressobj(2, isal_zlib.DEFLATED, 31))
    data = _input_hitting(_address_bucket(raw_a))
    raw = [c.compress(data) + c.flush() for c in (raw_a, raw_b)]  # type: ignore[attr-defined]
    assert raw[0] != raw[1], "the crafted input no longer shows ISA-L's defect: is the primer still needed?"

    codec = get_codec("gzip")
    ours_a, ours_b = _two_with_other_buckets(codec.compressor)
    data = _input_hitting(_address_bucket(ours_a))
    ours = [c.compress(data) + c.flush() for c in (ours_a, ours_b)]  # type: ignore[attr-defined]
    assert ours[0] == ours[1]
    assert zlib.decompress(ours[0], 31) == data


def test_inputs_shorter_than_the_primer_and_empty_ones_round_trip():
    codec = get_codec("gzip")
    for data in (b"", b"a", b"abcdefg", b"abcdefgh", b"abcdefghi", bytes(10240)):
        comp = codec.compressor()
        blob = comp.compress(data) + comp.flush()
        again = codec.compressor()
        assert blob == again.compress(data) + again.flush()
        assert zlib.decompress(blob, 31) == data
