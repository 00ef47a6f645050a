"""The consumer build a cache image is for, worked out from its Dockerfile and base image.

`--dockerfile` on push and check: the uv step (dockerfile.py) and the base image it runs on
(base_image.py) give the exact target (platform, CPython, libc level), the uv release, and the
directory that uv reads its cache from (USER, HOME, XDG_CACHE_HOME, UV_CACHE_DIR, --cache-dir).
What cannot be inferred is an error that names the Dockerfile line and the flag to pass; flags
given explicitly always win and are never second-guessed.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .base_image import BaseFacts, probe_base_image
from .dest.options import RegistryOptions
from .dockerfile import CacheUse, UvStep, find_uv_step, parse_dockerfile
from .endpoints import Endpoints
from .errors import DockerfileError, OcicacheError
from .project_settings import BuildSettings
from .refs import docker_reference
from .target import MANYLINUX_MINORS
from .uvcache import family_for_uv

__all__ = ["Consumer", "infer_consumer"]

_ARCH = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm64/v8": "aarch64"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Consumer:
    dockerfile: Path
    step_line: int
    base_image: str
    platform: str | None  # None: not inferred (explicit flags given)
    python: str | None
    python_platform: str | None
    uv_version: str | None
    user: str
    cache_dir: str
    cache_uses: tuple[CacheUse, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    link_mode: str | None = None
    copied_from: tuple[int, ...] = ()
    compile_bytecode: bool = False  # the uv step compiles bytecode (UV_COMPILE_BYTECODE=1, --compile-bytecode)
    no_binary: BuildSettings = field(default_factory=BuildSettings)  # packages the step builds from sdists
    environment: str | None = None  # where the step's `uv sync` puts the project environment (None: not known)

    def describe(self) -> str:
        target = ", ".join(x for x in (self.platform, f"CPython {self.python}" if self.python else None,
                                       self.python_platform) if x)
        uv = f"uv {self.uv_version}" if self.uv_version else "uv release not named (every supported one)"
        return (f"{self.dockerfile}:{self.step_line}: {target or 'target from flags'}; {uv}; "
                f"runs as {self.user}, reads its cache from {self.cache_dir}")

    def stacked_on(self, image: str) -> bool:
        """The uv step's stage starts FROM `image` (a stacked cache image: push --base)."""
        return _normal(self.base_image) == _normal(image)

    def problems(self, image: str, *, installed: bool = False, archives: bool = False) -> list[str]:
        """What keeps this build from using `image` (the checked cache image), beyond the packages;
        `installed`: the image holds the environment's own files (push --venv-only), so a build FROM it
        links nothing, whatever its link mode; `archives`: it holds them as tars (push --venv-archives),
        which the build mounts anywhere and extracts, no cache directory involved."""
        where = f"{self.dockerfile}"
        wanted = _normal(image)
        out = []
        if self.link_mode == "symlink" and self.copied_from and not (installed and self.stacked_on(image)):
            out.append(f"{where}:{self.copied_from[0]}: the uv step (line {self.step_line}) links the venv's packages "
                       f"into the cache (--link-mode symlink), and this COPY --from takes files out of that stage "
                       "without the cache: the copied venv has dangling links; use --link-mode copy there, or "
                       "run from the stage that holds the cache")
        if self.stacked_on(image):
            return out  # the cache is the stage's own filesystem: nothing to mount
        uses = [u for u in self.cache_uses if u.source and (_normal(u.image) == wanted or u.unresolved)]
        if archives:
            return out if uses else [*out, f"{where}:{self.step_line}: the uv step never mounts {image}: its "
                                            "archives (/ocicache/venv/*.tar) are not extracted, and uv has "
                                            "nothing to install offline (docs/dockerfile-patterns.md)"]
        if not uses:
            given = ", ".join(f"line {u.line} {u.how} from {u.source or '(none)'} at {u.target}"
                              for u in self.cache_uses) or "none"
            return [*out, f"{where}:{self.step_line}: the uv step never mounts or copies {image} (cache sources: "
                          f"{given}); uv will not see the cache"]
        for use in uses:
            if posixpath.normpath(use.target) != posixpath.normpath(self.cache_dir):
                out.append(f"{where}:{use.line}: the {use.how} puts the cache at {use.target}, but the uv step "
                           f"(line {self.step_line}) runs as {self.user} and reads {self.cache_dir}: uv never sees "
                           f"the cache; mount it at {self.cache_dir}, or set ENV UV_CACHE_DIR={use.target}")
            if use.how == "bind mount" and not use.writable:
                out.append(f"{where}:{use.line}: the bind mount of the cache is read-only; uv takes locks in its "
                           "cache and fails: add ,rw to the --mount")
        return out


