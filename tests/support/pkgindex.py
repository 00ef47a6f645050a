"""A local PEP 503 package index on 127.0.0.1, serving wheels and sdists built by the tests.

Wheels and sdists are built byte-for-byte deterministically (fixed zip/tar timestamps), so every test
session serves the same artifacts. Sdists carry an in-tree, stdlib-only build backend so building
them needs nothing from any index. The server counts file downloads so tests can prove that a push
downloaded nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import os
import shutil
import tarfile
import threading
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _dist_info_name(name: str) -> str:
    return canonicalize_name(name).replace("-", "_")


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _metadata(name: str, version: str, deps: Iterable[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {dep}" for dep in deps]
    return "\n".join(lines) + "\n"


def wheel_bytes(
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    deps: Iterable[str] = (),
    files: Mapping[str, bytes] | None = None,
) -> tuple[str, bytes]:
    """Return (filename, bytes) of a deterministic wheel holding `files` (default: one module)."""
    module = _dist_info_name(name)
    files = dict(files or {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()})
    dist_info = f"{module}-{version}.dist-info"
    files[f"{dist_info}/METADATA"] = _metadata(name, version, deps).encode()
    files[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: ocicache-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    record = [_record_line(path, data) for path, data in sorted(files.items())]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, _ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[path])
    return f"{module}-{version}-{tag}.whl", buf.getvalue()


ODD_TAG = "py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.musllinux_1_2_x86_64"  # uv keys it by a digest


def odd_wheel_bytes(name: str = "odd", version: str = "1.0") -> tuple[str, bytes]:
    """A wheel with what real wheels have and `wheel_bytes` does not: an executable, a stored
    (uncompressed) member, explicit and repeated directory entries, an empty directory, an empty
    file, a UTF-8 name, parents with no entry of their own, and a filename uv keys by a digest."""
    module = _dist_info_name(name)
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"from pathlib import Path\nHERE = Path(__file__).parent\n",
        f"{module}/tool.sh": b"#!/bin/sh\necho odd\n",
        f"{module}/data/blob.bin": bytes(range(256)) * 800,
        f"{module}/deep/a/b/c.py": b"DEPTH = 3\n",
        f"{module}/empty.txt": b"",
        f"{module}/\u00fcn\u00ef.py": b"X = 1\n",
        f"{dist_info}/METADATA": _metadata(name, version, ()).encode(),
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: ocicache-tests\nRoot-Is-Purelib: true\nTag: "
                              f"{ODD_TAG}\n".encode(),
    }
    record = [_record_line(path, data) for path, data in sorted(files.items())]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the repeated directory entry is the point
        for directory in (f"{dist_info}/", f"{module}/empty/", f"{dist_info}/"):
            info = zipfile.ZipInfo(directory, _ZIP_DATE)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for path in sorted(files):
            info = zipfile.ZipInfo(path, _ZIP_DATE)
            info.external_attr = (0o755 if path.endswith(".sh") else 0o644) << 16
            info.compress_type = zipfile.ZIP_STORED if path.endswith(".bin") else zipfile.ZIP_DEFLATED
            zf.writestr(info, files[path])
    return f"{module}-{version}-{ODD_TAG}.whl", buf.getvalue()


def corrupt_wheel_bytes(name: str = "corrupt", version: str = "1.0") -> tuple[str, bytes]:
    """A wheel whose zip is damaged (a stored member's bytes no longer match its CRC-32) but which
    an index serves and a lock pins as it is: installing it must fail, clearly."""
    module = _dist_info_name(name)
    filename, data = wheel_bytes(name, version)
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo(f"{module}/data.bin", _ZIP_DATE)
        info.external_attr = 0o644 << 16
        dst.writestr(info, b"\x42" * 65536)  # stored: the flip below stays a valid zip
    raw = bytearray(buf.getvalue())
    raw[raw.index(b"\x42" * 64) + 1000] ^= 0xFF
    return filename, bytes(raw)


# A PEP 517 backend in the sdist itself: stdlib only, so a build needs no index.
_BACKEND = '''
import base64, hashlib, os, subprocess, sys, sysconfig, zipfile

NAME, VERSION, DEPS, COMPILED = {name!r}, {version!r}, {deps!r}, {compiled!r}
MODULE = NAME.replace("-", "_")


def _compile():
    """A C extension built by the interpreter that runs the build: its tags are that machine's."""
    out = os.path.join(MODULE, "_speed" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["cc", "-shared", "-fPIC", "-O0", "-I" + sysconfig.get_paths()["include"], "-o", out,
                    "_speed.c"], check=True)
    py = f"cp{{sys.version_info[0]}}{{sys.version_info[1]}}"
    return f"{{py}}-{{py}}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")


def get_requires_for_build_wheel(config_settings=None):
    return []


