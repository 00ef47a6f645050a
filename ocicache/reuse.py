"""Layers already known, by reuse key: what a push takes instead of downloading and packing.

Sources are ocicache images: the destination tag's current image, `--cache-from` images and the
pool. Every layer carries its key and diff_id, and per package its key, unpacked size and the cache
paths it owns, so a push can plan exactly as if it had populated the package, reuse a layer
descriptor unchanged when a planned group's key matches, and take a package out of a known bundle
layer (instead of the package index) when its bundle must be rebuilt. Same key ⇒ same bytes
(contract 4), so reused and rebuilt images are identical.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import oci
from .dest import ImageSource
from .errors import OcicacheError
from .image import layer_packages
from .oci import Descriptor, Digest
from .tree import Entry, PackageRef, PackageTree, walk_tree
from .unpack import extract_members, open_layer

__all__ = ["KnownLayer", "KnownLayers", "KnownPackage", "extract_known_packages"]


@dataclass(frozen=True, slots=True)
class KnownLayer:
    descriptor: Descriptor
    origin: ImageSource  # where its blob can be mounted or copied from
    root: str = ""  # in a stacked image (--base), the directory its cache entries sit under


@dataclass(frozen=True, slots=True)
class KnownPackage:
    ref: PackageRef
    size: int
    paths: tuple[str, ...]
    layer: KnownLayer


@dataclass
class KnownLayers:
    layers: dict[str, KnownLayer] = field(default_factory=dict)  # by layer key
    packages: dict[str, KnownPackage] = field(default_factory=dict)  # by package key

    def layer(self, key: str) -> KnownLayer | None:
        return self.layers.get(key)

    def add_manifest(self, manifest: dict[str, Any], origin: ImageSource, *, check_blobs: bool = False) -> int:
        """Index the ocicache layers of `manifest` (first source wins); return how many were new.

        `check_blobs`: skip layers whose blob `origin` lacks. A registry refuses a manifest whose
        blobs it lacks; a layout directory after a power loss may name a blob that is gone."""
        added = 0
        annotations = manifest.get("annotations") if isinstance(manifest, dict) else None
        root = str(annotations.get(oci.A_STACK_ROOT, "")) if isinstance(annotations, dict) else ""
        for raw in manifest.get("layers", []) if isinstance(manifest, dict) else []:
            try:
                desc = Descriptor.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
            key = desc.annotations.get(oci.A_LAYER_KEY)
            if not key or not desc.annotations.get(oci.A_LAYER_DIFF_ID, "").startswith("sha256:"):
                continue  # not ours, or from before diff-ids were annotated
            if check_blobs and not origin.has_blob(desc.digest):
                continue  # rebuilt (or found elsewhere) and written again
            if key not in self.layers:
                added += 1
                self.layers[key] = KnownLayer(desc, origin, root)
            known = self.layers[key]
            for pkg in _packages(desc):
                if pkg["key"] not in self.packages:
                    ref = PackageRef(name=pkg["name"], version=pkg["version"], artifact=pkg["artifact"],
                                     hash=pkg["hash"], key=pkg["key"])
                    self.packages[pkg["key"]] = KnownPackage(ref, pkg["size"], tuple(pkg["paths"]), known)
        return added


def _packages(desc: Descriptor) -> list[dict[str, Any]]:
    """The layer's package entries that have every field reuse needs, of the right type."""
    fields = {"name": str, "version": str, "artifact": str, "hash": str, "key": str, "size": int, "paths": list}
    return [p for p in layer_packages(desc) if all(isinstance(p.get(k), t) for k, t in fields.items())]


def extract_known_packages(known: Iterable[KnownPackage], scratch: Path,
                           strip: Callable[[list[Entry]], list[Entry]] | None = None) -> list[PackageTree]:
    """Trees for packages taken out of their known layers: one verified download per layer.

    The layer is already canonical, so the extracted files re-pack to the same bytes. `strip` drops
    the entries a push derives when packing (the pycs of --compile-bytecode) before the size check.
    """
    by_layer: dict[Digest, list[KnownPackage]] = {}
    for pkg in known:
        by_layer.setdefault(pkg.layer.descriptor.digest, []).append(pkg)
    trees = []
    for digest, packages in sorted(by_layer.items()):
        layer = packages[0].layer
        out = scratch / "extracted" / digest.hex
        out.mkdir(parents=True, exist_ok=True)
        prefixes = tuple(p for pkg in packages for p in pkg.paths)

        def wanted(name: str, prefixes: tuple[str, ...] = prefixes) -> bool:
            return any(name == p or name.startswith(p + "/") for p in prefixes)

        with open_layer(lambda layer=layer: layer.origin.open_blob(layer.descriptor.digest), layer.descriptor,
                        where=f"known layer {digest}") as tf:
            extract_members(tf, out, f"known layer {digest}", wanted, strip=layer.root)
        for pkg in packages:
            entries: list[Entry] = []
            for path in pkg.paths:
                full = out / path
                if full.is_symlink():
                    entries.append(Entry(path=path, kind="symlink", link=os.readlink(full)))
                elif full.is_dir():
                    entries += walk_tree(full, path)
                elif full.is_file():
                    st = full.stat()
                    entries.append(Entry(path=path, kind="file", source=full, size=st.st_size,
                                         executable=bool(st.st_mode & 0o111)))
                else:
                    raise OcicacheError(f"known layer {digest} lacks {path} of {pkg.ref.name}")
            tree = PackageTree(package=pkg.ref, entries=tuple(strip(entries) if strip else entries))
            if tree.size != pkg.size:
                raise OcicacheError(f"known layer {digest}: {pkg.ref.name} has {tree.size} bytes, "
                                    f"its annotation says {pkg.size}")
            trees.append(tree)
    return trees
