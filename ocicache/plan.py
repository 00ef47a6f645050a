"""Pure: package trees → layer groups under a budget (DESIGN contract 5).

Docker's overlay2 refuses images of more than 125 layers; old standalone BuildKit failed near 70
for `RUN --mount=from`. So: the constant base scaffold gets one layer, every package of at least
`solo_threshold` bytes gets its own layer (the tensorflow layer is shared by every image that pins
that wheel), and the rest go into `buckets` buckets chosen by a stable hash of the package name, so
a one-package change touches one bucket. If more big packages exist than the budget allows, the
smallest of them fall back into their buckets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from .tree import PackageTree

__all__ = ["DEFAULT_BUCKETS", "DEFAULT_MAX_LAYERS", "DEFAULT_SOLO_THRESHOLD", "MAX_LAYERS_CAP",
           "LayerGroup", "pick_solos", "plan_layers", "solo_slots"]

MAX_LAYERS_CAP = 125  # dockerd's overlay2 maxLayerDepth, the strictest consumer measured
DEFAULT_MAX_LAYERS = 64  # under the ~70 at which older standalone BuildKit broke RUN --mount=from
DEFAULT_BUCKETS = 16
DEFAULT_SOLO_THRESHOLD = 1 << 20  # 1 MiB unpacked: below that, a layer of its own costs more than it saves

LayerKind = Literal["base", "package", "bucket"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerGroup:
    kind: LayerKind
    name: str
    trees: tuple[PackageTree, ...]


def bucket_of(name: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % buckets


def solo_slots(max_layers: int, buckets: int) -> int:
    """How many packages get a layer of their own: the budget less the scaffold and the buckets."""
    return max_layers - 1 - max(1, min(buckets, max_layers - 1))


def pick_solos(sizes: dict[str, int], threshold: int, slots: int) -> frozenset[str]:
    """The names (of `sizes`: name → bytes) that get a layer of their own: those of at least
    `threshold`, biggest first (then by name), at most `slots`."""
    ranked = sorted((n for n, size in sizes.items() if size >= threshold), key=lambda n: (-sizes[n], n))
    return frozenset(ranked[:max(slots, 0)])


def plan_layers(
    base: PackageTree,
    trees: list[PackageTree],
    *,
    max_layers: int = DEFAULT_MAX_LAYERS,
    buckets: int = DEFAULT_BUCKETS,
    solo_threshold: int = DEFAULT_SOLO_THRESHOLD,
) -> list[LayerGroup]:
    """Base first, then solo packages (biggest first), then non-empty buckets; order independent of
    input order."""
    if not 2 <= max_layers <= MAX_LAYERS_CAP:
        raise ValueError(f"max_layers must be between 2 and {MAX_LAYERS_CAP}")
    slots = solo_slots(max_layers, buckets)
    buckets = max_layers - 1 - slots
    solo_names = pick_solos({t.name: t.size for t in trees}, solo_threshold, slots)
    # Biggest first: dockerd keys layers by chain (a layer and everything below it), so a changed
    # layer re-pulls every layer after it; with the big, rarely changing packages first, a bump of a
    # small one re-pulls only small ones (measured: docs/benchmarks.md, scenario c).
    solos = sorted((t for t in trees if t.name in solo_names), key=lambda t: (-t.size, t.name))
    bucketed: dict[int, list[PackageTree]] = {}
    for tree in trees:
        if tree.name not in solo_names:
            bucketed.setdefault(bucket_of(tree.name, buckets), []).append(tree)
    groups = [LayerGroup(kind="base", name="_base", trees=(base,))]
    groups += [LayerGroup(kind="package", name=t.name, trees=(t,)) for t in solos]
    for index in sorted(bucketed):
        members = tuple(sorted(bucketed[index], key=lambda t: t.name))
        groups.append(LayerGroup(kind="bucket", name=f"bucket-{index:02d}-of-{buckets}", trees=members))
    return groups
