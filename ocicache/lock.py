"""uv.lock → frozen records.

Reads every source kind uv writes (registry, direct URL, git, path, directory, editable, virtual).
Errors name the context path (`package[3] (numpy).wheels[0]`) so a broken lock is easy to find.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import LockError

__all__ = ["Artifact", "Lock", "LockedPackage", "Source", "SourceKind", "read_lock"]

SourceKind = Literal["registry", "url", "git", "path", "directory", "editable", "virtual"]
_SOURCE_KINDS: tuple[SourceKind, ...] = ("registry", "url", "git", "path", "directory", "editable", "virtual")
SUPPORTED_LOCK_VERSIONS = (1,)
# Sources whose cache entries are keyed by absolute path and mtimes: useless in a container.
LOCAL_SOURCE_KINDS: frozenset[str] = frozenset({"path", "directory", "editable", "virtual"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    kind: SourceKind
    location: str  # index URL, file URL, git URL (with #commit) or relative path

    @property
    def git_commit(self) -> str | None:
        if self.kind != "git" or "#" not in self.location:
            return None
        return self.location.rsplit("#", 1)[1]

    def __str__(self) -> str:
        return f"{self.kind}+{self.location}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    filename: str
    url: str | None
    hash: str | None  # "sha256:<hex>"
    size: int | None

    @property
    def sha256(self) -> str | None:
        if self.hash and self.hash.startswith("sha256:"):
            return self.hash.split(":", 1)[1]
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LockedPackage:
    name: NormalizedName
    version: Version | None
    source: Source
    sdist: Artifact | None
    wheels: tuple[Artifact, ...]

    @property
    def is_local(self) -> bool:
        return self.source.kind in LOCAL_SOURCE_KINDS


@dataclass(frozen=True, slots=True, kw_only=True)
class Lock:
    path: Path
    version: int
    revision: int
    requires_python: SpecifierSet | None
    packages: tuple[LockedPackage, ...]

    def find(self, name: str, version: str | None) -> LockedPackage | None:
        wanted = canonicalize_name(name)
        for pkg in self.packages:
            if pkg.name == wanted and (version is None or str(pkg.version) == version):
                return pkg
        return None


def read_lock(path: Path) -> Lock:
    """Parse `path`; raise LockError (one line, with context) for anything we cannot use."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LockError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LockError(f"{path}: is a directory, expected a uv.lock file") from None
    except OSError as exc:
        raise LockError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LockError(f"{path}: not a uv.lock (not valid TOML: {exc})") from None
    if "version" not in doc or ("package" not in doc and "requires-python" not in doc):
        raise LockError(f"{path}: not a uv.lock (no 'version' and 'package' entries)")
    version = doc["version"]
    if version not in SUPPORTED_LOCK_VERSIONS:
        raise LockError(f"{path}: unsupported uv.lock version {version!r} (ocicache reads version 1)")
    requires_python = None
    if "requires-python" in doc:
        try:
            requires_python = SpecifierSet(_str(doc, "requires-python", "requires-python"))
        except InvalidSpecifier as exc:
            raise LockError(f"{path}: requires-python: {exc}") from None
    packages = doc.get("package", [])
    if not isinstance(packages, list):
        raise LockError(f"{path}: 'package' must be an array of tables")
    revision = doc.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise LockError(f"{path}: revision: expected an integer, got {type(revision).__name__}")
    return Lock(
        path=path,
        version=int(version),
        revision=revision,
        requires_python=requires_python,
        packages=tuple(_package(p, f"package[{i}]", path) for i, p in enumerate(packages)),
    )


def _package(obj: Any, ctx: str, path: Path) -> LockedPackage:
    if not isinstance(obj, Mapping):
        raise LockError(f"{path}: {ctx}: expected a table")
    name = _str(obj, "name", ctx, path)
    ctx = f"{ctx} ({name})"
    version = None
    if "version" in obj:
        try:
            version = Version(_str(obj, "version", ctx, path))
        except InvalidVersion:
            raise LockError(f"{path}: {ctx}.version: invalid version {obj['version']!r}") from None
    source = _source(obj.get("source"), f"{ctx}.source", path)
    sdist = None
    if "sdist" in obj:
        sdist = _artifact(obj["sdist"], f"{ctx}.sdist", path, default_name=f"{name}-{version}.tar.gz")
    wheels_raw = obj.get("wheels", [])
    if not isinstance(wheels_raw, list):
        raise LockError(f"{path}: {ctx}.wheels: expected an array")
    wheels = tuple(_artifact(w, f"{ctx}.wheels[{i}]", path) for i, w in enumerate(wheels_raw))
    return LockedPackage(name=canonicalize_name(name), version=version, source=source, sdist=sdist,
                         wheels=wheels)


def _source(obj: Any, ctx: str, path: Path) -> Source:
    if not isinstance(obj, Mapping):
        raise LockError(f"{path}: {ctx}: missing or not a table")
    kinds = [k for k in _SOURCE_KINDS if k in obj]
    if len(kinds) != 1:
        known = ", ".join(_SOURCE_KINDS)
        raise LockError(f"{path}: {ctx}: unsupported source {dict(obj)!r} (expected one of: {known})")
    return Source(kind=kinds[0], location=_str(obj, kinds[0], ctx, path))


def _artifact(obj: Any, ctx: str, path: Path, default_name: str | None = None) -> Artifact:
    if not isinstance(obj, Mapping):
        raise LockError(f"{path}: {ctx}: expected a table")
    url = obj.get("url")
    location = url or obj.get("path") or obj.get("filename")
    if location is None and default_name is None:
        raise LockError(f"{path}: {ctx}: needs a 'url', 'path' or 'filename'")
    filename = str(obj.get("filename") or (str(location).rsplit("/", 1)[-1] if location else default_name))
    hash_ = obj.get("hash")
    if hash_ is not None and (not isinstance(hash_, str) or ":" not in hash_):
        raise LockError(f"{path}: {ctx}.hash: expected '<algorithm>:<hex>', got {hash_!r}")
    size = obj.get("size")
    return Artifact(filename=filename.split("#")[0], url=str(url) if url else None, hash=hash_,
                    size=int(size) if isinstance(size, int) else None)


def _str(obj: Mapping[str, Any], key: str, ctx: str, path: Path | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        where = f"{path}: " if path else ""
        raise LockError(f"{where}{ctx}: '{key}' must be a string, got {value!r}")
    return value
