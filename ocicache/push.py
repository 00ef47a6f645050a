"""`ocicache push`: the data flow of docs/architecture.md, one stage per module.

    read lock → select(target) → populate (uv) → normalise → plan → pack → assemble → destination
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, oci
from .assemble import LayerDescription, assemble_image
from .compress import get_codec
from .dest import write_image
from .dest.layout import check_writable, open_layout_for_write
from .errors import UsageError
from .keys import group_key, package_key
from .lock import read_lock
from .normalise import base_tree, normalise_cache
from .pack import PackedLayer, pack_layer
from .plan import DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SOLO_THRESHOLD, LayerGroup, plan_layers
from .populate import Narrowing, export_pylock, find_uv, populate_cache
from .progress import Progress
from .refs import LayoutRef, parse_ref
from .selection import select_packages
from .target import make_target

__all__ = ["PushOptions", "PushResult", "push"]

DEFAULT_JOBS = 2  # packing is CPU-bound (hash + compress); the codecs release the GIL


@dataclass(frozen=True, slots=True, kw_only=True)
class PushOptions:
    lock: Path
    destination: str
    platform: str | None = None
    python: str | None = None
    python_platform: str | None = None
    narrowing: Narrowing = field(default_factory=Narrowing)
    max_layers: int = DEFAULT_MAX_LAYERS
    buckets: int = DEFAULT_BUCKETS
    solo_threshold: int = DEFAULT_SOLO_THRESHOLD
    compression: str = "gzip"
    uv: Path | None = None
    jobs: int = DEFAULT_JOBS


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    reference: str
    manifest_digest: str
    target: dict[str, str]
    uv_version: str
    layers: list[dict[str, Any]]
    skipped: list[str]
    blobs_written: int
    bytes_written: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "manifest_digest": self.manifest_digest, "target": self.target,
            "uv_version": self.uv_version, "layers": self.layers, "skipped": self.skipped,
            "blobs_written": self.blobs_written, "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
        }


def _layer_key(group: LayerGroup, cache_format: str) -> str:
    if group.kind == "package":
        assert group.trees[0].package is not None
        return group.trees[0].package.key
    members = [t.package.key for t in group.trees if t.package is not None]
    return group_key(group.kind, members, cache_format if group.kind == "base" else "")


def push(opts: PushOptions, progress: Progress | None = None) -> PushResult:
    progress = progress or Progress(enabled=False)
    started = time.monotonic()
    ref = parse_ref(opts.destination)
    if not isinstance(ref, LayoutRef):
        raise UsageError(f"{ref}: pushing to a registry is not supported yet; use oci:DIR[:TAG]")
    lock = read_lock(opts.lock)
    target = make_target(platform=opts.platform, python=opts.python, python_platform=opts.python_platform,
                         requires_python=lock.requires_python)
    codec = get_codec(opts.compression)
    uv = find_uv(opts.uv)
    check_writable(ref.path)
    fmt = uv.format
    progress.step(f"target {target.describe()}; uv {uv.version}")

    with tempfile.TemporaryDirectory(prefix="ocicache-") as scratch_name:
        scratch = Path(scratch_name)
        cache = scratch / "cache"
        pylock_text = export_pylock(uv, lock.path, opts.narrowing, cache)
        selection = select_packages(pylock_text, lock, target)
        keyed = [(s, package_key(s, fmt, codec)) for s in selection.selected]
        for note in selection.skipped:
            progress.step(f"left out {note}")

        if keyed:
            progress.step(f"filling a uv cache with {len(keyed)} packages")
            (scratch / "pylock.toml").write_text(pylock_text)
            populate_cache(uv, scratch / "pylock.toml", target, cache, scratch)

        progress.step("normalising cache entries")
        trees = normalise_cache(cache, fmt, keyed)
        groups = plan_layers(base_tree(fmt), trees, max_layers=opts.max_layers, buckets=opts.buckets,
                             solo_threshold=opts.solo_threshold)
        progress.step(f"packing {len(groups)} layers ({codec.name})")
        blob_dir = scratch / "blobs"
        blob_dir.mkdir()
        done = 0

        def pack(index_group: tuple[int, LayerGroup]) -> PackedLayer:
            nonlocal done
            index, group = index_group
            entries = [e for tree in group.trees for e in tree.entries]
            packed = pack_layer(entries, blob_dir / f"layer-{index:03d}", codec)
            done += 1
            progress.count("layers packed", done, len(groups))
            return packed

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            packed_layers = list(pool.map(pack, enumerate(groups)))

        layers = [
            LayerDescription(digest=p.digest, diff_id=p.diff_id, size=p.size, media_type=p.media_type,
                             kind=g.kind, key=_layer_key(g, fmt.id),
                             packages=tuple(t.package.to_json() for t in g.trees if t.package))
            for g, p in zip(groups, packed_layers, strict=True)
        ]
        annotations = {
            oci.A_VERSION: __version__,
            oci.A_UV_VERSION: uv.version,
            oci.A_CACHE_FORMAT: fmt.id,
            oci.A_TARGET_PLATFORM: target.oci_platform,
            oci.A_TARGET_PYTHON: target.python_full,
            oci.A_TARGET_PYTHON_PLATFORM: target.python_platform,
            oci.A_COMPRESSION: codec.id,
        }
        if selection.skipped:
            annotations[oci.A_SKIPPED] = json.dumps(list(selection.skipped), separators=(",", ":"))
        image = assemble_image(layers, target, annotations)

        progress.step(f"writing {ref}")
        written: list[int] = []
        # Each distinct blob once: two groups can never share a digest unless they are identical.
        unique = {}
        for p, desc in zip(packed_layers, image.layers, strict=True):
            unique.setdefault(desc.digest, (desc, p.path))
        with open_layout_for_write(ref.path) as layout:
            write_image(layout, image, unique.values(), ref.tag,
                        on_blob=lambda d, new: written.append(d.size) if new else None)
    progress.close()
    layer_rows = [
        {"digest": str(desc.digest), "size": desc.size, "kind": layer.kind, "key": layer.key,
         "packages": [p["name"] for p in layer.packages]}
        for desc, layer in zip(image.layers, layers, strict=True)
    ]
    return PushResult(
        reference=str(ref), manifest_digest=str(image.manifest_descriptor.digest),
        target={"platform": target.oci_platform, "python": target.python_full,
                "python_platform": target.python_platform},
        uv_version=uv.version, layers=layer_rows, skipped=list(selection.skipped),
        blobs_written=len(written), bytes_written=sum(written), seconds=time.monotonic() - started,
    )
