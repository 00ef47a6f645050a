"""`push --compile-bytecode`: the layers carry each package's pycs, so a build that links (a stacked
image, `--link-mode symlink`; or `hardlink`) gets bytecode without compiling.

Proven with the real uv and real builders: after the install, importing every package compiles no
source (a spy on importlib's SourceFileLoader.source_to_code), and without the flag the same check
sees sources compiled. The pycs are deterministic (two pushes, other packer processes: one digest),
and a copy-mode install stays correct (its copies get new mtimes: uv recompiles).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from ocicache import bytecode, bytecode_worker
from ocicache.dockerfile import find_uv_step, parse_dockerfile
from tests.conftest import build_context, hermetic_env, offline_sync, require_tool
from tests.conftest import ocicache as run_ocicache
from tests.support.builders import Buildah

MODULES = ("heavy", "small_b", "sdist_only", "gitpkg")
# Imports every module and counts the sources the interpreter had to compile (no valid pyc found).
SPY = ("import importlib.machinery as m; calls = []; orig = m.SourceFileLoader.source_to_code; "
       "m.SourceFileLoader.source_to_code = lambda self, data, path, *a, **k: calls.append(path) "
       "or orig(self, data, path, *a, **k); "
       f"import {', '.join(MODULES)}; print('SPY-RESULT', len(calls), calls[:3])")


def _spy_count(output: str) -> int:
    """The count printed by SPY (not the build log's echo of its command)."""
    line = next(line for line in output.splitlines() if line.startswith("SPY-RESULT "))
    return int(line.split()[1])


# --- the pycs themselves ---------------------------------------------------------------------------------

_HISTORY = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import bytecode_worker
    files = json.loads(sys.stdin.read())
    if sys.argv[2] == "messy":  # other work first, in another order: what a packer process may have done
        import random
        random.Random(7).shuffle(files)
        for path in files[: len(files) // 2]:
            try:
                compile(open(path, "rb").read(), path, "exec")
            except (SyntaxError, ValueError):
                pass
        sys.intern("]"); sys.intern("engine_kwargs")
    out = {}
    for path in files:
        pyc = bytecode_worker.compile_pyc(open(path, "rb").read(), path)
        out[path] = None if pyc is None else pyc.hex()
    print(json.dumps(out))
""")


def test_pycs_do_not_depend_on_what_the_process_compiled_before():
    """CPython shares equal constants and interns singletons depending on the process's history; the
    worker's pycs do not (measured before the fix: pandas and redis files differed between packer
    processes). The corpus: this interpreter's own standard library, a few hundred modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for sub in ("email", "json", "asyncio", "concurrent", "importlib", "xml", "http")
                   for p in (stdlib / sub).rglob("*.py"))
    assert len(files) > 100
    worker_dir = str(Path(bytecode_worker.__file__).parent)
    results = []
    for mode in ("clean", "messy"):
        order = list(files) if mode == "clean" else list(reversed(files))
        out = subprocess.run([sys.executable, "-I", "-c", _HISTORY, worker_dir, mode], input=json.dumps(order),
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out))
    assert results[0] == results[1]
    assert sum(v is not None for v in results[0].values()) == len(files)


def test_a_pyc_is_a_timestamp_pyc_for_mtime_zero_that_the_interpreter_accepts(tmp_path):
    import importlib.util
    import marshal

    source = b"VALUE = {'a', 'b'}\ndef f(x):\n    return x in {'a', 'b'}\n"
    pyc = bytecode_worker.compile_pyc(source, "pkg/mod.py")
    assert pyc is not None and pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0  # timestamp-based
    assert int.from_bytes(pyc[8:12], "little") == 0 and int.from_bytes(pyc[12:16], "little") == len(source)
    namespace: dict[str, object] = {}
    exec(marshal.loads(pyc[16:]), namespace)
    assert namespace["f"]("a") is True and namespace["VALUE"] == {"a", "b"}  # type: ignore[operator]
    assert bytecode_worker.compile_pyc(b"print 'python 2'\n", "old.py") is None
    assert bytecode_worker.compile_pyc(b"x = 1\0\n", "nul.py") is None


