"""Layers already known, by reuse key: what a push can take instead of downloading and packing.

Sources are image manifests written by ocicache (for now the destination tag's current manifest).
Every layer carries its key and, per package, the package key and unpacked size, so a push can plan
exactly as if it had populated the package, and reuse the layer descriptor unchanged when the planned
group's key matches. Same key ⇒ same bytes (contract 4), so reused and rebuilt images are identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import oci
from .oci import Descriptor

__all__ = ["KnownLayers", "known_layers_from_manifests"]


@dataclass(frozen=True, slots=True)
class KnownLayers:
    by_layer_key: dict[str, Descriptor] = field(default_factory=dict)
    package_sizes: dict[str, int] = field(default_factory=dict)  # package key → unpacked size

    def layer(self, key: str) -> Descriptor | None:
        return self.by_layer_key.get(key)

    def knows_package(self, key: str) -> bool:
        return key in self.package_sizes


def known_layers_from_manifests(manifests: Iterable[dict[str, Any]]) -> KnownLayers:
    """Index ocicache layers of `manifests` by layer key and package key; foreign layers are ignored."""
    known = KnownLayers()
    for manifest in manifests:
        for raw in manifest.get("layers", []):
            try:
                desc = Descriptor.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
            key = desc.annotations.get(oci.A_LAYER_KEY)
            diff_id = desc.annotations.get(oci.A_LAYER_DIFF_ID, "")
            if not key or not diff_id.startswith("sha256:"):
                continue
            known.by_layer_key.setdefault(key, desc)
            try:
                packages = json.loads(desc.annotations.get(oci.A_LAYER_PACKAGES, "[]"))
            except ValueError:
                continue
            for pkg in packages if isinstance(packages, list) else []:
                if isinstance(pkg, dict) and isinstance(pkg.get("key"), str) and isinstance(pkg.get("size"), int):
                    known.package_sizes.setdefault(pkg["key"], pkg["size"])
    return known
