"""`push --base IMAGE --venv PATH`: the project's environment, installed in the stacked image.

A stacked image's build still runs `uv sync --offline --link-mode symlink`: uv links every file of
every package (thousands of symlinks), and the builder then commits them as the `RUN` layer. With
`--venv`, the push does that once: it lays the base image and the cache layers out in a scratch
root, runs the pinned uv there (chroot, in a private mount namespace: the base image's own Python
answers uv's interpreter query, as it would in the build), and packs the environment it made as
one more layer (with `--venv-only`: installed with hardlinks into the scratch cache, so the
packed files are the packages' own, as in copy mode, without a copy; split by each
distribution's RECORD into a layer per big package, the small ones riding with uv's own files,
and shipped instead of the cache). The
build's `uv sync` then finds every package installed and does nothing; if the build asks for
something else (another selection, another environment path, another interpreter), uv changes or
recreates the environment as it always does, from the cache below it (with `--venv-only` there
is none: offline, that fails).

The layer holds links into the cache and uv's own files (`pyvenv.cfg`, activation scripts, entry
points); its key is the base image, the cache's package keys, the path, the uv release and the selection,
so an unchanged re-push reuses it. Needs root (chroot and mounts), a glibc base, and the base's
architecture on this machine (its Python runs here).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import posixpath
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packaging.utils import canonicalize_name

from .assemble import LayerDescription
from .base_image import config_env
from .compress import Codec, get_codec
from .dest import BlobOrigin
from .errors import OcicacheError, UsageError
from .oci import Descriptor
from .pack import PackedLayer, pack_layer, packed_result, tar_workers
from .plan import pick_solos
from .populate import Narrowing, UvTool
from .stack import BaseImage
from .target import Target, host_oci_platform
from .tree import Entry, file_entry, walk_tree, with_parents
from .unpack import open_layer

__all__ = ["ARCHIVE_DIR", "VENV_KIND", "VenvSpec", "archive_name", "build_venv_layers", "check_can_install",
           "check_venv_path", "layer_order", "pack_archive_layer", "package_layer_key", "solo_layer_keys",
           "venv_key"]

VENV_KIND = "venv"  # the layer kind (dev.ocicache.layer.kind)
ARCHIVE_DIR = "ocicache/venv"  # --venv-archives: where each layer's one tar sits in the image
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40  # symlinks followed while resolving one path, as the kernel's ELOOP limit


def check_venv_path(value: str) -> str:
    """`--venv`: an absolute directory, returned without its trailing slash."""
    clean = posixpath.normpath(value)
    if not value.startswith("/") or clean in ("/", "//") or ".." in value.split("/"):
        raise UsageError(f"--venv {value!r}: expected the environment's absolute path in the image, e.g. "
                         "/app/.venv (WORKDIR /app and uv's default .venv)")
    return clean


@dataclass(frozen=True, slots=True, kw_only=True)
class VenvSpec:
    """What the environment is made of (with the base and the cache layers: its key)."""

    path: str  # absolute, in the image
    cache_root: str  # where the stacked cache is (relative, e.g. root/.cache/uv): uv reads it there
    lock_dir: Path
    narrowing: Narrowing
    uv: UvTool
    files: bool = False  # --venv-only: the packages' own files (hardlinked at push time), a layer per big package
    solo_threshold: int = 0  # with files: installed size from which a package gets a layer of its own
    solo_slots: int = 0  # with files: at most this many such layers (the budget, less uv's own layer)
    archives: bool = False  # with files: each layer holds its files as one tar under ARCHIVE_DIR (--venv-archives)

    def sync_args(self) -> list[str]:
        return ["sync", "--frozen", "--offline", "--no-install-workspace", "--link-mode",
                "hardlink" if self.files else "symlink", *self.narrowing.export_args()]


def venv_key(spec: VenvSpec, base: BaseImage, package_keys: Iterable[str], target: Target) -> str:
    """The venv layer's key: everything that decides what uv writes (the project files included).
    The cache's files follow from its packages' keys (layers are deterministic), whatever layers
    they are grouped in: so the key is known before anything is populated."""
    h = hashlib.sha256()
    for part in (spec.path, spec.cache_root, spec.uv.version, " ".join(spec.sync_args()), target.describe(),
                 *(str(d.digest) for d in base.layers), *sorted(package_keys),
                 *((f"solo:{spec.solo_threshold}/{spec.solo_slots}",) if spec.files else ()),
                 *(("archives",) if spec.archives else ())):
        h.update(part.encode() + b"\0")
    for rel, source in _project_files(spec.lock_dir):
        h.update(rel.encode() + b"\0" + hashlib.sha256(source.read_bytes()).digest())
    return f"venv-{h.hexdigest()[:40]}"


def solo_layer_keys(key: str, names: Iterable[str], uv_layer: Descriptor) -> list[str]:
    """The keys of a --venv-only environment's solo layers, from its uv layer (key `key`), which
    names the packages it holds: every other of `names` has a layer of its own."""
    held = {str(p.get("name")) for p in LayerDescription.from_descriptor(uv_layer).packages}
    return [package_layer_key(key, n) for n in sorted(set(names) - held)]


def package_layer_key(key: str, name: str) -> str:
    """The key of package `name`'s layer of a --venv-only environment whose key is `key`."""
    return "venv-" + hashlib.sha256(f"{key}\0{name}".encode()).hexdigest()[:40]