def test_the_helper_process_compiles_the_same_bytes_as_in_process():
    """Another interpreter compiles through bytecode_worker.py on stdin/stdout: same protocol
    result as compiling here (forced through the helper with this very interpreter)."""
    out = subprocess.run([sys.executable, "-I", bytecode._WORKER, "--describe"], capture_output=True, text=True,
                         check=True).stdout.split()
    compiler = bytecode.Compiler(executable=sys.executable, implementation=out[0], cache_tag=out[1], version=out[2])
    helper = bytecode._Helper(compiler)
    try:
        for source in (b"import os\nX = [1, 2.5, 'x', b'y', (1, 2)]\n", "s = 'ünïcode'\n".encode(), b"def (:\n",
                       b"x = 1\n" * 5000):
            assert helper.compile(source, "pkg/é.py") == bytecode_worker.compile_pyc(source, "pkg/é.py")
    finally:
        helper.proc.stdin.close()  # type: ignore[union-attr]
        helper.proc.wait(timeout=30)
    assert helper.proc.returncode == 0


def test_pyc_paths_cover_what_lands_in_site_packages():
    tag = "cpython-311"
    assert bytecode.pyc_path("archive-v0/ID/pkg/mod.py", tag) == "archive-v0/ID/pkg/__pycache__/mod.cpython-311.pyc"
    assert bytecode.pyc_path("archive-v0/ID/top.py", tag) == "archive-v0/ID/__pycache__/top.cpython-311.pyc"
    assert bytecode.pyc_path("archive-v0/ID/pkg-1.0.data/scripts/tool.py", tag) is None
    assert bytecode.pyc_path("archive-v0/ID/pkg/__pycache__/mod.py", tag) is None
    assert bytecode.pyc_path("archive-v0/ID/pkg/data.txt", tag) is None
    assert bytecode.pyc_path("wheels-v8/pypi/pkg/x.py", tag) is None


def test_with_bytecode_adds_one_compiled_entry_per_source_and_replaces_a_shipped_pyc():
    from ocicache.tree import Entry, PackageRef, PackageTree

    compiler = bytecode.Compiler(executable=sys.executable, implementation="cpython", cache_tag="cpython-311",
                                 version="3.11.0")
    root = "archive-v0/ID"
    entries = (Entry(path=root, kind="dir"), Entry(path=f"{root}/pkg", kind="dir"),
               Entry(path=f"{root}/pkg/a.py", kind="file", data=b"A = 1\n", size=len(b"A = 1\n")),
               Entry(path=f"{root}/pkg/b.py", kind="file", data=b"B = 2\n", size=len(b"B = 2\n")),
               Entry(path=f"{root}/pkg/__pycache__", kind="dir"),
               Entry(path=f"{root}/pkg/__pycache__/a.cpython-311.pyc", kind="file", data=b"stale", size=len(b"stale")),
               Entry(path=f"{root}/pkg/__pycache__/a.cpython-39.pyc", kind="file", data=b"other minor",
                     size=len(b"other minor")))
    ref = PackageRef(name="pkg", version="1", artifact="pkg-1-py3-none-any.whl", hash="sha256:00", key="k")
    tree = bytecode.with_bytecode(PackageTree(package=ref, entries=entries), compiler)
    by_path = {e.path: e for e in tree.entries}
    assert len(by_path) == len(tree.entries)  # no path twice
    compiled = sorted(p for p, e in by_path.items() if e.compiled is not None)
    assert compiled == [f"{root}/pkg/__pycache__/a.cpython-311.pyc", f"{root}/pkg/__pycache__/b.cpython-311.pyc"]
    assert by_path[f"{root}/pkg/__pycache__/a.cpython-39.pyc"].data == b"other minor"  # not ours: kept
    assert tree.size == PackageTree(package=ref, entries=entries).size - len(b"stale")
    assert tree.owned_paths() == [root]
    stripped = bytecode.without_bytecode(list(tree.entries), compiler.cache_tag)
    assert not [e for e in stripped if e.compiled is not None] and len(stripped) == len(tree.entries) - 2


