"""Hostile input: whatever a lock, a pointer, a layer, a layout or a registry holds, ocicache either
works or says so in one line (`ocicache: error: ...`, non-zero exit), never with a traceback, never
writing outside its destination, never leaking credentials.

Property tests (hypothesis) feed the readers arbitrary and mutated input: `read_lock`, both pointer
codecs, `open_layer` + `extract_members` (in a forked child chrooted into a sandbox, so a broken
extractor cannot touch the host), and manifests/indexes/configs through the CLI on hand-written OCI
layouts. `CASES` counts the examples each property ran; the counts are printed at the end of the
module. The registry tests run the CLI against tests/support/hostile_registry.py.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard  # noqa: F401 (imported before a chroot: open_layer imports it lazily)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ocicache.errors import OcicacheError
from ocicache.lock import read_lock
from ocicache.oci import Descriptor, Digest
from ocicache.unpack import extract_members, open_layer
from ocicache.uvcache import rkyv07, rkyv08
from ocicache.uvcache.msgpack import pack
from ocicache.uvcache.pointer import Pointer, PointerError
from tests.conftest import Run, hermetic_env
from tests.support.hostile_registry import (
    CONFIG,
    INDEX,
    LAYER_GZIP,
    MANIFEST,
    HostileRegistry,
    TinyImage,
    build_image,
    canonical,
    chain,
    cut_blob,
    gzip_bomb,
    huge_manifest,
    redirect_blobs,
    sha256,
    stall,
    token_service,
    write_layout,
)

CASES: Counter[str] = Counter()  # examples run per property
PASSWORD = "hostile-Pa55word-never-to-be-seen"
LOOPBACK_HOSTS = "127.0.0.1,127.0.0.2,localhost"  # 127.0.0.2 is "another host"; everything else: dead proxy
MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of every CLI run: a reader that slurps /dev/zero dies, the host does not

# derandomize: the same examples every run (stable counts, reproducible failures without a database)
FAST = settings(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _report_case_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not CASES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"hostile cases tried: {sum(CASES.values())} in all")
        for name, n in sorted(CASES.items()):
            reporter.write_line(f"  {n:6d}  {name}")


# -- running the CLI -----------------------------------------------------------------------------
@dataclass
class Outcome:
    run: Run
    seconds: float
    peak_rss_kib: int | None  # the process's own high-water RSS (VmHWM at exit), with measure_memory
    killed: str | None  # why the test killed it, if it did


# `python -m ocicache` that writes its VmHWM at exit. (wait4's ru_maxrss cannot be used: Linux carries
# the parent's RSS over vfork+exec, so every child "peaks" at pytest's size.)
_MEASURED_MAIN = """\
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["HOSTILE_HWM_FILE"], "w") as out:
        out.write(kib)
atexit.register(_hwm)
sys.argv = ["ocicache", *sys.argv[1:]]
runpy.run_module("ocicache", run_name="__main__", alter_sys=True)
"""


def run_cli(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120,
            watch: Callable[[], str | None] | None = None, measure_memory: bool = False) -> Outcome:
    """`python -m ocicache ARGS` with a hermetic environment, a memory limit and a deadline; `watch` is
    polled while it runs and kills it when it returns a reason."""
    env = dict(env or hermetic_env())
    command = [sys.executable, "-m", "ocicache"]
    hwm = None
    if measure_memory:
        fd, hwm = tempfile.mkstemp(prefix="hostile-hwm-")
        os.close(fd)
        env["HOSTILE_HWM_FILE"] = hwm
        command = [sys.executable, "-c", _MEASURED_MAIN]
    proc = subprocess.Popen([*command, *map(str, args)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()), daemon=True)
               for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in readers:
        t.start()
    assert proc.stdin is not None
    try:
        if input is not None:
            proc.stdin.write(input.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    killed = None
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        reason = "timeout" if time.monotonic() - started > timeout else (watch() if watch else None)
        if reason:
            killed = reason
            os.kill(proc.pid, signal.SIGKILL)
            pid, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(10)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    run = Run(proc.returncode, out.get("stdout", b"").decode(errors="replace"),
              out.get("stderr", b"").decode(errors="replace"))
    peak = None
    if hwm is not None:
        text = Path(hwm).read_text()
        os.unlink(hwm)
        peak = int(text) if text else None
    return Outcome(run, seconds, peak, killed)


def run_both(*commands: tuple[str | Path, ...], **kwargs: Any) -> list[Outcome]:
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda c: run_cli(*c, **kwargs), commands))


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def assert_clean(run: Run, what: str = "") -> None:
    """Success, or exactly one `ocicache: error:` line and a non-zero exit; never a traceback."""
    assert "Traceback" not in run.stderr, f"{what}: a traceback (exit {run.returncode}):\n{tail(run.stderr)}"
    assert PASSWORD not in run.stderr + run.stdout, f"{what}: the password is in the output"
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ocicache: error: "), \
            f"{what}: not one clear error line (exit {run.returncode}):\n{tail(run.stderr)}"


def assert_one_clear_line(run: Run, what: str = "") -> None:
    assert_clean(run, what)
    assert run.returncode != 0, f"{what}: succeeded but should have failed:\n{run.stdout[-500:]}"


def files_under(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir() or p.is_symlink())


def tree_size(directory: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# -- 1. uv.lock ----------------------------------------------------------------------------------
H = hashlib.sha256
VALID_LOCK = f"""\
version = 1
revision = 3
requires-python = ">=3.11"

[[package]]
name = "demo"
version = "0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "gitpkg" }},
    {{ name = "small-b" }},
]

[package.metadata]
requires-dist = [
    {{ name = "gitpkg", git = "file:///srv/gitpkg?tag=v0.3.0" }},
    {{ name = "small-b" }},
]

[[package]]
name = "gitpkg"
version = "0.3.0"
source = {{ git = "file:///srv/gitpkg?tag=v0.3.0#0123456789abcdef0123456789abcdef01234567" }}

[[package]]
name = "small-a"
version = "1.0"
source = {{ registry = "http://127.0.0.1:8000/simple" }}
sdist = {{ url = "http://127.0.0.1:8000/files/small_a-1.0.tar.gz", hash = "sha256:{H(b'sa').hexdigest()}", \
size = 1034, upload-time = "2025-01-01T00:00:00Z" }}
wheels = [
    {{ url = "http://127.0.0.1:8000/files/small_a-1.0-py3-none-any.whl", hash = "sha256:{H(b'wa').hexdigest()}", \
size = 1290, upload-time = "2025-01-01T00:00:00Z" }},
]

