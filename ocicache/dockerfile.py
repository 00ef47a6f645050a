"""Pure: read a Dockerfile the way the builder would, and find the step that runs uv.

Parsing follows the Dockerfile reference: the `# escape=` directive, line continuations, comment
lines, heredocs, global `ARG`s (visible to `FROM`) and per-stage ones, `--build-arg` overrides,
`ENV` in both forms and its inheritance through `FROM <stage>`, `USER`, `COPY --from` and
`RUN --mount`. Nothing here reads the network: the base image is examined by base_image.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DockerfileError
from .project_settings import BuildSettings, build_settings_of_step

__all__ = ["CacheUse", "Dockerfile", "Instruction", "Stage", "UvStep", "find_uv_step", "parse_dockerfile"]


@dataclass(frozen=True, slots=True)
class Instruction:
    line: int  # 1-based, where the instruction starts
    keyword: str  # upper case
    args: str  # as written, continuations joined (variables not yet expanded)
    heredoc: str = ""


@dataclass(slots=True)
class Stage:
    index: int
    line: int
    base: str  # expanded FROM image: another stage's name or an image reference
    name: str | None
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)
    parent: Stage | None = None  # when `base` names an earlier stage
    unset: tuple[str, ...] = ()  # ARGs without a value that `base` uses


@dataclass(frozen=True, slots=True)
class Dockerfile:
    path: Path
    global_args: dict[str, str | None]  # ARGs before the first FROM, with --build-arg applied
    stages: tuple[Stage, ...]
    build_args: dict[str, str]

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def stage(self, name: str) -> Stage | None:
        lowered = name.lower()
        return next((s for s in self.stages if s.name == lowered), None) or (
            self.stages[int(name)] if name.isdigit() and int(name) < len(self.stages) else None)


@dataclass(frozen=True, slots=True)
class CacheUse:
    """A directory the uv step gets from another image: a RUN --mount or an earlier COPY --from."""

    line: int
    source: str  # the image reference or stage name it comes from, as written
    target: str  # where it lands in the build container
    how: str  # "bind mount", "cache mount" or "COPY"
    image: str = ""  # the image behind `source` (a stage followed to its FROM)
    unresolved: bool = False  # that FROM uses an ARG without a value
    writable: bool = True


@dataclass(frozen=True, slots=True)
class UvStep:
    """The RUN that installs with uv, and what decides what that uv reads."""

    stage: Stage
    line: int
    base_image: str  # the external image the stage chain starts from
    base_line: int
    base_platform: str | None  # FROM --platform=…, expanded
    uv_version: str | None
    uv_line: int | None
    python_request: str | None  # --python / UV_PYTHON of the step
    python_line: int | None
    user: str | None  # the last USER before the step (None: the image's default)
    env: dict[str, str]  # ENV of the stage chain, plus the step's inline assignments
    cache_dir_flag: str | None  # --cache-dir of the step
    cache_uses: tuple[CacheUse, ...]
    link_mode: str | None = None  # --link-mode / UV_LINK_MODE of the step
    compile_bytecode: bool = False  # --compile-bytecode / UV_COMPILE_BYTECODE of the step
    copied_from: tuple[int, ...] = ()  # lines of later `COPY --from=<this stage>`: what leaves the stage
    no_binary: BuildSettings = field(default_factory=BuildSettings)  # --no-binary* / UV_NO_BINARY* of the step
    environment: str | None = None  # where `uv sync` puts the project's environment (None: not known)
    stacked_arg: str | None = None  # the ARG without a value whose FROM was read as `stacked_on`


_UV_INSTALL_RE = re.compile(r"(?:^|[\s;&|(`])(?:[\w./-]*/)?uv\s+(?:-\S+\s+)*(sync|pip\s+install)\b")
_UV_IMAGE_TAG_RE = re.compile(r"^(\d+\.\d+\.\d+)(?:-|$)")
_PIP_UV_RE = re.compile(r"""\buv==(\d+\.\d+\.\d+)\b""")
_VAR_RE = re.compile(r"\$(?:\{(\w+)(?:(:?[-+])([^}]*))?\}|(\w+))")


def parse_dockerfile(path: Path, build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """Read `path`; DockerfileError (naming the line) for anything the builder itself would refuse."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DockerfileError(f"--dockerfile {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DockerfileError(f"--dockerfile {path}: not a text file") from None
    args = dict(build_args or {})
    instructions = list(_instructions(text))
    if not instructions:
        raise DockerfileError(f"{path}: no instructions (is this a Dockerfile?)")
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append(_stage(path, ins, len(stages), global_args, stages))
        elif not stages:
            if ins.keyword != "ARG":
                raise DockerfileError(f"{path}:{ins.line}: {ins.keyword} before the first FROM")
            for name, default in _arg_decls(ins.args):
                global_args[name] = args.get(name, _expand(default, global_args) if default is not None else None)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError(f"{path}: no FROM instruction")
    return Dockerfile(path=path, global_args=global_args, stages=tuple(stages), build_args=args)


def find_uv_step(df: Dockerfile, target: str | None = None, stacked_on: str | None = None) -> UvStep:
    """The uv install step of the build (of stage `target` and what it builds on, if given).

    `stacked_on`: the `--base` of a stacked push, or the image `check` checks. A build that runs FROM
    a stacked image names it by an ARG that has no value yet (`FROM ${UV_STACKED_IMAGE}`); that stage
    is then read as built on `stacked_on`, whose Python, libc and user are the stacked image's.
    """
    candidates = list(df.stages)
    if target is not None:
        stage = df.stage(target)
        if stage is None:
            raise DockerfileError(f"{df.path}: no stage named {target!r}")
        candidates = _chain(stage)
    for stage in candidates:
        env = _stage_env(df, stage)
        for ins in stage.instructions:
            if ins.keyword != "RUN":
                continue
            _, command = _run_mounts(ins.args)
            text = _expand(command + "\n" + ins.heredoc, env)
            match = _UV_INSTALL_RE.search(text)
            if match:
                root = _chain(stage)[0]
                if root.unset and stacked_on is not None and root.base == "" and len(root.unset) == 1:
                    step = find_uv_step(parse_dockerfile(df.path, {**df.build_args, root.unset[0]: stacked_on}),
                                        target)
                    return dataclasses.replace(step, stacked_arg=root.unset[0])
                if root.unset:
                    raise DockerfileError(
                        f"{df.path}:{root.line}: FROM uses ARG {root.unset[0]}, which has no value: pass "
                        f"--build-arg {root.unset[0]}=<value> (as to docker build)")
                return _uv_step(df, stage, ins, text[match.start():])
    raise DockerfileError(
        f"{df.path}: no RUN step runs `uv sync` or `uv pip install`; without one there is no uv build to "
        "match: pass --python, --python-platform and --uv-version instead of --dockerfile")


# -- parsing -------------------------------------------------------------------------------------

def _instructions(text: str) -> Iterable[Instruction]:
    lines = text.splitlines()
    escape = "\\"
    for line in lines[:5]:  # parser directives: only at the very top
        m = re.fullmatch(r"\s*#\s*escape\s*=\s*(\S)\s*", line)
        if m:
            escape = m.group(1)
        elif not re.fullmatch(r"\s*#\s*\w+\s*=.*", line):
            break
    i = 0
    while i < len(lines):
        start = i
        raw = lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [stripped]
        while parts[-1].endswith(escape) and i <= len(lines):
            parts[-1] = parts[-1][: -len(escape)]
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1  # comment and empty lines inside a continuation are dropped
            if i >= len(lines):
                break
            parts.append(lines[i].strip())
            i += 1
        joined = " ".join(p for p in parts if p)
        keyword, _, args = joined.partition(" ")
        heredoc = []
        for m in re.finditer(r"<<-?\s*[\"']?(\w+)[\"']?", args if keyword.upper() in ("RUN", "COPY") else ""):
            body = []
            while i < len(lines) and lines[i].strip() != m.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            heredoc.append("\n".join(body))
        yield Instruction(line=start + 1, keyword=keyword.upper(), args=args.strip(), heredoc="\n".join(heredoc))


def _expand(value: str, env: Mapping[str, str | None]) -> str:
    """Docker's variable substitution: $V, ${V}, ${V:-word}, ${V:+word} (unset → empty)."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        current = env.get(name)
        op, word = m.group(2), m.group(3)
        if op in (":-", "-"):
            return current if current else (current if op == "-" and current is not None else word)
        if op in (":+", "+"):
            return word if current else ""
        return current or ""

    return _VAR_RE.sub(sub, value)


def _unset_vars(value: str, env: Mapping[str, str | None]) -> list[str]:
    return [m.group(1) or m.group(4) for m in _VAR_RE.finditer(value)
            if not m.group(2) and env.get(m.group(1) or m.group(4)) is None]


def _arg_decls(args: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for token in _split(args):
        name, eq, default = token.partition("=")
        out.append((name, default if eq else None))
    return out


def _split(args: str) -> list[str]:
    try:
        return shlex.split(args, posix=True)
    except ValueError:
        return args.split()


def _stage(path: Path, ins: Instruction, index: int, global_args: Mapping[str, str | None],
           stages: list[Stage]) -> Stage:
    tokens = _split(ins.args)
    platform = None
    while tokens and tokens[0].startswith("--"):
        flag = tokens.pop(0)
        if flag.startswith("--platform="):
            platform = _expand(flag.split("=", 1)[1], global_args) or None
    if not tokens:
        raise DockerfileError(f"{path}:{ins.line}: FROM without an image")
    base = _expand(tokens[0], global_args)
    name = tokens[2].lower() if len(tokens) >= 3 and tokens[1].upper() == "AS" else None
    parent = next((s for s in reversed(stages) if s.name == base.lower()), None)
    return Stage(index=index, line=ins.line, base=base, name=name, platform=platform, parent=parent,
                 unset=tuple(_unset_vars(tokens[0], global_args)))


def _chain(stage: Stage) -> list[Stage]:
    """The stage and the stages it builds on, oldest first."""
    chain = []
    current: Stage | None = stage
    while current is not None:
        chain.append(current)
        current = current.parent
    return list(reversed(chain))


def _stage_env(df: Dockerfile, stage: Stage, until: Instruction | None = None) -> dict[str, str | None]:
    """ENV and ARG values in effect in `stage` (before `until`), inherited along FROM <stage>."""
    env: dict[str, str | None] = {}
    for s in _chain(stage):
        args: dict[str, str | None] = {}
        for ins in s.instructions:
            if ins is until:
                break
            if ins.keyword == "ARG":
                for name, default in _arg_decls(ins.args):
                    value = df.build_args.get(name)
                    if value is None:
                        value = _expand(default, {**env, **args}) if default is not None else df.global_args.get(name)
                    args[name] = value
            elif ins.keyword == "ENV":
                for name, value in _env_pairs(ins.args):
                    env[name] = _expand(value, {**env, **args})
        if s is stage:
            return {**args, **env}  # ENV wins over ARG of the same name
    return env


def _env_pairs(args: str) -> list[tuple[str, str]]:
    tokens = _split(args)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV NAME value with spaces
        return [(tokens[0], args.split(None, 1)[1] if len(args.split(None, 1)) > 1 else "")]
    return [(t.partition("=")[0], t.partition("=")[2]) for t in tokens if "=" in t]


def _run_mounts(args: str) -> tuple[list[dict[str, str]], str]:
    """RUN's leading flags (its --mount options as dicts) and the command after them."""
    mounts = []
    rest = args
    while True:
        m = re.match(r"\s*(--[\w-]+(?:=(?:\"[^\"]*\"|'[^']*'|\S+))?)\s*", rest)
        if not m:
            break
        flag = m.group(1)
        rest = rest[m.end():]
        if flag.startswith("--mount="):
            options: dict[str, str] = {}
            for item in flag.split("=", 1)[1].strip("\"'").split(","):
                key, _, value = item.partition("=")
                options[key.strip().lower()] = value.strip()
            mounts.append(options)
    if rest.startswith("["):  # exec form
        with contextlib.suppress(ValueError, TypeError):
            rest = " ".join(json.loads(rest))
    return mounts, rest


def _copy_parts(args: str) -> tuple[dict[str, str], list[str]]:
    tokens = _split(args)
    flags: dict[str, str] = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    if tokens and tokens[0].startswith("["):  # JSON form
        with contextlib.suppress(ValueError, TypeError):
            tokens = [str(t) for t in json.loads(args[args.index("["):])]
    return flags, tokens


# -- the uv step ---------------------------------------------------------------------------------

def _external_base(stage: Stage) -> Stage:
    root = stage
    while root.parent is not None:
        root = root.parent
    return root


def _image_of(df: Dockerfile, ref: str) -> tuple[str, bool]:
    """A --from value: a stage's external image (following FROM <stage>), or the image itself; and
    whether that image's name uses an ARG without a value."""
    stage = df.stage(ref)
    if stage is None:
        return ref, False
    root = _external_base(stage)
    return root.base, bool(root.unset)


def uv_image_version(image: str) -> str | None:
    """`X.Y.Z` of a uv image reference (ghcr.io/astral-sh/uv:0.13.8, …:0.13.8-python3.12-bookworm)."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if name.rsplit("/", 1)[-1] != "uv":
        return None
    m = _UV_IMAGE_TAG_RE.match(tag.split("@", 1)[0])
    return m.group(1) if m else None


def _uv_step(df: Dockerfile, stage: Stage, run: Instruction, command: str) -> UvStep:
    chain = _chain(stage)
    root = chain[0]
    uv_version: str | None = uv_image_version(root.base)
    uv_line: int | None = root.line if uv_version else None
    user: str | None = None
    uses: list[CacheUse] = []
    python_request: str | None = None
    python_line: int | None = None
    workdir: str | None = None  # None: the base image's, not read here
    for s in chain:
        for ins in s.instructions:
            if ins is run:
                break
            env = _stage_env(df, s, until=ins)
            if ins.keyword == "WORKDIR" and ins.args.strip():
                path = _expand(ins.args.strip(), env)
                workdir = posixpath.normpath(posixpath.join(workdir or "/", path))
            elif ins.keyword == "USER":
                user = _expand(ins.args.split()[0], env) if ins.args.split() else None
            elif ins.keyword == "COPY":
                flags, paths = _copy_parts(ins.args)
                source = _expand(flags.get("from", ""), env)
                if source and len(paths) >= 2:
                    image, unresolved = _image_of(df, source)
                    copied_uv = uv_image_version(image)
                    if copied_uv and any(p.rstrip("/").endswith("/uv") for p in paths[:-1]):
                        uv_version, uv_line = copied_uv, ins.line
                    if any(p in ("/", "/.", ".") for p in paths[:-1]):
                        uses.append(CacheUse(ins.line, source, _expand(paths[-1], env), "COPY", image, unresolved))
            elif ins.keyword == "RUN":
                text = _expand(ins.args + "\n" + ins.heredoc, env)
                m = _PIP_UV_RE.search(text)
                if m and re.search(r"\bpip3?\s+install\b|\buv\s+tool\s+install\b", text):
                    uv_version, uv_line = m.group(1), ins.line
    env_at_run = _stage_env(df, stage, until=run)
    mounts, _ = _run_mounts(run.args)
    for options in mounts:
        source = _expand(options.get("from", ""), env_at_run)
        target = _expand(options.get("target") or options.get("dst") or options.get("destination") or "", env_at_run)
        kind = options.get("type", "bind")
        if kind in ("bind", "cache") and target:
            image, unresolved = _image_of(df, source) if source else ("", False)
            writable = kind == "cache" or any(k in options for k in ("rw", "readwrite"))
            uses.append(CacheUse(run.line, source, target, f"{kind} mount", image, unresolved, writable))
    # The uv invocation: inline assignments before it, its own flags.
    head = command.split("&&")[0].split(";")[0].split("||")[0]
    tokens = _split(head)
    found = _UV_INSTALL_RE.search(head)
    subcommand = "sync" if found is None or found.group(1) == "sync" else "pip install"
    env = {k: v for k, v in env_at_run.items() if v is not None}
    env.update(re.findall(r"(?:^|\s)(\w+)=(\S+)\s+(?=(?:\S*/)?uv\s)", _expand(run.args, env_at_run)))
    cache_dir_flag = _flag_value(tokens, ("--cache-dir",))
    py = _flag_value(tokens, ("--python", "-p"))
    if py is not None:
        python_request, python_line = py, run.line
    elif env.get("UV_PYTHON"):
        python_request, python_line = env["UV_PYTHON"], run.line
    if uv_version is None:
        m = _PIP_UV_RE.search(_expand(run.args, env_at_run))
        if m:
            uv_version, uv_line = m.group(1), run.line
    names = {str(stage.index), *((stage.name,) if stage.name else ())}  # how a later COPY --from names it
    copied_from = tuple(ins.line for later in df.stages[stage.index + 1:] for ins in later.instructions
                        if ins.keyword == "COPY" and _copy_parts(ins.args)[0].get("from", "").lower() in names)
    return UvStep(stage=stage, line=run.line, base_image=root.base, base_line=root.line,
                  base_platform=root.platform, uv_version=uv_version, uv_line=uv_line,
                  python_request=python_request, python_line=python_line, user=user, env=env,
                  cache_dir_flag=cache_dir_flag, cache_uses=tuple(uses),
                  link_mode=_flag_value(tokens, ("--link-mode",)) or env.get("UV_LINK_MODE"),
                  compile_bytecode=bool({"--compile-bytecode", "--compile"} & set(tokens))
                  or env.get("UV_COMPILE_BYTECODE", "").lower() in ("1", "y", "yes", "t", "true", "on"),
                  copied_from=copied_from, no_binary=build_settings_of_step(subcommand, tokens, env),
                  environment=_environment(subcommand, tokens, env, workdir, _run_mounts(run.args)[1]))


def _environment(subcommand: str, tokens: list[str], env: dict[str, str], workdir: str | None,
                 script: str) -> str | None:
    """The project environment's path of a `uv sync` (UV_PROJECT_ENVIRONMENT, else `.venv` in the
    project: --directory / --project, else the WORKDIR); None where that cannot be read (no
    WORKDIR, a `cd` before uv)."""
    program = next((t for t in tokens if not re.match(r"^\w+=", t)), "")  # after inline assignments
    if subcommand != "sync" or workdir is None or not (program == "uv" or program.endswith("/uv")):
        return None
    if re.search(r"(?:^|[;&|(]\s*)(?:cd|pushd)\s", script):  # the step moves: its directory is not read here
        return None
    project = workdir
    for flag in ("--directory", "--project"):
        value = _flag_value(tokens, (flag,))
        if value is not None:
            project = posixpath.normpath(posixpath.join(project, value))
    target = env.get("UV_PROJECT_ENVIRONMENT") or ".venv"
    return posixpath.normpath(posixpath.join(project, target))


def _flag_value(tokens: list[str], names: tuple[str, ...]) -> str | None:
    for i, token in enumerate(tokens):
        for name in names:
            if token == name and i + 1 < len(tokens):
                return tokens[i + 1]
            if token.startswith(name + "=") and name.startswith("--"):
                return token.split("=", 1)[1]
    return None