def test_a_missing_compiling_interpreter_is_one_clear_error(make_project, tmp_path):
    example_lock = make_project(tmp_path / "project", ["small-b"])
    result = run_ocicache("push", example_lock, f"oci:{tmp_path / 'img'}", "--bytecode-python",
                          str(tmp_path / "no-such-python"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--compile-bytecode needs a CPython" in result.stderr and "--bytecode-python" in result.stderr
    assert not (tmp_path / "img").exists()
    other = run_ocicache("push", example_lock, f"oci:{tmp_path / 'img'}", "--compile-bytecode", "--python", "3.13",
                         "--bytecode-python", sys.executable, check=False)
    assert other.returncode == 2 and f"is cpython {sys.version.split()[0]}" in other.stderr


def test_dockerfile_that_compiles_bytecode_is_recognised(tmp_path):
    cases = {"FROM python:3.11\nENV UV_COMPILE_BYTECODE=1\nRUN uv sync --frozen\n": True,
             "FROM python:3.11\nRUN uv sync --frozen --compile-bytecode\n": True,
             "FROM python:3.11\nRUN UV_COMPILE_BYTECODE=true uv sync --frozen\n": True,
             "FROM python:3.11\nENV UV_COMPILE_BYTECODE=0\nRUN uv sync --frozen\n": False,
             "FROM python:3.11\nRUN uv sync --frozen\n": False}
    for n, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"Dockerfile.{n}"
        path.write_text(text)
        assert find_uv_step(parse_dockerfile(path)).compile_bytecode is expected, text


# --- pushed, pulled, installed ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled_layout(build_setup, tmp_path_factory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("bytecode")
    lock = build_setup["lock"]
    first = run_ocicache("push", lock, f"oci:{work / 'a'}:1", "--compile-bytecode", "--json").json()
    return {"work": work, "lock": lock, "first": first}


def test_two_pushes_give_the_same_pycs_and_keys_differ_from_plain_layers(compiled_layout):
    work, lock, first = compiled_layout["work"], compiled_layout["lock"], compiled_layout["first"]
    assert first["bytecode"] == f"cpython-{sys.version.split()[0]}"
    again = run_ocicache("push", lock, f"oci:{work / 'b'}:1", "--compile-bytecode", "--jobs", "1", "--json").json()
    assert again["manifest_digest"] == first["manifest_digest"]
    plain = run_ocicache("push", lock, f"oci:{work / 'a'}:plain", "--cache-from", f"oci:{work / 'a'}:1",
                         "--json").json()
    package_layers = {r["digest"] for r in first["layers"] if r["kind"] != "base"}
    assert not package_layers & {r["digest"] for r in plain["layers"]}
    # only the scaffold is reused: a compiled layer is never taken for a plain one
    assert plain["layers_reused"] == 1 and plain["packages_populated"] == first["packages_populated"]
    manifest = _manifest_of(work / "a", first["manifest_digest"])
    assert manifest["annotations"]["dev.ocicache.bytecode"] == first["bytecode"]
    assert run_ocicache("inspect", f"oci:{work / 'a'}:1", "--json").json()["bytecode"] == first["bytecode"]
    assert f"compiled by {first['bytecode']}" in run_ocicache("inspect", f"oci:{work / 'a'}:1").stdout
    assert run_ocicache("inspect", f"oci:{work / 'a'}:plain", "--json").json()["bytecode"] is None
    # the recorded sizes leave the pycs out: the planner weighs a known package as a populated one
    sizes = sorted((p["name"], p["size"]) for layer in manifest["layers"]
                   if "dev.ocicache.layer.packages" in layer["annotations"]
                   for p in json.loads(layer["annotations"]["dev.ocicache.layer.packages"]))
    plain_manifest = _manifest_of(work / "a", plain["manifest_digest"])
    plain_sizes = sorted((p["name"], p["size"]) for layer in plain_manifest["layers"]
                         if "dev.ocicache.layer.packages" in layer["annotations"]
                         for p in json.loads(layer["annotations"]["dev.ocicache.layer.packages"]))
    assert sizes == plain_sizes
    # a package's paths are its wheel's roots, as without bytecode (no pyc listed on its own)
    paths = [q for layer in manifest["layers"] if "dev.ocicache.layer.packages" in layer["annotations"]
             for p in json.loads(layer["annotations"]["dev.ocicache.layer.packages"]) for q in p["paths"]]
    assert paths and not [q for q in paths if "__pycache__" in q]


def _manifest_of(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text())


@pytest.mark.parametrize("link_mode", ["hardlink", "copy"])
def test_a_pulled_cache_installs_with_bytecode(compiled_layout, link_mode, tmp_path):
    """hardlink keeps the layer's mtimes: every pyc is valid and uv's compile step writes none. copy
    gives the files new mtimes: uv recompiles (correct, no gain)."""
    work, lock = compiled_layout["work"], compiled_layout["lock"]
    run_ocicache("pull", f"oci:{work / 'a'}:1", tmp_path / "cache")
    result = offline_sync(lock, tmp_path / "cache", tmp_path / "consumer", "--link-mode", link_mode,
                          "--compile-bytecode")
    assert result.returncode == 0, result.stderr[-2000:]
    venv_python = tmp_path / "consumer" / ".venv" / "bin" / "python"
    spy = subprocess.run([str(venv_python), "-c", SPY], capture_output=True, text=True, timeout=120,
                         env=hermetic_env(PYTHONDONTWRITEBYTECODE="1"))
    assert spy.returncode == 0, spy.stderr[-2000:]
    assert _spy_count(spy.stdout) == 0
    if link_mode == "hardlink":
        site = next((tmp_path / "consumer" / ".venv" / "lib").glob("python3.*/site-packages"))
        pyc = next(site.glob("heavy/__pycache__/*.pyc"))
        assert pyc.stat().st_nlink > 1  # the cache's own pyc, linked, not rewritten by uv


def test_without_the_flag_the_same_check_sees_sources_compiled(build_setup, tmp_path):
    """The control: the spy can fail."""
    run_ocicache("pull", build_setup["cache"], tmp_path / "cache")
    result = offline_sync(build_setup["lock"], tmp_path / "cache", tmp_path / "consumer", "--link-mode", "hardlink")
    assert result.returncode == 0, result.stderr[-2000:]
    spy = subprocess.run([str(tmp_path / "consumer" / ".venv" / "bin" / "python"), "-c", SPY], capture_output=True,
                         text=True, timeout=120, env=hermetic_env(PYTHONDONTWRITEBYTECODE="1"))
    assert spy.returncode == 0 and _spy_count(spy.stdout) >= len(MODULES), spy.stdout + spy.stderr[-2000:]


def test_buildah_builds_from_a_compiled_stacked_image_without_compiling(build_setup, registries, tmp_path):
    """The pattern it is for: FROM the stacked image, UV_COMPILE_BYTECODE=1 as uv's guide sets it,
    `--link-mode symlink`, --network none: uv compiles nothing and the interpreter finds every pyc."""
    require_tool("buildah")
    ref = f"{registries['plain'].host}/bytecode/stacked:1"
    run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--compile-bytecode")
    dockerfile = (f"FROM {ref}\nWORKDIR /app\nENV UV_COMPILE_BYTECODE=1 PYTHONDONTWRITEBYTECODE=1\n"
                  "COPY pyproject.toml uv.lock /app/\n"
                  "RUN uv sync --frozen --offline --no-install-project --link-mode symlink\n"
                  f'RUN /app/.venv/bin/python -c "{SPY}"\n')
    context = build_context(tmp_path, build_setup["lock"], dockerfile)
    result = Buildah(tmp_path / "buildah").build(context, "localhost/bytecode")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert _spy_count(output) == 0, output[-3000:]


def test_verify_rebuild_compiles_again_and_names_a_tampered_pyc(registries, make_project, tmp_path):
    """The pycs are code the build runs: `verify --rebuild` compiles them again with the image's
    interpreter release and compares them like every other file."""
    from tests.test_trust import tamper

    server = registries["plain"]
    lock = make_project(tmp_path / "p", ["small-a", "heavy"])
    ref = f"{server.host}/bytecode/verify:1"
    run_ocicache("push", lock, ref, "--compile-bytecode")
    honest = run_ocicache("verify", ref, lock, "--rebuild", "--json").json()
    assert honest["ok"] and honest["rebuilt"] and honest["problems"] == [], honest
    evil = bytecode_worker.compile_pyc(b"import os  # evil\n", "small_a/__init__.py")
    assert evil is not None
    tamper(server.host, "bytecode/verify", "1", "small_a/__pycache__/__init__.cpython-311.pyc", evil)
    rebuilt = run_ocicache("verify", ref, lock, "--rebuild", check=False)
    assert rebuilt.returncode == 1, rebuilt.stdout
    problems = [line for line in rebuilt.stdout.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and "small-a 1.0" in problems[0] and "__init__.cpython-311.pyc" in problems[0]
    # another interpreter release would compile other bytes: told, not reported as tampering
    other_python = tmp_path / "python3.11"
    other_python.write_text("#!/bin/sh\necho cpython cpython-311 3.11.99\n")
    other_python.chmod(0o755)
    other = run_ocicache("verify", ref, lock, "--rebuild", "--bytecode-python", str(other_python), check=False)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert f"compiled by cpython-{sys.version.split()[0]}" in other.stderr and "cpython-3.11.99" in other.stderr


def test_a_bucket_rebuilt_from_known_compiled_layers_equals_a_fresh_push(make_project, index, tmp_path):
    """One small package changes: its bucket is rebuilt, the others taken out of the known layer
    (their pycs dropped and compiled again, their recorded sizes checked); the result is byte for
    byte a fresh push's. Failed when each pyc was listed as a path of its own (counted twice:
    \"kombu has 3398362 bytes, its annotation says 2162600\")."""
    index.add_wheel("small-c", "3.1")
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "small-c==3.0"])
    dest = f"oci:{tmp_path / 'layout'}:v1"
    run_ocicache("push", lock, dest, "--compile-bytecode", "--buckets", "1")
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "small-c==3.1"])
    second = run_ocicache("push", lock, dest, "--compile-bytecode", "--buckets", "1", "--json").json()
    assert second["packages_extracted"] >= 1 and second["packages_populated"] == 1
    fresh = run_ocicache("push", lock, f"oci:{tmp_path / 'fresh'}:v1", "--compile-bytecode", "--buckets", "1",
                         "--json").json()
    assert fresh["manifest_digest"] == second["manifest_digest"]


