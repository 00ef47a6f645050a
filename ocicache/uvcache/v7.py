"""uv 0.13.0-0.13.8: `wheels-v7`, `sdists-v10`, pointers framed by `rkyv08`.

uv 0.13.0 to 0.13.8: the 0.13 framing (entry id, CRC, rkyv 0.8 policy), pointers byte-identical
to 0.13.9's; only the bucket versions differ.
Measured: a small lock populated by the first and last release of the range, and read offline by
each from an image ocicache wrote (tests/test_uv_versions.py).
"""

from __future__ import annotations

from . import rkyv08
from .family import CacheFamily

FAMILY = CacheFamily(
    id="wheels-v7",
    first="0.13.0",
    last="0.13.8",
    wheels="wheels-v7",
    sdists="sdists-v10",
    codec=rkyv08.CODEC,
)
