"""Images written by hand, byte by byte, without ocicache: what a hostile or foreign producer pushes.

`tar_bytes` builds a layer from (name, kind, data-or-link) members; `write_layout` writes an OCI
layout directory holding one image of such layers under a tag.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path

Member = tuple[str, str, bytes | str]  # (name, "file" | "dir" | "symlink", data or link target)


def tar_bytes(members: Iterable[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(value, bytes)
                info.size = len(value)
                tf.addfile(info, io.BytesIO(value))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = str(value)
                tf.addfile(info)
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(path: Path, tag: str, layer_tars: list[bytes], *, manifest_annotations: dict | None = None,
                 layer_annotations: list[dict] | None = None) -> str:
    """Write an OCI layout with one image; return its manifest digest."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = digest(data)
        (blobs / d.split(":")[1]).write_bytes(data)
        return d

    layers = []
    for i, tar in enumerate(layer_tars):
        blob = gzip.compress(tar, mtime=0)
        ann = (layer_annotations or [{}] * len(layer_tars))[i]
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(blob),
                       "size": len(blob), **({"annotations": ann} if ann else {})})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in layer_tars]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                           "size": len(config)},
                "layers": layers}
    if manifest_annotations:
        manifest["annotations"] = manifest_annotations
    body = json.dumps(manifest).encode()
    manifest_digest = put(body)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                            "size": len(body), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))
    return manifest_digest