[[package]]
name = "small-b"
version = "2.0"
source = {{ registry = "http://127.0.0.1:8000/simple" }}
dependencies = [
    {{ name = "small-a" }},
]
sdist = {{ url = "http://127.0.0.1:8000/files/small_b-2.0.tar.gz", hash = "sha256:{H(b'sb').hexdigest()}", \
size = 1040 }}
wheels = [
    {{ url = "http://127.0.0.1:8000/files/small_b-2.0-py3-none-any.whl", hash = "sha256:{H(b'wb').hexdigest()}", \
size = 1300 }},
    {{ url = "http://127.0.0.1:8000/files/small_b-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", \
hash = "sha256:{H(b'wb2').hexdigest()}", size = 2300 }},
]
"""
LOCK_KEYS = ["version", "revision", "requires-python", "package", "name", "source", "registry", "virtual", "git",
             "url", "path", "directory", "editable", "sdist", "wheels", "hash", "size", "filename", "dependencies"]


def toml_value(v: Any) -> str:
    """Just enough of a TOML writer (inline tables and arrays) for mutated locks."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else "inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v)
    if isinstance(v, str):
        return json.dumps(v).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return v.isoformat()  # date, time, datetime


def toml_doc(doc: dict[str, Any]) -> bytes:
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items()).encode()


def paths_of(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node of a JSON/TOML tree, as a key path (the root is ())."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths_of(v, (*prefix, i))
    return out


def mutate(doc: Any, data: st.DataObject, values: st.SearchStrategy, keys: list[str]) -> Any:
    """One mutation of `doc` (a copy): a node replaced, deleted, duplicated, or a key added."""
    doc = copy.deepcopy(doc)
    paths = paths_of(doc)
    shallow = [p for p in paths if len(p) <= 2]  # a third of the time: a top-level field or its children
    path = data.draw(st.sampled_from(paths) | st.sampled_from(paths) | st.sampled_from(shallow), label="path")
    op = data.draw(st.sampled_from(["replace", "replace", "delete", "add-key", "duplicate"]), label="op")
    if not path or op == "replace":
        new = data.draw(values, label="value")
        if not path:
            return new
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = new
        return doc
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    node = parent[path[-1]]
    if op == "delete":
        del parent[path[-1]]
    elif op == "add-key" and isinstance(node, dict):
        node[data.draw(st.sampled_from(keys), label="key")] = data.draw(values, label="value")
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(path[-1], copy.deepcopy(node))
    else:
        parent[path[-1]] = data.draw(values, label="value")
    return doc


def _toml_leaves() -> st.SearchStrategy:
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
    return st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), text, st.dates(), st.datetimes(),
                     st.sampled_from(["1", "0", "3", "", "sha256:", "sha256:zz", ":", ">=3.11", "<<", "1.0",
                                      "not a version", "../../etc/passwd", "http://[::1", "virtual", "."]))


TOML_VALUES = st.recursive(_toml_leaves(), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(LOCK_KEYS), inner, max_size=3), max_leaves=6)


def _text_mutation(data: st.DataObject, raw: bytes) -> bytes:
    """Byte-level damage to a valid text: a slice replaced, dropped, or the file cut."""
    i = data.draw(st.integers(0, len(raw)), label="at")
    j = data.draw(st.integers(i, min(len(raw), i + 40)), label="to")
    insert = data.draw(st.binary(max_size=12) | st.sampled_from([b"[", b"]", b"{", b'"', b"=", b"\n[[package]]\n",
                                                                   b"\xff\xfe", b"\0"]), label="insert")
    return raw[:i] + insert + raw[j:]


DEEP_TOML = b"version = 1\npackage = " + b"[" * 3000 + b"]" * 3000 + b"\n"


def test_lock_sanity(tmp_path: Path):
    lock = read_lock(_write(tmp_path, VALID_LOCK.encode()))
    assert [p.name for p in lock.packages] == ["demo", "gitpkg", "small-a", "small-b"] and lock.revision == 3
    doc = tomllib.loads(VALID_LOCK)
    again = read_lock(_write(tmp_path, toml_doc(doc)))
    assert again.packages == lock.packages  # the mutation writer round-trips the valid lock


def _write(directory: Path, data: bytes) -> Path:
    path = directory / "uv.lock"
    path.write_bytes(data)
    return path


def _read_lock_or_lock_error(path: Path) -> None:
    with contextlib.suppress(OcicacheError):
        read_lock(path)


def test_read_lock_on_mutated_locks(tmp_path: Path):
    valid = tomllib.loads(VALID_LOCK)

    @settings(FAST, max_examples=400)
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        CASES["read_lock: mutated uv.lock (TOML values, types, keys)"] += 1
        doc = mutate(valid, data, TOML_VALUES, LOCK_KEYS)
        if not isinstance(doc, dict):
            doc = {"version": doc}
        _read_lock_or_lock_error(_write(tmp_path, toml_doc(doc)))

    prop()


def test_read_lock_on_damaged_and_random_bytes(tmp_path: Path):
    @settings(FAST, max_examples=400)
    @given(st.sampled_from(["random", "damaged", "damaged"]), st.data())
    def prop(kind: str, data: st.DataObject) -> None:
        CASES["read_lock: random bytes and damaged uv.lock text"] += 1
        if kind == "random":
            raw = data.draw(st.binary(max_size=600), label="bytes")
        else:
            raw = _text_mutation(data, VALID_LOCK.encode())
        _read_lock_or_lock_error(_write(tmp_path, raw))

    prop()


FIXED_LOCKS = {
    "arrays nested 3000 deep": DEEP_TOML,
    "revision as text": VALID_LOCK.replace("revision = 3", 'revision = "three"').encode(),
    "revision as an array": b'version = 1\nrevision = [3]\n[[package]]\nname = "a"\nsource = { virtual = "." }\n',
    "revision as a table": b"version = 1\nrevision = { a = 1 }\npackage = []\n",
    "version as a float": VALID_LOCK.replace("version = 1\n", "version = 1.0\n", 1).encode(),
    "wheel size as text": VALID_LOCK.replace("size = 1290", 'size = "1290"').encode(),
}


