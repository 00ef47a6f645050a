"""`ocicache push`: the data flow of docs/architecture.md, one stage per module.

    read lock → select(target) → lookup known layers → populate (uv) → normalise → plan → pack
    → assemble → destination
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import queue
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from . import __version__, oci
from .assemble import Image, LayerDescription, assemble_image, assemble_index
from .bytecode import Compiler, find_compiler, with_bytecode, without_bytecode
from .compress import Codec, get_codec
from .dest import BlobOrigin, ImageSource, WriteReport, write_images
from .dest.layout import Layout, check_writable, open_layout_for_write
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import LayoutError, PopulateError, UsageError
from .fetch import fetch_all
from .fill import WheelSplit, probe_index_dir, split_wheels
from .image import ImageError, find_images
from .index_credentials import IndexCredentials, find_index_credentials
from .keys import group_key, package_key
from .lock import Lock, read_lock
from .normalise import NormaliseError, WheelWatch, base_tree, normalise_cache, unpacked_wheel_tree
from .oci import Descriptor, Digest
from .pack import PackedLayer, pack_layer, packed_result, tar_workers
from .plan import (
    DEFAULT_BUCKETS,
    DEFAULT_MAX_LAYERS,
    DEFAULT_SOLO_THRESHOLD,
    MAX_LAYERS_CAP,
    LayerGroup,
    plan_layers,
    solo_slots,
)
from .populate import Narrowing, UvTool, export_pylock, filter_pylock, find_uv, populate_cache
from .progress import Progress
from .project_settings import BuildSettings, read_build_settings
from .refs import LayoutRef, RegistryRef, docker_reference, parse_ref
from .reuse import KnownLayers, KnownPackage, extract_known_packages
from .selection import Selected, select_packages, without_credentials
from .stack import BaseImage, read_base_image, stack_root
from .target import Target, make_targets
from .tree import PackageTree
from .uvcache import FormatSet, format_set
from .uvcache.unzip import NotPlainWheelError
from .venv import (
    ARCHIVE_DIR,
    VENV_KIND,
    VenvSpec,
    build_venv_layers,
    check_can_install,
    layer_order,
    solo_layer_keys,
    venv_key,
)

if TYPE_CHECKING:  # the HTTP stack is imported only when a registry is used
    from .dest.registry import Registry
    from .pool import Pool

__all__ = ["PushOptions", "PushResult", "push"]

DEFAULT_JOBS = 2  # packing is CPU-bound (hash + compress); the codecs and hashlib release the GIL


@dataclass(frozen=True, slots=True, kw_only=True)
class PushOptions:
    lock: Path
    destination: str
    platforms: tuple[str, ...] = ()  # several (or several python_platforms) make an image index
    python: str | None = None
    python_platforms: tuple[str, ...] = ()
    narrowing: Narrowing = field(default_factory=Narrowing)
    max_layers: int = DEFAULT_MAX_LAYERS
    buckets: int = DEFAULT_BUCKETS
    solo_threshold: int = DEFAULT_SOLO_THRESHOLD
    compression: str = "gzip"
    uv: Path | None = None  # the uv that fills the cache (default: the pinned one)
    uv_versions: tuple[str, ...] = ()  # the consumers' uv releases (default: every supported one)
    jobs: int = DEFAULT_JOBS
    cache_from: tuple[str, ...] = ()
    pool: str | None = None
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    consumer_cache_dir: str | None = None  # where the Dockerfile's uv reads its cache (--dockerfile)
    base: str | None = None  # stack the cache on this image (--base), at consumer_cache_dir or /root/.cache/uv
    venv: str | None = None  # with base: the project's environment installed at this path (--venv, venv.py)
    venv_only: bool = False  # with venv: its files, one layer per package, and no cache layers (--venv-only)
    venv_archives: bool = False  # with venv_only: each layer's files as one tar, no base layers (--venv-archives)
    unpack_wheels: bool = True  # False (--uv-unpacks-all): uv fills every package, none unpacked by ocicache
    compile_bytecode: bool = False  # the unpacked wheels' pycs in the layers (bytecode.py)
    bytecode_required: bool = True  # False (inferred from --dockerfile): no compiler here means no pycs, a note
    bytecode_python: str | None = None  # the interpreter that compiles them (default: found for the target)
    build_no_binary: BuildSettings = field(default_factory=BuildSettings)  # the Dockerfile's (--dockerfile)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    reference: str
    manifest_digest: str  # the image's, or the index's when several targets were pushed
    targets: list[dict[str, str]]  # with each target's own manifest digest
    uv_version: str  # the uv that filled the cache
    uv_releases: str  # the uv releases that read the image
    layers: list[dict[str, Any]]
    skipped: list[str]
    packages_populated: int  # downloaded or built (by uv, or by ocicache: packages_unpacked)
    packages_unpacked: int  # wheels downloaded and unpacked by ocicache itself (fill.py)
    packages_extracted: int  # taken out of known layers to be re-bundled
    layers_built: int
    layers_reused: int
    blobs_uploaded: int
    blobs_mounted: int
    blobs_present: int
    bytes_uploaded: int
    pool_tags_written: int
    seconds: float
    bytecode: str = ""  # the compiling interpreter (--compile-bytecode), e.g. cpython-3.11.7
    notes: list[str] = field(default_factory=list)  # what the push chose not to do, and why
    layers_packed_early: int = 0  # packed before every package was in (while uv ran or wheels downloaded)

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


def _check_built_for(tree: PackageTree, target: Target) -> None:
    """uv builds sdists and git checkouts with this machine's interpreter: a compiled result runs
    only where this machine's would. Refuse to put it into another target's image."""
    assert tree.package is not None
    for entry in tree.entries:
        if entry.kind == "file" and entry.path.endswith(".dist-info/WHEEL") and entry.source is not None:
            tags = [line.split(":", 1)[1].strip() for line in entry.source.read_text(errors="replace").splitlines()
                    if line.startswith("Tag:")]
            problem = target.built_wheel_problem(tags)
            if problem:
                raise PopulateError(f"{tree.package.name} {tree.package.version} has no wheel for "
                                    f"{target.describe()} and its build here {problem}: push this target from a "
                                    "machine or container that matches it (e.g. its base image), or pin a "
                                    "version that has a wheel for it")


@dataclass
class _Builder:
    """Turns packages into trees: populated by uv (one shared scratch cache, so a pure wheel is
    downloaded once for every target), or taken out of known layers."""

    uv: UvTool
    formats: FormatSet
    pylock_text: str
    scratch: Path
    progress: Progress
    unpack_wheels: bool = True  # index wheels unpacked by ocicache (fill.py); False: uv fills everything
    jobs: int = DEFAULT_JOBS  # layers packed at once
    compilers: dict[str, Compiler] = field(default_factory=dict)  # --compile-bytecode: by Python minor
    credentials: IndexCredentials | None = None  # what uv would authenticate its downloads with
    settings: BuildSettings = field(default_factory=BuildSettings)  # the project's no-binary packages
    populated: int = 0  # filled by uv
    unpacked: int = 0  # downloaded and unpacked by ocicache
    extracted: int = 0
    _runs: int = 0
    _early: Executor | None = None  # the packers of _EarlyPacker (threads; processes when compiling bytecode)

    def early_packer(self) -> Executor:
        if self._early is None:
            if self.compilers:  # compiling bytecode holds the GIL: threads would share one core
                self._early = ProcessPoolExecutor(max_workers=max(1, self.jobs),
                                                  mp_context=multiprocessing.get_context("spawn"))
            else:
                self._early = ThreadPoolExecutor(max_workers=max(1, self.jobs),
                                                 thread_name_prefix="ocicache-early-pack")
        return self._early

    def close(self) -> None:
        """Wait for the packer threads (before the scratch directory they write into goes)."""
        if self._early is not None:
            self._early.shutdown(wait=True, cancel_futures=True)

    def finished(self, tree: PackageTree, target: Target) -> PackageTree:
        """A populated tree as its layer holds it: with the pycs of its sources under --compile-bytecode."""
        compiler = self.compilers.get(target.python_minor)
        return tree if compiler is None else with_bytecode(tree, compiler)

    def populate(self, keyed: list[tuple[Selected, str]], target: Target,
                 early: _EarlyPacker | None = None) -> list[PackageTree]:
        """Trees of `keyed`: index wheels unpacked by ocicache where uv agrees on a probe of their
        index (fill.py), the rest filled by uv. `early` packs big wheels meanwhile: those uv has
        cached while it runs, then each download as it arrives."""
        if not keyed:
            return []
        split = split_wheels(keyed, self.scratch / "wheels") if self.unpack_wheels else WheelSplit()
        ours = split.keys()
        trees: dict[str, PackageTree] = {}
        arrivals = _Arrivals(idle=lambda: early.pump(self.jobs) if early is not None else None)
        stop = threading.Event()  # a failure (uv's, an interrupt) need not wait for the downloads
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocicache-download") as background, \
                _setting_on_error(stop):
            if ours:
                split.wheel_dir.mkdir(exist_ok=True)
                self.progress.step(f"downloading {len(ours) + len(split.probes)} wheels to unpack them here")
                arrivals.fetching = background.submit(fetch_all, split.downloads(), arrivals.report, stop,
                                                      self.credentials)
            uv_keyed = [sk for sk in keyed if sk[1] not in ours]
            trees |= self._fill_with_uv(uv_keyed, target, None if early is None else early.poll)
            index_dirs: dict[str, str] = {}
            for index, (selected, key) in split.probes.items():
                outcome = arrivals.outcome(selected.sha256 or "")
                index_dir, why = probe_index_dir(split, index, trees[key], self.formats, outcome)
                if index_dir is None:
                    self.progress.step(f"uv unpacks the wheels of {without_credentials(index)}: {why}")
                else:
                    index_dirs[index] = index_dir
            by_sha = {s.sha256 or "": (s, k) for s, k in split.ours}
            leftover = []
            for n in range(1, len(by_sha) + 1):  # as they arrive: packing starts while the rest download
                sha, outcome = arrivals.next_of(by_sha.keys())
                selected, key = by_sha[sha]
                self.progress.count("wheels downloaded", n, len(by_sha))
                index_dir = index_dirs.get(selected.index or "")
                if index_dir is None or outcome is not None:
                    leftover.append((selected, key))
                    continue
                try:
                    trees[key] = unpacked_wheel_tree(selected, key, split.path(selected), index_dir, self.formats)
                except NotPlainWheelError as exc:
                    self.progress.step(f"uv unpacks {selected.artifact}: {exc}")
                    leftover.append((selected, key))
                    continue
                if early is not None:
                    early.offer([self.finished(trees[key], target)], self.jobs)
        self.unpacked += len(split.ours) - len(leftover)
        trees |= self._fill_with_uv(leftover, target, None if early is None else early.poll)
        return [self.finished(trees[k], target) for _, k in keyed]

    def _fill_with_uv(self, keyed: list[tuple[Selected, str]], target: Target,
                      while_running: Callable[[Path], None] | None) -> dict[str, PackageTree]:
        if not keyed:
            return {}
        self._runs += 1
        run_dir = self.scratch / f"populate-{self._runs}"
        run_dir.mkdir()
        (run_dir / "pylock.toml").write_text(filter_pylock(self.pylock_text, {s.name for s, _ in keyed}))
        self.progress.step(f"filling a uv cache with {len(keyed)} packages (uv {self.uv.version})")
        cache = self.scratch / "cache"
        populate_cache(self.uv, run_dir / "pylock.toml", target, cache, run_dir,
                       None if while_running is None else lambda: while_running(cache),
                       self.credentials.named if self.credentials else (), self.settings)
        self.populated += len(keyed)
        self.progress.step("normalising cache entries")
        trees = normalise_cache(cache, self.uv.family, self.formats, keyed)
        built = {k for s, k in keyed if s.kind != "wheel"}
        for tree in trees:
            if tree.package is not None and tree.package.key in built:
                _check_built_for(tree, target)
        return {t.package.key: t for t in trees if t.package is not None}

    def extract(self, packages: list[KnownPackage], target: Target) -> list[PackageTree]:
        """Trees of known packages, taken out of their layers. Their pycs (--compile-bytecode) are
        dropped and compiled again when packed: the tree is then the one a populate gives."""
        self.progress.step(f"taking {len(packages)} packages out of known layers to re-bundle them")
        self.extracted += len(packages)
        compiler = self.compilers.get(target.python_minor)
        strip = None if compiler is None else functools.partial(without_bytecode, cache_tag=compiler.cache_tag)
        return [self.finished(t, target)
                for t in extract_known_packages(packages, self.scratch / f"extract-{self.extracted}", strip)]


@contextlib.contextmanager
def _setting_on_error(event: threading.Event) -> Iterator[None]:
    try:
        yield
    except BaseException:
        event.set()
        raise


class _Arrivals:
    """Downloads as they finish: fetch_all reports from its threads, the builder takes them in turn
    (calling `idle` while it waits, to keep packer threads busy)."""

    def __init__(self, idle: Callable[[], None]) -> None:
        self.idle = idle
        self.fetching: Future[dict[str, str | None]] | None = None
        self._queue: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        self._outcomes: dict[str, str | None] = {}
        self._taken: set[str] = set()

    def report(self, sha: str, outcome: str | None) -> None:
        self._queue.put((sha, outcome))

    def outcome(self, sha: str) -> str | None:
        """How `sha`'s download went (None: intact), waiting for it."""
        while sha not in self._outcomes:
            self._receive()
        return self._outcomes[sha]

    def next_of(self, shas: Iterable[str]) -> tuple[str, str | None]:
        """A download of `shas` not taken yet, the first to have finished."""
        wanted = set(shas) - self._taken
        while not wanted & self._outcomes.keys():
            self._receive()
        sha = min(wanted & self._outcomes.keys())
        self._taken.add(sha)
        return sha, self._outcomes[sha]

    def _receive(self) -> None:
        try:
            sha, outcome = self._queue.get(timeout=0.05)
        except queue.Empty:
            if self.fetching is None or self.fetching.done():
                if self.fetching is not None:
                    self.fetching.result()  # its exception, if it failed
                raise PopulateError("a download was never reported (a bug worth reporting)") from None
            self.idle()
            return
        self._outcomes[sha] = outcome


