"""`ocicache inspect`: what a cache image holds (layers, packages, sizes, uv version, target)."""

from __future__ import annotations

import json
from typing import Any

from . import oci
from .dest import ImageSource
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import OcicacheError
from .oci import Descriptor, Digest
from .target import host_oci_platform

__all__ = ["describe", "format_size", "format_table", "inspect_ref", "read_manifest"]


def inspect_ref(value: str, options: RegistryOptions | None = None, platform: str | None = None) -> dict[str, Any]:
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, ref = endpoints.source(value)
        desc, manifest, platforms = read_manifest(source, tag, str(ref), platform)
        config = json.loads(source.read_blob(Digest(manifest["config"]["digest"])))
    info = describe(str(ref), str(desc.digest), manifest, config)
    info["platforms"] = platforms
    return info


def read_manifest(source: ImageSource, tag: str, where: str, platform: str | None = None
                  ) -> tuple[Descriptor, dict[str, Any], list[str]]:
    """The image manifest at `tag` (for an index: the child for `platform`, by default the only one or
    this machine's); also every platform the tag offers. Clear errors for anything else."""
    found = source.get_manifest(tag)
    if found is None:
        raise OcicacheError(f"{where}: no such image")
    desc, body = found
    try:
        document = json.loads(body)
    except ValueError:
        raise OcicacheError(f"{where}: the manifest is not JSON") from None
    if isinstance(document, dict) and isinstance(document.get("manifests"), list):
        children = [c for c in document["manifests"] if isinstance(c, dict) and isinstance(c.get("platform"), dict)]
        platforms = [_platform(c["platform"]) for c in children]
        wanted = platform or (platforms[0] if len(platforms) == 1 else host_oci_platform())
        wanted = wanted.removesuffix("/v8")
        match = [c for c, p in zip(children, platforms, strict=True) if p.removesuffix("/v8") == wanted]
        if not match:
            raise OcicacheError(f"{where}: no image for {wanted} (platforms: {', '.join(platforms) or 'none'}); "
                                "pass --platform")
        child_desc, child_manifest, _ = read_manifest(source, str(match[0]["digest"]), where)
        return child_desc, child_manifest, platforms
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list) or "config" not in document:
        raise OcicacheError(f"{where}: not an image manifest ({desc.media_type})")
    return desc, document, []


def _platform(p: dict[str, Any]) -> str:
    return f"{p.get('os')}/{p.get('architecture')}" + (f"/{p['variant']}" if p.get("variant") else "")


def describe(reference: str, digest: str, manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    annotations = manifest.get("annotations", {})
    layers = []
    for layer in manifest.get("layers", []):
        ann = layer.get("annotations", {})
        packages = json.loads(ann.get(oci.A_LAYER_PACKAGES, "[]"))
        stacked_base = oci.A_STACK_ROOT in annotations and oci.A_LAYER_KEY not in ann
        layers.append({"digest": layer["digest"], "size": layer["size"], "media_type": layer["mediaType"],
                       "kind": "image" if stacked_base else ann.get(oci.A_LAYER_KIND, "unknown"),
                       "key": ann.get(oci.A_LAYER_KEY),
                       "packages": packages})
    return {
        "reference": reference,
        "manifest_digest": digest,
        "platform": f"{config.get('os')}/{config.get('architecture')}"
                    + (f"/{config['variant']}" if config.get("variant") else ""),
        "uv_version": annotations.get(oci.A_UV_VERSION),
        "cache_format": annotations.get(oci.A_CACHE_FORMAT),
        "uv_releases": annotations.get(oci.A_UV_RELEASES),  # the releases that read the image
        "ocicache_version": annotations.get(oci.A_VERSION),
        "target": {"platform": annotations.get(oci.A_TARGET_PLATFORM),
                   "python": annotations.get(oci.A_TARGET_PYTHON),
                   "python_platform": annotations.get(oci.A_TARGET_PYTHON_PLATFORM)},
        "compression": annotations.get(oci.A_COMPRESSION),
        "stacked_on": annotations.get(oci.A_STACK_BASE),  # push --base: the base image, REF@DIGEST
        "stack_root": annotations.get(oci.A_STACK_ROOT),
        "skipped": json.loads(annotations.get(oci.A_SKIPPED, "[]")),
        "total_size": sum(layer["size"] for layer in layers),
        "layers": layers,
    }


def format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_table(info: dict[str, Any]) -> str:
    t = info["target"]
    lines = [
        f"{info['reference']}  {info['manifest_digest']}",
        f"read by uv {info['uv_releases'] or info['uv_version']} (filled by uv {info['uv_version']}), "
        f"target {t['platform']} CPython {t['python']} {t['python_platform']}, {info['compression']}",
        f"{len(info['layers'])} layers, {format_size(info['total_size'])} compressed",
        "",
        f"{'#':>3}  {'KIND':<8} {'SIZE':>10}  {'DIGEST':<19}  PACKAGES",
    ]
    for i, layer in enumerate(info["layers"]):
        names = ", ".join(f"{p['name']} {p['version']}" for p in layer["packages"]) or (
            "(the base image's)" if layer["kind"] == "image" else "(cache scaffold)")
        lines.append(f"{i:>3}  {layer['kind']:<8} {format_size(layer['size']):>10}  {layer['digest'][:19]}  {names}")
    for note in info["skipped"]:
        lines.append(f"left out: {note}")
    if info.get("stacked_on"):
        lines.append(f"stacked on {info['stacked_on']}: the cache is at /{info.get('stack_root') or 'root/.cache/uv'}")
    if info.get("platforms"):
        lines.append(f"platforms in this index: {', '.join(info['platforms'])} (shown: {info['platform']})")
    return "\n".join(lines)
