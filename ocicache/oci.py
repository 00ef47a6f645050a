"""OCI value types: digests, descriptors, canonical JSON, media types and annotation keys."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_TAR_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar"  # uncompressed

# distribution refuses bigger manifests; a reader stops there instead of holding whatever it is sent
MAX_MANIFEST_BYTES: Final = 4 << 20

REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"
# Our own annotations; docs/image-format.md describes each one.
ANNOTATION_PREFIX: Final = "dev.ocicache."
A_VERSION: Final = "dev.ocicache.version"
A_UV_VERSION: Final = "dev.ocicache.uv.version"
A_CACHE_FORMAT: Final = "dev.ocicache.uv.cache-format"
A_UV_RELEASES: Final = "dev.ocicache.uv.releases"
A_CONSUMER_CACHE_DIR: Final = "dev.ocicache.consumer.cache-dir"
A_STACK_ROOT: Final = "dev.ocicache.stack.root"  # --base: the cache's directory inside the image
A_STACK_BASE: Final = "dev.ocicache.stack.base"  # --base: the base image, as REF@DIGEST
A_STACK_VENV: Final = "dev.ocicache.stack.venv"  # --venv: the environment installed in the image
A_STACK_VENV_ONLY: Final = "dev.ocicache.stack.venv-only"  # --venv-only: "true", the image holds no cache
A_STACK_VENV_ARCHIVES: Final = "dev.ocicache.stack.venv-archives"  # --venv-archives: where the tars are
A_TARGET_PLATFORM: Final = "dev.ocicache.target.platform"
A_TARGET_PYTHON: Final = "dev.ocicache.target.python"
A_TARGET_PYTHON_PLATFORM: Final = "dev.ocicache.target.python-platform"
A_COMPRESSION: Final = "dev.ocicache.compression"
A_BYTECODE: Final = "dev.ocicache.bytecode"  # --compile-bytecode: the compiling interpreter, e.g. cpython-3.11.7
A_SKIPPED: Final = "dev.ocicache.skipped"
A_LAYER_KIND: Final = "dev.ocicache.layer.kind"
A_LAYER_KEY: Final = "dev.ocicache.layer.key"
A_LAYER_DIFF_ID: Final = "dev.ocicache.layer.diff-id"
A_LAYER_PACKAGES: Final = "dev.ocicache.layer.packages"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A sha256 content digest, parsed once ("sha256:<64 hex>")."""

    value: str

    def __post_init__(self) -> None:
        if not _DIGEST_RE.match(self.value):
            raise ValueError(f"not a sha256 digest: {self.value!r}")

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hex(cls, hexdigest: str) -> Digest:
        return cls("sha256:" + hexdigest)

    @property
    def hex(self) -> str:
        return self.value.split(":", 1)[1]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(obj["mediaType"]),
            digest=Digest(str(obj["digest"])),
            size=int(obj["size"]),
            annotations={str(k): str(v) for k, v in (obj.get("annotations") or {}).items()},
            platform=obj.get("platform"),
        )


def canonical_json(obj: Any) -> bytes:
    """The one JSON encoding we write: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