class _EarlyPacker:
    """Packs the big wheels' solo layers before every package is in: while uv fills the cache, and
    while the wheels ocicache unpacks itself are downloading.

    While uv runs, one packer thread beside it, one layer at a time, from each wheel uv has finished
    (it writes a wheel's pointer last): uv keeps a core busy. While wheels download, the cores are
    free: `jobs` threads pack each big wheel as it arrives (the codecs, the inflater and hashlib
    release the GIL on the 1 MiB blocks of a big layer). Measured: docs/benchmarks.md. Speculative:
    the plan, made once everything is in, decides; a layer it does not use is left in the scratch
    directory.
    """

    def __init__(self, builder: _Builder, target: Target, keyed: list[tuple[Selected, str]], codec: Codec, space: str,
                 root: str, solo_threshold: int, slots: int) -> None:
        # wheels that may unpack to a solo layer (an index that gives no sizes: every wheel)
        self.pending = {s.sha256: (s, k) for s, k in keyed
                        if s.kind == "wheel" and s.sha256 and (s.size is None or s.size >= solo_threshold)}
        self.slots = slots
        self.builder, self.target, self.codec, self.space, self.root = builder, target, codec, space, root
        self.solo_threshold = solo_threshold
        self.queue: list[PackageTree] = []  # solo candidates not started, smallest first
        self.started: dict[str, tuple[LayerGroup, Path, Future[PackedLayer]]] = {}  # by layer key
        self._watch: WheelWatch | None = None

    def poll(self, cache: Path) -> None:
        """While uv runs: offer what it has cached, pack one layer at a time."""
        if self._running():
            return  # one at a time: the other core is uv's
        if not self.queue and self.pending:
            if self._watch is None:
                self._watch = WheelWatch(cache, self.builder.uv.family)
            try:  # uv is writing meanwhile: whatever cannot be read now is left to the normal path
                done = self._watch.scan() & set(self.pending)
                trees = self._watch.normalise(self.builder.formats, [self.pending[sha] for sha in sorted(done)])
            except (OSError, NormaliseError):
                return
            self.offer([self.builder.finished(t, self.target) for t in trees], 1)
        self.pump(1)

    def offer(self, trees: list[PackageTree], in_flight: int) -> None:
        """Trees now complete: the big ones join the queue; start packing up to `in_flight` at once."""
        for tree in trees:
            sha = tree.package.hash.removeprefix("sha256:") if tree.package else ""
            if self.pending.pop(sha, None) is not None and tree.size >= self.solo_threshold:
                self.queue.append(tree)
        self.queue.sort(key=lambda t: t.size)
        self.pump(in_flight)

    def pump(self, in_flight: int) -> None:
        while self.queue and len(self.started) < self.slots and self._running() < in_flight:
            tree = self.queue.pop()  # biggest first
            group = LayerGroup(kind="package", name=tree.name, trees=(tree,))
            key = _layer_key(group, self.space)
            path = self.builder.scratch / "blobs" / f"early-{key[7:]}"
            future = self.builder.early_packer().submit(pack_layer, list(tree.entries), path, self.codec, self.root)
            self.started[key] = (group, path, future)

    def _running(self) -> int:
        return sum(1 for _, _, f in self.started.values() if not f.done())

    def keys(self) -> set[str]:
        """The layer keys packed or being packed."""
        return set(self.started)

    def collect(self, keys: set[str], state: _SharedState) -> None:
        """Record the early layers of `keys` (waiting for the one in progress)."""
        for key in keys:
            group, path, future = self.started[key]
            packed = packed_result(future, ", ".join(t.name for t in group.trees))
            state.packed[key] = (_describe(group, self.space, packed), path)
            state.packed_early += 1


