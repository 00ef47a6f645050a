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
from .assemble import Image, LayerDescription, assemble_image
from .compress import Codec, get_codec
from .dest import BlobOrigin, ImageSource, WriteReport, write_image
from .dest.layout import Layout, check_writable, open_layout_for_write
from .dest.registry import Registry, RegistryOptions
from .endpoints import Endpoints
from .errors import LayoutError, UsageError
from .keys import group_key, package_key
from .lock import read_lock
from .normalise import base_tree, normalise_cache
from .oci import Descriptor, Digest
from .pack import pack_layer
from .plan import DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SOLO_THRESHOLD, LayerGroup, plan_layers
from .pool import Pool
from .populate import Narrowing, UvTool, export_pylock, filter_pylock, find_uv, populate_cache
from .progress import Progress
from .refs import LayoutRef, RegistryRef, parse_ref
from .reuse import KnownLayer, KnownLayers, extract_known_packages, read_image_manifest
from .selection import Selected, select_packages
from .target import Target, make_target
from .tree import PackageTree

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
    cache_from: tuple[str, ...] = ()
    pool: str | None = None
    registry: RegistryOptions = field(default_factory=RegistryOptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    reference: str
    manifest_digest: str
    target: dict[str, str]
    uv_version: str
    layers: list[dict[str, Any]]
    skipped: list[str]
    packages_populated: int  # downloaded or built by uv
    packages_extracted: int  # taken out of known layers to be re-bundled
    layers_built: int
    layers_reused: int
    blobs_uploaded: int
    blobs_mounted: int
    blobs_present: int
    bytes_uploaded: int
    pool_tags_written: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["seconds"] = round(self.seconds, 3)
        return out


def _layer_key(group: LayerGroup, cache_format: str) -> str:
    if group.kind == "package":
        assert group.trees[0].package is not None
        return group.trees[0].package.key
    members = [t.package.key for t in group.trees if t.package is not None]
    return group_key(group.kind, members, cache_format if group.kind == "base" else "")


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


@dataclass
class _Destination:
    """The push destination: where known layers are read from and the image is written to."""

    ref: LayoutRef | RegistryRef
    registry: Registry | None

    @classmethod
    def connect(cls, ref: LayoutRef | RegistryRef, endpoints: Endpoints) -> _Destination:
        """Fail before any download if we cannot write there."""
        if isinstance(ref, LayoutRef):
            check_writable(ref.path)
            return cls(ref, None)
        if ref.digest:
            raise UsageError(f"{ref}: push to a tag, not a digest")
        registry = endpoints.registry(ref)
        registry.check_push_access()
        return cls(ref, registry)

    @property
    def tag(self) -> str:
        return self.ref.tag or "latest"

    def source(self) -> ImageSource | None:
        if self.registry is not None:
            return self.registry
        assert isinstance(self.ref, LayoutRef)
        try:
            return Layout.open(self.ref.path)
        except LayoutError:
            return None

    def write(self, image: Image, blobs: list[tuple[Descriptor, BlobOrigin]], jobs: int) -> WriteReport:
        if self.registry is not None:
            return write_image(self.registry, image, blobs, self.tag, jobs=jobs)
        assert isinstance(self.ref, LayoutRef)
        with open_layout_for_write(self.ref.path) as layout:
            return write_image(layout, image, blobs, self.tag, jobs=jobs)


def push(opts: PushOptions, progress: Progress | None = None) -> PushResult:
    progress = progress or Progress(enabled=False)
    started = time.monotonic()
    ref = parse_ref(opts.destination)
    lock = read_lock(opts.lock)
    target = make_target(platform=opts.platform, python=opts.python, python_platform=opts.python_platform,
                         requires_python=lock.requires_python)
    codec = get_codec(opts.compression)
    uv = find_uv(opts.uv)
    fmt = uv.format
    pool_ref = parse_ref(opts.pool) if opts.pool else None
    if pool_ref is not None and not isinstance(pool_ref, RegistryRef):
        raise UsageError(f"--pool {opts.pool}: expected REGISTRY/REPOSITORY")
    with Endpoints(opts.registry) as endpoints, tempfile.TemporaryDirectory(prefix="ocicache-") as scratch_name:
        dest = _Destination.connect(ref, endpoints)
        pool = Pool(endpoints.registry(pool_ref)) if isinstance(pool_ref, RegistryRef) else None
        progress.step(f"target {target.describe()}; uv {uv.version}")
        scratch = Path(scratch_name)
        pylock_text = export_pylock(uv, lock.path, opts.narrowing, scratch / "cache")
        selection = select_packages(pylock_text, lock, target)
        for note in selection.skipped:
            progress.step(f"left out {note}")
        keyed = [(s, package_key(s, fmt, codec)) for s in selection.selected]

        known = _known_layers(dest, opts.cache_from, pool, [k for _, k in keyed], endpoints, progress)
        builder = _Builder(uv, target, pylock_text, scratch, progress)
        # Known packages are planned from their recorded sizes and neither downloaded nor built...
        trees_by_key = {key: PackageTree(package=known.packages[key].ref, known_size=known.packages[key].size)
                        for _, key in keyed if key in known.packages}
        for tree in builder.build([(s, k) for s, k in keyed if k not in trees_by_key]):
            assert tree.package is not None
            trees_by_key[tree.package.key] = tree
        groups = _plan(trees_by_key, keyed, opts, base_tree(fmt))
        # ...unless their bundle must be rebuilt: then they are taken out of the layer that holds them.
        missing = sorted({t.package.key for g in groups if known.layer(_layer_key(g, fmt.id)) is None
                          for t in g.trees if t.is_placeholder and t.package})
        extracted = 0
        if missing:
            progress.step(f"taking {len(missing)} packages out of known layers to re-bundle them")
            for tree in extract_known_packages([known.packages[k] for k in missing], scratch):
                assert tree.package is not None
                trees_by_key[tree.package.key] = tree
            extracted = len(missing)
            groups = _plan(trees_by_key, keyed, opts, base_tree(fmt))

        reuse = {i: known.layer(_layer_key(g, fmt.id)) for i, g in enumerate(groups)}
        layers, blob_files = _pack_groups(groups, reuse, codec, fmt.id, scratch, opts.jobs, progress)
        image = assemble_image(layers, target, _image_annotations(uv, target, codec, selection.skipped))
        blobs = []
        for i, desc in enumerate(image.layers):
            known_layer = reuse[i]
            origin = BlobOrigin(path=blob_files[desc.digest]) if desc.digest in blob_files \
                else BlobOrigin(source=known_layer.origin if known_layer else None)
            blobs.append((desc, origin))

        progress.step(f"writing {ref}")
        report = dest.write(image, blobs, opts.registry.jobs)
        pool_tags = 0
        if pool is not None:
            progress.step(f"publishing layers to the pool {pool}")
            written_to = dest.source()
            publish = [(layer, BlobOrigin(source=written_to)) for i, layer in enumerate(layers)
                       if not (reuse[i] is not None and reuse[i].origin is pool.registry)]
            pool_tags = pool.publish(publish, target.oci_config_platform())
    progress.close()
    rows = [{"digest": str(desc.digest), "size": desc.size, "kind": layer.kind, "key": layer.key,
             "packages": [p["name"] for p in layer.packages], "reused": desc.digest not in blob_files,
             "blob": report.outcomes.get(desc.digest, "present")}
            for desc, layer in zip(image.layers, layers, strict=True)]
    return PushResult(
        reference=str(ref), manifest_digest=str(image.manifest_descriptor.digest),
        target={"platform": target.oci_platform, "python": target.python_full,
                "python_platform": target.python_platform},
        uv_version=uv.version, layers=rows, skipped=list(selection.skipped),
        packages_populated=builder.populated, packages_extracted=extracted,
        layers_built=len(blob_files), layers_reused=sum(1 for r in rows if r["reused"]),
        blobs_uploaded=report.count("uploaded"), blobs_mounted=report.count("mounted"),
        blobs_present=report.count("present"), bytes_uploaded=report.bytes("uploaded"),
        pool_tags_written=pool_tags, seconds=time.monotonic() - started,
    )


def _known_layers(dest: _Destination, cache_from: tuple[str, ...], pool: Pool | None, keys: list[str],
                  endpoints: Endpoints, progress: Progress) -> KnownLayers:
    """Layers of the destination tag's image, every --cache-from image, and the pool's for `keys`."""
    known = KnownLayers()
    source = dest.source()
    if source is not None:
        manifest = read_image_manifest(source, dest.tag)
        if manifest is not None:
            known.add_manifest(manifest, source)
    for value in cache_from:
        src, tag, _ = endpoints.source(value)
        manifest = read_image_manifest(src, tag)
        if manifest is None:
            progress.step(f"--cache-from {value}: no such image; ignored")
            continue
        known.add_manifest(manifest, src)
    if pool is not None:
        hits = pool.lookup(keys, known)
        progress.step(f"pool {pool}: {hits} of {len(keys)} packages known")
    return known


def _plan(trees_by_key: dict[str, PackageTree], keyed: list[tuple[Selected, str]],
          opts: PushOptions, base: PackageTree) -> list[LayerGroup]:
    trees = [trees_by_key[key] for _, key in keyed]
    return plan_layers(base, trees, max_layers=opts.max_layers, buckets=opts.buckets,
                       solo_threshold=opts.solo_threshold)


def _pack_groups(groups: list[LayerGroup], reuse: dict[int, KnownLayer | None], codec: Codec, fmt_id: str,
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
    for i in range(len(groups)):
        if i in built:
            layers.append(built[i])
            files.setdefault(built[i].digest, blob_dir / f"layer-{i:03d}")
        else:
            known = reuse[i]
            assert known is not None
            layers.append(LayerDescription.from_descriptor(known.descriptor))  # same key ⇒ same layer
    return layers, files


def _describe(group: LayerGroup, fmt_id: str, digest: Digest, diff_id: Digest, size: int,
              media_type: str) -> LayerDescription:
    return LayerDescription(digest=digest, diff_id=diff_id, size=size, media_type=media_type, kind=group.kind,
                            key=_layer_key(group, fmt_id),
                            packages=tuple(t.to_annotation() for t in group.trees if t.package))


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
