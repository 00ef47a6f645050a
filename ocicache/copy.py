"""`ocicache copy SRC DEST`: an image between a layout and a registry, blobs mounted or streamed."""

from __future__ import annotations

import json
from typing import Any

from .assemble import Image
from .dest import BlobOrigin, ImageSource, write_images
from .dest.layout import open_layout_for_write
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import OcicacheError, UsageError
from .inspect import read_manifest
from .oci import Descriptor, Digest
from .refs import LayoutRef, parse_ref

__all__ = ["copy_image"]


def copy_image(source_value: str, dest_value: str, options: RegistryOptions | None = None) -> dict[str, Any]:
    dest_ref = parse_ref(dest_value)
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, src_ref = endpoints.source(source_value)
        found = source.get_manifest(tag)
        if found is None:
            raise OcicacheError(f"{src_ref}: no such image")
        top_desc, top_body = found
        document = json.loads(top_body)
        index = None
        if isinstance(document, dict) and isinstance(document.get("manifests"), list):
            index = (top_desc, top_body)
            images = [_image(source, str(child["digest"]), str(src_ref)) for child in document["manifests"]]
        else:
            images = [_image(source, tag, str(src_ref))]
        blobs = [(layer, BlobOrigin(source=source)) for image in images for layer in image.layers]
        if isinstance(dest_ref, LayoutRef):
            with open_layout_for_write(dest_ref.path) as layout:
                report = write_images(layout, images, blobs, dest_ref.tag, index=index, jobs=endpoints.options.jobs)
        else:
            if dest_ref.digest:
                raise UsageError(f"{dest_ref}: copy to a tag, not a digest")
            registry = endpoints.registry(dest_ref)
            report = write_images(registry, images, blobs, dest_ref.tag or "latest", index=index,
                                  jobs=endpoints.options.jobs)
    desc = top_desc
    return {"source": str(src_ref), "destination": str(dest_ref), "manifest_digest": str(desc.digest),
            "blobs_uploaded": report.count("uploaded"), "blobs_mounted": report.count("mounted"),
            "blobs_present": report.count("present"), "bytes_uploaded": report.bytes("uploaded"),
            "layers": sum(len(image.layers) for image in images)}


def _image(source: ImageSource, ref: str, where: str) -> Image:
    """An image as it is in `source`: manifest bytes untouched, so digests stay the same."""
    desc, manifest, _ = read_manifest(source, ref, where)
    found = source.get_manifest(str(desc.digest))
    assert found is not None
    body = found[1]
    config_desc = Descriptor.from_json(manifest["config"])
    config = source.read_blob(config_desc.digest)
    platform = {k: v for k, v in json.loads(config).items() if k in ("os", "architecture", "variant")}
    return Image(config=config, config_descriptor=config_desc, manifest=body,
                 manifest_descriptor=Descriptor(media_type=desc.media_type, digest=Digest.of(body), size=len(body),
                                                platform=platform or None),
                 layers=tuple(Descriptor.from_json(x) for x in manifest["layers"]))
