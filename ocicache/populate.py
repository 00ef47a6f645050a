"""The subprocess edge: find the pinned uv, export the lock, fill a scratch cache for the target.

`uv pip install --target` with `--python-platform/--python-version` fills exactly the cache entries
the consumer's `uv sync --frozen` reads (same index + name + wheel filename), and, fed uv's own
`pylock.toml` export, needs no interpreter of the target version (docs/architecture.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PopulateError, UsageError
from .lock import Lock
from .project_settings import BuildSettings, read_build_settings
from .selection import Selection, select_packages
from .target import Target
from .uvcache import CacheFamily, family_for_uv

__all__ = ["Narrowing", "UvTool", "export_pylock", "find_uv", "populate_cache", "select_for_target"]

_STDERR_TAIL = 6
# Settings that would point uv at another cache or change what it fetches behind our back.
_SCRUBBED_ENV = ("UV_CACHE_DIR", "UV_NO_CACHE", "UV_OFFLINE", "UV_FROZEN", "UV_LOCKED", "UV_NO_SYNC",
                 "UV_PYTHON", "UV_SYSTEM_PYTHON", "UV_LINK_MODE", "UV_PREVIEW", "UV_PREVIEW_FEATURES",
                 "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_CONSTRAINT", "UV_OVERRIDE", "UV_REFRESH",
                 # The pushing machine's build choices are not the consumer build's: those come from the
                 # project and the Dockerfile (project_settings.py).
                 "UV_NO_BINARY", "UV_NO_BINARY_PACKAGE", "UV_NO_BUILD", "UV_NO_BUILD_PACKAGE", "UV_ONLY_BINARY",
                 "UV_NO_BUILD_ISOLATION")


@dataclass(frozen=True, slots=True)
class UvTool:
    path: Path
    version: str
    family: CacheFamily  # the format of the caches it fills


@dataclass(frozen=True, slots=True, kw_only=True)
class Narrowing:
    """What `uv sync` variants the cache must serve. Default: every package, extra and group."""

    packages: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    no_dev: bool = False
    all_extras: bool = True
    all_groups: bool = True

    def export_args(self) -> list[str]:
        args: list[str] = []
        args += [a for p in self.packages for a in ("--package", p)] or ["--all-packages"]
        if self.extras:
            args += [a for e in self.extras for a in ("--extra", e)]
        elif self.all_extras:
            args.append("--all-extras")
        if self.groups:
            args += [a for g in self.groups for a in ("--group", g)]
        elif self.all_groups:
            args.append("--all-groups")
        if self.no_dev:
            args += ["--no-group", "dev"] if self.all_groups and not self.groups else ["--no-dev"]
        return args

    def describe(self) -> dict[str, object]:
        return {"packages": list(self.packages) or "all", "extras": list(self.extras) or
                ("all" if self.all_extras else []), "groups": list(self.groups) or
                ("none" if self.no_dev else "all" if self.all_groups else "default")}


@dataclass
class _Env:
    extra: dict[str, str] = field(default_factory=dict)

    def build(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update({"UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"})
        env.update(self.extra)
        return env


def find_uv(explicit: Path | None) -> UvTool:
    """The uv that fills caches: `--uv PATH`, else the one installed with ocicache. Refuses a uv
    whose cache format ocicache cannot read."""
    if explicit is not None:
        path = explicit
        if not path.exists():
            found = shutil.which(str(explicit))
            if not found:
                raise UsageError(f"--uv {explicit}: no such file")
            path = Path(found)
    else:
        try:
            from uv import find_uv_bin

            path = Path(find_uv_bin())
        except (ImportError, FileNotFoundError):
            raise UsageError("the pinned uv is not installed (reinstall ocicache, or pass --uv PATH)") from None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--uv {path}: cannot run it ({exc})") from None
    m = re.match(r"uv (\d+\.\d+\.\d+)\b", out.stdout.strip())
    if out.returncode != 0 or not m:
        raise UsageError(f"--uv {path}: not a uv executable (`uv --version` said {out.stdout.strip()!r})")
    return UvTool(path=path, version=m.group(1), family=family_for_uv(m.group(1)))


def _run(args: Sequence[str], *, cwd: Path | None, what: str, env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    except OSError as exc:
        raise PopulateError(f"{what}: cannot run uv: {exc.strerror}") from None
    _check_exit(proc.returncode, proc.stderr, what)
    return proc.stdout


def _check_exit(returncode: int, stderr: str, what: str) -> None:
    if returncode != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        tail = " | ".join(ln.strip() for ln in lines[-_STDERR_TAIL:]) or f"exit code {returncode}"
        raise PopulateError(f"{what} failed: {tail}")


def _run_polling(args: Sequence[str], *, cwd: Path, what: str, env: dict[str, str],
                 while_running: Callable[[], None], interval: float = 0.2) -> None:
    """Like `_run`, calling `while_running` every `interval` seconds until uv exits."""
    with tempfile.TemporaryFile(mode="w+", dir=cwd) as stderr:  # a file: no pipe to fill while we poll
        try:
            proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        except OSError as exc:
            raise PopulateError(f"{what}: cannot run uv: {exc.strerror}") from None
        try:
            while True:
                try:
                    proc.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    while_running()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stderr.seek(0)
        _check_exit(proc.returncode, stderr.read(), what)


def export_pylock(uv: UvTool, lock_path: Path, narrowing: Narrowing, cache_dir: Path) -> str:
    """uv's own PEP 751 export of the lock: markers and forks resolved the way `uv sync` does."""
    project = lock_path.parent
    if not (project / "pyproject.toml").is_file():
        raise UsageError(f"{lock_path}: no pyproject.toml beside the lock (ocicache needs the project directory)")
    args = [str(uv.path), "export", "--frozen", "--format", "pylock.toml", "--no-emit-workspace",
            "--no-emit-local", "--no-header", "--cache-dir", str(cache_dir), *narrowing.export_args()]
    return _run(args, cwd=project, what="uv export", env=_Env().build())


