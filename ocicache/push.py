"""`ocicache push`: the data flow of docs/architecture.md, one stage per module.

    read lock → select(target) → lookup known layers → populate (uv) → normalise → plan → pack
    → assemble → destination
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
from .compress import Codec, get_codec
from .dest import write_image
from .dest.layout import Layout, check_writable, open_layout_for_write
from .errors import LayoutError, UsageError
from .keys import group_key, package_key
from .lock import read_lock
from .normalise import base_tree, normalise_cache
from .oci import Descriptor, Digest
from .pack import pack_layer
from .plan import DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SOLO_THRESHOLD, LayerGroup, plan_layers
from .populate import Narrowing, UvTool, export_pylock, filter_pylock, find_uv, populate_cache
from .progress import Progress
from .refs import LayoutRef, parse_ref
from .reuse import KnownLayers, known_layers_from_manifests
from .selection import Selected, select_packages
from .target import Target, make_target
from .tree import PackageRef, PackageTree

__all__ = ["PushOptions", "PushResult", "push"]

DEFAULT_JOBS = 2  # packing is CPU-bound (hash + compress); the codecs and hashlib release the GIL


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
    packages_populated: int
    layers_built: int
    layers_reused: int
    blobs_written: int
    bytes_written: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "manifest_digest": self.manifest_digest, "target": self.target,
            "uv_version": self.uv_version, "layers": self.layers, "skipped": self.skipped,
            "packages_populated": self.packages_populated, "layers_built": self.layers_built,
            "layers_reused": self.layers_reused, "blobs_written": self.blobs_written,
            "bytes_written": self.bytes_written, "seconds": round(self.seconds, 3),
        }


def _layer_key(group: LayerGroup, cache_format: str) -> str:
    if group.kind == "package":
        assert group.trees[0].package is not None
        return group.trees[0].package.key
    members = [t.package.key for t in group.trees if t.package is not None]
    return group_key(group.kind, members, cache_format if group.kind == "base" else "")


def _read_known_layers(ref: LayoutRef) -> KnownLayers:
    """Layers of the destination tag's current image, if there is one."""
    try:
        layout = Layout.open(ref.path)
        desc = layout.resolve(ref.tag)
        manifest = json.loads(layout.read_blob(desc.digest))
    except (LayoutError, ValueError):
        return KnownLayers()
    return known_layers_from_manifests([manifest] if isinstance(manifest, dict) else [])


@dataclass
class _Builder:
    """Populates and normalises packages into trees, in as many uv runs as reuse requires."""

    uv: UvTool
    target: Target
    pylock_text: str
    scratch: Path
    progress: Progress
    populated: int = 0
    _runs: int = 0

    def build(self, keyed: list[tuple[Selected, str]]) -> list[PackageTree]:
        if not keyed:
            return []
        self._runs += 1
        run_dir = self.scratch / f"populate-{self._runs}"
        run_dir.mkdir()
        names = {s.name for s, _ in keyed}
        (run_dir / "pylock.toml").write_text(filter_pylock(self.pylock_text, names))
        self.progress.step(f"filling a uv cache with {len(keyed)} packages (uv {self.uv.version})")
        cache = self.scratch / "cache"
        populate_cache(self.uv, run_dir / "pylock.toml", self.target, cache, run_dir)
        self.populated += len(keyed)
        self.progress.step("normalising cache entries")
        return normalise_cache(cache, self.uv.format, keyed)


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
        pylock_text = export_pylock(uv, lock.path, opts.narrowing, scratch / "cache")
        selection = select_packages(pylock_text, lock, target)
        for note in selection.skipped:
            progress.step(f"left out {note}")
        keyed = [(s, package_key(s, fmt, codec)) for s in selection.selected]
        known = _read_known_layers(ref)
        builder = _Builder(uv, target, pylock_text, scratch, progress)

        # Known packages are planned from their recorded sizes and not populated...
        trees_by_key = {key: PackageTree(package=_ref(s, key), known_size=known.package_sizes[key])
                        for s, key in keyed if known.knows_package(key)}
        for tree in builder.build([(s, k) for s, k in keyed if k not in trees_by_key]):
            assert tree.package is not None
            trees_by_key[tree.package.key] = tree
        groups = _plan(fmt.id, trees_by_key, keyed, opts, base_tree(fmt))
        reuse = {i: known.layer(_layer_key(g, fmt.id)) for i, g in enumerate(groups)}
        # ...unless they share a layer that must be rebuilt: then they are populated after all.
        missing = [(s, k) for i, g in enumerate(groups) if reuse[i] is None
                   for t in g.trees if t.is_placeholder and t.package
                   for s, k in keyed if k == t.package.key]
        if missing:
            for tree in builder.build(missing):
                assert tree.package is not None
                trees_by_key[tree.package.key] = tree
            groups = _plan(fmt.id, trees_by_key, keyed, opts, base_tree(fmt))
            reuse = {i: known.layer(_layer_key(g, fmt.id)) for i, g in enumerate(groups)}

        layers, blob_files = _pack_groups(groups, reuse, codec, fmt.id, scratch, opts.jobs, progress)
        image = assemble_image(layers, target, _image_annotations(uv, target, codec, selection.skipped))

        progress.step(f"writing {ref}")
        written: list[int] = []
        with open_layout_for_write(ref.path) as layout:
            blobs = [(desc, blob_files[desc.digest]) for desc in _unique(image.layers)
                     if desc.digest in blob_files or not layout.has_blob(desc.digest)]
            write_image(layout, image, blobs, ref.tag,
                        on_blob=lambda d, new: written.append(d.size) if new else None)
    progress.close()
    rows = [{"digest": str(desc.digest), "size": desc.size, "kind": layer.kind, "key": layer.key,
             "packages": [p["name"] for p in layer.packages], "reused": desc.digest not in blob_files}
            for desc, layer in zip(image.layers, layers, strict=True)]
    return PushResult(
        reference=str(ref), manifest_digest=str(image.manifest_descriptor.digest),
        target={"platform": target.oci_platform, "python": target.python_full,
                "python_platform": target.python_platform},
        uv_version=uv.version, layers=rows, skipped=list(selection.skipped),
        packages_populated=builder.populated, layers_built=len(blob_files),
        layers_reused=sum(1 for r in rows if r["reused"]),
        blobs_written=len(written), bytes_written=sum(written), seconds=time.monotonic() - started,
    )


