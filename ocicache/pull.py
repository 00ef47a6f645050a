"""`ocicache pull REF DIR`: the cache image's filesystem into a uv cache directory, verified.

Every layer is extracted into a staging directory inside DIR while both its digest and diff_id are
checked; only when every layer verified are the files moved into place (merging with what DIR
already holds), so wrong bytes from a registry never reach the cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import oci
from .dest.options import RegistryOptions
from .endpoints import Endpoints
from .errors import OcicacheError
from .image import open_image
from .unpack import check_links_inside, extract_members

__all__ = ["pull"]


def pull(value: str, directory: Path, options: RegistryOptions | None = None,
         platform: str | None = None, require_key: Path | None = None) -> dict[str, Any]:
    """`require_key`: refuse an image not signed by this public key, before reading any layer."""
    if directory.exists() and not directory.is_dir():
        raise OcicacheError(f"{directory}: exists and is not a directory")
    created = not directory.exists()
    with Endpoints(options or RegistryOptions()) as endpoints:
        source, tag, ref = endpoints.source(value)
        image = open_image(source, tag, str(ref), platform)
        if require_key is not None:  # before anything is written, let alone a layer read
            from .verify import require_signature

            require_signature(image, require_key)
        if image.venv_only:
            flag, how = (("--venv-archives", f"bind-mount it and extract {image.venv_archives[:100]}/*.tar")
                         if image.venv_archives else ("--venv-only", "build FROM it"))
            raise OcicacheError(f"{ref}: holds the environment at {image.annotations.get(oci.A_STACK_VENV, '?')[:100]} "
                                f"and no uv cache (push {flag}): {how}; there is nothing to pull")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=directory, prefix=".ocicache-pull-"))
        except OSError as exc:
            raise OcicacheError(f"{directory}: cannot write: {exc.strerror}") from None
        try:
            # A stacked image (push --base): only the cache's layers, out of the directory they sit under.
            downloaded = 0
            layers = image.cache_layers()
            for layer in layers:
                with image.open_layer(layer) as tf:
                    extract_members(tf, staging, f"{ref} layer {layer.digest}", strip=image.stack_root)
                downloaded += layer.size
            files = _merge(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(directory, ignore_errors=True)  # nothing of a failed pull stays behind
            raise
        shutil.rmtree(staging, ignore_errors=True)
    pulled = len(layers)
    desc = image.descriptor
    return {"reference": str(ref), "manifest_digest": str(desc.digest), "directory": str(directory),
            "layers": pulled, "files": files, "bytes": downloaded}


def _merge(staging: Path, directory: Path) -> int:
    """Move staged entries into `directory`; existing directories are merged, files replaced."""
    moved = 0
    links: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(staging):
        rel = os.path.relpath(dirpath, staging)
        target_dir = directory if rel == "." else directory / rel
        if target_dir.is_symlink() or (target_dir.exists() and not target_dir.is_dir()):
            raise OcicacheError(f"{target_dir}: exists and is not a directory; not overwriting it")
        target_dir.mkdir(exist_ok=True)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            dest = target_dir / name
            if dest.is_dir() and not dest.is_symlink():
                raise OcicacheError(f"{dest}: is a directory; the image has a file there")
            os.replace(os.path.join(dirpath, name), dest)
            if dest.is_symlink():
                links.append(dest)
            moved += 1
    check_links_inside(directory, links, f"{directory}")  # against what the directory already held
    return moved
