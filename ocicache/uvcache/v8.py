"""uv 0.13.9: `wheels-v8`, `sdists-v11`, pointers framed by `rkyv08`.

uv 0.13.9, the pinned uv that fills the cache (shared/reference/uv-cache-format-0.13.9.md).
Measured: a small lock populated by the first and last release of the range, and read offline by
each from an image ocicache wrote (tests/test_uv_versions.py).
"""

from __future__ import annotations

from . import rkyv08
from .family import CacheFamily

FAMILY = CacheFamily(
    id="wheels-v8",
    first="0.13.9",
    last="0.13.9",
    wheels="wheels-v8",
    sdists="sdists-v11",
    codec=rkyv08.CODEC,
)
