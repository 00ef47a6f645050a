"""uv 0.10.0-0.12.24: `wheels-v6`, `sdists-v9`, pointers framed by `rkyv07`.

uv 0.10.0 to 0.12.24 share `wheels-v6`, and `sdists-v9` with 0.9.x. What they write drifts inside
the family (0.10.x writes 0.9's shapes; 0.11.33 16-char ids and relative links; 0.12.0 a five-element
array, which 0.11.x cannot read; 0.12.24 msgpack maps); every release reads the four-element array.
Measured: a small lock populated by the first and last release of the range, and read offline by
each from an image ocicache wrote (tests/test_uv_versions.py).
"""

from __future__ import annotations

from . import rkyv07
from .family import CacheFamily

FAMILY = CacheFamily(
    id="wheels-v6",
    first="0.10.0",
    last="0.12.24",
    wheels="wheels-v6",
    sdists="sdists-v9",
    codec=rkyv07.CODEC,
)
