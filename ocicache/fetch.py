"""The index edge: download wheels the lock pins, each checked against the lock's sha256 and size.

Only what needs nothing uv knows better: plain http(s) URLs, with the credentials uv would use for
their realm if any (index_credentials.py: `UV_INDEX_<NAME>_USERNAME/PASSWORD`, netrc; a redirect to
another origin, as indexes that keep their files elsewhere answer, gets none). Any failure (401,
404, a dropped connection after retries, a hash mismatch) is returned, not raised: the caller hands
that wheel to uv, which has its own authentication, retries and error messages for it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported when wheels are downloaded: a push that reuses everything never needs it
    import httpx

    from .index_credentials import IndexCredentials

__all__ = ["Download", "fetch_all", "fetchable"]

_CHUNK = 1 << 20
_ATTEMPTS = 3
_JOBS = 8  # uv opens about as many connections to an index


@dataclass(frozen=True, slots=True)
class Download:
    url: str
    sha256: str
    size: int | None
    dest: Path


def fetchable(url: str | None) -> bool:
    """A URL ocicache downloads itself (anything else is uv's to fetch)."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and "@" not in parts.netloc and bool(parts.hostname)


def fetch_all(downloads: list[Download], on_done: Callable[[str, str | None], None] = lambda _sha, _outcome: None,
              stop: threading.Event | None = None,
              credentials: IndexCredentials | None = None) -> dict[str, str | None]:
    """Download each to its `dest`; by sha256, None when it arrived intact, else why not.
    `on_done(sha256, outcome)` as each finishes (from a worker thread). Once `stop` is set, what is
    left ends at once with the outcome "stopped" (the push failed elsewhere)."""
    if not downloads:
        return {}
    import httpx

    with httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0), follow_redirects=True, max_redirects=5) as client, \
            ThreadPoolExecutor(max_workers=min(_JOBS, len(downloads)), thread_name_prefix="ocicache-fetch") as pool:
        def one(d: Download) -> tuple[str, str | None]:
            try:
                outcome = _fetch(client, d, stop or threading.Event(), credentials)
            except Exception as exc:  # whatever it is, uv gets the wheel instead
                outcome = type(exc).__name__
            on_done(d.sha256, outcome)
            return d.sha256, outcome

        return dict(pool.map(one, downloads))


def _fetch(client: httpx.Client, d: Download, stop: threading.Event,
           credentials: IndexCredentials | None = None) -> str | None:
    import httpx

    found = credentials.for_url(d.url) if credentials else None
    auth = httpx.BasicAuth(*found) if found else None

    part = d.dest.with_name(d.dest.name + ".part")
    last = "not tried"
    for _attempt in range(_ATTEMPTS):
        if stop.is_set():
            part.unlink(missing_ok=True)
            return "stopped"
        try:
            digest, size = _stream(client, d.url, part, stop, auth)
        except httpx.HTTPStatusError as exc:
            return f"HTTP {exc.response.status_code}"
        except (httpx.TransportError, OSError) as exc:
            last = type(exc).__name__
            continue
        if digest != d.sha256 or (d.size is not None and size != d.size):
            part.unlink(missing_ok=True)
            return "its sha256 or size is not the lock's"
        os.replace(part, d.dest)
        return None
    part.unlink(missing_ok=True)
    return last


def _stream(client: httpx.Client, url: str, part: Path, stop: threading.Event,
            auth: httpx.Auth | None = None) -> tuple[str, int]:
    import httpx

    h = hashlib.sha256()
    size = 0
    with client.stream("GET", url, auth=auth) as response:
        response.raise_for_status()
        if response.status_code != 200:  # a 2xx that is not the file: uv knows what to do
            raise httpx.HTTPStatusError("not 200", request=response.request, response=response)
        with open(part, "wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                if stop.is_set():
                    raise OSError("stopped")
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
    return h.hexdigest(), size