def select_for_target(lock: Lock, narrowing: Narrowing, target: Target,
                      build: BuildSettings | None = None) -> Selection:
    """What `uv sync` on `target` installs from `lock` (check and verify compare an image with it);
    `build`: the no-binary settings of the build's own uv step, beside the project's."""
    settings = read_build_settings(lock.path.parent).merged(build or BuildSettings())
    with tempfile.TemporaryDirectory(prefix="ocicache-export-") as scratch:
        return select_packages(export_pylock(find_uv(None), lock.path, narrowing, Path(scratch) / "cache"), lock,
                               target, settings)


def filter_pylock(pylock_text: str, keep: set[str]) -> str:
    """uv's pylock export with only the `[[packages]]` tables named in `keep` (canonical names).

    uv writes one `[[packages]]` table per package, each starting with its `name`; everything before
    the first table is the header.
    """
    from packaging.utils import canonicalize_name

    blocks = pylock_text.split("\n[[packages]]\n")
    out = [blocks[0]]
    for block in blocks[1:]:
        m = re.match(r'name = "([^"]+)"', block)
        if m is None:
            raise PopulateError("uv export wrote a pylock.toml ocicache cannot split (a [[packages]] without name)")
        if canonicalize_name(m.group(1)) in keep:
            out.append(block)
    return "\n[[packages]]\n".join(out)


def populate_cache(uv: UvTool, pylock: Path, target: Target, cache_dir: Path, work_dir: Path,
                   while_running: Callable[[], None] | None = None, indexes: tuple[str, ...] = (),
                   settings: BuildSettings | None = None) -> None:
    """Fill `cache_dir` with every package of `pylock` for `target` (downloads and builds);
    `while_running` is called every fraction of a second meanwhile (to pack what is already cached).
    `indexes`: `name=url` of the project's named indexes with credentials in the environment, so uv
    authenticates their downloads (index_credentials.py). `settings`: the project's no-binary
    packages, built from their sdists as `uv sync` would (project_settings.py)."""
    install_dir = work_dir / "site-packages"
    args = [str(uv.path), "pip", "install", "--no-deps", "--target", str(install_dir),
            "--python", sys.executable, "--python-version", target.python_full,
            "--python-platform", target.python_platform, "--cache-dir", str(cache_dir),
            "--link-mode", "hardlink", "--quiet", *(a for i in indexes for a in ("--index", i)),
            *(settings.pip_args() if settings else ()), "-r", str(pylock)]
    what = "uv pip install (filling the cache)"
    if while_running is None:
        _run(args, cwd=work_dir, what=what, env=_Env().build())
    else:
        _run_polling(args, cwd=work_dir, what=what, env=_Env().build(), while_running=while_running)
