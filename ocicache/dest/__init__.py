"""Where an image goes: one small protocol, two implementations (layout directory; registry next).

The order lives here, not in the destinations (as in go-containerregistry's `remote.Write`):
every blob first, then the config, then the manifest, and the tag last, so an interrupted write
never leaves a tag pointing at missing data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..assemble import Image
from ..oci import Descriptor, Digest

__all__ = ["BlobSource", "Destination", "FileBlobSink", "write_image"]

BlobSource = tuple[Descriptor, Path]


class Destination(Protocol):
    def has_blob(self, digest: Digest) -> bool: ...
    def put_blob(self, desc: Descriptor, open_blob: Callable[[], BinaryIO]) -> None: ...
    def put_manifest(self, desc: Descriptor, body: bytes, *, tag: str | None = None) -> None: ...


@runtime_checkable
class FileBlobSink(Protocol):
    """Optional fast path: take ownership of a local file holding the blob (e.g. rename it in)."""

    def put_blob_file(self, desc: Descriptor, path: Path) -> None: ...


def write_image(dest: Destination, image: Image, blobs: Iterable[BlobSource], tag: str,
                on_blob: Callable[[Descriptor, bool], None] = lambda _d, _new: None) -> None:
    """Write the layer blobs, the config, then the manifest under `tag`."""
    for desc, path in blobs:
        if dest.has_blob(desc.digest):
            on_blob(desc, False)
            continue
        if isinstance(dest, FileBlobSink):
            dest.put_blob_file(desc, path)
        else:
            dest.put_blob(desc, lambda p=path: open(p, "rb"))  # noqa: SIM115 (an opener)
        on_blob(desc, True)
    if not dest.has_blob(image.config_descriptor.digest):
        import io

        dest.put_blob(image.config_descriptor, lambda: io.BytesIO(image.config))
    dest.put_manifest(image.manifest_descriptor, image.manifest, tag=tag)
