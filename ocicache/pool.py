"""The pool: one repository where every pushed layer stays discoverable by its reuse key.

For each layer it knows, the pool holds a one-layer image (config + manifest, the layer descriptor
with all its annotations) tagged `k-<hex of the key>`, once for the layer's key and once for every
package key it holds. A push looks up its packages' keys there (one manifest GET each, in parallel)
and mounts what it finds.

Why this is safe under many concurrent CI jobs: nothing is ever read-modify-written. Blobs are
content-addressed; a manifest is written only after its blobs exist in the pool repository; a
layer-key tag always gets the same bytes (same key ⇒ same layer ⇒ same manifest, which names no
platform: a pure wheel's layer is published alike by every target's push), and a package-key
tag written by two jobs points, whichever wins, at a valid layer that holds that package.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import oci
from .assemble import LayerDescription, assemble_layer_image
from .dest import BlobOrigin, put_one
from .dest.registry import Registry, RegistryError
from .image import ImageError, parse_manifest
from .reuse import KnownLayers

__all__ = ["Pool", "pool_tag"]


def pool_tag(key: str) -> str:
    """A key as a tag: `k-` + its 64 hex digits (tags allow 128 characters)."""
    return "k-" + key.split(":", 1)[1]


@dataclass
class Pool:
    registry: Registry
    jobs: int = 8

    def __str__(self) -> str:
        return str(self.registry)

    def lookup(self, keys: Iterable[str], known: KnownLayers) -> int:
        """Add the pool's layers for `keys` to `known`; return how many keys were found."""
        wanted = sorted({k for k in keys if k not in known.packages and k not in known.layers})

        def get(key: str) -> dict | None:
            found = self.registry.get_manifest(pool_tag(key))
            if found is None:
                return None
            try:  # the manifest alone: its layer descriptor carries the diff_id and the packages
                return parse_manifest(found[1], f"pool {self}:{pool_tag(key)}")
            except ImageError:
                return None  # a broken pool entry is rebuilt, not trusted

        with ThreadPoolExecutor(max_workers=self.jobs) as executor:
            manifests = list(executor.map(get, wanted))
        hits = 0
        for manifest in manifests:
            if manifest is not None:
                hits += 1
                known.add_manifest(manifest, self.registry)
        return hits

    def check_push_access(self) -> None:
        """Before any work (and before the image's own tag is written): a pool we cannot update is an
        error the user should see first, not after the push."""
        try:
            self.registry.check_push_access()
        except RegistryError as exc:
            raise RegistryError(f"--pool {self}: {exc}", status=exc.status, codes=exc.codes) from None

    def publish(self, layers: Iterable[tuple[LayerDescription, BlobOrigin]], root: str = "") -> int:
        """Make every layer discoverable by its keys; return the number of tags written. `root`: the
        directory stacked layers (--base) hold the cache under, recorded for re-bundling."""
        items = list(layers)

        def one(item: tuple[LayerDescription, BlobOrigin]) -> int:
            layer, origin = item
            desc = layer.descriptor()
            put_one(self.registry, desc, origin)  # blob first: the tag never points at missing data
            image = assemble_layer_image(layer, {oci.A_STACK_ROOT: root} if root else {})
            if not self.registry.has_blob(image.config_descriptor.digest):
                self.registry.put_blob(image.config_descriptor, lambda: io.BytesIO(image.config))
            manifest, manifest_desc = image.manifest, image.manifest_descriptor
            tags = {pool_tag(layer.key), *(pool_tag(str(p["key"])) for p in layer.packages)}
            written = 0
            for tag in sorted(tags):
                current = self.registry.get_manifest(tag)
                if current is not None and current[0].digest == manifest_desc.digest:
                    continue
                self.registry.put_manifest(manifest_desc, manifest, tag=tag)
                written += 1
            return written

        with ThreadPoolExecutor(max_workers=self.jobs) as executor:
            try:
                return sum(executor.map(one, items))
            except RegistryError as exc:
                raise RegistryError(f"pool {self}: {exc}", status=exc.status, codes=exc.codes) from None