def build_venv_layers(spec: VenvSpec, base: BaseImage, cache_layers: list[tuple[Descriptor, BlobOrigin]],
                      target: Target, codec: Codec, scratch: Path, key: str, step: Callable[[str], None],
                      jobs: int = 1) -> list[tuple[LayerDescription, Path]]:
    """Lay out base and cache in a scratch root, run `uv sync` in it, pack the environment: one
    layer of links, or (`spec.files`) one layer per package of at least `spec.solo_threshold`
    installed (at most `spec.solo_slots`) and one of uv's own files with every other package's, in
    `layer_order`, `jobs` packed at once (the caller has checked `check_can_install` for `target`
    before any work)."""
    rootfs = scratch / "venv-root"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    try:
        step(f"--venv {spec.path}: laying out the base image and the cache")
        for desc in base.layers:
            _apply_layer(lambda d=desc: base.source.open_blob(d.digest), desc, rootfs, f"--base {base.reference}")
        _apply_cache(cache_layers, rootfs, scratch / "venv-cache-blobs", jobs)
        step(f"--venv {spec.path}: uv {spec.uv.version} sync in the base image")
        _run_uv(spec, base, target, rootfs)
        venv = rootfs / spec.path.lstrip("/")
        if not (venv / "pyvenv.cfg").is_file():
            raise OcicacheError(f"--venv {spec.path}: uv made no environment there")
        parent, name = posixpath.split(spec.path.lstrip("/"))
        entries = list(walk_tree(venv, name))
        groups: dict[str | None, tuple[list[tuple[str, str]], list[Entry]]] = {None: ([], entries)}
        if spec.files:
            by_package = _split_by_package(venv, entries, name)
            # the cache image's rule, on installed sizes; the rest ride in uv's layer, so the budget holds
            sizes = {d[0]: sum(e.size for e in members) for d, members in by_package.items() if d is not None}
            groups = _group(by_package, pick_solos(sizes, spec.solo_threshold, spec.solo_slots))
        step(f"--venv {spec.path}: packing {len(groups)} layer{'s' if len(groups) > 1 else ''}")
        built = []
        with tar_workers(min(jobs, len(groups)), sum(e.size for e in entries)) as executor:
            futures = []
            for solo, (dists, members) in groups.items():
                layer_key = package_layer_key(key, solo) if solo else key
                out = scratch / "blobs" / f"{layer_key}.layer"
                if spec.archives:
                    job = executor.submit(pack_archive_layer, with_parents(members), out, codec, parent,
                                          archive_name(solo))
                else:
                    job = executor.submit(pack_layer, with_parents(members) if spec.files else members, out, codec,
                                          parent)
                futures.append((solo, dists, layer_key, out, job))
            for solo, dists, layer_key, out, future in futures:
                packed = packed_result(future, solo or f"the environment {spec.path}")
                built.append((LayerDescription(digest=packed.digest, diff_id=packed.diff_id, size=packed.size,
                                               media_type=packed.media_type, kind=VENV_KIND, key=layer_key,
                                               packages=tuple({"name": n, "version": v} for n, v in dists)), out))
    finally:
        _remove_root(rootfs)
    paths = {layer.digest: path for layer, path in built}
    return [(layer, paths[layer.digest]) for layer in layer_order([layer for layer, _ in built], key)]


