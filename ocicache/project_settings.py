"""The project's own uv settings that ocicache must honour, read where uv reads them.

uv takes a project's settings from `uv.toml` beside its `pyproject.toml` when there is one (and then
ignores `[tool.uv]`), else from `[tool.uv]`. Two of them change what `uv sync` installs from the
same lock: `no-binary = true` and `no-binary-package = [...]` make uv build those packages from
their sdists even where the lock has a wheel for the target, so the cache image must hold the
built wheel, not the index's. (`no-build` only forbids sdists: where the lock has a wheel, the
wheel is what both install.) The environment's `UV_NO_BINARY*` of the build is not visible here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

__all__ = ["BuildSettings", "read_build_settings", "uv_settings"]


def uv_settings(project_dir: Path) -> dict[str, Any]:
    """The project's uv settings table: `uv.toml` if present, else pyproject.toml's `[tool.uv]`
    (an unreadable file gives none: uv reports it when it runs)."""
    try:
        return _table(tomllib.loads((project_dir / "uv.toml").read_text()))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    try:
        config = tomllib.loads((project_dir / "pyproject.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return _table(_table(config.get("tool")).get("uv"))


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """Which packages uv builds from their sdists whatever wheels the lock has."""

    no_binary: bool = False  # every package
    no_binary_packages: frozenset[str] = frozenset()  # canonical names

    def builds_from_sdist(self, name: str) -> bool:
        return self.no_binary or canonicalize_name(name) in self.no_binary_packages

    def pip_args(self) -> list[str]:
        """The same settings as options of `uv pip install` (the populate)."""
        if self.no_binary:
            return ["--no-binary", ":all:"]
        return [a for name in sorted(self.no_binary_packages) for a in ("--no-binary", name)]

    def __bool__(self) -> bool:
        return self.no_binary or bool(self.no_binary_packages)


def read_build_settings(project_dir: Path) -> BuildSettings:
    settings = uv_settings(project_dir)
    packages = settings.get("no-binary-package", [])
    return BuildSettings(
        no_binary=settings.get("no-binary") is True,
        no_binary_packages=frozenset(canonicalize_name(p) for p in packages if isinstance(p, str))
        if isinstance(packages, list) else frozenset())
