"""A misbehaving OCI registry on loopback, for hostile-input tests (tests/test_hostile.py).

`HostileRegistry` serves just enough of the distribution API for `ocicache pull` and `inspect`
(GET /v2/, manifests by tag and by digest with Content-Type and Docker-Content-Digest, blobs by
digest with Range support) and lets each test replace any answer with a `hook`: a callable that
gets the request and either answers it itself (returns True) or lets the default answer go
(returns False). Canned hooks: a streamed oversized manifest, a redirect to another host, a stall,
a body cut in the middle. Every request is recorded with its headers. Optional Basic or Bearer
challenges make the client send credentials.

Also: a tiny valid image (one gzip layer holding one file, an OCI config with rootfs.diff_ids, an
OCI manifest), a cheap gzip bomb (concatenated gzip members of zeros), and an OCI layout writer.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- images ------------------------------------------------------------------------------------
def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class TinyImage:
    """An image ocicache can pull: its blobs by digest, and its manifest."""

    layers: tuple[bytes, ...]
    diff_ids: tuple[str, ...]
    config: bytes
    manifest: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(sha256(layer) for layer in self.layers)

    def blobs(self) -> dict[str, bytes]:
        out = {sha256(layer): layer for layer in self.layers}
        out[self.config_digest] = self.config
        return out

    def manifest_json(self) -> dict[str, Any]:
        return json.loads(self.manifest)

    def config_json(self) -> dict[str, Any]:
        return json.loads(self.config)


def build_image(files: dict[str, bytes] | None = None, *, layer: bytes | None = None,
                diff_id: str | None = None) -> TinyImage:
    """One gzip layer (of `files`, or the given compressed `layer` whose tar has `diff_id`)."""
    files = {"archive-v0/tiny/hello.txt": b"hello from a hostile registry\n"} if files is None else files
    if layer is None:
        raw = tar_of(files)
        layer, diff_id = gzip.compress(raw, mtime=0), sha256(raw)
    assert diff_id is not None
    config = canonical({"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    manifest = canonical({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
    })
    return TinyImage(layers=(layer,), diff_ids=(diff_id,), config=config, manifest=manifest, files=files)


@functools.cache
def gzip_bomb(uncompressed: int = 4 << 30, name: str = "archive-v0/bomb/zeros") -> tuple[bytes, str]:
    """(gzip blob, diff_id) of a tar holding one file of `uncompressed` zero bytes.

    The blob is concatenated gzip members (one compressed 16 MiB block of zeros repeated), a few
    MB for several GB; the diff_id is the true sha256 of the tar stream, so every digest check passes.
    """
    block = 16 << 20
    assert uncompressed % block == 0
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = uncompressed, 0o644, 0
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    trailer = b"\0" * (2 * tarfile.BLOCKSIZE)  # the file is a multiple of 512: no padding
    zeros_member = gzip.compress(b"\0" * block, compresslevel=9, mtime=0)
    blob = gzip.compress(header, mtime=0) + zeros_member * (uncompressed // block) + gzip.compress(trailer, mtime=0)
    h = hashlib.sha256(header)
    zeros = memoryview(b"\0" * block)
    for _ in range(uncompressed // block):
        h.update(zeros)
    h.update(trailer)
    return blob, "sha256:" + h.hexdigest()


def write_layout(root: Path, tag: str, blobs: dict[str, bytes], entry: dict[str, Any] | bytes) -> None:
    """An OCI image layout at `root`: every blob by digest, index.json naming `entry` as `tag`
    (or raw bytes as the whole index.json)."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    for digest, data in blobs.items():
        (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    if isinstance(entry, bytes):
        (root / "index.json").write_bytes(entry)
        return
    index = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [{**entry, "annotations": {**entry.get("annotations", {}),
                                                     "org.opencontainers.image.ref.name": tag}}]}
    (root / "index.json").write_bytes(canonical(index))


# -- the server --------------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    client: str


