"""Reading images: one model for every command that reads one (go-containerregistry's `v1.Image`).

`open_image(source, ref, where, platform)` resolves a tag or digest in a layout or a registry (both
are `ImageSource`s), walks an index to the child for the platform, and parses and checks the
manifest and the config once: JSON objects of the expected shape, bounded sizes, the config's digest
verified, as many diff_ids as layers. What it returns gives the descriptors (each layer annotated with
its diff_id from the config, so a stream is checked against both digests), the documents, and
verified layer streams. pull, copy, check, inspect, verify, the base-image readers and reuse all read
through here. Every defect of an image is an `ImageError`: one line naming the reference.
"""

from __future__ import annotations

import json
import tarfile
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from . import oci
from .assemble import Image
from .dest import ImageSource
from .errors import DestinationError
from .oci import Descriptor, Digest
from .target import host_oci_platform
from .unpack import open_layer

__all__ = ["ImageError", "SourceImage", "find_images", "json_list", "layer_packages", "open_image", "open_images",
           "parse_manifest", "platform_of"]

MANIFEST_TYPES = frozenset({oci.MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json"})
INDEX_TYPES = frozenset({oci.INDEX_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.list.v2+json"})
MAX_CONFIG_BYTES = 8 << 20


class ImageError(DestinationError):
    """An image that is not what it must be: malformed, inconsistent, or not there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceImage:
    where: str  # the reference, for messages
    source: ImageSource
    descriptor: Descriptor  # the manifest's
    manifest_bytes: bytes
    manifest: dict[str, Any]
    config_descriptor: Descriptor
    config_bytes: bytes
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]  # each annotated with its diff_id (from the config)
    platforms: tuple[str, ...] = ()  # every platform of the index it was chosen from
    index: Descriptor | None = None  # the index it was chosen from, if any

    @property
    def signed_digest(self) -> Digest:
        """What the reference resolved to (the index, for a multi-platform image): what is signed."""
        return (self.index or self.descriptor).digest

    @property
    def annotations(self) -> dict[str, str]:
        raw = self.manifest.get("annotations")
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @property
    def platform(self) -> str:
        return platform_of(self.config)

    @property
    def stack_root(self) -> str:
        """A stacked image's (push --base) cache directory, or ""."""
        return self.annotations.get(oci.A_STACK_ROOT, "")

    @property
    def venv_only(self) -> bool:
        """push --venv-only: the image holds an installed environment and no uv cache."""
        return self.annotations.get(oci.A_STACK_VENV_ONLY) == "true"

    @property
    def venv_archives(self) -> str:
        """push --venv-archives: where in the image the environment's tars are, or ""."""
        return self.annotations.get(oci.A_STACK_VENV_ARCHIVES, "")

    def cache_layers(self) -> list[Descriptor]:
        """The layers that hold the uv cache: all of them, or in a stacked image only ocicache's."""
        root = self.stack_root
        return [d for d in self.layers if not root or oci.A_LAYER_KEY in d.annotations]

    def open_layer(self, layer: Descriptor) -> AbstractContextManager[tarfile.TarFile]:
        """A streaming tar reader over `layer`; its digest and diff_id are checked as it is read."""
        return open_layer(lambda: self.source.open_blob(layer.digest), layer, where=self.where)

    def written(self) -> Image:
        """The image as stored, bytes untouched (digests stay the same when it is copied)."""
        return Image(config=self.config_bytes, config_descriptor=self.config_descriptor,
                     manifest=self.manifest_bytes, manifest_descriptor=self.descriptor,
                     layers=tuple(Descriptor.from_json(raw) for raw in self.manifest["layers"]))


def platform_of(doc: dict[str, Any]) -> str:
    variant = doc.get("variant")
    return f"{doc.get('os')}/{doc.get('architecture')}" + (f"/{variant}" if variant else "")


def _json_object(data: bytes, where: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ImageError(f"{where}: the {what} is not JSON (or nested beyond reason)") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{where}: the {what} is not a JSON object")
    return doc


def _short(value: object) -> str:
    """A value from a document, as an error may quote it (hostile documents hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _descriptor(raw: object, where: str, what: str) -> Descriptor:
    try:
        if not isinstance(raw, dict):
            raise TypeError
        desc = Descriptor.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ImageError(f"{where}: the manifest has a malformed {what} descriptor") from None
    if desc.size < 0:
        raise ImageError(f"{where}: the manifest's {what} descriptor has a negative size")
    return desc


def parse_manifest(body: bytes, where: str) -> dict[str, Any]:
    """An image manifest, checked for shape (not for the existence of its blobs)."""
    return _check_manifest(_json_object(body, where, "manifest"), where)


def _check_manifest(doc: dict[str, Any], where: str) -> dict[str, Any]:
    media_type = doc.get("mediaType", oci.MANIFEST_MEDIA_TYPE)
    if doc.get("schemaVersion") != 2 or not isinstance(media_type, str) or media_type not in MANIFEST_TYPES \
            or not isinstance(doc.get("layers"), list):
        raise ImageError(f"{where}: not an image manifest (schemaVersion {_short(doc.get('schemaVersion'))}, "
                         f"media type {_short(media_type)})")
    _descriptor(doc.get("config"), where, "config")
    for raw in doc["layers"]:
        _descriptor(raw, where, "layer")
    if "annotations" in doc and not isinstance(doc["annotations"], dict):
        raise ImageError(f"{where}: the manifest's annotations are not an object")
    return doc


_Found = tuple[Descriptor, bytes, dict[str, Any]]  # what a reference resolved to, parsed once


def _resolve(source: ImageSource, ref: str, where: str) -> _Found | None:
    found = source.get_manifest(ref)
    if found is None:
        return None
    desc, body = found
    doc = _json_object(body, where, "manifest")
    if _is_index(doc):
        index_type = doc.get("mediaType", oci.INDEX_MEDIA_TYPE)
        if not isinstance(index_type, str) or index_type not in INDEX_TYPES:
            raise ImageError(f"{where}: not an image index (media type {_short(doc.get('mediaType'))})")
    return desc, body, doc


def _required(found: _Found | None, where: str) -> _Found:
    if found is None:
        raise ImageError(f"{where}: no such image")
    return found


def _children(index: dict[str, Any], where: str) -> list[tuple[Descriptor, str]]:
    """The image manifests an index lists, with their platforms (attestations and others left out)."""
    out = []
    for raw in index["manifests"]:
        desc = _descriptor(raw, where, "index entry")
        if desc.media_type in MANIFEST_TYPES and isinstance(desc.platform, dict):
            out.append((desc, platform_of(desc.platform)))
    return out


def _is_index(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("manifests"), list) and "layers" not in doc


def open_image(source: ImageSource, ref: str, where: str, platform: str | None = None) -> SourceImage:
    """The image at `ref` (a tag or digest); for an index, the child for `platform` (by default the
    only one, else this machine's)."""
    desc, body, doc = _required(_resolve(source, ref, where), where)
    if not _is_index(doc):
        return _open_manifest(source, desc, body, doc, where)
    children = _children(doc, where)
    platforms = tuple(p for _, p in children)
    wanted = (platform or (platforms[0] if len(platforms) == 1 else host_oci_platform())).removesuffix("/v8")
    match = [d for d, p in children if p.removesuffix("/v8") == wanted]
    if not match:
        raise ImageError(f"{where}: no image for {wanted} (platforms: {', '.join(platforms) or 'none'}); "
                         "pass --platform")
    return replace(_open_child(source, match[0], where), platforms=platforms, index=desc)


def open_images(source: ImageSource, ref: str, where: str) -> tuple[list[SourceImage], tuple[Descriptor, bytes] | None]:
    """Every image at `ref`: the one image, or each child of an index (then also the index itself)."""
    return _all_images(source, _required(_resolve(source, ref, where), where), where)


def find_images(source: ImageSource, ref: str, where: str) -> list[SourceImage]:
    """Like `open_images`, but no image at `ref` is an empty list (an image to reuse, if there is one)."""
    found = _resolve(source, ref, where)
    return [] if found is None else _all_images(source, found, where)[0]


def _all_images(source: ImageSource, found: _Found, where: str
                ) -> tuple[list[SourceImage], tuple[Descriptor, bytes] | None]:
    desc, body, doc = found
    if not _is_index(doc):
        return [_open_manifest(source, desc, body, doc, where)], None
    children = _children(doc, where)
    if not children or len(children) != len(doc["manifests"]):
        raise ImageError(f"{where}: the index lists {len(doc['manifests'])} entries, {len(children)} of them "
                         "images with a platform; ocicache reads only indexes of platform images")
    platforms = tuple(p for _, p in children)
    return [replace(_open_child(source, d, where), platforms=platforms, index=desc) for d, _ in children], \
        (desc, body)


def _open_child(source: ImageSource, desc: Descriptor, where: str) -> SourceImage:
    found = source.get_manifest(str(desc.digest))
    if found is None:
        raise ImageError(f"{where}: the index names {desc.digest}, which is missing")
    _, body = found  # fetched by digest: the source verified it
    doc = _json_object(body, where, "manifest")
    if _is_index(doc):
        raise ImageError(f"{where}: an index inside an index is not supported")
    child = Descriptor(media_type=desc.media_type, digest=desc.digest, size=len(body), platform=desc.platform)
    return _open_manifest(source, child, body, doc, where)


def _open_manifest(source: ImageSource, desc: Descriptor, body: bytes, doc: dict[str, Any],
                   where: str) -> SourceImage:
    _check_manifest(doc, where)
    config_desc = _descriptor(doc["config"], where, "config")
    if config_desc.size > MAX_CONFIG_BYTES:
        raise ImageError(f"{where}: the config claims {config_desc.size} bytes (more than {MAX_CONFIG_BYTES})")
    config_bytes = source.read_blob(config_desc.digest, limit=MAX_CONFIG_BYTES)
    config = _json_object(config_bytes, where, "image config")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(doc["layers"]):
        raise ImageError(f"{where}: config and manifest disagree on the number of layers")
    layers = []
    for raw, diff_id in zip(doc["layers"], diff_ids, strict=True):
        layer = _descriptor(raw, where, "layer")
        try:
            diff = Digest(str(diff_id))
        except ValueError:
            raise ImageError(f"{where}: the config has a malformed diff_id {str(diff_id)[:80]!r}") from None
        annotated = layer.annotations.get(oci.A_LAYER_DIFF_ID)
        if annotated is not None and annotated != str(diff):
            raise ImageError(f"{where}: layer {layer.digest}: its diff-id annotation and the config disagree")
        layers.append(Descriptor(media_type=layer.media_type, digest=layer.digest, size=layer.size,
                                 annotations={**layer.annotations, oci.A_LAYER_DIFF_ID: str(diff)}))
    return SourceImage(where=where, source=source, descriptor=desc, manifest_bytes=body, manifest=doc,
                       config_descriptor=config_desc, config_bytes=config_bytes, config=config,
                       layers=tuple(layers))


def layer_packages(layer: Descriptor) -> list[dict[str, Any]]:
    """The packages a layer's annotation declares (an unreadable annotation declares none)."""
    return [p for p in json_list(layer.annotations.get(oci.A_LAYER_PACKAGES, "[]")) if isinstance(p, dict)]


def json_list(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []
