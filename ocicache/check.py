"""`ocicache check IMAGE LOCK`: will `uv sync --frozen --offline` find everything, before the build?

Compares what the lock selects for the target (the same selection `push` makes) with the packages
the image's layer annotations declare, and the uv releases the image serves and its target with the build's.
Nothing is downloaded but the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import oci
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .image import layer_packages, open_image
from .lock import read_lock
from .populate import Narrowing, select_for_target
from .project_settings import BuildSettings
from .target import make_target
from .uvcache import families_of, family_for_uv

__all__ = ["CheckResult", "check_image"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    reference: str
    ok: bool
    missing: list[str]  # "name version (artifact)"
    problems: list[str]  # uv version or target mismatches
    found: int
    needed: int
    notes: list[str] = field(default_factory=list)  # advice: the build works, and could do less

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "ok": self.ok, "missing": self.missing, "problems": self.problems,
                "found": self.found, "needed": self.needed, "notes": self.notes}


def check_image(image: str, lock_path: Path, *, platform: str | None, python: str | None,
                python_platform: str | None, narrowing: Narrowing, uv_version: str | None,
                options: RegistryOptions | None = None, build_problems: Callable[..., list[str]] | None = None,
                build_cache_dir: str | None = None, require_key: Path | None = None,
                build_bytecode: tuple[bool, str | None] | None = None,
                build_no_binary: BuildSettings | None = None, build_environment: str | None = None) -> CheckResult:
    """`uv_version`: the release the build runs (None: not checked); `build_problems`: what the
    Dockerfile does wrong with the cache (consumer.py's `Consumer.problems`, told with `installed=`
    whether the image holds the installed environment), reported with the rest; `build_bytecode`:
    whether the build compiles bytecode, and its link mode (advice on --compile-bytecode);
    `build_no_binary`: the packages the build's uv step builds from sdists (--no-binary-package);
    `build_environment`: where the build's `uv sync` puts the environment (advice on --venv)."""
    lock = read_lock(lock_path)
    target = make_target(platform=platform, python=python, python_platform=python_platform,
                         requires_python=lock.requires_python)
    wanted = family_for_uv(uv_version) if uv_version is not None else None  # refused before any work
    selection = select_for_target(lock, narrowing, target, build_no_binary)
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, ref = endpoints.source(image)
        image = open_image(source, tag, str(ref), target.oci_platform)
        if require_key is not None:
            from .verify import require_signature

            require_signature(image, require_key)
    annotations = image.annotations
    stacked_root = annotations.get(oci.A_STACK_ROOT)
    venv_only = image.venv_only
    problems = build_problems(installed=venv_only, archives=bool(image.venv_archives)) if build_problems else []
    installed = annotations.get(oci.A_STACK_VENV)
    if venv_only and build_environment is not None and build_environment != installed:
        problems.append(f"the image holds the environment at {str(installed)[:200]} and no uv cache (push "
                        f"--venv-only), the build's uv sync makes {build_environment}: it has nothing to install "
                        f"from offline (push with --venv {build_environment}, or --venv auto with --dockerfile)")
    if stacked_root and not venv_only and build_cache_dir and build_cache_dir.rstrip("/") != "/" + stacked_root:
        problems.append(f"the image holds its cache at /{stacked_root}, the build's uv reads {build_cache_dir}: "
                        f"set ENV UV_CACHE_DIR=/{stacked_root}, or push with --dockerfile for that build")
    if wanted is not None:
        served = families_of(annotations.get(oci.A_CACHE_FORMAT, ""))
        if wanted not in served:
            releases = ", ".join(f.releases for f in served) or "no uv release ocicache knows"
            problems.append(f"the image serves uv {releases}; the build's uv {uv_version} reads `{wanted.wheels}`, "
                            "which the image lacks (push without --uv-version, or with --uv-version "
                            f"{uv_version})")
    image_pp = annotations.get(oci.A_TARGET_PYTHON_PLATFORM)
    image_py = annotations.get(oci.A_TARGET_PYTHON, "")
    if image_pp != target.python_platform or image_py.rsplit(".", 1)[0] != target.python_minor:
        problems.append(f"the image targets CPython {image_py} {image_pp}, the check targets "
                        f"{target.python_full} {target.python_platform}")
    if venv_only:  # installed distributions: a name and a version each (uv checks no more)
        installed_dists = {(p.get("name"), p.get("version")) for layer in image.layers for p in layer_packages(layer)}
        missing = [f"{s.name} {s.version} (not installed in the image's environment)" for s in selection.selected
                   if (s.name, s.version) not in installed_dists]
    else:
        held = {(p.get("name"), p.get("version"), p.get("hash")) for layer in image.layers
                for p in layer_packages(layer)}
        missing = [f"{s.name} {s.version} ({s.artifact})" for s in selection.selected
                   if (s.name, s.version, s.hash) not in held]
    return CheckResult(reference=str(ref), ok=not missing and not problems, missing=missing, problems=problems,
                       found=len(selection.selected) - len(missing), needed=len(selection.selected),
                       notes=_bytecode_notes(annotations, build_bytecode) +
                       ([] if venv_only else _venv_notes(annotations, build_environment)))


def _venv_notes(annotations: dict[str, str], build_environment: str | None) -> list[str]:
    installed = annotations.get(oci.A_STACK_VENV)
    if not installed or build_environment is None or build_environment == installed:
        return []
    return [f"the image holds an environment at {installed[:200]} (push --venv), the build's uv sync makes "
            f"{build_environment}: it installs every package as without it (push with --venv "
            f"{build_environment}, or --venv auto with --dockerfile)"]


def _bytecode_notes(annotations: dict[str, str], build: tuple[bool, str | None] | None) -> list[str]:
    if build is None:
        return []
    compiles, link_mode = build
    compiled_by = annotations.get(oci.A_BYTECODE)
    if compiles and not compiled_by:
        return ["the build compiles bytecode in every run (UV_COMPILE_BYTECODE / --compile-bytecode) and the "
                "image carries none: push it with --compile-bytecode, and a build that links (--link-mode symlink "
                "FROM a --base image, or hardlink) compiles nothing"]
    if compiled_by and link_mode == "copy":
        return [f"the image carries bytecode ({compiled_by}), and the build copies the files (--link-mode copy): "
                "the copies get new mtimes and the pycs do not match them; link instead (--link-mode symlink "
                "FROM a --base image, or hardlink) to use them"]
    return []
