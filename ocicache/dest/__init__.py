"""Where images go and come from: small protocols, two implementations (layout, registry).

The order lives here, not in the destinations (as in go-containerregistry's `remote.Write`):
every blob first (concurrently, each digest once), then the config, then the manifest under its
tag, so an interrupted write never leaves a tag pointing at missing data.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from ..assemble import Image
from ..oci import Descriptor, Digest

__all__ = ["BlobOrigin", "Destination", "FileBlobSink", "ImageSource", "Mounter", "WriteReport", "write_image",
           "write_images"]


class Destination(Protocol):
    def has_blob(self, digest: Digest) -> bool: ...
    def put_blob(self, desc: Descriptor, open_blob: Callable[[], BinaryIO]) -> None: ...
    def put_manifest(self, desc: Descriptor, body: bytes, *, tag: str | None = None) -> None: ...


class ImageSource(Protocol):
    def get_manifest(self, ref: str) -> tuple[Descriptor, bytes] | None: ...
    def has_blob(self, digest: Digest) -> bool: ...
    def read_blob(self, digest: Digest, limit: int = ...) -> bytes: ...
    def open_blob(self, digest: Digest) -> BinaryIO: ...


@runtime_checkable
class FileBlobSink(Protocol):
    """Optional fast path: take ownership of a local file holding the blob (e.g. rename it in)."""

    def put_blob_file(self, desc: Descriptor, path: Path) -> None: ...


@runtime_checkable
class Mounter(Protocol):
    """Optional fast path: cross-repository mount within one registry."""

    client: object
    repository: str

    def mount_blob(self, desc: Descriptor, from_repo: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class BlobOrigin:
    """Where a blob's bytes can be had: a local file, or an image source that holds it.

    `source_may_lack`: the source is only a chance (the pool, for a layer packed here that another
    push may have published meanwhile): asked first, and mounted from only if it has the blob.
    `wait_until`: another push is uploading it to that source (an upload claim, pool.py): ask again
    until this `time.monotonic()` deadline before uploading it from `path`."""

    path: Path | None = None
    source: ImageSource | None = None
    source_may_lack: bool = False
    wait_until: float | None = None


Outcome = Literal["present", "mounted", "uploaded"]


@dataclass
class WriteReport:
    outcomes: dict[Digest, Outcome] = field(default_factory=dict)
    sizes: dict[Digest, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    def bytes(self, outcome: Outcome) -> int:
        return sum(self.sizes[d] for d, o in self.outcomes.items() if o == outcome)


def _same_registry(dest: object, source: object) -> bool:
    return isinstance(dest, Mounter) and isinstance(source, Mounter) and \
        getattr(dest.client, "host", None) == getattr(source.client, "host", None)


def _appears(source: ImageSource, digest: Digest, deadline: float | None) -> bool:
    """Whether `source` has the blob, asking again with growing pauses until `deadline`."""
    pause = 0.2
    while not source.has_blob(digest):
        if deadline is None or time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 2.0)
    return True


def put_one(dest: Destination, desc: Descriptor, origin: BlobOrigin) -> Outcome:
    """Make one blob exist at `dest`: already there, mounted, or uploaded from its origin."""
    if dest.has_blob(desc.digest):
        return "present"
    source = origin.source
    if source is not None and _same_registry(dest, source) and (
            not origin.source_may_lack or _appears(source, desc.digest, origin.wait_until)):
        assert isinstance(dest, Mounter) and isinstance(source, Mounter)
        if source.repository == dest.repository or dest.mount_blob(desc, source.repository):
            return "mounted"
    if origin.path is not None:
        if isinstance(dest, FileBlobSink):
            dest.put_blob_file(desc, origin.path)
        else:
            path = origin.path
            dest.put_blob(desc, lambda: open(path, "rb"))  # noqa: SIM115 (an opener)
    elif source is not None and not origin.source_may_lack:
        src = source
        dest.put_blob(desc, lambda: src.open_blob(desc.digest))
    else:
        raise ValueError(f"no origin for blob {desc.digest}")
    return "uploaded"


def write_image(dest: Destination, image: Image, blobs: Iterable[tuple[Descriptor, BlobOrigin]], tag: str,
                *, jobs: int = 4, on_blob: Callable[[Descriptor, Outcome], None] = lambda _d, _o: None
                ) -> WriteReport:
    """Write the layer blobs (concurrently, each digest once), the config, then the manifest."""
    return write_images(dest, [image], blobs, tag, jobs=jobs, on_blob=on_blob)


def write_images(dest: Destination, images: list[Image], blobs: Iterable[tuple[Descriptor, BlobOrigin]], tag: str,
                 *, index: tuple[Descriptor, bytes] | None = None, jobs: int = 4,
                 on_blob: Callable[[Descriptor, Outcome], None] = lambda _d, _o: None) -> WriteReport:
    """Blobs of every image, then their configs, then their manifests; the tag goes last, on the only
    image or on the index over all of them."""
    if index is None and len(images) != 1:
        raise ValueError("several images need an index")
    unique: dict[Digest, tuple[Descriptor, BlobOrigin]] = {}
    for desc, origin in blobs:
        unique.setdefault(desc.digest, (desc, origin))
    report = WriteReport()

    def one(item: tuple[Descriptor, BlobOrigin]) -> None:
        desc, origin = item
        outcome = put_one(dest, desc, origin)
        report.outcomes[desc.digest] = outcome
        report.sizes[desc.digest] = desc.size
        on_blob(desc, outcome)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, unique.values()))  # re-raises the first failure; no manifest then
    for image in images:
        config = image.config_descriptor
        if not dest.has_blob(config.digest):
            dest.put_blob(config, lambda data=image.config: io.BytesIO(data))
    if index is None:
        dest.put_manifest(images[0].manifest_descriptor, images[0].manifest, tag=tag)
        return report
    for image in images:
        dest.put_manifest(image.manifest_descriptor, image.manifest, tag=None)
    dest.put_manifest(index[0], index[1], tag=tag)
    return report