@dataclass
class _Built:
    """One target's image, and where each of its layer blobs can be had."""

    target: Target
    image: Image
    layers: list[LayerDescription]
    blobs: list[tuple[Descriptor, BlobOrigin]]
    new_digests: set[Digest]
    reused_from_pool: set[Digest]
    skipped: tuple[str, ...]
    # --venv-only: the cache layers the environment was made from, for the pool only (not in the image)
    pool_only: list[tuple[LayerDescription, BlobOrigin]] = field(default_factory=list)


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

    def write(self, images: list[Image], blobs: list[tuple[Descriptor, BlobOrigin]],
              index: tuple[Descriptor, bytes] | None, jobs: int, pool: Pool | None = None) -> WriteReport:
        if self.registry is not None:
            if pool is None or pool.registry.client is not self.registry.client:
                return write_images(self.registry, images, blobs, self.tag, index=index, jobs=jobs)
            # Pushes through one pool run at once (CI): each blob uploaded here is mounted into the
            # pool at once, where the others look before uploading, and the uploads go in an order of
            # this push's own, so that concurrent pushes start on different blobs.
            registry = self.registry

            from .dest.registry import RegistryError

            def share(desc: Descriptor, outcome: str) -> None:
                if outcome == "uploaded":
                    with contextlib.suppress(RegistryError):
                        pool.registry.mount_blob(desc, registry.repository)

            order = list(blobs)
            random.Random(os.getpid() ^ time.time_ns()).shuffle(order)
            # What this push packed and may have to upload is claimed first; what another push has
            # claimed goes last, to be mounted from the pool once that push has uploaded it.
            claims = pool.claim_uploads(d for d, o in order if o.path is not None and o.source_may_lack)
            order = [(d, dataclasses.replace(o, wait_until=claims.theirs[d.digest])) if d.digest in claims.theirs
                     else (d, o) for d, o in order]
            order.sort(key=lambda item: item[0].digest in claims.theirs)
            try:
                return write_images(registry, images, order, self.tag, index=index, jobs=jobs, on_blob=share)
            finally:
                pool.release(claims)
        assert isinstance(self.ref, LayoutRef)
        with open_layout_for_write(self.ref.path) as layout:
            return write_images(layout, images, blobs, self.tag, index=index, jobs=jobs)


