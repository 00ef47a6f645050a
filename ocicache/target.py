"""The exact environment a cache is built for: OCI platform, Python version and libc level.

uv picks wheels by the consumer's exact tags, so a cache for `manylinux_2_28` misses on a glibc
2.36 consumer that prefers a `_2_34` wheel. The target is therefore explicit, taken as arguments
(the way `packaging.tags.cpython_tags` takes them), never read from the build machine's Python.
"""

from __future__ import annotations

import platform as _platform
import re
from dataclasses import dataclass
from typing import Literal

from packaging.markers import Environment
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag

from .errors import UsageError

__all__ = ["DEFAULT_GLIBC", "MANYLINUX_MINORS", "Target", "make_target"]

Libc = Literal["manylinux", "musllinux"]
_OCI_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_UV_ARCH = {v: k for k, v in _OCI_ARCH.items()}
# Debian 12 (bookworm), the base of the official python:3.x-slim images most services build on.
DEFAULT_GLIBC = (2, 36)
# What uv 0.13.9 means by its target triples (uv-configuration/src/target_triple.rs).
_TRIPLE_LEVELS: dict[str, tuple[Libc, tuple[int, int]]] = {
    "unknown-linux-gnu": ("manylinux", (2, 28)),
    "unknown-linux-musl": ("musllinux", (1, 2)),
    "manylinux2014": ("manylinux", (2, 17)),
}
MANYLINUX_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)  # those uv 0.13.9 accepts
_PYTHON_RE = re.compile(r"^3\.(\d+)(?:\.(\d+))?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    arch: str  # uv/PEP 425 spelling: x86_64, aarch64
    python: tuple[int, int, int]
    libc: Libc
    libc_level: tuple[int, int]

    @property
    def python_minor(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    @property
    def python_full(self) -> str:
        return ".".join(map(str, self.python))

    @property
    def oci_platform(self) -> str:
        suffix = "/v8" if self.arch == "aarch64" else ""
        return f"linux/{_OCI_ARCH[self.arch]}{suffix}"

    @property
    def python_platform(self) -> str:
        """uv's --python-platform spelling of this target."""
        if self.libc == "musllinux":
            return f"{self.arch}-unknown-linux-musl"
        return f"{self.arch}-manylinux_{self.libc_level[0]}_{self.libc_level[1]}"

    def oci_config_platform(self) -> dict[str, str]:
        out = {"os": "linux", "architecture": _OCI_ARCH[self.arch]}
        if self.arch == "aarch64":
            out["variant"] = "v8"
        return out

    def platform_tags(self) -> list[str]:
        """Platform tags, most specific first, as the consumer's uv orders them."""
        major, top = self.libc_level
        if self.libc == "musllinux":
            return [f"musllinux_{major}_{m}_{self.arch}" for m in range(top, -1, -1)]
        out = []
        for minor in range(top, 16, -1):
            out.append(f"manylinux_2_{minor}_{self.arch}")
            if minor == 17:
                out.append(f"manylinux2014_{self.arch}")
        if self.arch == "x86_64":
            for minor, legacy in ((12, "manylinux2010"), (5, "manylinux1")):
                out += [f"manylinux_2_{minor}_{self.arch}", f"{legacy}_{self.arch}"]
        return out

    def tags(self) -> list[Tag]:
        version = self.python[:2]
        platforms = self.platform_tags()
        return [*cpython_tags(version, platforms=platforms),
                *compatible_tags(version, interpreter=f"cp{version[0]}{version[1]}", platforms=platforms)]

    def built_wheel_problem(self, wheel_tags: list[str], host: BuildHost | None = None) -> str | None:
        """Why a wheel built on `host` (by default this machine, with the interpreter ocicache runs on)
        with `wheel_tags` would not run on this target, or None if it would.

        A platform tag `any` runs anywhere its interpreter tag allows; `linux_<arch>` (what a local
        build is tagged) runs where the build machine's would: same architecture and libc, the
        target's glibc not older than the build's.
        """
        host = host or BuildHost.current()
        supported = set(self.tags())
        platforms = (*self.platform_tags(), "any")
        for text in wheel_tags:
            for tag in parse_tag(text) if text else ():
                if tag.platform == f"linux_{host.arch}":
                    if (host.arch, host.libc) != (self.arch, self.libc) or host.libc_level > self.libc_level:
                        continue
                elif tag.platform not in platforms:
                    continue
                if Tag(tag.interpreter, tag.abi, platforms[0] if tag.platform != "any" else "any") in supported:
                    return None
        built = ", ".join(wheel_tags) or "no tag"
        return (f"gives {built} (built for CPython {host.python} {host.arch} {host.libc_name}), which the "
                "target cannot run")

    def environment(self) -> Environment:
        return {
            "implementation_name": "cpython",
            "implementation_version": self.python_full,
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": self.python_full,
            "platform_python_implementation": "CPython",
            "python_version": self.python_minor,
            "sys_platform": "linux",
        }

    def describe(self) -> str:
        return f"{self.oci_platform}, CPython {self.python_minor}, {self.python_platform}"


@dataclass(frozen=True, slots=True)
class BuildHost:
    """The machine and interpreter that build sdists (uv builds with the interpreter it is given)."""

    arch: str
    libc: Libc
    libc_level: tuple[int, int]
    python: str  # 3.Y

    @property
    def libc_name(self) -> str:
        return f"glibc {self.libc_level[0]}.{self.libc_level[1]}" if self.libc == "manylinux" else "musl"

    @classmethod
    def current(cls) -> BuildHost:
        import sys

        name, version = _platform.libc_ver()
        m = re.match(r"(\d+)\.(\d+)", version)
        if name == "glibc" and m:
            libc: Libc = "manylinux"
            level = (int(m.group(1)), int(m.group(2)))
        else:
            libc, level = "musllinux", (1, 2)
        return cls(arch=_host_arch(), libc=libc, libc_level=level, python=f"3.{sys.version_info[1]}")


def _host_arch() -> str:
    machine = _platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_oci_platform() -> str:
    """This machine's OCI platform (linux/amd64 or linux/arm64/v8), or its raw machine name."""
    arch = _host_arch()
    return f"linux/{_OCI_ARCH[arch]}{'/v8' if arch == 'aarch64' else ''}" if arch in _OCI_ARCH else arch


def _parse_python_platform(value: str) -> tuple[str, Libc, tuple[int, int]]:
    arch, _, rest = value.partition("-")
    if arch not in _OCI_ARCH:
        raise UsageError(f"--python-platform {value!r}: architecture must be x86_64 or aarch64")
    if rest in _TRIPLE_LEVELS:
        libc, level = _TRIPLE_LEVELS[rest]
        return arch, libc, level
    m = re.fullmatch(r"manylinux_2_(\d+)", rest)
    if m and int(m.group(1)) in MANYLINUX_MINORS:
        return arch, "manylinux", (2, int(m.group(1)))
    choices = ", ".join([f"{arch}-manylinux_2_{n}" for n in MANYLINUX_MINORS]
                        + [f"{arch}-{t}" for t in _TRIPLE_LEVELS])
    raise UsageError(f"--python-platform {value!r} is not a Linux target uv knows; one of: {choices}")


def make_target(
    *,
    platform: str | None,
    python: str | None,
    python_platform: str | None,
    requires_python: SpecifierSet | None = None,
) -> Target:
    """Build the target from CLI values; defaults are documented in docs/targets.md.

    platform: OCI `linux/amd64` or `linux/arm64` (default: the build machine's architecture).
    python: `3.Y` or `3.Y.Z` (default: the lowest 3.Y that the lock's requires-python allows).
    python_platform: uv syntax (default: `<arch>-manylinux_2_36`, Debian 12's glibc).
    """
    arch = None
    if platform is not None:
        m = re.fullmatch(r"linux/(amd64|arm64)(?:/v8)?", platform)
        if not m:
            raise UsageError(f"--platform {platform!r}: expected linux/amd64 or linux/arm64")
        arch = _UV_ARCH[m.group(1)]
    if python_platform is not None:
        pp_arch, libc, level = _parse_python_platform(python_platform)
        if arch is not None and pp_arch != arch:
            raise UsageError(f"--python-platform {python_platform} does not match --platform {platform}")
        arch = pp_arch
    else:
        libc, level = "manylinux", DEFAULT_GLIBC
    if arch is None:
        arch = _host_arch()
        if arch not in _OCI_ARCH:
            raise UsageError(f"cannot default --platform on a {arch} machine; pass --platform")
    return Target(arch=arch, python=_python_version(python, requires_python), libc=libc, libc_level=level)


def _python_version(value: str | None, requires_python: SpecifierSet | None) -> tuple[int, int, int]:
    if value is not None:
        m = _PYTHON_RE.match(value)
        if not m:
            raise UsageError(f"--python {value!r}: expected a CPython version such as 3.12 or 3.12.4")
        version = (3, int(m.group(1)), int(m.group(2) or 0))
        if requires_python is not None and not requires_python.contains(".".join(map(str, version)), True):
            raise UsageError(f"--python {value} is outside the lock's requires-python ({requires_python})")
        return version
    for minor in range(10, 20):  # 3.10: the oldest CPython still supported in 2026
        if requires_python is None or requires_python.contains(f"3.{minor}.0", True) or \
                requires_python.contains(f"3.{minor}.99", True):
            return (3, minor, 0)
    raise UsageError(f"no CPython 3.x satisfies the lock's requires-python ({requires_python}); pass --python")


def make_targets(
    *,
    platforms: tuple[str, ...],
    python: str | None,
    python_platforms: tuple[str, ...],
    requires_python: SpecifierSet | None = None,
) -> list[Target]:
    """One target per `--python-platform` (or per `--platform`); several make an image index."""
    if python_platforms:
        targets = [make_target(platform=None, python=python, python_platform=pp, requires_python=requires_python)
                   for pp in python_platforms]
        if platforms:
            given = {make_target(platform=p, python=python, python_platform=None,
                                 requires_python=requires_python).oci_platform for p in platforms}
            if given != {t.oci_platform for t in targets}:
                raise UsageError(f"--platform {', '.join(platforms)} does not match --python-platform "
                                 f"{', '.join(python_platforms)}")
    elif platforms:
        targets = [make_target(platform=p, python=python, python_platform=None, requires_python=requires_python)
                   for p in platforms]
    else:
        targets = [make_target(platform=None, python=python, python_platform=None, requires_python=requires_python)]
    seen = [t.oci_platform for t in targets]
    if len(set(seen)) != len(seen):
        raise UsageError(f"one image per platform: {', '.join(seen)} repeats a platform")
    return targets