@pytest.mark.parametrize("name", sorted(FIXED_LOCKS))
def test_read_lock_on_fixed_hostile_locks(tmp_path: Path, name: str):
    CASES["read_lock: fixed hostile locks"] += 1
    _read_lock_or_lock_error(_write(tmp_path, FIXED_LOCKS[name]))


# -- 2. uv cache pointers ------------------------------------------------------------------------
CODECS = {"rkyv07": rkyv07, "rkyv08": rkyv08}
SAMPLE = {
    "wheel": Pointer(kind="wheel", id="Zq3b2-Tx9aW0L1mK", hashes=(("Sha256", H(b"w").hexdigest()),),
                     uri="http://127.0.0.1:8000/files/small_a-1.0-py3-none-any.whl",
                     filename="small_a-1.0-py3-none-any.whl", size=1290),
    "revision": Pointer(kind="revision", id="Rv0-abcdefghijkl", hashes=(("Sha256", H(b"s").hexdigest()),),
                        uri="http://127.0.0.1:8000/files/small_a-1.0.tar.gz", size=1034),
}
MSGPACK_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(0, 2**64 - 1), st.text(max_size=40),
              st.sampled_from(["Sha256", H(b"w").hexdigest(), "small_a-1.0-py3-none-any.whl"])),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["id", "hashes", "filename", "size", "Sha256", "x"]) | st.text(max_size=6), inner, max_size=5),
    max_leaves=12)


def frame(codec: str, payload: bytes, policy: bytes | None = None, uri: str = SAMPLE["wheel"].uri) -> bytes:
    """`payload` framed as a valid pointer of `codec` (lengths and CRC right), with `policy`."""
    mod = CODECS[codec]
    policy = mod.synth_policy(uri) if policy is None else policy
    if codec == "rkyv07":
        return payload + policy + struct.pack("<Q", len(policy))
    return rkyv08.build(payload, b"0123456789abcdef", policy)


def _bad_uri_policy(codec: str) -> bytes:
    policy = bytearray(CODECS[codec].synth_policy(SAMPLE["wheel"].uri))
    policy[0:4] = b"\xff\xfe\xfd\xfc"  # the out-of-line URI bytes are not UTF-8
    return bytes(policy)


def decode(codec: str, raw: bytes, kind: str) -> None:
    """The contract: a Pointer, or PointerError (what normalise.py catches), or an OcicacheError."""
    with contextlib.suppress(PointerError, OcicacheError):
        CODECS[codec].CODEC.read(raw, kind)  # type: ignore[arg-type]


def test_pointer_sanity():
    for codec in CODECS:
        for kind, pointer in SAMPLE.items():
            raw = CODECS[codec].CODEC.write(pointer)
            got = CODECS[codec].CODEC.read(raw, kind)  # type: ignore[arg-type]
            assert (got.id, got.sha256, got.uri) == (pointer.id, pointer.sha256, pointer.uri)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_pointer_decoder_on_random_bytes(codec: str):
    @settings(FAST, max_examples=300)
    @given(st.sampled_from(sorted(SAMPLE)), st.binary(min_size=0, max_size=1200))
    def prop(kind: str, raw: bytes) -> None:
        CASES[f"pointer {codec}: random bytes"] += 1
        decode(codec, raw, kind)

    prop()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_pointer_decoder_on_mutated_pointers(codec: str):
    """Byte damage anywhere in a valid pointer; and, past the framing (lengths and CRC recomputed),
    damage to the policy bytes or an arbitrary msgpack payload."""

    @settings(FAST, max_examples=400)
    @given(st.sampled_from(sorted(SAMPLE)), st.sampled_from(["bytes", "policy", "payload"]), st.data())
    def prop(kind: str, how: str, data: st.DataObject) -> None:
        CASES[f"pointer {codec}: mutated valid pointers"] += 1
        valid = CODECS[codec].CODEC.write(SAMPLE[kind])
        if how == "bytes":
            raw = bytearray(valid)
            for _ in range(data.draw(st.integers(1, 6), label="flips")):
                i = data.draw(st.integers(0, len(raw) - 1), label="at")
                raw[i] = data.draw(st.integers(0, 255), label="byte")
            cut = data.draw(st.integers(0, len(raw)), label="cut")
            raw = bytes(raw[:cut]) if data.draw(st.booleans(), label="truncate") else bytes(raw)
        elif how == "policy":
            policy = bytearray(CODECS[codec].synth_policy(SAMPLE[kind].uri))
            for _ in range(data.draw(st.integers(1, 6), label="flips")):
                i = data.draw(st.integers(0, len(policy) - 1), label="at")
                policy[i] = data.draw(st.integers(0, 255), label="byte")
            raw = frame(codec, pack([SAMPLE[kind].id, [["Sha256", "00"]], "f.whl", 0]), bytes(policy))
        else:
            raw = frame(codec, pack(data.draw(MSGPACK_VALUES, label="payload")))
        decode(codec, raw, kind)

    prop()