def push(opts: PushOptions, progress: Progress | None = None) -> PushResult:
    if opts.venv_archives and not opts.venv_only:  # the CLI implies it; a caller of this API must say it
        raise UsageError("--venv-archives wraps --venv-only's layers: it needs venv_only too")
    progress = progress or Progress(enabled=False)
    started = time.monotonic()
    ref = parse_ref(opts.destination)
    lock = read_lock(opts.lock)
    targets = make_targets(platforms=opts.platforms, python=opts.python, python_platforms=opts.python_platforms,
                           requires_python=lock.requires_python)
    if opts.venv is not None:
        for target in targets:  # before any work: root, a glibc target this machine can run
            check_can_install(target)
    codec = get_codec(opts.compression)
    formats = format_set(opts.uv_versions)
    uv = find_uv(opts.uv)
    compilers: dict[str, Compiler] = {}
    notes: list[str] = []
    for minor in sorted({t.python_minor for t in targets}) if opts.compile_bytecode else []:
        try:
            compilers[minor] = find_compiler(minor, opts.bytecode_python)
        except UsageError as exc:
            if opts.bytecode_required:
                raise
            notes.append(f"no bytecode in the image for CPython {minor}: {exc}")
    pool_ref = parse_ref(opts.pool) if opts.pool else None
    if pool_ref is not None and not isinstance(pool_ref, RegistryRef):
        raise UsageError(f"--pool {opts.pool}: expected REGISTRY/REPOSITORY")
    with Endpoints(opts.registry) as endpoints, tempfile.TemporaryDirectory(prefix="ocicache-") as scratch_name, \
            contextlib.ExitStack() as cleanup:
        dest = _Destination.connect(ref, endpoints)
        pool = None
        if isinstance(pool_ref, RegistryRef):
            from .pool import Pool

            pool = Pool(endpoints.registry(pool_ref))
            pool.check_push_access()
        scratch = Path(scratch_name)
        (scratch / "blobs").mkdir()
        pylock_text = export_pylock(uv, lock.path, opts.narrowing, scratch / "cache")
        builder = _Builder(uv, formats, pylock_text, scratch, progress, opts.unpack_wheels, opts.jobs, compilers,
                           find_index_credentials(lock.path.parent),
                           read_build_settings(lock.path.parent).merged(opts.build_no_binary))
        cleanup.callback(builder.close)
        if builder.settings:
            progress.step(f"built from their sdists, as uv sync builds them (no-binary): {builder.settings.describe()}")
        known = _known_layers(dest, opts.cache_from, endpoints, progress)
        state = _SharedState()
        root = stack_root(opts.consumer_cache_dir) if opts.base else ""
        built = [_build_for_target(t, lock, opts, uv, codec, builder, known, pool, state, progress,
                                   _read_base(opts.base, t, endpoints, progress) if opts.base else None, root)
                 for t in targets]
        # Every layer is packed: the scratch uv cache goes before the write, so the one filesystem
        # sync that makes the blobs durable does not also write back hundreds of MB about to be deleted.
        for leftover in scratch.iterdir():
            if leftover.name != "blobs":
                shutil.rmtree(leftover, ignore_errors=True)

        progress.step(f"writing {ref}")
        images = [b.image for b in built]
        index = assemble_index(images, _index_annotations(uv, formats, codec)) if len(images) > 1 else None
        report = dest.write(images, [blob for b in built for blob in b.blobs], index, opts.registry.jobs, pool)
        pool_tags = 0
        if pool is not None:
            progress.step(f"publishing layers to the pool {pool}")
            written_to = dest.source()
            pool_tags = sum(pool.publish([(layer, BlobOrigin(source=written_to)) for layer in b.layers
                                          if layer.digest not in b.reused_from_pool and layer.kind != VENV_KIND]
                                         + b.pool_only, root) for b in built)
    progress.close()
    rows = [{"platform": b.target.oci_platform, "digest": str(layer.digest), "size": layer.size, "kind": layer.kind,
             "key": layer.key, "packages": [p["name"] for p in layer.packages],
             "reused": layer.digest not in b.new_digests, "blob": report.outcomes.get(layer.digest, "present")}
            for b in built for layer in b.layers]
    top = index[0].digest if index else images[0].manifest_descriptor.digest
    return PushResult(
        reference=str(ref), manifest_digest=str(top),
        targets=[{"platform": b.target.oci_platform, "python": b.target.python_full,
                  "python_platform": b.target.python_platform,
                  "manifest_digest": str(b.image.manifest_descriptor.digest)} for b in built],
        uv_version=uv.version, uv_releases=formats.releases, layers=rows,
        skipped=sorted({s for b in built for s in b.skipped}),
        packages_populated=builder.populated + builder.unpacked,
        packages_unpacked=builder.unpacked, packages_extracted=builder.extracted,
        layers_built=len(state.packed), layers_reused=sum(1 for r in rows if r["reused"]),
        blobs_uploaded=report.count("uploaded"), blobs_mounted=report.count("mounted"),
        blobs_present=report.count("present"), bytes_uploaded=report.bytes("uploaded"),
        pool_tags_written=pool_tags, seconds=time.monotonic() - started, layers_packed_early=state.packed_early,
        bytecode=", ".join(c.id for c in compilers.values()), notes=notes,
    )


