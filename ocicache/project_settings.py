"""The project's own uv settings that ocicache must honour, read where uv reads them.

uv takes a project's settings from `uv.toml` beside its `pyproject.toml` when there is one (and then
ignores `[tool.uv]`), else from `[tool.uv]`. Two of them change what `uv sync` installs from the
same lock: `no-binary = true` and `no-binary-package = [...]` make uv build those packages from
their sdists even where the lock has a wheel for the target, so the cache image must hold the
built wheel, not the index's. (`no-build` only forbids sdists: where the lock has a wheel, the
wheel is what both install.) A Dockerfile's uv step can set them too (`--no-binary-package`,
`UV_NO_BINARY_PACKAGE`): `build_settings_of_step` reads those, for `--dockerfile`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

__all__ = ["BuildSettings", "build_settings_of_step", "read_build_settings", "uv_settings"]


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

    def merged(self, other: BuildSettings) -> BuildSettings:
        """Both sets of settings at once (the project's and the build's: uv applies both)."""
        return BuildSettings(no_binary=self.no_binary or other.no_binary,
                             no_binary_packages=self.no_binary_packages | other.no_binary_packages)

    def describe(self) -> str:
        return "every package" if self.no_binary else ", ".join(sorted(self.no_binary_packages))


_TRUE = ("1", "y", "yes", "t", "true", "on")


def build_settings_of_step(command: str, tokens: list[str], env: dict[str, str]) -> BuildSettings:
    """The no-binary settings of a Dockerfile's uv step: `uv sync --no-binary` (every package) and
    `--no-binary-package NAME`, `uv pip install --no-binary NAME|:all:`, and the environment's
    `UV_NO_BINARY` / `UV_NO_BINARY_PACKAGE` (space-separated names)."""
    everything = env.get("UV_NO_BINARY", "").lower() in _TRUE
    names = set(env.get("UV_NO_BINARY_PACKAGE", "").split())
    for i, token in enumerate(tokens):
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        name, _, inline = token.partition("=")
        value = inline or value
        if command == "sync" and token == "--no-binary":
            everything = True
        elif command == "sync" and name == "--no-binary-package" and value:
            names.add(value)
        elif command != "sync" and name == "--no-binary" and value:
            everything = everything or value == ":all:"
            names.update(n for n in value.split(",") if n and n != ":all:")
    return BuildSettings(no_binary=everything, no_binary_packages=frozenset(canonicalize_name(n) for n in names))


def read_build_settings(project_dir: Path) -> BuildSettings:
    settings = uv_settings(project_dir)
    packages = settings.get("no-binary-package", [])
    return BuildSettings(
        no_binary=settings.get("no-binary") is True,
        no_binary_packages=frozenset(canonicalize_name(p) for p in packages if isinstance(p, str))
        if isinstance(packages, list) else frozenset())
