"""Pure: which artifact of each locked package the target installs.

uv itself turns the lock into a PEP 751 `pylock.toml` for the chosen extras and groups (so forks,
conflicts and markers follow uv's own rules); `packaging.pylock` then evaluates markers and picks
the best wheel for the target's tags, exactly as the consumer's `uv sync --frozen` would.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Literal

from packaging.pylock import (
    PackageSdist,
    PackageVcs,
    PackageWheel,
    Pylock,
    PylockSelectError,
    PylockValidationError,
)

from .errors import SelectionError
from .lock import Lock, LockedPackage
from .project_settings import BuildSettings
from .target import Target

__all__ = ["Selected", "Selection", "select_packages", "without_credentials"]

ArtifactKind = Literal["wheel", "sdist", "git"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Selected:
    package: LockedPackage
    kind: ArtifactKind
    artifact: str  # wheel/sdist filename, or the git URL
    sha256: str | None  # hex; None for git (identified by commit)
    commit: str | None = None
    url: str | None = None  # where uv's export says the artifact is downloaded from
    index: str | None = None  # the index it comes from (None for direct URLs and git)

    @property
    def name(self) -> str:
        return str(self.package.name)

    @property
    def version(self) -> str:
        return str(self.package.version)

    @property
    def size(self) -> int | None:
        """The artifact's size as the lock records it (None for git, or where the index gave none)."""
        artifacts = (*self.package.wheels, *((self.package.sdist,) if self.package.sdist else ()))
        return next((a.size for a in artifacts if a.sha256 == self.sha256 and self.sha256), None)

    @property
    def hash(self) -> str:
        return f"git:{self.commit}" if self.kind == "git" else f"sha256:{self.sha256}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    selected: tuple[Selected, ...]
    skipped: tuple[str, ...]  # "name: reason", for path/editable/directory sources


def select_packages(pylock_text: str, lock: Lock, target: Target,
                    settings: BuildSettings | None = None) -> Selection:
    """Select (package, artifact) for `target`, sorted by name; raise SelectionError if impossible.
    `settings`: the no-binary settings, under which uv builds a package from its sdist."""
    try:
        data = tomllib.loads(pylock_text)
        if settings:
            _drop_wheels(data, settings, lock)
        pylock = Pylock.from_dict(data)
    except (tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise SelectionError(f"uv export produced a lock packaging cannot read: {exc}") from None
    selected: list[Selected] = []
    skipped: list[str] = []
    try:
        pairs = list(pylock.select(environment=target.environment(), tags=target.tags()))
    except PylockSelectError as exc:
        raise SelectionError(f"cannot install the lock on {target.describe()}: {exc}") from None
    for package, choice in pairs:
        version = str(package.version) if package.version else None
        locked = lock.find(package.name, version)
        if locked is None:
            raise SelectionError(f"{package.name} {version} is in uv's export but not in {lock.path}")
        if isinstance(choice, PackageWheel):
            selected.append(_artifact(locked, "wheel", choice.filename, choice.hashes, choice.url, package.index))
        elif isinstance(choice, PackageSdist):
            selected.append(_artifact(locked, "sdist", choice.filename, choice.hashes, choice.url, package.index))
        elif isinstance(choice, PackageVcs) and choice.type == "git":
            url = without_credentials(choice.url or "")
            selected.append(Selected(package=locked, kind="git", artifact=url, sha256=None,
                                     commit=choice.commit_id))
        else:
            kind = locked.source.kind
            skipped.append(f"{package.name}: {kind} source (uv rebuilds it from the project in the container)")
    for pkg in lock.packages:
        if pkg.source.kind in ("path", "directory", "editable") and not any(
            s.startswith(f"{pkg.name}:") for s in skipped
        ):
            skipped.append(f"{pkg.name}: {pkg.source.kind} source (uv rebuilds it from the project in the container)")
    selected.sort(key=lambda s: (s.name, s.version))
    return Selection(selected=tuple(selected), skipped=tuple(sorted(skipped)))


def _drop_wheels(data: dict, settings: BuildSettings, lock: Lock) -> None:
    """What uv does with no-binary: the package's wheels are not candidates, its sdist is."""
    packages = data.get("packages")
    for package in packages if isinstance(packages, list) else []:
        name = package.get("name") if isinstance(package, dict) else None
        if not isinstance(name, str) or not settings.builds_from_sdist(name) or "wheels" not in package:
            continue
        if "sdist" not in package:
            raise SelectionError(f"{name}: no-binary (the project's uv settings or the Dockerfile's uv step) "
                                 f"builds it from source, but {lock.path} has no sdist for it (uv sync fails "
                                 "on it too)")
        del package["wheels"]


def without_credentials(url: str) -> str:
    """Git URLs may carry a token (https://<token>@host/...): it must never reach an annotation."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _artifact(locked: LockedPackage, kind: ArtifactKind, name: str | None, hashes: dict[str, str],
              url: str | None, index: str | None) -> Selected:
    sha = hashes.get("sha256")
    if sha is None:
        raise SelectionError(f"{locked.name} {locked.version}: {name} has no sha256 in the lock")
    return Selected(package=locked, kind=kind, artifact=name or "", sha256=sha, url=url, index=index)