@dataclass
class _SharedState:
    """What one target's build leaves for the next: trees and packed layers, by key."""

    trees: dict[str, PackageTree] = field(default_factory=dict)
    packed: dict[str, tuple[LayerDescription, Path]] = field(default_factory=dict)  # by layer key
    packed_early: int = 0


def _build_for_target(target: Target, lock: Lock, opts: PushOptions, uv: UvTool, codec: Codec, builder: _Builder,
                      known: KnownLayers, pool: Pool | None, state: _SharedState, progress: Progress,
                      base: BaseImage | None, root: str) -> _Built:
    """One target's image. With `base` (--base), its layers first and the cache's under `root`."""
    formats = builder.formats
    space = f"{formats.id}@{root}" if root else formats.id  # layer keys: stacked layers never mix with others
    progress.step(f"target {target.describe()}; for uv {formats.releases}")
    selection = select_packages(builder.pylock_text, lock, target, builder.settings)
    for note in selection.skipped:
        progress.step(f"left out {note}")
    compiler = builder.compilers.get(target.python_minor)
    bytecode = compiler.id if compiler is not None else ""
    keyed = [(s, package_key(s, formats, codec, target, root, bytecode)) for s in selection.selected]
    max_layers = opts.max_layers
    if base is not None:
        max_layers = min(max_layers, MAX_LAYERS_CAP - len(base.layers))
        if max_layers < 2:
            raise UsageError(f"--base {base.reference} has {len(base.layers)} layers: no room for the cache's "
                             f"under the {MAX_LAYERS_CAP}-layer limit")
    venv = (_venv_plan(opts, lock, uv, base, keyed, target, max_layers) if opts.venv is not None and base is not None
            else None)
    image_base = None if opts.venv_archives else base  # archives are mounted, not built FROM: no base layers
    if venv is not None and venv.spec.files:
        made = _known_venv(venv, known)
        if made is not None:  # the environment holds everything the image needs: no cache to make
            assert base is not None
            progress.step(f"--venv {opts.venv}: unchanged, reused")
            layers = [layer for layer, _ in made]
            annotations = _target_annotations(opts, uv, formats, target, codec, selection.skipped, bytecode, base,
                                              root)
            return _Built(target=target, image=assemble_image(layers, target, annotations, image_base),
                          layers=layers,
                          blobs=[*((d, BlobOrigin(source=base.source)) for d in (image_base.layers if image_base
                                                                                 else ())),
                                 *((layer.descriptor(), origin) for layer, origin in made)],
                          new_digests=set(), reused_from_pool=set(), skipped=selection.skipped)
    if pool is not None:
        hits = pool.lookup([k for _, k in keyed if k not in state.trees], known)
        progress.step(f"pool {pool}: {hits} of {len(keyed)} packages known")
    # Packages built for an earlier target (same key ⇒ same tree), then known packages, planned from
    # their recorded sizes and neither downloaded nor built...
    trees = {k: state.trees[k] for _, k in keyed if k in state.trees}
    trees |= {k: PackageTree(package=known.packages[k].ref, known_size=known.packages[k].size)
              for _, k in keyed if k not in trees and k in known.packages}
    to_populate = [(s, k) for s, k in keyed if k not in trees]
    if root and to_populate:
        trees |= _rerooted(to_populate, root, bytecode, target, codec, builder, known, pool)
        to_populate = [(s, k) for s, k in keyed if k not in trees]
    early = _EarlyPacker(builder, target, to_populate, codec, space, root, opts.solo_threshold,
                         solo_slots(max_layers, opts.buckets))
    for tree in builder.populate(to_populate, target, early if opts.jobs > 1 else None):
        assert tree.package is not None
        trees[tree.package.key] = tree
    groups = _plan(trees, keyed, opts, base_tree(formats), max_layers)

    def reusable(group: LayerGroup) -> bool:
        key = _layer_key(group, space)
        return key in state.packed or known.layer(key) is not None

    # ...unless their bundle must be rebuilt: then they are taken out of the layer that holds them.
    missing = sorted({t.package.key for g in groups if not reusable(g) for t in g.trees
                      if t.is_placeholder and t.package})
    if missing:
        for tree in builder.extract([known.packages[k] for k in missing], target):
            assert tree.package is not None
            trees[tree.package.key] = tree
        groups = _plan(trees, keyed, opts, base_tree(formats), max_layers)
    state.trees |= {k: t for k, t in trees.items() if not t.is_placeholder}

    todo = [g for g in groups if not reusable(g)]
    in_progress = early.keys() & {_layer_key(g, space) for g in todo}
    progress.step(f"packing {len(todo)} of {len(groups)} layers ({codec.name}); {len(groups) - len(todo)} reused"
                  + (f"; {len(in_progress)} packed while packages were still arriving" if in_progress else ""))
    _pack_groups([g for g in todo if _layer_key(g, space) not in in_progress], codec, space, root,
                 builder.scratch / "blobs", opts.jobs, state, progress)
    early.collect(in_progress, state)
    layers, blobs, new, from_pool = [], [], set(), set()
    pool_only: list[tuple[LayerDescription, BlobOrigin]] = []
    if base is not None:
        blobs += [(layer, BlobOrigin(source=base.source)) for layer in base.layers]
    for group in groups:
        key = _layer_key(group, space)
        if key in state.packed:
            layer, path = state.packed[key]
            # another push through the pool may have published this very layer since we looked
            origin = BlobOrigin(path=path, source=pool.registry if pool is not None else None,
                                source_may_lack=pool is not None)
            new.add(layer.digest)
        else:
            known_layer = known.layer(key)
            assert known_layer is not None
            layer = LayerDescription.from_descriptor(known_layer.descriptor)  # same key ⇒ same layer
            origin = BlobOrigin(source=known_layer.origin)
            if pool is not None and known_layer.origin is pool.registry:
                from_pool.add(layer.digest)
        layers.append(layer)
        blobs.append((layer.descriptor(), origin))
    if venv is not None:
        assert base is not None
        venv_layers = _known_venv(venv, known)
        if venv_layers is not None:
            progress.step(f"--venv {opts.venv}: unchanged, reused")
        else:
            venv_layers = [(layer, BlobOrigin(path=path)) for layer, path in build_venv_layers(
                venv.spec, base, blobs[len(base.layers):], target, codec, builder.scratch, venv.key, progress.step,
                opts.jobs)]
        if opts.venv_only:  # the environment replaces the cache (which stays in the pool, if any)
            pool_only = [(layer, origin) for layer, (_, origin) in zip(layers, blobs[len(base.layers):], strict=True)
                         if layer.digest not in from_pool]
            layers, blobs = [], blobs[:len(image_base.layers) if image_base else 0]
            new, from_pool = set(), set()
        for layer, origin in venv_layers:
            if origin.path is not None:
                new.add(layer.digest)
            layers.append(layer)
            blobs.append((layer.descriptor(), origin))
    annotations = _target_annotations(opts, uv, formats, target, codec, selection.skipped, bytecode, base, root)
    image = assemble_image(layers, target, annotations, image_base)
    return _Built(target=target, image=image, layers=layers, blobs=blobs, new_digests=new,
                  reused_from_pool=from_pool, skipped=selection.skipped, pool_only=pool_only)


