"""Compiles Python sources to `.pyc` bytes for `push --compile-bytecode`, deterministically.

Standalone on purpose (standard library only, no ocicache imports): ocicache imports it when the
interpreter it runs on is the compiling one, and otherwise runs this file with the target's
interpreter (`python3.X bytecode_worker.py`), which then serves requests on stdin/stdout.

Deterministic bytes: CPython's compiler shares equal constants between functions depending on what
the process compiled before (measured: one file of 3,612 in pandas changed with the order of
compilation), and marshal flags shared objects. Every constant is therefore made canonical (one
object per type and value, held while marshalling). And marshal records whether a string is
interned: the singleton strings are interned up front (measured: redis's `"]"` was interned in one
packer process and not in another). A pyc then depends on the source and the interpreter's version
only (tests/test_bytecode.py). Timestamp pycs with source mtime 0, the mtime of every file in a layer.
"""

from __future__ import annotations

import importlib.util
import marshal
import sys
import threading
import types
import warnings

_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide; compile holds the GIL anyway

# The one-character and empty strings are singletons, and marshal writes whether a string is interned:
# whether something in this process interned "]" before would show in the pyc. Intern them all.
for _code in range(256):
    sys.intern(chr(_code))
sys.intern("")


def describe() -> str:
    """`<implementation> <cache_tag> <version>` of this interpreter (what a Compiler records)."""
    impl = sys.implementation
    return f"{impl.name} {impl.cache_tag} {'.'.join(map(str, sys.version_info[:3]))}"


def compile_pyc(source: bytes, name: str) -> bytes | None:
    """The timestamp pyc of `source` (mtime 0), or None where it does not compile (as pip and uv, which
    leave such files to the interpreter: vendored Python 2 code, templates)."""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = compile(source, name, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
            return None
        memo: dict[tuple[type, bytes], object] = {}
        data = marshal.dumps(_canonical_code(code, memo))
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
    return header + (len(source) & 0xFFFFFFFF).to_bytes(4, "little") + data


def _canonical_code(code: types.CodeType, memo: dict[tuple[type, bytes], object]) -> types.CodeType:
    return code.replace(co_consts=tuple(_canonical(c, memo) for c in code.co_consts))


def _canonical(value: object, memo: dict[tuple[type, bytes], object]) -> object:
    if isinstance(value, types.CodeType):
        return _canonical_code(value, memo)
    if type(value) is tuple:
        value = tuple(_canonical(v, memo) for v in value)
    elif type(value) is frozenset:
        value = frozenset(_canonical(v, memo) for v in value)
    # marshal version 2 writes no references: the same bytes for equal values however they are shared
    return memo.setdefault((type(value), marshal.dumps(value, 2)), value)


def serve() -> None:
    """Requests on stdin: `<name length> <source length>\\n<name><source>`; answers on stdout:
    `<pyc length>\\n<pyc>`, length -1 where the source does not compile."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write((describe() + "\n").encode())
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line:
            return
        name_len, source_len = (int(n) for n in line.split())
        name = stdin.read(name_len).decode("utf-8", "surrogateescape")
        pyc = compile_pyc(stdin.read(source_len), name)
        stdout.write(b"-1\n" if pyc is None else b"%d\n" % len(pyc) + pyc)
        stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--describe"]:
        print(describe())
    else:
        serve()
