"""Pure: packed layers + target → OCI config and manifest bytes, annotated.

Nothing here reads a clock or the machine: the same layers and target give the same bytes, so the
same lock + target + options give the same manifest digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import oci
from .oci import Descriptor, Digest, canonical_json
from .target import Target

if TYPE_CHECKING:
    from .stack import BaseImage

__all__ = ["Image", "LayerDescription", "assemble_image", "assemble_index", "assemble_layer_image"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerDescription:
    """A layer as it goes into the manifest: its blob's identity plus what it holds."""

    digest: Digest
    diff_id: Digest
    size: int
    media_type: str
    kind: str
    key: str
    packages: tuple[dict[str, object], ...]  # PackageTree.to_annotation() of each member

    @classmethod
    def from_descriptor(cls, desc: Descriptor) -> LayerDescription:
        """A layer known from an ocicache manifest, unchanged."""
        ann = desc.annotations
        return cls(digest=desc.digest, diff_id=Digest(ann[oci.A_LAYER_DIFF_ID]), size=desc.size,
                   media_type=desc.media_type, kind=ann.get(oci.A_LAYER_KIND, "bucket"), key=ann[oci.A_LAYER_KEY],
                   packages=tuple(json.loads(ann.get(oci.A_LAYER_PACKAGES, "[]"))))

    def descriptor(self) -> Descriptor:
        annotations = {oci.A_LAYER_KIND: self.kind, oci.A_LAYER_KEY: self.key,
                       oci.A_LAYER_DIFF_ID: str(self.diff_id)}
        if self.packages:
            annotations[oci.A_LAYER_PACKAGES] = json.dumps(list(self.packages), sort_keys=True,
                                                           separators=(",", ":"))
        return Descriptor(media_type=self.media_type, digest=self.digest, size=self.size,
                          annotations=annotations)


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    config: bytes
    config_descriptor: Descriptor
    manifest: bytes
    manifest_descriptor: Descriptor
    layers: tuple[Descriptor, ...]


def assemble_image(layers: list[LayerDescription], target: Target, annotations: dict[str, str],
                   base: BaseImage | None = None) -> Image:
    """The image of `layers`; with `base` (push --base), stacked on that image's layers and config."""
    history = [{"created": "1970-01-01T00:00:00Z", "created_by": f"ocicache: {layer.kind} layer",
                "comment": layer.key} for layer in layers]
    diff_ids = [str(layer.diff_id) for layer in layers]
    if base is None:
        platform: dict[str, Any] = target.oci_config_platform()
        container: dict[str, Any] = {"Labels": dict(annotations)}
        base_layers: tuple[Descriptor, ...] = ()
    else:
        platform = {k: base.config[k] for k in ("architecture", "os", "variant", "os.version") if k in base.config}
        container = dict(base.config.get("config") or {})
        container["Labels"] = {**(container.get("Labels") or {}), **annotations}
        base_history = [h for h in base.config.get("history") or [] if isinstance(h, dict)]
        if sum(1 for h in base_history if not h.get("empty_layer")) != len(base.layers):
            # builders match history entries to layers: one entry per base layer when the base's own
            # history does not account for them (buildah refuses the image otherwise)
            base_history = [{"created": "1970-01-01T00:00:00Z", "created_by": "base image layer"}
                            for _ in base.layers]
        history = [*base_history, *history]
        diff_ids = [*base.diff_ids, *diff_ids]
        base_layers = base.layers
    config = canonical_json({
        **platform,
        # A fixed creation time: skopeo shows "Created: null" without one, and a clock would break
        # reproducibility.
        "created": "1970-01-01T00:00:00Z",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })
    config_desc = Descriptor(media_type=oci.CONFIG_MEDIA_TYPE, digest=Digest.of(config), size=len(config))
    layer_descs = (*base_layers, *(layer.descriptor() for layer in layers))
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_MEDIA_TYPE,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layer_descs],
        "annotations": dict(annotations),
    })
    manifest_desc = Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest),
                               size=len(manifest), platform=target.oci_config_platform())
    return Image(config=config, config_descriptor=config_desc, manifest=manifest,
                 manifest_descriptor=manifest_desc, layers=layer_descs)


def assemble_index(images: list[Image], annotations: dict[str, str]) -> tuple[Descriptor, bytes]:
    """An image index over one image per target; builders pick the manifest of their platform."""
    body = canonical_json({
        "schemaVersion": 2,
        "mediaType": oci.INDEX_MEDIA_TYPE,
        "manifests": [image.manifest_descriptor.to_json() for image in images],
        "annotations": dict(annotations),
    })
    return Descriptor(media_type=oci.INDEX_MEDIA_TYPE, digest=Digest.of(body), size=len(body)), body


def assemble_layer_image(layer: LayerDescription, annotations: dict[str, str]) -> Image:
    """A one-layer image that only carries `layer` and its annotations (the pool's): no platform, so
    its bytes depend on the layer alone, whichever target's push writes it."""
    config = canonical_json({"architecture": "", "os": "", "created": "1970-01-01T00:00:00Z", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id)]}})
    config_desc = Descriptor(media_type=oci.CONFIG_MEDIA_TYPE, digest=Digest.of(config), size=len(config))
    layer_desc = layer.descriptor()
    manifest = canonical_json({"schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE,
                               "config": config_desc.to_json(), "layers": [layer_desc.to_json()],
                               "annotations": dict(annotations)})
    manifest_desc = Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest), size=len(manifest))
    return Image(config=config, config_descriptor=config_desc, manifest=manifest, manifest_descriptor=manifest_desc,
                 layers=(layer_desc,))


def assemble_record(config_media_type: str, config: bytes, annotations: dict[str, str]) -> Image:
    """A layerless image that only carries a small document (the pool's records: gc's state, upload
    claims): its config holds the data, its annotations what a reader needs without fetching it."""
    config_desc = Descriptor(media_type=config_media_type, digest=Digest.of(config), size=len(config))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE,
                               "config": config_desc.to_json(), "layers": [], "annotations": dict(annotations)})
    manifest_desc = Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest), size=len(manifest))
    return Image(config=config, config_descriptor=config_desc, manifest=manifest, manifest_descriptor=manifest_desc,
                 layers=())