def infer_consumer(path: Path, build_args: Mapping[str, str], options: RegistryOptions, *,
                   platform: str | None = None, python: str | None = None, python_platform: str | None = None,
                   uv_version: str | None = None, stage: str | None = None,
                   stacked_on: str | None = None) -> Consumer:
    """The build at `path`; explicit values win and skip the reading they would have needed.
    `stacked_on`: the image a stage `FROM ${ARG}` without a value builds on (dockerfile.find_uv_step)."""
    df = parse_dockerfile(path, build_args)
    step = find_uv_step(df, stage, stacked_on)
    where = f"{df.path}:{step.base_line}"
    notes: list[str] = []
    if uv_version is None and step.uv_version is not None:
        uv_version = step.uv_version
        try:
            family_for_uv(uv_version)
        except OcicacheError as exc:
            raise DockerfileError(f"{df.path}:{step.uv_line}: {exc}") from None
    elif uv_version is None:
        notes.append("the uv release is not named in the Dockerfile (COPY --from=<uv image>:X.Y.Z /uv, a uv "
                     "image as base, or pip install uv==X.Y.Z): the image serves every supported release")
    need_target = python_platform is None or python is None or platform is None
    try:
        facts = _read_base(step, where, options, platform) if need_target or step.user is None else None
        if facts is not None:
            platform = platform or _platform(facts, where, notes)
            python = python or _python(facts, step, df.path, notes)
            python_platform = python_platform or _python_platform(facts, platform, where)
    except DockerfileError as exc:
        if step.stacked_arg is None:
            raise
        raise DockerfileError(f"{exc} (ARG {step.stacked_arg} has no value, so the build was read as running FROM "
                              f"{step.base_image}; pass --build-arg {step.stacked_arg}=<image> if it starts from "
                              "another)") from None
    user = step.user or (facts.user if facts else None) or "root"
    cache_dir = _cache_dir(step, user, facts, notes)
    return Consumer(dockerfile=df.path, step_line=step.line, base_image=step.base_image, platform=platform,
                    python=python, python_platform=python_platform, uv_version=uv_version, user=user,
                    cache_dir=cache_dir, cache_uses=step.cache_uses, notes=tuple(notes),
                    link_mode=step.link_mode, copied_from=step.copied_from, compile_bytecode=step.compile_bytecode,
                    no_binary=step.no_binary, environment=step.environment)


def _read_base(step: UvStep, where: str, options: RegistryOptions, platform: str | None) -> BaseFacts:
    image = step.base_image
    if image == "scratch":
        raise DockerfileError(f"{where}: the uv step's stage starts FROM scratch: there is no Python to read; pass "
                              "--python and --python-platform")
    wanted = platform or _literal_platform(step.base_platform)
    try:
        ref = docker_reference(image)
        with Endpoints(options) as endpoints:
            source, tag, parsed = endpoints.source(ref)
            return probe_base_image(source, tag, str(parsed), wanted)
    except OcicacheError as exc:
        raise DockerfileError(f"{where}: cannot read the base image {image}: {exc}; pass --platform, --python "
                              "and --python-platform to push without reading it") from None


def _literal_platform(value: str | None) -> str | None:
    return value if value and re.fullmatch(r"linux/(amd64|arm64)(/v8)?", value) else None