def archive_name(solo: str | None) -> str:
    """The file a --venv-archives layer holds: `<package>.tar` for a package's own layer,
    `_environment.tar` for uv's (no canonical package name starts with `_`)."""
    return f"{ARCHIVE_DIR}/{solo or '_environment'}.tar"


def pack_archive_layer(entries: list[Entry], out_path: Path, codec: Codec, root: str, name: str) -> PackedLayer:
    """A --venv-archives layer: the uncompressed tar `pack_layer` would make of `entries` (under
    `root`), as the one file `name` of a layer compressed with `codec`. A builder applies one file
    where it would apply thousands; the build's `tar -x` writes them (docs/dockerfile-patterns.md).
    The same bytes in, the same archive and layer out."""
    inner = out_path.with_name(out_path.name + ".tar")
    try:
        pack_layer(entries, inner, get_codec("none"), root)
        return pack_layer(with_parents([file_entry(name, inner)]), out_path, codec)
    finally:
        inner.unlink(missing_ok=True)


def layer_order(layers: list[LayerDescription], key: str) -> list[LayerDescription]:
    """A --venv-only environment's layers in image order: the solo packages biggest first
    (compressed size, then name: the same order from the same bytes), then uv's own layer (key
    `key`: its files, the directories and the small packages). A builder reuses a layer only under
    an unchanged chain below it, so on a warm runner a bump re-applies the bumped package, the
    smaller ones above it, and uv's layer (which names every `.dist-info` directory, so it changes
    with any bump): never the big packages below."""
    solos = sorted((layer for layer in layers if layer.key != key),
                   key=lambda layer: (-layer.size, str(layer.packages[0]["name"]) if layer.packages else ""))
    return [*solos, *(layer for layer in layers if layer.key == key)]


def _group(by_package: dict[tuple[str, str] | None, list[Entry]], solo: frozenset[str],
           ) -> dict[str | None, tuple[list[tuple[str, str]], list[Entry]]]:
    """`_split_by_package`'s groups as layers: each package of `solo` alone (by name), the others'
    files with uv's own (None); each with the (name, version) of the packages it holds."""
    layers: dict[str | None, tuple[list[tuple[str, str]], list[Entry]]] = {None: ([], list(by_package.get(None, [])))}
    for dist, entries in by_package.items():
        if dist is None:
            continue
        if dist[0] in solo:
            layers[dist[0]] = ([dist], entries)
        else:
            layers[None][0].append(dist)
            layers[None][1].extend(entries)
    return layers


