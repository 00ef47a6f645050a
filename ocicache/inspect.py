"""`ocicache inspect`: what a cache image holds (layers, packages, sizes, uv version, target)."""

from __future__ import annotations

from typing import Any

from . import oci
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .image import SourceImage, json_list, layer_packages, open_image

__all__ = ["describe", "format_size", "format_table", "inspect_ref"]


def inspect_ref(value: str, options: RegistryOptions | None = None, platform: str | None = None) -> dict[str, Any]:
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, ref = endpoints.source(value)
        image = open_image(source, tag, str(ref), platform)
    info = describe(str(ref), image)
    info["platforms"] = list(image.platforms)
    return info


def describe(reference: str, image: SourceImage) -> dict[str, Any]:
    annotations = image.annotations
    layers = []
    for layer in image.layers:
        ann = layer.annotations
        stacked_base = oci.A_STACK_ROOT in annotations and oci.A_LAYER_KEY not in ann
        layers.append({"digest": str(layer.digest), "size": layer.size, "media_type": layer.media_type,
                       "kind": "image" if stacked_base else ann.get(oci.A_LAYER_KIND, "other"),
                       "key": ann.get(oci.A_LAYER_KEY),
                       "packages": layer_packages(layer)})
    digest = str(image.descriptor.digest)
    return {
        "reference": reference,
        "manifest_digest": digest,
        # written by ocicache (push): else an ordinary image, e.g. a base image for --base
        "ocicache_image": oci.A_VERSION in annotations or oci.A_UV_VERSION in annotations,
        "platform": image.platform,
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
        "venv": annotations.get(oci.A_STACK_VENV),  # push --venv: the installed environment's path
        "venv_only": annotations.get(oci.A_STACK_VENV_ONLY) == "true",  # push --venv-only: no cache
        "venv_archives": annotations.get(oci.A_STACK_VENV_ARCHIVES),  # push --venv-archives: the tars' directory
        "bytecode": annotations.get(oci.A_BYTECODE),  # push --compile-bytecode: the compiling interpreter
        "skipped": json_list(annotations.get(oci.A_SKIPPED, "[]")),
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
    about = (f"read by uv {info['uv_releases'] or info['uv_version']} (filled by uv {info['uv_version']}), "
             f"target {t['platform']} CPython {t['python']} {t['python_platform']}, {info['compression']}"
             if info["ocicache_image"] else
             f"not a cache image written by ocicache (no {oci.A_VERSION} annotation): an image for {info['platform']}")
    lines = [
        f"{info['reference']}  {info['manifest_digest']}",
        about,
        f"{len(info['layers'])} layers, {format_size(info['total_size'])} compressed",
        "",
        f"{'#':>3}  {'KIND':<8} {'SIZE':>10}  {'DIGEST':<19}  PACKAGES",
    ]
    for i, layer in enumerate(info["layers"]):
        names = ", ".join(f"{p.get('name')} {p.get('version')}" for p in layer["packages"]) or {
            "image": "(the base image's)", "base": "(cache scaffold)",
            "venv": "(the installed environment: push --venv)"}.get(layer["kind"], "")
        row = f"{i:>3}  {layer['kind']:<8} {format_size(layer['size']):>10}  {layer['digest'][:19]}  {names}"
        lines.append(row.rstrip())
    for note in info["skipped"]:
        lines.append(f"left out: {note}")
    if info.get("bytecode"):
        lines.append(f"bytecode: each package's pycs, compiled by {info['bytecode']}")
    if info.get("stacked_on"):
        if info.get("venv_archives"):
            lines.append(f"made on {info['stacked_on']}: the environment at {info.get('venv')} as one tar per layer "
                         f"in {info['venv_archives']}, no base layers, no uv cache (push --venv-archives)")
        elif info.get("venv_only"):
            lines.append(f"stacked on {info['stacked_on']}: the environment at {info.get('venv')}, no uv cache "
                         "(push --venv-only)")
        else:
            lines.append(f"stacked on {info['stacked_on']}: the cache is at "
                         f"/{info.get('stack_root') or 'root/.cache/uv'}")
    if info.get("platforms"):
        lines.append(f"platforms in this index: {', '.join(info['platforms'])} (shown: {info['platform']})")
    return "\n".join(lines)
