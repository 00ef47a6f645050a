"""Trust: `ocicache sign`, `verify`, and the signature gate of `pull`/`check` (`--require-signature`).

A cache image decides what code `uv sync --offline` installs. Three checks, from cheap to thorough:

- **signature** (`--key PUB`): the manifest digest the tag resolves to carries a cosign-format ECDSA
  P-256 signature by that key (signing.py). Checked before any layer is read.
- **verify**: every layer's digest and diff_id (the bytes are what the manifest says), and every
  package entry's recorded artifact hash equals the lock's hash for the artifact the target selects.
- **verify --rebuild**: the cache filled again from the index, for the target, format set and codec
  the image's annotations name, and compared file by file, package by package: layers are
  deterministic, so a changed file is found and its package named, whoever rewrote the manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from . import oci
from .dest.layout import open_layout_for_write
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import UsageError
from .image import ImageError, SourceImage, layer_packages, open_image
from .lock import read_lock
from .populate import Narrowing, select_for_target
from .refs import LayoutRef, RegistryRef, parse_ref
from .signing import SigningError, load_private_key, load_public_key, sign_image, verify_signatures
from .target import Target, make_target
from .uvcache import families_of
from .venv import VENV_KIND

__all__ = ["VerifyResult", "require_signature", "sign_ref", "verify_image"]

PASSWORD_ENV = "COSIGN_PASSWORD"  # as cosign: the password of an encrypted private key


def _password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    return load_private_key(path, _password())


def _payload_reference(ref: LayoutRef | RegistryRef) -> str:
    """The `docker-reference` the payload names (informational: verifiers check the digest)."""
    if isinstance(ref, RegistryRef):
        return f"{ref.registry}/{ref.repository}"
    return "oci/" + re.sub(r"[^A-Za-z0-9._-]+", "-", ref.path.resolve().name or "layout")


def sign_ref(value: str, key: ec.EllipticCurvePrivateKey, options: RegistryOptions | None = None,
             digest: str | None = None) -> dict[str, Any]:
    """Sign the manifest `value` resolves to (or `digest`), writing the `.sig` image beside it."""
    ref = parse_ref(value)
    with Endpoints(options or RegistryOptions()) as endpoints:
        if digest is None:
            source, tag, _ = endpoints.source(value)
            found = source.get_manifest(tag)
            if found is None:
                raise SigningError(f"{ref}: no such image to sign")
            digest = str(found[0].digest)
        if isinstance(ref, LayoutRef):
            with open_layout_for_write(ref.path) as layout:
                sig = sign_image(layout, oci.Digest(digest), _payload_reference(ref), key)
        else:
            sig = sign_image(endpoints.registry(ref), oci.Digest(digest), _payload_reference(ref), key)
    from .signing import signature_tag

    return {"reference": str(ref), "manifest_digest": digest, "signature_tag": signature_tag(oci.Digest(digest)),
            "added": sig.added, "signatures": len(sig.image.layers)}


def require_signature(image: SourceImage, public_key_path: Path) -> str:
    """Refuse `image` unless the digest its reference resolved to is signed by the key; return the
    verdict line. Called before any layer is read."""
    check = verify_signatures(image.source, image.signed_digest, load_public_key(public_key_path))
    if not check.ok:
        raise SigningError(f"{image.where}@{image.signed_digest}: signature required and {check.reason}")
    return check.reason


@dataclass
class VerifyResult:
    reference: str
    manifest_digest: str
    layers_verified: int = 0
    packages: int = 0
    signature: str | None = None
    problems: list[str] = field(default_factory=list)  # one line each, naming the package
    rebuilt: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "manifest_digest": self.manifest_digest, "ok": self.ok,
                "layers_verified": self.layers_verified, "packages": self.packages, "signature": self.signature,
                "rebuilt": self.rebuilt, "problems": self.problems}


# path → ("file", sha256, executable) | ("symlink", target) | ("dir",)
Files = dict[str, tuple[Any, ...]]


def _read_files(image: SourceImage, venv: str | None = None) -> Files:
    """Every cache entry of `image` (with `venv`, the entries of its --venv layer under that path,
    read inside each archive of a --venv-archives image), hashed while each layer's digest and
    diff_id are checked."""
    files: Files = {}
    root = image.stack_root if venv is None else venv.strip("/")
    layers = image.cache_layers()
    if venv is not None:  # only that layer holds them: the cache is not read twice
        layers = [d for d in layers if d.annotations.get(oci.A_LAYER_KIND) == VENV_KIND]
    for layer in layers:
        with image.open_layer(layer) as tf:
            for member in tf:
                if venv is not None and image.venv_archives and member.isreg() and member.name.endswith(".tar"):
                    src = tf.extractfile(member)
                    assert src is not None
                    try:
                        with tarfile.open(fileobj=src, mode="r|") as archive:  # streamed, as the layer is
                            for inner in archive:
                                _hash_member(archive, inner, root, files)
                    except tarfile.TarError as exc:
                        raise ImageError(f"{image.where}: the archive {member.name[:200]} is not a tar: "
                                         f"{exc}") from None
                    continue
                _hash_member(tf, member, root, files)
    return files


def _hash_member(tf: tarfile.TarFile, member: tarfile.TarInfo, root: str, files: Files) -> None:
    """`member` of `tf` into `files` by its path under `root` (others are left out)."""
    name = os.path.normpath(member.name).lstrip("/")
    if root:
        if not name.startswith(root + "/"):
            return
        name = name[len(root) + 1:]
    if member.isreg():
        src = tf.extractfile(member)
        assert src is not None
        h = hashlib.sha256()
        while chunk := src.read(1 << 20):
            h.update(chunk)
        files[name] = ("file", h.hexdigest(), bool(member.mode & 0o111))
    elif member.issym():
        files[name] = ("symlink", member.linkname)
    elif member.isdir():
        files[name] = ("dir",)
    else:
        files[name] = ("other", member.type)


def _owned(files: Files, paths: list[str]) -> Files:
    return {p: v for p, v in files.items() if any(p == q or p.startswith(q + "/") for q in paths)}


def verify_image(value: str, lock_path: Path, *, key: Path | None, rebuild: bool, platform: str | None,
                 narrowing: Narrowing, options: RegistryOptions | None = None,
                 bytecode_python: str | None = None) -> VerifyResult:
    options = options or RegistryOptions()
    with Endpoints(options) as endpoints:
        source, tag, ref = endpoints.source(value)
        image = open_image(source, tag, str(ref), platform)
        result = VerifyResult(reference=str(ref), manifest_digest=str(image.signed_digest))
        if key is not None:
            check = verify_signatures(image.source, image.signed_digest, load_public_key(key))
            result.signature = check.reason
            if not check.ok:
                result.problems.append(f"signature: {check.reason}")
        ann = image.annotations
        pp, python = ann.get(oci.A_TARGET_PYTHON_PLATFORM), ann.get(oci.A_TARGET_PYTHON)
        if not pp or not python:
            raise UsageError(f"{ref}: not an ocicache image (no target annotations); nothing to verify against")
        lock = read_lock(lock_path)
        try:
            target = make_target(platform=None, python=python, python_platform=pp, requires_python=None)
        except UsageError:
            raise ImageError(f"{ref}: its target annotations ({python[:20]}, {pp[:60]}) name no target ocicache "
                             "knows") from None
        selection = select_for_target(lock, narrowing, target)
        wanted = {(s.name, s.version): s for s in selection.selected}
        entries = [p for layer in image.cache_layers() for p in layer_packages(layer)]
        result.packages = len(entries)
        for entry in entries:  # annotations are the image's word: quoted, never at length
            name, version = str(entry.get("name"))[:100], str(entry.get("version"))[:50]
            selected = wanted.get((name, version))
            if selected is None:
                result.problems.append(f"{name} {version}: in the image, not selected by the lock for "
                                       f"{target.describe()}")
            elif image.venv_only:
                continue  # an installed distribution: its files are compared by --rebuild
            elif entry.get("hash") != selected.hash or entry.get("artifact") != selected.artifact:
                result.problems.append(f"{name} {version}: the image records {str(entry.get('artifact'))[:200]} "
                                       f"{str(entry.get('hash'))[:80]}, the lock selects {selected.artifact} "
                                       f"{selected.hash}")
        files = _read_files(image)  # every layer verified on the way
        result.layers_verified = len(image.cache_layers())
        if rebuild:
            result.rebuilt = True
            result.problems += _rebuild_and_compare(image, files, lock_path, target, narrowing, options,
                                                    bytecode_python)
    return result


def _rebuild_and_compare(image: SourceImage, files: Files, lock_path: Path, target: Target, narrowing: Narrowing,
                         options: RegistryOptions, bytecode_python: str | None = None) -> list[str]:
    from .bytecode import find_compiler
    from .push import PushOptions, push

    ann = image.annotations
    compiled_by = ann.get(oci.A_BYTECODE)
    if compiled_by:  # the pycs compare equal only when compiled by the same release
        compiler = find_compiler(target.python_minor, bytecode_python)
        if compiler.id != compiled_by:
            raise UsageError(f"{image.where}: its bytecode was compiled by {compiled_by}, and {compiler.executable} "
                             f"is {compiler.id}: pass that release with --bytecode-python to rebuild it")
    families = families_of(ann.get(oci.A_CACHE_FORMAT, ""))
    if not families:
        raise UsageError(f"{image.where}: its cache format {str(ann.get(oci.A_CACHE_FORMAT))[:80]!r} is not one this "
                         "ocicache knows; cannot rebuild it")
    # an installed environment (--venv) is rebuilt too, on the same base, and compared entry by entry
    venv, base = ann.get(oci.A_STACK_VENV), ann.get(oci.A_STACK_BASE)
    stacked: dict[str, Any] = ({"base": base, "venv": venv, "venv_only": image.venv_only,
                                "venv_archives": bool(image.venv_archives)} if venv and base else {})
    if stacked and os.geteuid() != 0:
        raise UsageError(f"{image.where}: it holds an installed environment (push --venv), which --rebuild makes "
                         "again inside its base image: run the verify as root, or without --rebuild")
    with tempfile.TemporaryDirectory(prefix="ocicache-rebuild-") as scratch:
        layout = Path(scratch) / "rebuilt"
        push(PushOptions(lock=lock_path, destination=f"oci:{layout}:rebuilt", python=target.python_full,
                         python_platforms=(target.python_platform,), narrowing=narrowing,
                         compression=ann.get(oci.A_COMPRESSION, "gzip").split("/", 1)[0],  # files compared, not bytes
                         uv_versions=tuple(f.first for f in families), registry=options,
                         consumer_cache_dir=ann.get(oci.A_CONSUMER_CACHE_DIR) or
                         ("/" + image.stack_root if stacked else None),
                         compile_bytecode=bool(compiled_by), bytecode_python=bytecode_python, **stacked))
        with Endpoints(options) as endpoints:
            source, tag, ref = endpoints.source(f"oci:{layout}:rebuilt")
            rebuilt_image = open_image(source, tag, str(ref))
            rebuilt = _read_files(rebuilt_image)
            rebuilt_packages = [p for layer in rebuilt_image.cache_layers() for p in layer_packages(layer)]
            rebuilt_venv = _read_files(rebuilt_image, venv) if stacked else {}
    problems = []
    if stacked:
        theirs = _read_files(image, venv)
        changed = sorted(p for p in set(theirs) | set(rebuilt_venv) if theirs.get(p) != rebuilt_venv.get(p))
        if changed:
            count = "1 entry differs" if len(changed) == 1 else f"{len(changed)} entries differ"
            problems.append(f"the environment at {venv[:100]}: {count} from a rebuild ({_sample(changed)})")
    by_name = {(str(p.get("name")), str(p.get("version"))): p for p in rebuilt_packages}
    # entries of packages the image does not hold (a narrower push) are no one's concern here
    accounted: set[str] = set(_owned(rebuilt, [str(q) for p in rebuilt_packages for q in p.get("paths", [])]))
    for entry in [p for layer in image.cache_layers() for p in layer_packages(layer)]:
        name, version = str(entry.get("name")), str(entry.get("version"))
        honest = by_name.get((name, version))
        if honest is None:
            continue  # reported above: the lock does not select it
        paths = [str(p) for p in honest.get("paths", [])]
        theirs, ours = _owned(files, paths), _owned(rebuilt, paths)
        accounted |= set(theirs) | set(ours)
        changed = sorted(p for p in set(theirs) | set(ours) if theirs.get(p) != ours.get(p))
        if changed:
            problems.append(f"{name} {version}: {_count(changed)} from a rebuild from the index "
                            f"({_sample(changed)})")
    rest = sorted(p for p in (set(files) | set(rebuilt)) - accounted if files.get(p) != rebuilt.get(p))
    if rest:
        problems.append(f"outside every package: {_count(rest)} from a rebuild ({_sample(rest)})")
    return problems


def _count(paths: list[str]) -> str:
    return "1 cache entry differs" if len(paths) == 1 else f"{len(paths)} cache entries differ"


def _sample(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (", …" if len(paths) > 3 else "")