def test_a_re_push_plans_the_same_layers_whatever_the_pycs_weigh(make_project, tmp_path):
    """A package just under the solo threshold by its sources, over it with its pycs: a no-op re-push
    (every package known, planned from recorded sizes) must plan it where the first push did.
    Failed when the recorded sizes counted the pycs: the re-push made it a solo layer."""
    lock = make_project(tmp_path / "project", ["heavy", "small-b"])
    plain = run_ocicache("push", lock, f"oci:{tmp_path / 'plain'}:1", "--json").json()
    size = next(p["size"] for layer in _manifest_of(tmp_path / "plain", plain["manifest_digest"])["layers"]
                if "dev.ocicache.layer.packages" in layer["annotations"]
                for p in json.loads(layer["annotations"]["dev.ocicache.layer.packages"]) if p["name"] == "small-b")
    dest = f"oci:{tmp_path / 'layout'}:1"
    flags = ("--compile-bytecode", "--solo-threshold", str(size + 1))
    first = run_ocicache("push", lock, dest, *flags, "--json").json()
    assert [r["kind"] for r in first["layers"] if "small-b" in r["packages"]] == ["bucket"]
    again = run_ocicache("push", lock, dest, *flags, "--json").json()
    assert again["manifest_digest"] == first["manifest_digest"] and again["layers_built"] == 0


