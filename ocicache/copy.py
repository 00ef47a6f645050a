"""`ocicache copy SRC DEST`: an image between a layout and a registry, blobs mounted or streamed."""

from __future__ import annotations

from typing import Any

from .dest import BlobOrigin, write_images
from .dest.layout import open_layout_for_write
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import UsageError
from .image import open_images
from .refs import LayoutRef, parse_ref

__all__ = ["copy_image"]


def copy_image(source_value: str, dest_value: str, options: RegistryOptions | None = None) -> dict[str, Any]:
    dest_ref = parse_ref(dest_value)
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, src_ref = endpoints.source(source_value)
        opened, index = open_images(source, tag, str(src_ref))
        images = [image.written() for image in opened]
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
    top = index[0] if index else images[0].manifest_descriptor
    return {"source": str(src_ref), "destination": str(dest_ref), "manifest_digest": str(top.digest),
            "blobs_uploaded": report.count("uploaded"), "blobs_mounted": report.count("mounted"),
            "blobs_present": report.count("present"), "bytes_uploaded": report.bytes("uploaded"),
            "layers": sum(len(image.layers) for image in images)}
