"""uv 0.9.0-0.9.30: `wheels-v5`, `sdists-v9`, pointers framed by `rkyv07`.

uv 0.9.x: msgpack array-of-4 pointers, 21-char archive ids, absolute archive links
(it reads the relative links ocicache writes: measured).
Measured: a small lock populated by the first and last release of the range, and read offline by
each from an image ocicache wrote (tests/test_uv_versions.py).
"""

from __future__ import annotations

from . import rkyv07
from .family import CacheFamily

FAMILY = CacheFamily(
    id="wheels-v5",
    first="0.9.0",
    last="0.9.30",
    wheels="wheels-v5",
    sdists="sdists-v9",
    codec=rkyv07.CODEC,
)
