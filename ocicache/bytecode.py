"""Bytecode in the image (`push --compile-bytecode`): each unpacked wheel's `.py` files get their pyc.

uv's Docker guide compiles bytecode in every build (`UV_COMPILE_BYTECODE=1`): measured here, 5 s of
two cores for the worker service's 3,612 files, paid again on every build, since the cache mount
holds no bytecode. An image that carries the pycs pays it once per package version: uv installing
with `--link-mode symlink` (a stacked image) or `hardlink` links them like any other file, and its
own compile step then finds each one current and writes nothing.

The pycs are timestamp pycs for source mtime 0, the mtime of every file in a layer, and the size of
their source: valid wherever the files keep the layer's mtime (links to it), and rejected, so simply
recompiled by uv or the interpreter, where a copy gets a new mtime. Compiled by an interpreter of the
target's Python minor (the pyc format is per minor); its full version is part of the layer key, since
another patch release may compile other bytes (bytecode_worker.py makes them deterministic per
version). `.py` files under a wheel's `.data/` directory are left alone (uv moves them elsewhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from . import bytecode_worker
from .errors import UsageError
from .tree import Compiled, Entry, PackageTree, read_chunks
from .uvcache import ARCHIVE_BUCKET

__all__ = ["Compiler", "find_compiler", "pyc_bytes", "with_bytecode", "without_bytecode"]

_WORKER = str(Path(bytecode_worker.__file__).resolve())


@dataclass(frozen=True, slots=True)
class Compiler:
    """The interpreter that compiles, as `bytecode_worker.describe()` reports it."""

    executable: str
    implementation: str  # "cpython"
    cache_tag: str  # "cpython-311": the pyc's file name
    version: str  # "3.11.7"

    @property
    def id(self) -> str:
        """What decides the bytes: in the layer keys and the image's annotation."""
        return f"{self.implementation}-{self.version}"

    @property
    def in_process(self) -> bool:
        return bytecode_worker.describe() == f"{self.implementation} {self.cache_tag} {self.version}"


def find_compiler(python_minor: str, python: str | None = None) -> Compiler:
    """A CPython of `python_minor` (e.g. "3.11"): `python` if given, else the running interpreter if it
    is one, else `python3.X` on PATH."""
    candidates = [python] if python else [
        *([sys.executable] if f"{sys.version_info[0]}.{sys.version_info[1]}" == python_minor else []),
        *([found] if (found := shutil.which(f"python{python_minor}")) else []),
    ]
    problems = []
    for exe in candidates:
        try:
            out = subprocess.run([exe, "-I", _WORKER, "--describe"], capture_output=True, text=True, timeout=60,
                                 check=True).stdout.split()
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{exe}: {exc}")
            continue
        if len(out) == 3 and out[0] == "cpython" and out[2].rsplit(".", 1)[0] == python_minor:
            return Compiler(executable=exe, implementation=out[0], cache_tag=out[1], version=out[2])
        problems.append(f"{exe} is {' '.join(out[:1] + out[2:3]) or 'not a Python'}")
    why = "; ".join(problems) or f"no python{python_minor} on PATH"
    raise UsageError(f"--compile-bytecode needs a CPython {python_minor} to compile for the target ({why}): "
                     "install one, or name it with --bytecode-python PATH")


def pyc_path(path: str, cache_tag: str) -> str | None:
    """Where the pyc of the tree path `path` goes (PEP 3147), if it is a `.py` of an unpacked wheel
    that lands in site-packages."""
    parts = path.split("/")
    if (len(parts) < 3 or parts[0] != ARCHIVE_BUCKET or not parts[-1].endswith(".py") or "__pycache__" in parts
            or parts[2].endswith(".data")):
        return None
    return "/".join([*parts[:-1], "__pycache__", f"{parts[-1][:-3]}.{cache_tag}.pyc"])


def with_bytecode(tree: PackageTree, compiler: Compiler) -> PackageTree:
    """`tree` with a compiled entry for each of its `.py` files (a pyc the wheel ships at that path is
    replaced) and the `__pycache__` directories they need. Idempotent."""
    kept = without_bytecode(list(tree.entries), compiler.cache_tag)  # a pyc the wheel ships is replaced
    paths = {e.path for e in kept}
    added: list[Entry] = []
    for entry in kept:
        if entry.kind != "file":
            continue
        target = pyc_path(entry.path, compiler.cache_tag)
        if target is not None:
            pycache = target.rsplit("/", 1)[0]
            if pycache not in paths:  # the tree's own entry: its paths (owned_paths) stay the wheel's roots
                paths.add(pycache)
                added.append(Entry(path=pycache, kind="dir"))
            added.append(Entry(path=target, kind="file", compiled=Compiled(source=entry, compiler=compiler)))
    return replace(tree, entries=tuple(kept) + tuple(added)) if added else tree


def without_bytecode(entries: list[Entry], cache_tag: str) -> list[Entry]:
    """`entries` less the files at the pyc paths of their `.py` files: what `with_bytecode` compiles
    (from a layer, or a stale pyc a wheel ships: valid only for its own mtime, never the layer's 0)."""
    derived = {p for e in entries if e.kind == "file" and (p := pyc_path(e.path, cache_tag)) is not None}
    return [e for e in entries if not (e.kind == "file" and e.path in derived)]


def pyc_bytes(compiled: Compiled) -> bytes | None:
    """The pyc of a compiled entry (None: its source does not compile, and the layer leaves it out).
    One source in memory at a time."""
    source = compiled.source
    data = source.data if source.data is not None else b"".join(read_chunks(source))
    name = source.path.split("/", 2)[-1]  # relative to the wheel's root; the interpreter fixes it on import
    if compiled.compiler.in_process:
        return bytecode_worker.compile_pyc(data, name)
    return _helper(compiled.compiler).compile(data, name)


class _Helper:
    """The target's interpreter running bytecode_worker.py, one request at a time."""

    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([compiler.executable, "-I", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert self.proc.stdout is not None
        hello = self.proc.stdout.readline().decode(errors="replace").strip()
        if hello != f"{compiler.implementation} {compiler.cache_tag} {compiler.version}":
            self.proc.kill()
            raise OSError(f"{compiler.executable} changed while ocicache ran (it reports {hello!r})")

    def compile(self, source: bytes, name: str) -> bytes | None:
        raw_name = name.encode("utf-8", "surrogateescape")
        with self.lock:
            stdin, stdout = self.proc.stdin, self.proc.stdout
            assert stdin is not None and stdout is not None
            try:
                stdin.write(b"%d %d\n" % (len(raw_name), len(source)) + raw_name + source)
                stdin.flush()
                length = int(stdout.readline() or b"-2")
            except (OSError, ValueError) as exc:
                raise OSError(f"{self.compiler.executable} stopped compiling bytecode: {exc}") from None
            if length == -2:
                raise OSError(f"{self.compiler.executable} stopped compiling bytecode (exit {self.proc.poll()})")
            if length < 0:
                return None
            pyc = stdout.read(length)
            if len(pyc) != length:
                raise OSError(f"{self.compiler.executable} stopped compiling bytecode mid-answer")
            return pyc


_HELPERS: dict[Compiler, _Helper] = {}
_HELPERS_LOCK = threading.Lock()


def _helper(compiler: Compiler) -> _Helper:
    with _HELPERS_LOCK:
        helper = _HELPERS.get(compiler)
        if helper is None or helper.proc.poll() is not None:
            helper = _HELPERS[compiler] = _Helper(compiler)
        return helper
