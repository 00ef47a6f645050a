"""`ocicache copy SRC DEST`: an image between a layout and a registry, blobs mounted or streamed."""

from __future__ import annotations

import json
from typing import Any

from .assemble import Image
from .dest import BlobOrigin, write_image
from .dest.layout import open_layout_for_write
from .dest.registry import RegistryOptions
from .endpoints import Endpoints
from .errors import UsageError
from .inspect import read_manifest
from .oci import Descriptor, Digest
from .refs import LayoutRef, parse_ref

__all__ = ["copy_image"]


def copy_image(source_value: str, dest_value: str, options: RegistryOptions | None = None) -> dict[str, Any]:
    dest_ref = parse_ref(dest_value)
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, src_ref = endpoints.source(source_value)
        desc, manifest = read_manifest(source, tag, str(src_ref))
        found = source.get_manifest(str(desc.digest))
        assert found is not None
        body = found[1]
        config_desc = Descriptor.from_json(manifest["config"])
        config = source.read_blob(config_desc.digest)
        manifest_desc = Descriptor(media_type=desc.media_type, digest=Digest.of(body), size=len(body))
        image = Image(config=config, config_descriptor=config_desc, manifest=body, manifest_descriptor=manifest_desc,
                      layers=tuple(Descriptor.from_json(x) for x in manifest["layers"]))
        blobs = [(layer, BlobOrigin(source=source)) for layer in image.layers]
        if isinstance(dest_ref, LayoutRef):
            with open_layout_for_write(dest_ref.path) as layout:
                report = write_image(layout, image, blobs, dest_ref.tag, jobs=endpoints.options.jobs)
        else:
            if dest_ref.digest:
                raise UsageError(f"{dest_ref}: copy to a tag, not a digest")
            registry = endpoints.registry(dest_ref)
            report = write_image(registry, image, blobs, dest_ref.tag or "latest", jobs=endpoints.options.jobs)
    return {"source": str(src_ref), "destination": str(dest_ref), "manifest_digest": str(desc.digest),
            "blobs_uploaded": report.count("uploaded"), "blobs_mounted": report.count("mounted"),
            "blobs_present": report.count("present"), "bytes_uploaded": report.bytes("uploaded"),
            "layers": len(json.loads(body)["layers"])}