class Request:
    """What a hook gets: the request, and ways to answer it (or not)."""

    def __init__(self, handler: BaseHTTPRequestHandler, registry: HostileRegistry) -> None:
        self._h = handler
        self.registry = registry
        self.method = handler.command
        self.path = handler.path.split("?", 1)[0]
        self.headers = handler.headers

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_head(status, {"Content-Length": str(len(body)), **(headers or {})})
        if self.method != "HEAD":
            self.write(body)

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        self._h.send_response(status)
        for key, value in headers.items():
            self._h.send_header(key, value)
        self._h.end_headers()

    def write(self, data: bytes) -> bool:
        """False once the client has gone away."""
        try:
            self._h.wfile.write(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self._h.close_connection = True
            return False

    def drop(self) -> None:
        """Close the connection now (whatever was promised)."""
        with contextlib.suppress(OSError):
            self._h.wfile.flush()
        with contextlib.suppress(OSError):
            self._h.connection.shutdown(socket.SHUT_RDWR)
        self._h.close_connection = True

    def stall(self) -> None:
        """Never answer (until the server closes)."""
        self.registry.stopped.wait()
        self._h.close_connection = True


Hook = Callable[[Request], bool]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class HostileRegistry:
    """`with HostileRegistry() as reg: reg.add_image("team/app", "v1", image); reg.hook = ...`"""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.bind = bind
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}  # repo -> ref -> (body, media type)
        self.blobs: dict[str, dict[str, bytes]] = {}  # repo -> digest -> bytes
        self.requests: list[Seen] = []
        self.hook: Hook | None = None
        self.basic: tuple[str, str] | None = None  # require these credentials (Basic challenge)
        self.bearer: dict[str, str] | None = None  # {"realm": ..., "service": ..., "token": ...}
        self.stats: dict[str, Any] = {}
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                registry._handle(self)

            def do_HEAD(self) -> None:
                registry._handle(self)

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    super().handle()

        self._server = _Server((bind, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    # -- set-up ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add_image(self, repo: str, tag: str, image: TinyImage) -> str:
        self.put_manifest(repo, tag, image.manifest, MANIFEST)
        for digest, data in image.blobs().items():
            self.blobs.setdefault(repo, {})[digest] = data
        return f"{self.host}/{repo}:{tag}"

    def put_manifest(self, repo: str, tag: str | None, body: bytes, media_type: str) -> None:
        refs = self.manifests.setdefault(repo, {})
        refs[sha256(body)] = (body, media_type)
        if tag:
            refs[tag] = (body, media_type)

    def start(self) -> HostileRegistry:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seen(self, pattern: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if re.search(pattern, f"{s.method} {s.path}")]

    # -- answering ---------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        req = Request(handler, self)
        with self._lock:
            self.requests.append(Seen(req.method, req.path, {k: v for k, v in handler.headers.items()},
                                      handler.client_address[0]))
        if self.hook is not None and self.hook(req):
            return
        if not self._authorized(req):
            return
        if req.path in ("/v2", "/v2/"):
            req.send(200, b"{}", {"Content-Type": "application/json",
                                  "Docker-Distribution-Api-Version": "registry/2.0"})
            return
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", req.path)
        if not m:
            req.send(404, _error("NAME_UNKNOWN"), {"Content-Type": "application/json"})
            return
        repo, kind, ref = m.groups()
        if kind == "manifests":
            found = self.manifests.get(repo, {}).get(ref)
            if found is None:
                req.send(404, _error("MANIFEST_UNKNOWN"), {"Content-Type": "application/json"})
                return
            body, media_type = found
            req.send(200, body, {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)})
            return
        data = self.blobs.get(repo, {}).get(ref)
        if data is None:
            req.send(404, _error("BLOB_UNKNOWN"), {"Content-Type": "application/json"})
            return
        send_blob(req, data, ref)

    def _authorized(self, req: Request) -> bool:
        given = req.headers.get("Authorization", "")
        if self.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if given != expected:
                req.send(401, _error("UNAUTHORIZED"), {"WWW-Authenticate": 'Basic realm="hostile"',
                                                       "Content-Type": "application/json"})
                return False
        if self.bearer is not None and given != f"Bearer {self.bearer['token']}":
            challenge = f'Bearer realm="{self.bearer["realm"]}",service="{self.bearer.get("service", "hostile")}"'
            m = re.match(r"^/v2/(.+)/(manifests|blobs)/", req.path)
            if m:
                challenge += f',scope="repository:{m.group(1)}:pull"'
            req.send(401, _error("UNAUTHORIZED"), {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
            return False
        return True


def _error(code: str) -> bytes:
    return canonical({"errors": [{"code": code, "message": code.lower().replace("_", " ")}]})


def send_blob(req: Request, data: bytes, digest: str) -> None:
    """A blob, honouring `Range: bytes=N-` (206) so a client may resume."""
    headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest,
               "Accept-Ranges": "bytes"}
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
    if m:
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else len(data) - 1
        if start >= len(data) or end < start:
            req.send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        end = min(end, len(data) - 1)
        req.send(206, data[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        return
    req.send(200, data, headers)


# -- canned hooks --------------------------------------------------------------------------------
def huge_manifest(size: int = 100 << 20, chunk: int = 1 << 16) -> Hook:
    """Every manifest GET streams `size` bytes (a JSON opening, then blanks) with Content-Length.

    The registry's stats get `manifest_bytes_sent`, `manifest_size` and `manifest_client_stopped`
    (True if the client closed the connection before the end).
    """
    opening = b'{"schemaVersion":2,"mediaType":"' + MANIFEST.encode() + b'","layers":['
    blanks = b" " * chunk

    def hook(req: Request) -> bool:
        if not re.fullmatch(r"/v2/.+/manifests/[^/]+", req.path) or req.method != "GET":
            return False
        stats = req.registry.stats
        stats["manifest_size"] = size
        stats.setdefault("manifest_bytes_sent", 0)
        req.send_head(200, {"Content-Type": MANIFEST, "Content-Length": str(size)})
        sent = 0
        if not req.write(opening):
            stats["manifest_client_stopped"] = True
            return True
        sent += len(opening)
        while sent < size:
            n = min(chunk, size - sent)
            if not req.write(blanks[:n]):
                stats["manifest_client_stopped"] = True
                break
            sent += n
            stats["manifest_bytes_sent"] = sent
        else:
            stats["manifest_client_stopped"] = False
        stats["manifest_bytes_sent"] = sent
        return True

    return hook


def redirect_blobs(target: str, status: int = 307) -> Hook:
    """Every blob GET is redirected to `target` + the same path (another host)."""

    def hook(req: Request) -> bool:
        if req.method == "GET" and re.fullmatch(r"/v2/.+/blobs/sha256:[0-9a-f]{64}", req.path):
            if not req.registry._authorized(req):
                return True
            req.send(status, b"", {"Location": f"{target}{req.path}"})
            return True
        return False

    return hook


def stall(pattern: str = r".*") -> Hook:
    """Requests whose path matches: read, then never answered."""

    def hook(req: Request) -> bool:
        if re.fullmatch(pattern, req.path):
            req.stall()
            return True
        return False

    return hook


def cut_blob(digest: str, fraction: float = 0.5, times: int = 1) -> Hook:
    """The first `times` GETs of blob `digest` promise its full length, send `fraction` of it, and
    close; later GETs (and Range GETs) are answered normally."""
    state = {"cut": 0}

    def hook(req: Request) -> bool:
        if req.method != "GET" or not req.path.endswith(f"/blobs/{digest}") or state["cut"] >= times:
            return False
        if not req.registry._authorized(req):
            return True
        repo = req.path[len("/v2/"):].rsplit("/blobs/", 1)[0]
        data = req.registry.blobs[repo][digest]
        if req.headers.get("Range"):
            return False
        state["cut"] += 1
        req.registry.stats["cuts"] = state["cut"]
        req.send_head(200, {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                            "Docker-Content-Digest": digest, "Accept-Ranges": "bytes"})
        req.write(data[: int(len(data) * fraction)])
        req.drop()
        return True

    return hook


def token_service(token: str, answer: str = "ok") -> Hook:
    """A bearer token endpoint at /token: `ok` (a token), `junk` (not JSON), `empty` (JSON without a
    token), `500`, `html-401`."""

    def hook(req: Request) -> bool:
        if not req.path.startswith("/token"):
            return False
        if answer == "ok":
            req.send(200, canonical({"token": token, "expires_in": 300}), {"Content-Type": "application/json"})
        elif answer == "junk":
            req.send(200, b"\x89PNG\r\n\x1a\n not json", {"Content-Type": "application/json"})
        elif answer == "empty":
            req.send(200, b'{"token": ""}', {"Content-Type": "application/json"})
        elif answer == "500":
            req.send(500, b"boom", {"Content-Type": "text/plain"})
        else:
            req.send(401, b"<html>no</html>", {"Content-Type": "text/html"})
        return True

    return hook


def chain(*hooks: Hook) -> Hook:
    """The first hook that answers wins."""

    def hook(req: Request) -> bool:
        return any(h(req) for h in hooks)

    return hook