def _target_annotations(opts: PushOptions, uv: UvTool, formats: FormatSet, target: Target, codec: Codec,
                        skipped: tuple[str, ...], bytecode: str, base: BaseImage | None, root: str) -> dict[str, str]:
    annotations = _image_annotations(uv, formats, target, codec, skipped, opts.consumer_cache_dir)
    if bytecode:
        annotations[oci.A_BYTECODE] = bytecode
    if base is not None:
        annotations |= {oci.A_STACK_ROOT: root, oci.A_STACK_BASE: base.reference}
    if opts.venv is not None:
        annotations[oci.A_STACK_VENV] = opts.venv
        if opts.venv_only:
            annotations[oci.A_STACK_VENV_ONLY] = "true"
        if opts.venv_archives:
            annotations[oci.A_STACK_VENV_ARCHIVES] = "/" + ARCHIVE_DIR
    return annotations


@dataclass(frozen=True, slots=True)
class _VenvPlan:
    spec: VenvSpec
    key: str
    names: list[str]  # the packages it installs (canonical names)


def _venv_plan(opts: PushOptions, lock: Lock, uv: UvTool, base: BaseImage,
               keyed: list[tuple[Selected, str]], target: Target, max_layers: int) -> _VenvPlan:
    assert opts.venv is not None
    spec = VenvSpec(path=opts.venv, cache_root=stack_root(opts.consumer_cache_dir), lock_dir=lock.path.parent,
                    narrowing=opts.narrowing, uv=uv, files=opts.venv_only, solo_threshold=opts.solo_threshold,
                    solo_slots=max_layers - 1,  # the budget: uv's own layer, and one per solo package
                    archives=opts.venv_archives)
    key = venv_key(spec, base, [k for _, k in keyed], target)
    return _VenvPlan(spec, key, sorted({canonicalize_name(s.name) for s, _ in keyed}))