def _ref(selected: Selected, key: str) -> PackageRef:
    return PackageRef(name=selected.name, version=selected.version, artifact=selected.artifact,
                      hash=selected.hash, key=key)


def _plan(fmt_id: str, trees_by_key: dict[str, PackageTree], keyed: list[tuple[Selected, str]],
          opts: PushOptions, base: PackageTree) -> list[LayerGroup]:
    trees = [trees_by_key[key] for _, key in keyed]
    return plan_layers(base, trees, max_layers=opts.max_layers, buckets=opts.buckets,
                       solo_threshold=opts.solo_threshold)


def _pack_groups(groups: list[LayerGroup], reuse: dict[int, Descriptor | None], codec: Codec, fmt_id: str,
                 scratch: Path, jobs: int, progress: Progress
                 ) -> tuple[list[LayerDescription], dict[Digest, Path]]:
    """Pack the groups that are not reused; return layer descriptions and the new blob files."""
    blob_dir = scratch / "blobs"
    blob_dir.mkdir()
    todo = [i for i in range(len(groups)) if reuse[i] is None]
    progress.step(f"packing {len(todo)} of {len(groups)} layers ({codec.name}); {len(groups) - len(todo)} reused")
    done = 0

    def pack(index: int) -> LayerDescription:
        nonlocal done
        group = groups[index]
        packed = pack_layer([e for t in group.trees for e in t.entries], blob_dir / f"layer-{index:03d}", codec)
        done += 1
        progress.count("layers packed", done, len(todo))
        return _describe(group, fmt_id, packed.digest, packed.diff_id, packed.size, packed.media_type)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        built = dict(zip(todo, pool.map(pack, todo), strict=True))
    layers = []
    files: dict[Digest, Path] = {}
    for i, group in enumerate(groups):
        if i in built:
            layers.append(built[i])
            files.setdefault(built[i].digest, blob_dir / f"layer-{i:03d}")
        else:
            desc = reuse[i]
            assert desc is not None
            diff_id = Digest(desc.annotations.get(oci.A_LAYER_DIFF_ID, ""))
            layers.append(_describe(group, fmt_id, desc.digest, diff_id, desc.size, desc.media_type))
    return layers, files


def _describe(group: LayerGroup, fmt_id: str, digest: Digest, diff_id: Digest, size: int,
              media_type: str) -> LayerDescription:
    return LayerDescription(digest=digest, diff_id=diff_id, size=size, media_type=media_type, kind=group.kind,
                            key=_layer_key(group, fmt_id),
                            packages=tuple(t.to_annotation() for t in group.trees if t.package))


def _unique(descs: tuple[Descriptor, ...]) -> list[Descriptor]:
    seen: dict[Digest, Descriptor] = {}
    for d in descs:
        seen.setdefault(d.digest, d)
    return list(seen.values())


def _image_annotations(uv: UvTool, target: Target, codec: Codec, skipped: tuple[str, ...]) -> dict[str, str]:
    annotations = {
        oci.A_VERSION: __version__,
        oci.A_UV_VERSION: uv.version,
        oci.A_CACHE_FORMAT: uv.format.id,
        oci.A_TARGET_PLATFORM: target.oci_platform,
        oci.A_TARGET_PYTHON: target.python_full,
        oci.A_TARGET_PYTHON_PLATFORM: target.python_platform,
        oci.A_COMPRESSION: codec.id,
    }
    if skipped:
        annotations[oci.A_SKIPPED] = json.dumps(list(skipped), separators=(",", ":"))
    return annotations