def test_check_advises_bytecode_for_a_build_that_compiles(build_setup, registries, tmp_path):
    """A build with UV_COMPILE_BYTECODE=1 FROM a stacked image without pycs: check says so (ok all the
    same: nothing is missing); FROM one with pycs: no advice; with pycs and copy mode: told they go unused."""
    host = registries["plain"].host
    plain, compiled = f"{host}/bytecode/advice-plain:1", f"{host}/bytecode/advice-compiled:1"
    run_ocicache("push", build_setup["lock"], plain, "--base", build_setup["base"])
    run_ocicache("push", build_setup["lock"], compiled, "--base", build_setup["base"], "--compile-bytecode")

    def check(ref: str, link_mode: str) -> dict:
        dockerfile = tmp_path / f"Dockerfile.{ref.rsplit('/', 1)[1].replace(':', '-')}.{link_mode}"
        dockerfile.write_text(f"FROM {ref}\nWORKDIR /app\nENV UV_COMPILE_BYTECODE=1\nCOPY . /app/\n"
                              f"RUN uv sync --frozen --offline --link-mode {link_mode}\n")
        return run_ocicache("check", ref, build_setup["lock"], "--dockerfile", dockerfile, "--json").json()

    without = check(plain, "symlink")
    assert without["ok"] and len(without["notes"]) == 1 and "--compile-bytecode" in without["notes"][0]
    with_pycs = check(compiled, "symlink")
    assert with_pycs["ok"] and with_pycs["notes"] == []
    copying = check(compiled, "copy")
    assert copying["ok"] and len(copying["notes"]) == 1 and "--link-mode copy" in copying["notes"][0]