def _rerooted(keyed: list[tuple[Selected, str]], root: str, bytecode: str, target: Target, codec: Codec,
              builder: _Builder, known: KnownLayers, pool: Pool | None) -> dict[str, PackageTree]:
    """For a stacked push (cache under `root`): the packages of `keyed` known only from a plain
    cache image (--cache-from, the pool), taken out of that layer instead of downloaded or built
    again. The files are the same bytes wherever the cache sits; only their layer's paths differ,
    so the tree is re-packed under `root` with its own key."""
    plain = {k: package_key(s, builder.formats, codec, target, "", bytecode) for s, k in keyed}
    if pool is not None:
        pool.lookup(plain.values(), known)
    found = {k: known.packages[p] for k, p in plain.items() if p in known.packages}
    if not found:
        return {}
    trees = {t.package.key: t for t in builder.extract(list(found.values()), target) if t.package}
    return {k: dataclasses.replace(trees[pkg.ref.key], package=dataclasses.replace(pkg.ref, key=k))
            for k, pkg in found.items()}


def _known_venv(plan: _VenvPlan, known: KnownLayers) -> list[tuple[LayerDescription, BlobOrigin]] | None:
    """The environment's layers, if an earlier push made every one of them (with --venv-only, uv's
    own layer names the packages it holds; each other package has a layer of its own)."""
    uv_layer = known.layer(plan.key)
    if uv_layer is None:
        return None
    keys = solo_layer_keys(plan.key, plan.names, uv_layer.descriptor) if plan.spec.files else []
    found = [uv_layer, *(known.layer(k) for k in keys)]
    if not all(found):
        return None
    layers = {k.descriptor.digest: (LayerDescription.from_descriptor(k.descriptor), BlobOrigin(source=k.origin))
              for k in found if k is not None}
    return [layers[layer.digest] for layer in layer_order([layer for layer, _ in layers.values()], plan.key)]