FIXED_POINTERS = {
    "msgpack arrays nested 20000 deep": lambda codec: frame(codec, b"\x91" * 20000 + b"\xc0"),
    "policy URI not UTF-8": lambda codec: frame(codec, pack(["id", [["Sha256", "00"]], "f.whl", 0]),
                                                _bad_uri_policy(codec)),
    "msgpack map with an integer key": lambda codec: frame(codec, b"\x81\x01\x02"),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("name", sorted(FIXED_POINTERS))
def test_pointer_decoder_on_fixed_hostile_pointers(codec: str, name: str):
    CASES["pointer: fixed hostile pointers"] += 1
    decode(codec, FIXED_POINTERS[name](codec), "wheel")


# -- 3. layer extraction -------------------------------------------------------------------------
CONFINE = os.geteuid() == 0  # root: each extraction runs chrooted into its sandbox
SANDBOX_DEPTH = 3  # dest is base/l0/l1/l2/dest: escapes of a few levels stay inside base
PARTS = st.sampled_from(["a", "b", "up", "esc", "..", ".", "x"])
KINDS = st.sampled_from(["file", "file", "dir", "dir", "symlink", "symlink", "symlink", "hardlink", "chr", "blk",
                         "fifo"])


def _member_path(lead: str, parts: list[str], trail: str) -> str:
    return lead + "/".join(parts) + trail


PATHS = st.builds(_member_path, st.sampled_from(["", "", "", "", "/"]), st.lists(PARTS, min_size=1, max_size=4),
                  st.sampled_from(["", "", "", "/"]))
MEMBERS = st.lists(st.tuples(KINDS, PATHS, PATHS, st.binary(max_size=64)), min_size=1, max_size=8)

CHAIN = [("dir", "a", "", b""), ("symlink", "a/up", "..", b""), ("symlink", "a/esc", "up/..", b""),
         ("dir", "a/esc", "", b""), ("file", "a/esc/pwned", "", b"owned"), ("file", "a/up/inside", "", b"ok")]


def make_tar(members: list[tuple[str, str, str, bytes]]) -> bytes:
    types = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, link, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, 0o755
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = types[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = link
            if kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return buf.getvalue()


def _snapshot(base: Path, dest: Path) -> dict[str, tuple]:
    """Everything under `base` except `dest`'s contents: type, mode, size, link target, content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == dest:
            dirnames[:] = []
            continue
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            link = os.readlink(p) if os.path.islink(p) else None
            digest = H(Path(p).read_bytes()).hexdigest() if os.path.isfile(p) and not link else None
            out[os.path.relpath(os.path.normpath(p), base)] = (st_.st_mode, st_.st_size, link, digest)
    return out


def _escaping_links(dest: Path) -> list[str]:
    """Links under `dest` that resolve outside it."""
    root = os.path.realpath(dest)
    bad = []
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                resolved = os.path.realpath(p)
                if resolved != root and not resolved.startswith(root + os.sep):
                    bad.append(f"{os.path.relpath(p, dest)} -> {os.readlink(p)} (resolves to {resolved})")
    return bad


def _in_child(base: Path, dest_rel: str, blob: bytes, desc: Descriptor) -> tuple[str, str]:
    """open_layer + extract_members in a forked child (chrooted into `base` when root)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            root = base
            if CONFINE:
                os.chroot(base)
                os.chdir("/")
                root = Path("/")
            try:
                with open_layer(lambda: io.BytesIO(blob), desc, where="layer") as tf:
                    extract_members(tf, root / dest_rel, "layer")
                result = ["ok", ""]
            except OcicacheError as exc:
                result = ["refused", f"{type(exc).__name__}: {exc}"]
            except BaseException as exc:
                result = ["crashed", "".join(traceback.format_exception(exc))]
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    if not chunks:
        return "crashed", "the child died without a word"
    kind, text = json.loads(b"".join(chunks))
    return kind, text


def _extract_and_check(members: list[tuple[str, str, str, bytes]], media: str, damage: str,
                       check_dest: Callable[[Path], None] = lambda _d: None) -> str:
    raw = make_tar(members)
    blob = {"tar": raw, "gzip": gzip.compress(raw, mtime=0)}[media]
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    media_type = {"tar": "application/vnd.oci.image.layer.v1.tar", "gzip": LAYER_GZIP}[media]
    digest = Digest.of(blob) if damage != "wrong-digest" else Digest.of(b"other")
    desc = Descriptor(media_type=media_type, digest=digest, size=len(blob),
                      annotations={"dev.ocicache.layer.diff-id": sha256(raw)})
    with tempfile.TemporaryDirectory(prefix="hostile-tar-") as tmp:
        base = Path(tmp) / "base"
        dest_rel = "/".join(f"l{i}" for i in range(SANDBOX_DEPTH)) + "/dest"
        dest = base / dest_rel
        dest.mkdir(parents=True)
        for i in range(SANDBOX_DEPTH + 1):  # a sentinel beside every level, every level mode 0700
            level = base.joinpath(*[f"l{j}" for j in range(i)])
            level.chmod(0o700)
            (level / "sentinel").write_bytes(b"keep")
            (level / "sentinel").chmod(0o600)
        for name in ("a", "up", "esc", "x", "b"):  # names the archive may reach for outside dest
            (base / "l0" / name).mkdir(mode=0o700)
        dest.chmod(0o755)
        before = _snapshot(base, dest)
        kind, text = _in_child(base, dest_rel, blob, desc)
        after = _snapshot(base, dest)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"written outside the destination: {changed} ({kind}: {text[:300]})"
        escaping = _escaping_links(dest)
        assert not escaping, f"links left in the destination that lead out of it: {escaping}"
        assert kind != "crashed", f"not an OcicacheError:\n{text}"
        check_dest(dest)
        return kind


def test_tar_sanity():
    """The harness: a benign layer extracts, in the chrooted child, into the destination."""
    members = [("dir", "archive-v0", "", b""), ("file", "archive-v0/x/f.txt", "", b"hi"),
               ("symlink", "wheels-v8/pypi/x", "../../archive-v0/x", b"")]

    def check(dest: Path) -> None:
        assert (dest / "archive-v0/x/f.txt").read_bytes() == b"hi"
        assert (dest / "wheels-v8/pypi/x/f.txt").read_bytes() == b"hi"

    for media in ("tar", "gzip"):
        assert _extract_and_check(members, media, "none", check) == "ok"
    assert _extract_and_check(members, "gzip", "wrong-digest") == "refused"


FIXED_TARS = {
    "link chain a/up -> .., a/esc -> up/.., then a file through it": CHAIN,
    "link chain, then a directory member over the escaping link": CHAIN[:4],
    "three-link chain, then a directory over the last": [
        ("dir", "x", "", b""), ("symlink", "x/up", "..", b""), ("symlink", "x/up2", "up/..", b""),
        ("symlink", "x/up3", "up2/../..", b""), ("dir", "x/up3", "", b"")],
    "link chain, then a link over the escaping link": [*CHAIN[:3], ("symlink", "a/esc", "up", b"")],
    "absolute and dot-dot links": [("symlink", "l", "../../../etc", b""), ("file", "l/passwd", "", b"x"),
                                   ("symlink", "m", "/etc", b"")],
    "duplicate names, file then directory": [("file", "d", "", b"1"), ("file", "d", "", b"2"), ("dir", "d", "", b"")],
    "file over a link": [("symlink", "s", "x", b""), ("file", "s", "", b"over a link")],
    "hardlink, devices, fifo": [("hardlink", "h", "/etc/passwd", b""), ("chr", "c", "", b""),
                                ("blk", "b", "", b""), ("fifo", "f", "", b"")],
    "absolute and escaping names": [("file", "/abs", "", b"x"), ("file", "../up", "", b"x"),
                                    ("file", "a/../../up", "", b"x")],
}


@pytest.mark.parametrize("name", sorted(FIXED_TARS))
def test_tar_fixed_hostile_archives(name: str):
    """Fixed archives; the link chains are inside lexically at each step and outside on disk."""
    CASES["tar: fixed hostile archives"] += 1
    _extract_and_check(FIXED_TARS[name], "tar", "none")


def test_tar_extraction_never_escapes():
    @settings(FAST, max_examples=200)
    @given(MEMBERS, st.sampled_from(["tar", "gzip"]), st.sampled_from(["none"] * 6 + ["truncated", "wrong-digest"]))
    def prop(members: list, media: str, damage: str) -> None:
        CASES["tar: generated archives (names, links, devices, chains, duplicates)"] += 1
        _extract_and_check(members, media, damage)

    prop()


# -- 4. manifests, indexes, configs through the CLI, on an OCI layout -------------------------------
IMAGE = build_image()
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=12),
              st.sampled_from(["sha256:" + "0" * 64, "sha256:zz", "v1", "", INDEX, MANIFEST, CONFIG, LAYER_GZIP,
                               "linux", "amd64", 10**30, -1, 2**63])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["mediaType", "digest", "size", "config", "layers", "manifests", "platform", "rootfs",
                         "diff_ids", "annotations", "os", "architecture"]) | st.text(max_size=5),
        inner, max_size=3),
    max_leaves=6)
