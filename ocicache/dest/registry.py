"""An OCI distribution registry over httpx: a destination and an image source.

Upload of one blob is a unit that is retried whole (ggcr's `uploadOne`): HEAD (skip if present),
POST (optionally a cross-repository mount, falling back to the upload session the registry opens,
or to a plain upload when it answers 401/403/404 for the source), then a streamed PUT `?digest=`,
or PATCH chunks for big blobs or when the registry asks for a minimum chunk length. An interrupted
chunked upload resumes from the offset the registry reports (GET on the session). Transient failures
(connection errors, 5xx, 429) are retried with exponential backoff, honouring Retry-After. Manifests
are written only by `dest.write_image`, after every blob exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import httpx

from .. import oci
from ..auth import RegistryAuth, is_loopback, load_credentials
from ..errors import DestinationError
from ..oci import Descriptor, Digest
from .options import RegistryOptions

__all__ = ["Registry", "RegistryClient", "RegistryError", "RegistryOptions"]

T = TypeVar("T")
_ERROR_BODY_LIMIT = 64 * 1024
_STREAM_CHUNK = 4 << 20
_MAX_RETRY_AFTER = 60.0
ACCEPT_MANIFESTS = ", ".join([oci.MANIFEST_MEDIA_TYPE, oci.INDEX_MEDIA_TYPE,
                              "application/vnd.docker.distribution.manifest.v2+json",
                              "application/vnd.docker.distribution.manifest.list.v2+json"])


class RegistryError(DestinationError):
    """A registry said no. `temporary` errors are retried; the message never holds a secret."""

    def __init__(self, message: str, *, status: int | None = None, codes: tuple[str, ...] = (),
                 temporary: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes
        self.temporary = temporary
        self.retry_after = retry_after


def _redact(url: httpx.URL | str) -> str:
    """Path only: upload locations carry opaque state, and URLs may carry credentials."""
    u = httpx.URL(str(url))
    return f"{u.host}{':' + str(u.port) if u.port else ''}{u.path}"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        return None


def check_response(resp: httpx.Response, *expected: int, what: str) -> httpx.Response:
    """The only place a status becomes an error (ggcr's transport.CheckError)."""
    if resp.status_code in expected:
        return resp
    codes: tuple[str, ...] = ()
    detail = ""
    try:
        body = resp.read()[:_ERROR_BODY_LIMIT]  # already read for plain responses; reads a stream
        errors = json.loads(body).get("errors") or []
        codes = tuple(str(e.get("code")) for e in errors)
        detail = "; ".join(str(e.get("message")) for e in errors if e.get("message"))
    except Exception:
        pass
    status = resp.status_code
    temporary = status >= 500 or status == 429
    challenge = resp.headers.get("www-authenticate", "")
    rights = "pull" if resp.request.method in ("GET", "HEAD") else "push"
    if status == 401 and 'error="insufficient_scope"' in challenge:
        hint = f"access denied (the credentials have no {rights} rights to this repository)"
    elif status == 401:
        hint = "authentication failed (check the username and password, or docker login)"
    elif status == 403 or "DENIED" in codes:
        hint = f"access denied (no {rights} rights to this repository?)"
    elif status == 404:
        hint = "not found"
    else:
        hint = f"HTTP {status}"
    extra = f" [{', '.join(codes)}{': ' + detail if detail else ''}]" if codes else ""
    raise RegistryError(f"{what}: {hint}{extra} ({resp.request.method} {_redact(resp.request.url)})",
                        status=status, codes=codes, temporary=temporary, retry_after=_retry_after(resp))


class RegistryClient:
    """One registry host: connection, auth, retries. Thread-safe (one httpx.Client)."""

    def __init__(self, host: str, options: RegistryOptions | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.host = host
        self.options = options or RegistryOptions()
        self._sleep = sleep
        verify: ssl.SSLContext | bool = True
        if self.options.ca_cert is not None:
            if not self.options.ca_cert.is_file():
                raise DestinationError(f"--ca-cert {self.options.ca_cert}: no such file")
            verify = ssl.create_default_context(cafile=str(self.options.ca_cert))
        elif self.options.insecure:
            verify = False
        credentials = load_credentials(host, self.options.username, self.options.password)
        kwargs: dict[str, Any] = {"verify": verify, "timeout": httpx.Timeout(self.options.timeout, connect=15.0),
                                  "follow_redirects": True, "headers": {"User-Agent": "ocicache"}}
        if transport is not None:
            kwargs["transport"] = transport
        limits = httpx.Limits(max_connections=max(8, self.options.jobs * 2))
        self._token_client = httpx.Client(**kwargs)
        self.client = httpx.Client(limits=limits, **kwargs)
        self.client.auth = RegistryAuth(host, credentials, self._token_client)
        self.base = f"https://{host}"
        self._plain_http_allowed = self.options.insecure or is_loopback(host)

    def close(self) -> None:
        self.client.close()
        self._token_client.close()

    # -- transport -------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: picks the scheme (HTTPS, or HTTP where allowed), learns the auth challenge."""
        url = f"{self.base}/v2/"
        try:
            resp = self._send_once("GET", url)
        except httpx.ConnectError as exc:
            if not self._plain_http_allowed or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise self._transport_error(exc, "GET", url) from None
            # --insecure, or a loopback registry (as docker does): fall back to plain HTTP.
            self.base = f"http://{self.host}"
            resp = self._send_once("GET", f"{self.base}/v2/", translate=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "GET", url) from None
        if resp.status_code == 400 and self.base.startswith("http://"):
            raise RegistryError(f"{self.host}: the registry speaks HTTPS; drop --insecure or give --ca-cert")
        check_response(resp, 200, 401, what=f"{self.host}")

    def _transport_error(self, exc: Exception, method: str, url: str) -> RegistryError:
        text = str(exc)
        if isinstance(exc, httpx.ConnectError) and ("Name or service not known" in text
                                                    or "nodename nor servname" in text
                                                    or "Temporary failure in name resolution" in text):
            return RegistryError(f"{self.host}: unknown host (DNS lookup failed)")
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return RegistryError(f"{self.host}: TLS certificate not trusted (pass --ca-cert FILE, or --insecure)")
        return RegistryError(f"{self.host}: {type(exc).__name__} during {method} {_redact(url)}", temporary=True)

    def _send_once(self, method: str, url: str, *, translate: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            if translate:
                raise self._transport_error(exc, method, url) from None
            raise

    def request(self, method: str, url: str, *, what: str, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """A bodyless or replayable request, retried on transient failures."""
        return self.retry(lambda: check_response(self._send_once(method, url, translate=True, **kwargs),
                                                 *expect, what=what), what)

    def retry(self, unit: Callable[[], T], what: str) -> T:
        """Run `unit` until it succeeds, retrying transient failures with backoff."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return unit()
            except RegistryError as exc:
                if not exc.temporary or attempt >= self.options.attempts:
                    if exc.temporary:
                        raise RegistryError(f"{exc} (gave up after {attempt} attempts)", status=exc.status,
                                            codes=exc.codes) from None
                    raise
                delay = exc.retry_after
            except httpx.HTTPError as exc:
                if attempt >= self.options.attempts:
                    raise RegistryError(f"{what}: {type(exc).__name__} (gave up after {attempt} attempts)") from None
                delay = None
            if delay is None:
                delay = self.options.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
            self._sleep(delay)

    def url(self, repo: str, kind: str, ref: str = "") -> str:
        return f"{self.base}/v2/{repo}/{kind}/{ref}"


def _read_range(f: BinaryIO, length: int) -> Iterator[bytes]:
    while length > 0:
        chunk = f.read(min(_STREAM_CHUNK, length))
        if not chunk:
            raise RegistryError("the blob file is shorter than its descriptor")
        length -= len(chunk)
        yield chunk


def _next_link(header: str, base: str) -> str | None:
    """The `rel="next"` target of a Link header (RFC 8288), absolute."""
    m = re.search(r'<([^>]+)>\s*;[^,]*rel="?next"?', header)
    return str(httpx.URL(base + "/").join(m.group(1))) if m else None


def _with_digest(location: str, digest: Digest) -> str:
    """Append `digest=` to an upload location without re-encoding its opaque state parameter
    (httpx's params merging would turn a `+` in distribution's `_state` into a space)."""
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


class _ResponseReader(io.RawIOBase):
    """A streamed blob as a file. A connection lost mid-body is resumed where it stopped, with a
    `Range` request (or, from a registry that ignores ranges, by skipping what was already read),
    up to the client's attempts; then one clear error. The bytes are not verified here: callers
    hash what they read."""

    def __init__(self, client: RegistryClient, url: str, what: str) -> None:
        self._client = client
        self._url = url
        self._what = what
        self._offset = 0
        self._failures = 0
        self._stack = contextlib.ExitStack()
        self._buf = b""
        self._iter = self._open(None)

    def _open(self, offset: int | None) -> Iterator[bytes]:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = self._stack.enter_context(self._client.client.stream("GET", self._url, headers=headers))
            check_response(resp, 200, 206, what=self._what)
        except httpx.HTTPError as exc:
            self._stack.close()
            raise self._client._transport_error(exc, "GET", self._url) from None
        except BaseException:
            self._stack.close()
            raise
        chunks = resp.iter_raw(_STREAM_CHUNK)
        if offset and resp.status_code == 200:  # the whole blob again: skip what we have
            skip = offset
            for chunk in chunks:
                if len(chunk) > skip:
                    self._buf = chunk[skip:]
                    break
                skip -= len(chunk)
        return chunks

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                chunk = next(self._iter, None)
            except httpx.HTTPError as exc:
                self._resume(exc)
                continue
            if chunk is None:
                return 0
            self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._offset += n
        return n

    def _resume(self, exc: httpx.HTTPError) -> None:
        self._failures += 1
        if self._failures >= self._client.options.attempts:
            raise RegistryError(f"{self._what}: the connection kept dropping ({type(exc).__name__} at byte "
                                f"{self._offset}); gave up after {self._failures} attempts")
        self._client._sleep(self._client.options.backoff * (2 ** (self._failures - 1)))
        self._iter = self._client.retry(lambda: self._open(self._offset), self._what)

    def close(self) -> None:
        self._stack.close()
        super().close()


class Registry:
    """One repository of a registry: implements Destination (with mounts) and ImageSource."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.uploaded_bytes = 0

    def __str__(self) -> str:
        return f"{self.client.host}/{self.repository}"

    # -- reading -------------------------------------------------------------------------
    def get_manifest(self, ref: str) -> tuple[Descriptor, bytes] | None:
        """The manifest at a tag or digest, or None if there is none."""
        url = self.client.url(self.repository, "manifests", ref)

        def unit() -> tuple[Descriptor, bytes] | None:
            try:
                with self.client.client.stream("GET", url, headers={"Accept": ACCEPT_MANIFESTS}) as resp:
                    if resp.status_code == 404:
                        return None
                    check_response(resp, 200, what=f"{self}:{ref}")
                    buf = bytearray()
                    for chunk in resp.iter_bytes():
                        buf += chunk
                        if len(buf) > oci.MAX_MANIFEST_BYTES:
                            raise RegistryError(f"{self}:{ref}: the manifest is larger than "
                                                f"{oci.MAX_MANIFEST_BYTES >> 20} MiB; refusing it")
            except httpx.HTTPError as exc:
                raise self.client._transport_error(exc, "GET", url) from None
            body = bytes(buf)
            digest = Digest.of(body)
            if ref.startswith("sha256:") and str(digest) != ref:
                raise RegistryError(f"{self}@{ref}: the registry returned a manifest with another digest")
            media_type = resp.headers.get("content-type", oci.MANIFEST_MEDIA_TYPE).split(";")[0]
            return Descriptor(media_type=media_type, digest=digest, size=len(body)), body

        return self.client.retry(unit, f"{self}:{ref}")

    def resolve(self, tag: str) -> Descriptor:
        found = self.get_manifest(tag)
        if found is None:
            raise RegistryError(f"{self}:{tag}: no such tag or manifest")
        return found[0]

    def read_blob(self, digest: Digest, limit: int = 64 << 20) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(f"{self}@{digest}: blob larger than {limit} bytes where a document was expected")
        if Digest.of(data) != digest:
            raise RegistryError(f"{self}@{digest}: the registry returned bytes that do not match the digest")
        return data

    def open_blob(self, digest: Digest) -> BinaryIO:
        """A streamed blob, resumed if the connection drops; the reader does not verify (callers hash
        what they read)."""
        url = self.client.url(self.repository, "blobs", str(digest))
        what = f"{self}@{digest}"
        return self.client.retry(lambda: io.BufferedReader(_ResponseReader(self.client, url, what), _STREAM_CHUNK),
                                 what)

    def list_tags(self, page: int = 1000) -> list[str] | None:
        """Every tag of the repository, following `Link: <…>; rel="next"` pages; None if the
        repository does not exist."""
        url: str | None = f"{self.client.url(self.repository, 'tags', 'list')}?n={page}"
        tags: list[str] = []
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            resp = self.client.request("GET", url, what=f"{self}: list tags", expect=(200, 404))
            if resp.status_code == 404:
                return tags or None
            try:
                found = resp.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self}: the tag list is not JSON") from None
            tags += [str(t) for t in found if isinstance(t, str)]
            url = _next_link(resp.headers.get("link", ""), self.client.base)
        return tags

    def delete_manifest(self, digest: Digest) -> bool:
        """Delete a manifest (and so every tag naming it); False if it was already gone."""
        resp = self.client.request("DELETE", self.client.url(self.repository, "manifests", str(digest)),
                                   what=f"{self}@{digest}: delete", expect=(202, 200, 404, 405))
        if resp.status_code == 405:
            raise RegistryError(f"{self}: the registry does not allow deletes (distribution: set "
                                "storage.delete.enabled; other registries: see docs/registries.md)")
        return resp.status_code != 404

    # -- writing (Destination) -------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        resp = self.client.request("HEAD", self.client.url(self.repository, "blobs", str(digest)),
                                   what=f"{self}@{digest}", expect=(200, 404))
        return resp.status_code == 200

    def check_push_access(self) -> None:
        """Fail before any work if we cannot push here: open an upload session, then cancel it."""
        location, _ = self._start_upload()
        with contextlib.suppress(httpx.HTTPError, RegistryError):
            self.client._send_once("DELETE", location)

    def _start_upload(self, mount: tuple[Digest, str] | None = None) -> tuple[str, int | None]:
        url = self.client.url(self.repository, "blobs", "uploads/")
        params = {"mount": str(mount[0]), "from": mount[1]} if mount else None
        resp = self.client.request("POST", url, params=params, what=f"{self}: start upload",
                                   expect=(201, 202) if mount else (202,))
        location = resp.headers.get("location")
        if resp.status_code == 201:
            return "", None
        if not location:
            raise RegistryError(f"{self}: the registry opened an upload without a Location")
        min_chunk = resp.headers.get("oci-chunk-min-length")
        return str(httpx.URL(self.client.base + "/").join(location)), int(min_chunk) if min_chunk else None

    def mount_blob(self, desc: Descriptor, from_repo: str) -> bool:
        """Cross-repository mount. True if mounted; False if the registry would not (upload instead)."""
        try:
            location, _ = self._start_upload((desc.digest, from_repo))
        except RegistryError as exc:
            if exc.status in (401, 403, 404):  # e.g. Harbor: a source project we cannot read
                return False
            raise
        if location:  # 202: an ordinary upload session instead; we do not need it
            with contextlib.suppress(httpx.HTTPError, RegistryError):
                self.client._send_once("DELETE", location)
            return False
        return True

    def put_blob(self, desc: Descriptor, open_blob: Callable[[], BinaryIO]) -> None:
        self.client.retry(lambda: self._upload_once(desc, open_blob), f"{self}@{desc.digest}")

    def _upload_once(self, desc: Descriptor, open_blob: Callable[[], BinaryIO]) -> None:
        location, min_chunk = self._start_upload()
        if desc.size > self.options.chunked_above or min_chunk:
            self._upload_chunked(desc, open_blob, location, max(self.options.chunk_size, min_chunk or 0))
            return
        with open_blob() as f:
            resp = self.client._send_once(
                "PUT", _with_digest(location, desc.digest), translate=True,
                content=self._counted(iter(lambda: f.read(_STREAM_CHUNK), b"")),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)})
        check_response(resp, 201, what=f"{self}@{desc.digest}: upload")

    @property
    def options(self) -> RegistryOptions:
        return self.client.options

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.uploaded_bytes += len(chunk)
            yield chunk

    def _upload_chunked(self, desc: Descriptor, open_blob: Callable[[], BinaryIO], location: str,
                        chunk_size: int) -> None:
        """PATCH the blob in chunks, each streamed from the file (memory stays at one read buffer);
        after a failure, ask the session where it stands and go on from there."""
        offset, resumes = 0, 0
        with open_blob() as f:
            if not f.seekable():
                raise RegistryError(f"{self}@{desc.digest}: chunked upload needs a seekable source")
            while offset < desc.size:
                length = min(chunk_size, desc.size - offset)
                f.seek(offset)
                try:
                    resp = self.client._send_once(
                        "PATCH", location, content=self._counted(_read_range(f, length)),
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": f"{offset}-{offset + length - 1}",
                                 "Content-Length": str(length)})
                    check_response(resp, 202, what=f"{self}@{desc.digest}: upload chunk")
                except (httpx.TransportError, RegistryError) as exc:
                    if isinstance(exc, RegistryError) and not exc.temporary:
                        raise
                    resumes += 1
                    if resumes > self.options.attempts:
                        raise RegistryError(f"{self}@{desc.digest}: upload kept failing", temporary=True) from None
                    self.client._sleep(self.options.backoff * resumes)
                    offset, location = self._upload_status(location, desc)
                    continue
                offset += length
                location = str(httpx.URL(self.client.base + "/").join(resp.headers.get("location", location)))
        resp = self.client._send_once("PUT", _with_digest(location, desc.digest), translate=True,
                                      headers={"Content-Length": "0"})
        check_response(resp, 201, what=f"{self}@{desc.digest}: finish upload")

    def _upload_status(self, location: str, desc: Descriptor) -> tuple[int, str]:
        """Where an interrupted upload session stands (GET on it): resume from the next byte."""
        resp = self.client._send_once("GET", location, translate=True)
        if resp.status_code != 204:
            raise RegistryError(f"{self}@{desc.digest}: upload session lost; starting over", temporary=True)
        m = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("range", ""))
        offset = int(m.group(1)) + 1 if m else 0
        return offset, str(httpx.URL(self.client.base + "/").join(resp.headers.get("location", location)))

    def put_manifest(self, desc: Descriptor, body: bytes, *, tag: str | None = None) -> None:
        ref = tag or str(desc.digest)
        url = self.client.url(self.repository, "manifests", ref)
        what = f"{self}:{ref}: write manifest"

        def unit() -> httpx.Response:
            resp = self.client._send_once("PUT", url, translate=True, content=body,
                                          headers={"Content-Type": desc.media_type})
            try:
                return check_response(resp, 201, 200, what=what)
            except RegistryError as exc:
                if "MANIFEST_BLOB_UNKNOWN" in exc.codes:
                    # Every blob was confirmed before this PUT. distribution's filesystem driver
                    # rewrites a blob's repository link in place when two pushes commit the same
                    # blob at once, and for that moment the blob reads as unknown: try again.
                    exc.temporary = True
                raise

        resp = self.client.retry(unit, what)
        returned = resp.headers.get("docker-content-digest")
        if returned and returned != str(desc.digest):
            raise RegistryError(f"{self}:{ref}: the registry stored the manifest under {returned}, "
                                f"expected {desc.digest}")