def _line(path, data):
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{{path}},sha256={{d}},{{len(data)}}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist_info = f"{{MODULE}}-{{VERSION}}.dist-info"
    tag = _compile() if COMPILED else "py3-none-any"
    files = {{}}
    for root, _dirs, names in os.walk(MODULE):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                files[p.replace(os.sep, "/")] = f.read()
    meta = ["Metadata-Version: 2.1", f"Name: {{NAME}}", f"Version: {{VERSION}}"]
    meta += [f"Requires-Dist: {{d}}" for d in DEPS]
    files[f"{{dist_info}}/METADATA"] = ("\\n".join(meta) + "\\n").encode()
    files[f"{{dist_info}}/WHEEL"] = (
        f"Wheel-Version: 1.0\\nGenerator: intree\\nRoot-Is-Purelib: {{str(not COMPILED).lower()}}\\n"
        f"Tag: {{tag}}\\n".encode()
    )
    record = [_line(p, d) for p, d in sorted(files.items())] + [f"{{dist_info}}/RECORD,,"]
    files[f"{{dist_info}}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    fname = f"{{MODULE}}-{{VERSION}}-{{tag}}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, fname), "w") as zf:
        for p in sorted(files):
            info = zipfile.ZipInfo(p, (1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[p])
    return fname
'''


_C_SOURCE = b"""#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
"""


def source_tree(name: str, version: str, *, deps: Iterable[str] = (), compiled: bool = False) -> dict[str, bytes]:
    """Files of a buildable source tree (for sdists and git repositories). `compiled`: with a C
    extension, so the built wheel is tagged for the building interpreter and machine."""
    module = _dist_info_name(name)
    deps = list(deps)
    pyproject = (
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {deps!r}\n\n'
        '[build-system]\nrequires = []\nbuild-backend = "intree_backend"\nbackend-path = ["."]\n'
    )
    files = {
        "pyproject.toml": pyproject.encode(),
        "intree_backend.py": _BACKEND.format(name=name, version=version, deps=deps, compiled=compiled).encode(),
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
    }
    if compiled:
        files["_speed.c"] = _C_SOURCE
    return files


def sdist_bytes(name: str, version: str, *, deps: Iterable[str] = (), compiled: bool = False) -> tuple[str, bytes]:
    """Return (filename, bytes) of a deterministic .tar.gz sdist with an in-tree backend."""
    module = _dist_info_name(name)
    root = f"{module}-{version}"
    files = source_tree(name, version, deps=deps, compiled=compiled)
    files["PKG-INFO"] = _metadata(name, version, deps).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(files):
            info = tarfile.TarInfo(f"{root}/{path}")
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tf.addfile(info, io.BytesIO(files[path]))
    import gzip

    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return f"{module}-{version}.tar.gz", out.getvalue()


class _Server(ThreadingHTTPServer):
    # uv opens dozens of connections at once (one per request: this server speaks HTTP/1.0); with
    # socketserver's default backlog of 5 the kernel dropped the rest, and uv's retransmitted SYNs
    # waited 1, 3, 7 s…: single `uv sync` runs of one lock took 2.3 to 32 s.
    request_queue_size = 256
    daemon_threads = True


@dataclass
class PackageIndex:
    """Files on disk under `root/files`, served as a simple index by `serve()`."""

    root: Path
    downloads: Counter[str] = field(default_factory=Counter)
    refused: int = 0  # requests answered 401 (with `credentials`)
    url: str = ""
    redirect_files: bool = False  # link /moved/<file>, which redirects to /files/<file>
    credentials: tuple[str, str] | None = None  # HTTP Basic required for every request (a private index)
    _server: _Server | None = None

    def __post_init__(self) -> None:
        (self.root / "files").mkdir(parents=True, exist_ok=True)

    def add(self, filename: str, data: bytes) -> str:
        """Store an artifact; return its sha256."""
        (self.root / "files" / filename).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def add_wheel(self, name: str, version: str, **kwargs: object) -> str:
        filename, data = wheel_bytes(name, version, **kwargs)  # type: ignore[arg-type]
        self.add(filename, data)
        return filename

    def add_sdist(self, name: str, version: str, *, deps: Iterable[str] = (), compiled: bool = False) -> str:
        filename, data = sdist_bytes(name, version, deps=deps, compiled=compiled)
        self.add(filename, data)
        return filename

    def _project_files(self, project: str) -> list[str]:
        out = []
        for path in sorted((self.root / "files").iterdir()):
            stem = path.name.split("-")[0]
            if canonicalize_name(stem) == canonicalize_name(project):
                out.append(path.name)
        return out

    def serve(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (`port` 0: any free one); return the index URL."""
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._head_only = True
                self.do_GET()

            def do_GET(self) -> None:
                if index.credentials is not None:
                    wanted = "Basic " + base64.b64encode(":".join(index.credentials).encode()).decode()
                    if self.headers.get("Authorization") != wanted:
                        index.refused += 1
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="private index"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) == 2 and parts[0] == "simple":
                    links = []
                    for name in index._project_files(parts[1]):
                        sha = hashlib.sha256((index.root / "files" / name).read_bytes()).hexdigest()
                        href = html.escape(f"/{'moved' if index.redirect_files else 'files'}/{name}#sha256={sha}")
                        links.append(f'<a href="{href}">{html.escape(name)}</a><br/>')
                    if not links:
                        return self._send(404, b"not found", "text/plain")
                    body = "<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>"
                    return self._send(200, body.encode(), "text/html")
                if len(parts) == 2 and parts[0] == "moved":  # as indexes that serve files from elsewhere
                    self.send_response(302)
                    self.send_header("Location", f"/files/{parts[1]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if len(parts) == 2 and parts[0] == "files":
                    path = index.root / "files" / os.path.basename(parts[1])
                    if path.is_file():
                        return self._send_file(path)
                return self._send(404, b"not found", "text/plain")

            def _send_file(self, path: Path) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                if getattr(self, "_head_only", False):
                    return
                index.downloads[path.name] += 1
                with open(path, "rb") as f, contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not getattr(self, "_head_only", False):
                    # uv may stop reading early once it has what it needs
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