DOC_KEYS = ["mediaType", "digest", "size", "config", "layers", "manifests", "platform", "rootfs", "diff_ids",
            "annotations", "schemaVersion", "os", "architecture", "dev.ocicache.layer.packages"]


def valid_docs(image: TinyImage = IMAGE, *, indirect: bool = False) -> dict[str, Any]:
    """The documents of `image`; `indirect`: index.json names an image index, which names the manifest."""
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "digest": image.manifest_digest, "size": len(image.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    top = {"mediaType": MANIFEST, "digest": image.manifest_digest, "size": len(image.manifest)}
    if indirect:
        top = {"mediaType": INDEX, "digest": sha256(_encode(index)), "size": len(_encode(index))}
    return {
        "config": image.config_json(),
        "manifest": image.manifest_json(),
        "index": index,
        "index.json": {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {**top, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
    }


def _encode(doc: Any) -> bytes:
    return doc if isinstance(doc, bytes) else canonical(doc)  # the image's own encoding: same digests


def build_layout(root: Path, docs: dict[str, Any], *, mutated: str | None, indirect: bool, relink: bool = True,
                 image: TinyImage = IMAGE) -> None:
    """The layout of `docs` (index.json → [image index →] manifest → config + layer). Descriptors of
    unmutated documents point at what the layout holds; with `relink=False` the mutated document
    sits under its original digest (its bytes no longer match it)."""
    docs = copy.deepcopy(docs)
    blobs = {sha256(layer): layer for layer in image.layers}
    original = valid_docs(image, indirect=indirect)

    def store(name: str, doc: Any) -> dict[str, Any]:
        data = _encode(doc)
        digest = sha256(data) if (relink or name != mutated) else sha256(_encode(original[name]))
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    cfg = store("config", docs["config"])
    if mutated != "manifest":
        docs["manifest"]["config"].update(cfg)
    entry = {"mediaType": MANIFEST, **store("manifest", docs["manifest"])}
    if indirect:
        if mutated != "index":
            docs["index"]["manifests"][0].update({k: entry[k] for k in ("digest", "size")})
        entry = {"mediaType": INDEX, **store("index", docs["index"])}
    top = docs["index.json"]
    if mutated != "index.json":
        top["manifests"][0].update(entry)
    write_layout(root, "v1", blobs, _encode(top))


def cli_on_layout(root: Path, out: Path) -> tuple[Outcome, Outcome]:
    inspect, pull = run_both(("inspect", f"oci:{root}:v1"), ("pull", f"oci:{root}:v1", out))
    return inspect, pull


def test_layout_sanity(tmp_path: Path):
    for indirect in (False, True):
        root, out = tmp_path / f"layout-{indirect}", tmp_path / f"out-{indirect}"
        build_layout(root, valid_docs(indirect=indirect), mutated=None, indirect=indirect)
        inspect, pull = cli_on_layout(root, out)
        assert inspect.run.returncode == 0 and pull.run.returncode == 0, inspect.run.stderr + pull.run.stderr
        assert (out / "archive-v0/tiny/hello.txt").read_bytes() == IMAGE.files["archive-v0/tiny/hello.txt"]


def test_mutated_layouts_through_the_cli():
    """Success is allowed (a harmless mutation); a failure must be one clear line, with no traceback and
    nothing left in the pull directory."""

    # Each example is two CLI runs (~0.2 s): no shrinking, so a failure costs no more than a pass.
    @settings(FAST, max_examples=40, phases=[Phase.explicit, Phase.generate])
    @given(st.booleans(), st.sampled_from(["json"] * 6 + ["bytes"]), st.sampled_from([True, True, True, True, False]),
           st.data())
    def prop(indirect: bool, how: str, relink: bool, data: st.DataObject) -> None:
        targets = ["index.json", "manifest", "manifest", "config", "config"] + ["index", "index"] * indirect
        target = data.draw(st.sampled_from(targets), label="target")
        CASES["cli: mutated OCI layout (inspect + pull)"] += 1
        docs = valid_docs(indirect=indirect)
        if how == "bytes":
            docs[target] = data.draw(st.binary(max_size=64) | st.sampled_from(
                [b"", b"{", b"[" * 50000, b"\xff\xfe{}", b"null", b"[]", b'"v1"', b"1e400"]), label="raw")
        else:
            docs[target] = mutate(docs[target], data, JSON_VALUES, DOC_KEYS)
        with tempfile.TemporaryDirectory(prefix="hostile-layout-") as tmp:
            root, out = Path(tmp) / "layout", Path(tmp) / "out"
            build_layout(root, docs, mutated=target, indirect=indirect, relink=relink)
            inspect, pull = cli_on_layout(root, out)
            assert_clean(inspect.run, f"inspect ({target} mutated)")
            assert_clean(pull.run, f"pull ({target} mutated)")
            if pull.run.returncode != 0:
                assert files_under(out) == [], "a failed pull left files behind"

    prop()


def _set(path: tuple, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(docs: dict[str, Any]) -> None:
        node = docs
        for k in path[:-1]:
            node = node[k]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return apply


DELETE = object()
M0 = ("index.json", "manifests", 0)
# (id, target document, change, indirect, which commands must fail: both, pull, or none (success allowed))
LAYOUT_CASES = [
    ("index.json not JSON", "index.json", _set(("index.json",), b"{not json"), False, "both"),
    ("index.json nested 100000 deep", "index.json", _set(("index.json",), b"[" * 100000 + b"]" * 100000), False,
     "both"),
    ("index.json entry without mediaType", "index.json", _set((*M0, "mediaType"), DELETE), False, "both"),
    ("index.json entry with a malformed digest", "index.json", _set((*M0, "digest"), "sha256:xyz"), False, "both"),
    ("index.json entry size not a number", "index.json", _set((*M0, "size"), "big"), False, "both"),
    ("index.json entry not an object", "index.json", _set(("index.json", "manifests"), ["v1"]), False, "both"),
    ("index.json annotations a list", "index.json", _set((*M0, "annotations"), ["v1"]), False, "both"),
    ("manifest not JSON", "manifest", _set(("manifest",), b"\x00\x01not json"), False, "both"),
    ("manifest nested 100000 deep", "manifest", _set(("manifest",), b"[" * 100000 + b"]" * 100000), False, "both"),
    ("manifest config a string", "manifest", _set(("manifest", "config"), "sha256:" + "0" * 64), False, "both"),
    ("manifest config digest malformed", "manifest", _set(("manifest", "config", "digest"), "md5:abc"), False,
     "both"),
    ("manifest config digest missing", "manifest", _set(("manifest", "config", "digest"), DELETE), False, "both"),
    ("manifest layer without size", "manifest", _set(("manifest", "layers", 0, "size"), DELETE), False, "both"),
    ("manifest layer size not a number", "manifest", _set(("manifest", "layers", 0, "size"), "big"), False, "both"),
    ("manifest layer size negative", "manifest", _set(("manifest", "layers", 0, "size"), -1), False, "pull"),
    ("manifest layer size huge", "manifest", _set(("manifest", "layers", 0, "size"), 10**30), False, "pull"),
    ("manifest layer not an object", "manifest", _set(("manifest", "layers", 0), 7), False, "both"),
    ("manifest layer digest malformed", "manifest", _set(("manifest", "layers", 0, "digest"), "sha256:../../x"),
     False, "pull"),
    ("manifest layer media type unknown", "manifest", _set(("manifest", "layers", 0, "mediaType"), "text/x"),
     False, "pull"),
    ("manifest annotations a list", "manifest", _set(("manifest", "annotations"), ["x"]), False, "both"),
    ("manifest packages annotation not JSON", "manifest",
     _set(("manifest", "layers", 0, "annotations"), {"dev.ocicache.layer.packages": "[{"}), False, "none"),
    ("manifest skipped annotation not JSON", "manifest",
     _set(("manifest", "annotations"), {"dev.ocicache.skipped": "{"}), False, "none"),
    ("config not JSON", "config", _set(("config",), b"\xff not json"), False, "both"),
    ("config nested 100000 deep", "config", _set(("config",), b'{"a":' * 100000 + b"1" + b"}" * 100000), False,
     "both"),
    ("config a JSON list", "config", _set(("config",), b"[1, 2]"), False, "both"),
    ("config rootfs a list", "config", _set(("config", "rootfs"), []), False, "pull"),
    ("config diff_ids a number", "config", _set(("config", "rootfs", "diff_ids"), 3), False, "pull"),
    ("config diff_ids count mismatch", "config",
     _set(("config", "rootfs", "diff_ids"), [IMAGE.diff_ids[0], IMAGE.diff_ids[0]]), False, "pull"),
    ("config diff_ids missing", "config", _set(("config", "rootfs", "diff_ids"), DELETE), False, "pull"),
    ("index child is its own tag (a loop)", "index", _set(("index", "manifests", 0, "digest"), "v1"), True, "both"),
    ("index child without digest", "index", _set(("index", "manifests", 0, "digest"), DELETE), True, "both"),
    ("index child digest malformed", "index", _set(("index", "manifests", 0, "digest"), "sha256:zz"), True, "both"),
    ("index without children", "index", _set(("index", "manifests"), []), True, "both"),
    ("index child platform not an object", "index", _set(("index", "manifests", 0, "platform"), "linux"), True,
     "both"),
]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_broken_layout_documents(tmp_path: Path, case):
    name, target, change, indirect, must_fail = case
    CASES["cli: fixed broken OCI layouts"] += 1
    docs = valid_docs(indirect=indirect)
    change(docs)
    root, out = tmp_path / "layout", tmp_path / "out"
    build_layout(root, docs, mutated=target, indirect=indirect)
    inspect, pull = cli_on_layout(root, out)
    for command, outcome in (("inspect", inspect), ("pull", pull)):
        if must_fail in ("both", command):
            assert_one_clear_line(outcome.run, f"{command} ({name})")
        else:
            assert_clean(outcome.run, f"{command} ({name})")
    assert files_under(out) == [] or pull.run.returncode == 0


@pytest.mark.parametrize("blob", ["manifest", "config", "layer"])
@pytest.mark.parametrize("trap", ["a directory", "a symlink to /dev/zero", "a FIFO", "missing"])
def test_layout_blob_that_is_not_a_file(tmp_path: Path, blob: str, trap: str):
    """A blob path that is a directory, /dev/zero or a FIFO must be refused, not read forever (1.5 s)."""
    CASES["cli: layout blobs that are not files"] += 1
    root, out = tmp_path / "layout", tmp_path / "out"
    build_layout(root, valid_docs(), mutated=None, indirect=False)
    digest = {"config": IMAGE.config_digest, "manifest": IMAGE.manifest_digest, "layer": IMAGE.layer_digests[0]}[blob]
    path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.unlink()
    if trap == "a directory":
        path.mkdir()
    elif trap == "a symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif trap == "a FIFO":
        os.mkfifo(path)
    outcomes = run_both(("inspect", f"oci:{root}:v1"), ("pull", f"oci:{root}:v1", out), timeout=1.5)
    for command, outcome in zip(("inspect", "pull"), outcomes, strict=True):
        assert outcome.killed is None, f"{command}: {blob} blob is {trap}: still running after 1.5 s (reading forever?)"
        if command == "inspect" and blob == "layer":
            assert_clean(outcome.run, f"{command}: {blob} blob is {trap}")  # inspect reads no layer
        else:
            assert_one_clear_line(outcome.run, f"{command}: {blob} blob is {trap}")


# -- 5. a hostile registry -------------------------------------------------------------------------
def registry_env() -> dict[str, str]:
    return hermetic_env(NO_PROXY=LOOPBACK_HOSTS, no_proxy=LOOPBACK_HOSTS)


def pull(ref: str, out: Path, *extra: str, **kwargs: Any) -> Outcome:
    return run_cli("pull", ref, out, *extra, env=registry_env(), **kwargs)


def inspect(ref: str, *extra: str, **kwargs: Any) -> Outcome:
    return run_cli("inspect", ref, *extra, env=registry_env(), **kwargs)


CREDS = ("--username", "u", "--password-stdin")


@pytest.fixture
def registry() -> Iterator[HostileRegistry]:
    with HostileRegistry() as reg:
        yield reg


@pytest.fixture
def other_host() -> Iterator[HostileRegistry]:
    with HostileRegistry(bind="127.0.0.2") as reg:
        yield reg


def test_a_valid_image_from_the_hostile_server_pulls(registry: HostileRegistry, tmp_path: Path):
    """The harness itself: a well-behaved answer is pulled and inspected, with and without credentials."""
    ref = registry.add_image("team/app", "v1", IMAGE)
    result = pull(ref, tmp_path / "out")
    assert result.run.returncode == 0, result.run.stderr
    assert (tmp_path / "out/archive-v0/tiny/hello.txt").read_bytes() == IMAGE.files["archive-v0/tiny/hello.txt"]
    assert inspect(ref, "--json").run.returncode == 0
    registry.basic = ("u", PASSWORD)
    result = pull(ref, tmp_path / "out2", *CREDS, input=PASSWORD + "\n")
    assert result.run.returncode == 0, result.run.stderr
    assert pull(f"{registry.host}/team/app@{IMAGE.manifest_digest}", tmp_path / "out3", *CREDS,
                input=PASSWORD + "\n").run.returncode == 0


@pytest.mark.parametrize("which", ["layer", "config", "manifest by digest"])
def test_bytes_that_do_not_match_their_digest(registry: HostileRegistry, tmp_path: Path, which: str):
    """Other bytes under a digest (a valid gzip tar, so extraction gets going): refused, nothing in OUT."""
    CASES["registry: wrong bytes for a digest"] += 1
    ref = registry.add_image("team/app", "v1", IMAGE)
    evil = build_image({"archive-v0/tiny/hello.txt": b"EVIL\n", "archive-v0/evil/payload": b"x" * 5000})
    if which == "layer":
        registry.blobs["team/app"][IMAGE.layer_digests[0]] = evil.layers[0]
    elif which == "config":
        registry.blobs["team/app"][IMAGE.config_digest] = evil.config
    else:
        registry.manifests["team/app"][IMAGE.manifest_digest] = (evil.manifest, MANIFEST)
        ref = f"{registry.host}/team/app@{IMAGE.manifest_digest}"
    out = tmp_path / "out"
    result = pull(ref, out)
    assert_one_clear_line(result.run, f"pull with a wrong {which}")
    assert files_under(out) == [], f"files written from unverified bytes: {files_under(out)}"
    result = inspect(ref)
    if which == "layer":
        assert_clean(result.run, "inspect (reads no layer)")
    else:
        assert_one_clear_line(result.run, f"inspect with a wrong {which}")


def test_a_100_mb_manifest_is_refused_without_reading_it(registry: HostileRegistry, tmp_path: Path):
    CASES["registry: 100 MB manifest"] += 1
    registry.add_image("team/app", "v1", IMAGE)
    registry.hook = huge_manifest(100 << 20)
    ref = f"{registry.host}/team/app:v1"
    for command in ("pull", "inspect"):
        if command == "pull":
            outcome = pull(ref, tmp_path / "out", timeout=60, measure_memory=True)
        else:
            outcome = inspect(ref, timeout=60, measure_memory=True)
        stats = dict(registry.stats)
        peak = (outcome.peak_rss_kib or 0) >> 10
        assert outcome.killed is None, f"{command}: still running after 60 s"
        assert_one_clear_line(outcome.run, f"{command} of a 100 MB manifest")
        assert stats.get("manifest_client_stopped") is True, \
            f"{command}: read the whole {stats.get('manifest_bytes_sent', 0) >> 20} MiB manifest " \
            f"(peak RSS {peak} MiB); stderr: {outcome.run.stderr.strip()}"
        assert stats["manifest_bytes_sent"] < 50 << 20
        assert outcome.peak_rss_kib is not None and peak < 100, f"{command}: peak RSS {peak} MiB"
        print(f"100 MB manifest ({command}): stopped after {stats['manifest_bytes_sent'] >> 20} MiB, "
              f"peak RSS {peak} MiB, {outcome.seconds:.1f} s: {outcome.run.stderr.strip()}")
        registry.stats.clear()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_a_redirect_to_another_host_gets_no_credentials(registry: HostileRegistry, other_host: HostileRegistry,
                                                        tmp_path: Path, scheme: str):
    """Blob GETs answer 307 to 127.0.0.2 (as S3-backed registries do); that host must not see the
    registry's Authorization header. Following the redirect (and succeeding) or refusing it are fine."""
    CASES["registry: cross-host redirect with credentials"] += 1
    ref = registry.add_image("team/app", "v1", IMAGE)
    other_host.add_image("team/app", "v1", IMAGE)
    redirect = redirect_blobs(other_host.url)
    if scheme == "basic":
        registry.basic = ("u", PASSWORD)
        registry.hook = redirect
    else:
        registry.bearer = {"realm": f"{registry.url}/token", "service": "hostile", "token": "registry-token-42"}
        registry.hook = chain(token_service("registry-token-42"), redirect)
    out = tmp_path / "out"
    result = pull(ref, out, *CREDS, input=PASSWORD + "\n")
    assert_clean(result.run, "pull through a cross-host redirect")
    leaked = [(s.path, s.headers["Authorization"]) for s in other_host.requests if "Authorization" in s.headers]
    assert leaked == [], f"the other host received credentials: {leaked}"
    followed = other_host.seen(r"GET /v2/team/app/blobs/")
    print(f"redirect ({scheme}): exit {result.run.returncode}, other host served {len(followed)} blob GETs "
          f"without credentials; {result.run.stderr.strip() or result.run.stdout.strip()}")
    if result.run.returncode == 0:
        assert followed, "succeeded without fetching from the redirect target?"
        assert (out / "archive-v0/tiny/hello.txt").read_bytes() == IMAGE.files["archive-v0/tiny/hello.txt"]


REALMS = {
    "token service on another host": ("other", "ok"),
    "other host answers junk": ("other", "junk"),
    "other host answers no token": ("other", "empty"),
    "other host answers 500": ("other", "500"),
    "other host refuses": ("other", "html-401"),
    "realm unreachable": ("http://127.0.0.2:1/token", None),
    "realm with a file: URL": ("file:///etc/passwd", None),
    "realm not a URL": ("http://[::1/token", None),
    "realm relative": ("/token", None),
}


@pytest.mark.parametrize("case", sorted(REALMS))
def test_a_bearer_realm_on_another_host(registry: HostileRegistry, other_host: HostileRegistry, tmp_path: Path,
                                        case: str):
    """The registry's Bearer challenge names a token service elsewhere (127.0.0.2), as Docker Hub's does.
    Must end in a pull or one clear line; the test prints whether the realm got the password."""
    CASES["registry: bearer realm elsewhere"] += 1
    realm, answer = REALMS[case]
    ref = registry.add_image("team/app", "v1", IMAGE)
    if realm == "other":
        realm = f"{other_host.url}/token"
        other_host.hook = token_service("realm-token-7", answer or "ok")
    registry.bearer = {"realm": realm, "service": "hostile", "token": "realm-token-7"}
    out = tmp_path / "out"
    result = pull(ref, out, *CREDS, input=PASSWORD + "\n", timeout=60)
    assert result.killed is None
    assert_clean(result.run, f"pull with a bearer realm: {case}")
    got = [s.headers.get("Authorization", "")[:6] for s in other_host.seen("GET /token")]
    print(f"bearer realm ({case}): exit {result.run.returncode}; token requests at 127.0.0.2: {len(got)}, "
          f"with credentials: {sum(1 for g in got if g.startswith('Basic'))}; "
          f"{result.run.stderr.strip() or result.run.stdout.strip()}")
    if answer == "ok":
        assert result.run.returncode == 0, result.run.stderr
    elif answer is not None:
        assert result.run.returncode != 0


def test_a_stalled_registry_times_out(registry: HostileRegistry, tmp_path: Path):
    """The manifest request is read and never answered: with `--timeout 2` the pull ends well within 30 s."""
    CASES["registry: stalled connection"] += 1
    ref = registry.add_image("team/app", "v1", IMAGE)
    registry.hook = stall(r"/v2/.+/manifests/.+")
    result = pull(ref, tmp_path / "out", "--timeout", "2", timeout=60)
    if result.run.returncode == 2 and "--timeout" in result.run.stderr and "unrecognized" in result.run.stderr:
        pytest.fail("OPTION MISSING: the CLI rejects --timeout (the registry timeout option is not there yet): "
                    + result.run.stderr.strip().splitlines()[-1])
    assert result.killed is None and result.seconds < 30, f"still waiting after {result.seconds:.0f} s"
    assert_one_clear_line(result.run, "pull from a stalled registry")
    print(f"stalled registry: gave up after {result.seconds:.1f} s: {result.run.stderr.strip()}")


def test_the_gzip_bomb_is_a_valid_layer():
    """The harness: the bomb's construction (gzip members, tar header, diff_id) checked small, in-process."""
    blob, diff_id = gzip_bomb(32 << 20)
    raw = gzip.decompress(blob)
    assert sha256(raw) == diff_id and len(blob) < 64 << 10
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        (member,) = tf.getmembers()
        assert member.isreg() and member.size == 32 << 20


def test_a_gzip_bomb_layer_is_stopped(registry: HostileRegistry, tmp_path: Path):
    """4 GiB of zeros in one member, in a 4 MB blob whose digest and diff_id are right: pull must stop by
    itself, early, with one clear line, and OUT must stay under 100 MB at every moment (watched while it
    runs; past 2 GiB the test kills the pull to protect the disk)."""
    CASES["registry: gzip bomb"] += 1
    blob, diff_id = gzip_bomb(4 << 30)
    bomb = build_image(layer=blob, diff_id=diff_id)
    ref = registry.add_image("team/app", "v1", bomb)
    out = tmp_path / "out"
    bound, kill_at = 100 << 20, 2 << 30
    peak = [0]

    def watch() -> str | None:
        peak[0] = max(peak[0], tree_size(out))
        return f"OUT passed {kill_at >> 30} GiB" if peak[0] > kill_at else None

    try:
        result = pull(ref, out, timeout=60, watch=watch)
        print(f"gzip bomb: exit {result.run.returncode} after {result.seconds:.1f} s, OUT peaked at "
              f"{peak[0] >> 20} MiB (watched every 50 ms); {result.run.stderr.strip()}")
        assert result.killed is None, \
            f"{result.killed} after {result.seconds:.1f} s: ocicache was decompressing the bomb to disk (killed)"
        assert_one_clear_line(result.run, "pull of a gzip bomb")
        assert peak[0] < bound, f"stopped by itself, but only after writing {peak[0] >> 20} MiB into OUT " \
                                f"(bound {bound >> 20} MiB) from a {len(blob) / 1e6:.1f} MB blob"
        assert tree_size(out) < bound
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("which", ["layer", "config"])
def test_a_blob_cut_in_the_middle(registry: HostileRegistry, tmp_path: Path, which: str):
    """Content-Length N, N/2 bytes, connection closed (once): resume or retry and succeed, or one clear line."""
    CASES["registry: blob body cut mid-way"] += 1
    image = build_image({"archive-v0/big/data.bin": random.Random(5).randbytes(3 << 20)})
    ref = registry.add_image("team/app", "v1", image)
    digest = image.layer_digests[0] if which == "layer" else image.config_digest
    registry.hook = cut_blob(digest)
    out = tmp_path / "out"
    result = pull(ref, out, timeout=60)
    assert registry.stats.get("cuts") == 1
    assert_clean(result.run, f"pull with the {which} cut mid-body")
    if result.run.returncode == 0:
        assert (out / "archive-v0/big/data.bin").read_bytes() == image.files["archive-v0/big/data.bin"]
    else:
        assert files_under(out) == []