def _platform(facts: BaseFacts, where: str, notes: list[str]) -> str:
    others = [p for p in facts.platforms if p.removesuffix("/v8") != facts.platform.removesuffix("/v8")
              and p.startswith("linux/")]
    if others:
        notes.append(f"the base image also offers {', '.join(others)}; pass --platform once per platform for an "
                     "image index")
    if facts.platform.removesuffix("/v8") not in _ARCH:
        raise DockerfileError(f"{where}: the base image is {facts.platform}; ocicache builds for linux/amd64 and "
                              "linux/arm64")
    return facts.platform


def _python(facts: BaseFacts, step: UvStep, dockerfile: Path, notes: list[str]) -> str:
    request = step.python_request
    if request:
        m = re.search(r"(?:^|python|cpython-?|/python)(3\.\d+(?:\.\d+)?)\b", request)
        if m:
            return m.group(1)
        link = facts.python3_links.get(request.lstrip("/"))
        found = re.search(r"python(3\.\d+)$", link or "")
        if found:
            return found.group(1)
    version = facts.env.get("PYTHON_VERSION")
    if version and re.fullmatch(r"3\.\d+(\.\d+)?", version):
        return version
    minors = sorted(set(facts.pythons.values()), key=lambda v: int(v.split(".")[1]))
    local = sorted({v for p, v in facts.pythons.items() if p.startswith("usr/local/")})
    if len(local) == 1:
        return local[0]
    if len(minors) == 1:
        return minors[0]
    line = step.python_line or step.line
    if not minors:
        raise DockerfileError(f"{dockerfile}:{step.base_line}: the base image {step.base_image} has no CPython 3 "
                              "(uv would download one, which an offline build cannot): pass --python")
    raise DockerfileError(f"{dockerfile}:{line}: the base image has CPython {', '.join(minors)} and the uv step "
                          "does not say which it uses (--python): pass --python")


def _python_platform(facts: BaseFacts, platform: str, where: str) -> str:
    arch = _ARCH[platform.removesuffix("/v8")]
    if facts.libc == "musl":
        if facts.libc_level is not None and facts.libc_level < (1, 2):
            raise DockerfileError(f"{where}: the base image's musl {facts.libc_level[0]}.{facts.libc_level[1]} is "
                                  "older than uv's musl target (musllinux_1_2): pass --python-platform")
        return f"{arch}-unknown-linux-musl"
    if facts.libc == "glibc" and facts.libc_level is not None:
        level = max((m for m in MANYLINUX_MINORS if m <= facts.libc_level[1]), default=None)
        if level is None:
            raise DockerfileError(f"{where}: the base image's glibc 2.{facts.libc_level[1]} is older than any "
                                  "manylinux target: pass --python-platform")
        return f"{arch}-manylinux_2_{level}"
    raise DockerfileError(f"{where}: found neither glibc nor musl in the base image {facts.reference}: pass "
                          "--python-platform (e.g. x86_64-manylinux_2_36)")


def _cache_dir(step: UvStep, user: str, facts: BaseFacts | None, notes: list[str]) -> str:
    env = step.env
    if step.cache_dir_flag:
        return step.cache_dir_flag
    if env.get("UV_CACHE_DIR"):
        return env["UV_CACHE_DIR"]
    if env.get("XDG_CACHE_HOME"):
        return posixpath.join(env["XDG_CACHE_HOME"], "uv")
    home = env.get("HOME")
    if not home:
        name = user.split(":", 1)[0]
        home = (facts.home_of(user) if facts else None) or ("/root" if name in ("root", "0") else None)
        if home is None:
            home = f"/home/{name}"
            notes.append(f"user {name} is not in the base image's /etc/passwd (created in the Dockerfile?): "
                         f"assuming HOME={home}")
    return posixpath.join(home, ".cache", "uv")


def _normal(image: str) -> str:
    return docker_reference(image) if image else ""
