"""`push --base IMAGE`: the cache stacked on a base image, so a build starts `FROM` it and copies nothing.

The stacked image is the base image's layers, unchanged (mounted or streamed, never rebuilt),
followed by the cache's per-package layers rooted at the cache directory (`/root/.cache/uv`). Its
config is the base's (environment, user, command) with the cache layers' diff_ids appended. A
package layer depends on the package and the root only, never on the base: services on different
bases still share it, in the registry and on every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import oci
from .dest import ImageSource
from .errors import OcicacheError, UsageError
from .image import open_image
from .oci import Descriptor
from .target import Target

__all__ = ["DEFAULT_STACK_ROOT", "BaseImage", "read_base_image", "stack_root"]

DEFAULT_STACK_ROOT = "root/.cache/uv"

# Docker's media types for the same bytes: written as their OCI equivalents (the digests stay).
_OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": oci.LAYER_GZIP_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+gzip": oci.LAYER_GZIP_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+zstd": oci.LAYER_ZSTD_MEDIA_TYPE,
    "application/vnd.docker.image.rootfs.diff.tar": oci.LAYER_TAR_MEDIA_TYPE,
    oci.LAYER_TAR_MEDIA_TYPE: oci.LAYER_TAR_MEDIA_TYPE,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseImage:
    reference: str  # as given, with the manifest digest: REF@sha256:…
    source: ImageSource  # where its blobs are mounted or streamed from
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]  # OCI media types, no annotations

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"]["diff_ids"])


def stack_root(cache_dir: str | None) -> str:
    """The cache directory inside a stacked image, as a relative tar path."""
    root = (cache_dir or "/" + DEFAULT_STACK_ROOT).strip("/")
    if not root or ".." in root.split("/"):
        raise UsageError(f"cannot stack the cache at {cache_dir!r}: expected an absolute directory")
    return root


def read_base_image(source: ImageSource, tag: str, where: str, target: Target) -> BaseImage:
    """The base image for `target`'s platform; clear errors for an image that cannot be stacked on."""
    image = open_image(source, tag, where, target.oci_platform)
    config = image.config
    arch = config.get("architecture")
    wanted = target.oci_config_platform()["architecture"]
    if config.get("os") != "linux" or arch != wanted:
        raise UsageError(f"--base {where} is {config.get('os')}/{arch}; the cache targets {target.oci_platform}")
    layers = []
    for layer in image.layers:
        media_type = _OCI_LAYER_TYPES.get(layer.media_type)
        if media_type is None:
            raise OcicacheError(f"--base {where}: layer {layer.digest} has media type {layer.media_type}, which an "
                                "OCI image cannot carry (a foreign or non-distributable layer)")
        layers.append(Descriptor(media_type=media_type, digest=layer.digest, size=layer.size))
    return BaseImage(reference=f"{where.split('@', 1)[0]}@{image.descriptor.digest}", source=source, config=config,
                     layers=tuple(layers))