def _split_by_package(venv: Path, entries: list[Entry], name: str) -> dict[tuple[str, str] | None, list[Entry]]:
    """`entries` of an environment (rooted at `name`) by the installed distribution that owns them,
    from each `*.dist-info/RECORD`: None for uv's own files (pyvenv.cfg, activation scripts, the
    interpreter links), then (name, version) in name order. A file no RECORD names (a pyc a push
    compiled) goes with the files of its directory, or of the directory above a `__pycache__`,
    when one distribution owns them all."""
    owner: dict[str, tuple[str, str]] = {}
    for record in sorted(venv.glob("lib/python*/site-packages/*.dist-info/RECORD")):
        dist_info = record.parent
        dist_name, _, rest = dist_info.name.removesuffix(".dist-info").partition("-")
        dist = (canonicalize_name(dist_name), rest)
        site = dist_info.parent
        with open(record, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if not row or not row[0]:
                    continue
                rel = posixpath.normpath(posixpath.join(str(site.relative_to(venv)), row[0]))
                if not rel.startswith("../"):
                    owner[f"{name}/{rel}"] = dist
        for path in dist_info.rglob("*"):
            owner[f"{name}/{path.relative_to(venv)}"] = dist
    by_dir: dict[str, set[tuple[str, str]]] = {}
    for path, dist in owner.items():
        by_dir.setdefault(posixpath.dirname(path), set()).add(dist)
    scaffold: list[Entry] = []
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if entry.kind == "dir":  # all in uv's layer (empty ones too); each package's repeats its own parents
            scaffold.append(entry)
            continue
        dist = owner.get(entry.path)
        if dist is None:
            directory = posixpath.dirname(entry.path)
            if posixpath.basename(directory) == "__pycache__":
                directory = posixpath.dirname(directory)
            owners = by_dir.get(directory, set())
            dist = next(iter(owners)) if len(owners) == 1 else None
        (scaffold if dist is None else groups.setdefault(dist, [])).append(entry)
    return {None: scaffold, **{d: groups[d] for d in sorted(groups)}}


def check_can_install(target: Target) -> None:
    if os.geteuid() != 0:
        raise UsageError("--venv runs uv inside the base image (chroot, a private mount namespace): run the push "
                         "as root (e.g. sudo), or drop --venv")
    if target.libc != "manylinux":
        raise UsageError(f"--venv: the target is {target.python_platform}; the pinned uv runs in glibc base "
                         "images only")
    if target.oci_platform.split("/")[:2] != host_oci_platform().split("/")[:2]:
        raise UsageError(f"--venv: the base image is {target.oci_platform} and this machine "
                         f"{host_oci_platform()}: its Python cannot run here")
    _tools()


def _tools() -> dict[str, str]:
    """The machine's unshare, chroot, mount and sh (the base image's PATH is not this machine's)."""
    found = {}
    for tool in ("unshare", "chroot", "mount", "sh"):
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if path is None:
            raise UsageError(f"--venv needs {tool} (util-linux, coreutils) on this machine")
        found[tool] = path
    return found


def _apply_cache(cache_layers: list[tuple[Descriptor, BlobOrigin]], rootfs: Path, fetched: Path, jobs: int) -> None:
    """The cache layers hold disjoint files (a package's archive, its pointers), so they are applied
    `jobs` at a time, in worker processes (`tar_workers`: faster than threads, alternating A/B in
    docs/benchmarks.md), each from a local file: a blob from the pool is fetched to the scratch
    directory first, as it arrives (its digests are checked while it is applied)."""
    fetched.mkdir(parents=True, exist_ok=True)

    def local(desc: Descriptor, origin: BlobOrigin) -> Path:
        if origin.path is not None:
            return origin.path
        assert origin.source is not None, f"no origin for {desc.digest}"
        path = fetched / desc.digest.hex
        with origin.source.open_blob(desc.digest) as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return path

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ocicache-fetch") as fetch, \
                tar_workers(jobs, sum(desc.size for desc, _ in cache_layers)) as apply:
            fetches = [(desc, fetch.submit(local, desc, origin)) for desc, origin in cache_layers]
            applied = [apply.submit(_apply_layer_file, fetching.result(), desc, rootfs) for desc, fetching in fetches]
            for done in applied:
                try:
                    done.result()
                except BrokenExecutor:
                    raise OcicacheError("a process applying the cache layers died (killed, or out of memory?)") \
                        from None
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def _apply_layer_file(path: Path, desc: Descriptor, rootfs: Path) -> None:
    _apply_layer(functools.partial(open, path, "rb"), desc, rootfs, "the cache")


def _run_uv(spec: VenvSpec, base: BaseImage, target: Target, rootfs: Path) -> None:
    project = rootfs / "tmp" / "ocicache-project"
    for rel, source in _project_files(spec.lock_dir):
        dest = project / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    shutil.copyfile(spec.uv.path, rootfs / "tmp" / "ocicache-uv")
    os.chmod(rootfs / "tmp" / "ocicache-uv", 0o755)
    for mount_point in ("proc", "dev"):
        (rootfs / mount_point).mkdir(exist_ok=True)
    env = config_env(base.config.get("config") or {})
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env |= {"HOME": "/root", "UV_PROJECT_ENVIRONMENT": spec.path, "UV_PYTHON_PREFERENCE": "only-system",
            "UV_NO_PROGRESS": "1", "UV_PYTHON": target.python_minor,
            "UV_CACHE_DIR": "/" + spec.cache_root}  # the stacked cache, whatever the base's ENV says
    for name in ("UV_COMPILE_BYTECODE", "UV_NO_CACHE", "VIRTUAL_ENV"):  # the pycs, if any, are in the cache
        env.pop(name, None)
    # A private mount namespace: /proc and /dev for uv and the interpreter it queries, gone with it.
    tools = _tools()
    script = (f'{tools["mount"]} -t proc proc "$0/proc" && {tools["mount"]} --rbind /dev "$0/dev" && '
              f'exec {tools["chroot"]} "$0" /tmp/ocicache-uv --directory /tmp/ocicache-project "$@"')
    cmd = [tools["unshare"], "--mount", "--propagation", "private", "--fork", tools["sh"], "-c", script,
           str(rootfs), *spec.sync_args()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise OcicacheError(f"--venv {spec.path}: uv sync in the base image failed ({proc.returncode}):\n{tail}")


def _project_files(lock_dir: Path) -> list[tuple[str, Path]]:
    """What `uv sync --frozen --no-install-workspace` reads of the project: the lock, every
    pyproject.toml of the workspace, and uv's own settings files."""
    names = {"uv.lock", "uv.toml", ".python-version"}
    found = [(name, lock_dir / name) for name in sorted(names) if (lock_dir / name).is_file()]
    for dirpath, dirnames, filenames in os.walk(lock_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("node_modules", "__pycache__"))
        if "pyproject.toml" in filenames:
            path = Path(dirpath, "pyproject.toml")
            found.append((str(path.relative_to(lock_dir)), path))
    return found


# --- the scratch root: layers applied as a builder would, never writing outside it ----------------

def _apply_layer(open_blob: Callable[[], BinaryIO], desc: Descriptor, rootfs: Path, where: str) -> None:
    with open_layer(open_blob, desc, where) as tf:
        for member in tf:
            _apply_member(tf, member, rootfs)


def _resolve(rootfs: Path, rel: str, *, follow_last: bool = False) -> Path:
    """`rel` inside `rootfs` as the kernel would resolve it after chroot: links followed, absolute
    ones from `rootfs`, `..` stopping at it; the last component only with `follow_last`."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = rootfs.joinpath(*done, part)
        if (parts or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise OcicacheError(f"the base image's path {rel!r} loops through links")
            link = os.readlink(candidate)
            if link.startswith("/"):
                done = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return rootfs.joinpath(*done)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _apply_member(tf: tarfile.TarFile, member: tarfile.TarInfo, rootfs: Path) -> None:
    name = posixpath.normpath(member.name.lstrip("/"))
    if name in (".", ""):
        return
    parent_rel, base = posixpath.split(name)
    parent = _resolve(rootfs, parent_rel, follow_last=True)
    if base == _OPAQUE:
        if parent.is_dir():
            for child in parent.iterdir():
                _remove(child)
        return
    if base.startswith(_WHITEOUT):
        _remove(parent / base[len(_WHITEOUT):])
        return
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / base
    if member.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            target.unlink()
        target.mkdir(exist_ok=True)
    elif member.isreg():
        if target.is_symlink() or target.exists():
            _remove(target)
        src = tf.extractfile(member)
        assert src is not None
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    elif member.issym():
        if target.is_symlink() or target.exists():
            _remove(target)
        os.symlink(member.linkname, target)
        return  # no chmod/chown through a link
    elif member.islnk():
        source = _resolve(rootfs, posixpath.normpath(member.linkname.lstrip("/")))
        if target.is_symlink() or target.exists():
            _remove(target)
        if source.is_file() and not source.is_symlink():
            os.link(source, target)
        return
    else:
        return  # devices and fifos: nothing uv or the interpreter needs; /dev is mounted
    os.chown(target, member.uid, member.gid, follow_symlinks=False)
    os.chmod(target, member.mode & 0o7777)


def _remove_root(rootfs: Path) -> None:
    """Delete the scratch root, unless something is still mounted under it (never delete through a
    mount into the machine's own /dev)."""
    real = os.path.realpath(rootfs)
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(real + "/")]
    if mounted:
        raise OcicacheError(f"{rootfs}: still mounted ({mounted[0]}); left in place")
    shutil.rmtree(rootfs, ignore_errors=True)