def _read_base(value: str, target: Target, endpoints: Endpoints, progress: Progress) -> BaseImage:
    progress.step(f"reading the base image {value} for {target.oci_platform}")
    reference = value if value.startswith("oci:") else docker_reference(value)
    source, tag, ref = endpoints.source(reference)
    return read_base_image(source, tag, str(ref), target)


def _known_layers(dest: _Destination, cache_from: tuple[str, ...], endpoints: Endpoints,
                  progress: Progress) -> KnownLayers:
    """Layers of the destination tag's image(s) and of every --cache-from image (the pool is asked
    per target, for the keys it needs)."""
    known = KnownLayers()
    sources: list[tuple[str, ImageSource | None, str]] = [(str(dest.ref), dest.source(), dest.tag)]
    for value in cache_from:
        src, tag, _ = endpoints.source(value)
        sources.append((f"--cache-from {value}", src, tag))
    for where, source, tag in sources:
        if source is None:
            continue
        try:
            images = find_images(source, tag, where)
        except ImageError as exc:  # reuse is an optimisation: a broken image is rebuilt, not trusted
            progress.step(f"not reusing layers: {exc}")
            continue
        if not images and where.startswith("--cache-from"):
            progress.step(f"{where}: no such image; ignored")
        for image in images:
            known.add_manifest(image.manifest, source, check_blobs=isinstance(source, Layout))
    return known


def _plan(trees_by_key: dict[str, PackageTree], keyed: list[tuple[Selected, str]],
          opts: PushOptions, base: PackageTree, max_layers: int) -> list[LayerGroup]:
    trees = [trees_by_key[key] for _, key in keyed]
    return plan_layers(base, trees, max_layers=max_layers, buckets=opts.buckets,
                       solo_threshold=opts.solo_threshold)


def _pack_groups(groups: list[LayerGroup], codec: Codec, fmt_id: str, root: str, blob_dir: Path, jobs: int,
                 state: _SharedState, progress: Progress) -> None:
    """Pack `groups` into `blob_dir`, `jobs` at a time (`tar_workers`), biggest first; record each in
    `state.packed`."""
    work = []
    for group in sorted(groups, key=lambda g: -sum(t.size for t in g.trees)):  # biggest first
        key = _layer_key(group, fmt_id)
        work.append((key, group, [e for t in group.trees for e in t.entries], blob_dir / f"layer-{key[7:]}"))
    if not work:
        return
    total = sum(t.size for g in groups for t in g.trees)
    with tar_workers(min(jobs, len(work)), total) as executor:
        futures = {executor.submit(pack_layer, entries, path, codec, root): (key, group, path)
                   for key, group, entries, path in work}
        for done, future in enumerate(as_completed(futures), 1):
            key, group, path = futures[future]
            packed = packed_result(future, ", ".join(t.name for t in group.trees))
            state.packed[key] = (_describe(group, fmt_id, packed), path)
            progress.count("layers packed", done, len(work))


def _describe(group: LayerGroup, fmt_id: str, packed: PackedLayer) -> LayerDescription:
    return LayerDescription(digest=packed.digest, diff_id=packed.diff_id, size=packed.size,
                            media_type=packed.media_type, kind=group.kind, key=_layer_key(group, fmt_id),
                            packages=tuple(t.to_annotation() for t in group.trees if t.package))


def _index_annotations(uv: UvTool, formats: FormatSet, codec: Codec) -> dict[str, str]:
    return {oci.A_VERSION: __version__, oci.A_UV_VERSION: uv.version, oci.A_CACHE_FORMAT: formats.id,
            oci.A_UV_RELEASES: formats.releases, oci.A_COMPRESSION: codec.id}


def _image_annotations(uv: UvTool, formats: FormatSet, target: Target, codec: Codec,
                       skipped: tuple[str, ...], cache_dir: str | None) -> dict[str, str]:
    annotations = {
        oci.A_VERSION: __version__,
        oci.A_UV_VERSION: uv.version,
        oci.A_CACHE_FORMAT: formats.id,
        oci.A_UV_RELEASES: formats.releases,
        oci.A_TARGET_PLATFORM: target.oci_platform,
        oci.A_TARGET_PYTHON: target.python_full,
        oci.A_TARGET_PYTHON_PLATFORM: target.python_platform,
        oci.A_COMPRESSION: codec.id,
    }
    if skipped:
        annotations[oci.A_SKIPPED] = json.dumps(list(skipped), separators=(",", ":"))
    if cache_dir:
        annotations[oci.A_CONSUMER_CACHE_DIR] = cache_dir
    return annotations
