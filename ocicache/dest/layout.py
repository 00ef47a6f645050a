"""An OCI image layout directory (skopeo's `oci:DIR[:TAG]`) as a destination and a source.

Atomicity: every blob is written to a temporary file in `blobs/sha256/`, verified and renamed to its
digest, so a blob path only ever holds verified bytes. Before `index.json` is replaced (last, by
rename), one `syncfs` makes every blob and every rename durable: one filesystem sync per write
instead of one fsync per blob, and `index.json` never names a blob a power loss could take back.
A layout that does not exist yet is built in a sibling staging directory and renamed into place at
the end, so a failed first push leaves nothing behind; one killed midway leaves its staging directory,
whose verified blobs the next writer adopts. Writers of one layout are serialised with an flock on the
directory; two first writers at once both land (the later one's blobs and tags move into the layout
the earlier one created).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .. import oci
from ..errors import LayoutError
from ..oci import Descriptor, Digest, canonical_json

__all__ = ["Layout", "open_layout_for_write"]

_OCI_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})
_COPY_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path`: data, inodes and directory entries (Linux syncfs(2);
    elsewhere sync(2))."""
    import ctypes
    import ctypes.util

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        syncfs = getattr(libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class Layout:
    """A layout directory that exists (or is being staged)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- reading ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path) -> Layout:
        if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
            raise LayoutError(f"{path}: not an OCI image layout (no oci-layout and index.json)")
        return cls(path)

    def blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / "sha256" / digest.hex

    def read_index(self) -> dict[str, Any]:
        path = self.path / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": oci.INDEX_MEDIA_TYPE, "manifests": []}
        try:
            index = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:
            raise LayoutError(f"{path}: unreadable index.json ({str(exc)[:200]})") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise LayoutError(f"{path}: index.json has no manifests list")
        for entry in index["manifests"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("annotations", {}), dict):
                raise LayoutError(f"{path}: index.json has an entry that is not a descriptor")
        return index

    def tags(self) -> list[str]:
        return sorted(str(m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION))
                      for m in self.read_index()["manifests"]
                      if m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION))

    def resolve(self, tag: str) -> Descriptor:
        found = self.get_manifest(tag)
        if found is not None:
            return found[0]
        known = ", ".join(self.tags()) or "none"
        raise LayoutError(f"{self.path}: no tag {tag!r} (tags: {known})")

    def get_manifest(self, ref: str) -> tuple[Descriptor, bytes] | None:
        """The manifest at a tag or digest, or None if the layout has no such tag."""
        if ref.startswith("sha256:"):
            digest = Digest(ref)
            if not self.has_blob(digest):
                return None
            body = self.read_blob(digest, limit=oci.MAX_MANIFEST_BYTES)
            try:
                media_type = str(json.loads(body).get("mediaType") or oci.MANIFEST_MEDIA_TYPE)
            except (ValueError, AttributeError):
                raise LayoutError(f"{self.path}: {ref} is not a JSON document") from None
            return Descriptor(media_type=media_type, digest=digest, size=len(body)), body
        else:
            entry = next((m for m in self.read_index()["manifests"]
                          if m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION) == ref), None)
            try:
                desc = Descriptor.from_json(entry) if entry is not None else None
            except (KeyError, TypeError, ValueError):
                raise LayoutError(f"{self.path}: index.json's entry for {ref!r} is not a valid descriptor") from None
        if desc is None:
            return None
        return desc, self.read_blob(desc.digest, limit=oci.MAX_MANIFEST_BYTES)

    def open_blob(self, digest: Digest) -> BinaryIO:
        """The blob's file; only a regular file counts (never a FIFO, a device or a directory that
        a hostile layout put at a blob's path)."""
        path = self.blob_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: blob {digest} is missing") from None
        except OSError as exc:
            raise LayoutError(f"{self.path}: blob {digest} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LayoutError(f"{self.path}: blob {digest} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def __str__(self) -> str:
        return f"oci:{self.path}"

    def read_blob(self, digest: Digest, limit: int = 64 << 20) -> bytes:
        """Read a small blob (manifest, config) and verify its digest."""
        with self.open_blob(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"{self.blob_path(digest)}: blob larger than {limit} bytes where a document was expected")
        if Digest.of(data) != digest:
            raise LayoutError(f"{self.path}: blob {digest} does not match its digest")
        return data

    # -- writing (the Destination protocol) --------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def put_blob(self, desc: Descriptor, open_blob: Callable[[], BinaryIO]) -> None:
        blobs = self.path / "blobs" / "sha256"
        fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".tmp-")
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, open_blob() as src:
                while chunk := src.read(_COPY_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if h.hexdigest() != desc.digest.hex or size != desc.size:
                raise LayoutError(f"blob {desc.digest}: content does not match its descriptor")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(desc.digest))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_blob_file(self, desc: Descriptor, path: Path) -> None:
        """Move a freshly packed blob in (same filesystem) or copy it; the caller's file is consumed."""
        dest = self.blob_path(desc.digest)
        try:
            os.chmod(path, 0o644)
            os.replace(path, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise LayoutError(f"cannot write {dest}: {exc.strerror}") from None
            self.put_blob(desc, lambda: open(path, "rb"))  # noqa: SIM115 (an opener)

    def put_manifest(self, desc: Descriptor, body: bytes, *, tag: str | None = None) -> None:
        import io

        if not self.has_blob(desc.digest):
            self.put_blob(desc, lambda: io.BytesIO(body))
        if tag is None:
            return  # a manifest an index refers to: a blob, not an entry of index.json
        index = self.read_index()
        entry = desc.to_json()
        entry["annotations"] = {**entry.get("annotations", {}), oci.REF_NAME_ANNOTATION: tag}
        index["manifests"] = [m for m in index["manifests"]
                              if m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION) != tag]
        index["manifests"].append(entry)
        index.setdefault("schemaVersion", 2)
        index["mediaType"] = oci.INDEX_MEDIA_TYPE
        _syncfs(self.path)  # every blob and rename durable before the tag names them
        self._replace_file("index.json", canonical_json(index))

    def _replace_file(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path / name)
            _fsync_dir(self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def check_writable(path: Path) -> None:
    """Fail early (before any download) if a layout cannot be written at `path`."""
    if path.exists():
        if not path.is_dir():
            raise LayoutError(f"{path}: exists and is not a directory")
        if any(path.iterdir()) and not (path / "oci-layout").is_file():
            raise LayoutError(f"{path}: exists, is not empty and is not an OCI image layout")
        probe = path
    else:
        probe = path.parent if str(path.parent) else Path(".")
        if not probe.is_dir():
            raise LayoutError(f"{path}: parent directory {probe} does not exist")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LayoutError(f"{path}: permission denied (cannot write in {probe})")


_PARTIAL = ".ocicache-partial-"
_NEW = ".ocicache-new-"
_UNBORN_AFTER_S = 60.0


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on directory `path`, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _claim_partial(path: Path) -> tuple[Path, int]:
    """A staging directory for a new layout at `path`, locked: a staging directory an interrupted
    first push left behind (its blobs are verified, so a re-run reuses them), else a new one."""
    parent = path.parent if str(path.parent) else Path(".")
    for unborn in parent.glob(f".{path.name}{_NEW}*"):
        # a writer killed between making its directory and renaming it (a live one takes microseconds)
        with contextlib.suppress(OSError):
            if time.time() - unborn.lstat().st_mtime > _UNBORN_AFTER_S:
                unborn.rmdir()  # only ever empty: blobs are written after the rename
    for stale in sorted(parent.glob(f".{path.name}{_PARTIAL}*")):
        fd = _try_lock(stale)
        if fd is not None:
            return stale, fd
    # Made under a name no writer claims, locked, then renamed (the lock follows the directory):
    # a writer looking for stale staging directories never takes one that is being born.
    fresh = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}{_NEW}"))
    fd = _try_lock(fresh)
    assert fd is not None  # nobody else knows its name yet
    staged = fresh.with_name(fresh.name.replace(_NEW, _PARTIAL, 1))
    os.rename(fresh, staged)
    return staged, fd


def _drop_temporaries(layout: Path) -> None:
    """Half-written blobs of a writer that was killed (we hold the lock: nobody is writing them)."""
    for tmp in (layout / "blobs" / "sha256").glob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _adopt(staged: Path, path: Path) -> None:
    """Another first push created `path` while we staged ours: move our blobs and tags into it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        into = Layout.open(path)
        for blob in (staged / "blobs" / "sha256").iterdir():
            if not blob.name.startswith(".") and not (path / "blobs" / "sha256" / blob.name).exists():
                os.replace(blob, path / "blobs" / "sha256" / blob.name)
        ours = Layout(staged).read_index()["manifests"]
        index = into.read_index()
        tags = {m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION) for m in ours}
        index["manifests"] = [m for m in index["manifests"]
                              if m.get("annotations", {}).get(oci.REF_NAME_ANNOTATION) not in tags] + ours
        _syncfs(path)
        into._replace_file("index.json", canonical_json(index))
    finally:
        os.close(fd)
    shutil.rmtree(staged, ignore_errors=True)


@contextlib.contextmanager
def open_layout_for_write(path: Path) -> Iterator[Layout]:
    """Yield a writable Layout; a new one appears at `path` only if the block completes.

    Writers exclude each other with an flock on the layout directory (on the staging directory for a
    layout that does not exist yet; two first pushes at once both land, the second adopted into the
    first's layout).
    """
    check_writable(path)
    created = not path.exists() or not (path / "oci-layout").is_file()
    if created:
        target, fd = _claim_partial(path)
    else:
        target = path
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if created:
            (target / "oci-layout").write_bytes(_OCI_LAYOUT)
        _drop_temporaries(target)
        yield Layout(target)
        if created:  # still locked: the lock follows the directory to its new name
            os.chmod(target, 0o755)
            try:
                os.rename(target, path)  # replaces an empty directory the user made for us, atomically
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (path / "oci-layout").is_file():
                    raise
                _adopt(target, path)
            _fsync_dir(path.parent if str(path.parent) else Path("."))
    except OSError as exc:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise LayoutError(f"cannot write layout {path}: {exc.strerror or exc}") from None
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        os.close(fd)
