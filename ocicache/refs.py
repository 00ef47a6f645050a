"""Destination references: `oci:DIR[:TAG]` (an OCI image layout) or `REGISTRY/REPO[:TAG|@DIGEST]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

__all__ = ["DEFAULT_TAG", "LayoutRef", "RegistryRef", "docker_reference", "parse_ref"]

DEFAULT_TAG = "latest"
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True, slots=True)
class LayoutRef:
    path: Path
    tag: str

    def __str__(self) -> str:
        return f"oci:{self.path}:{self.tag}"


@dataclass(frozen=True, slots=True)
class RegistryRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{self.registry}/{self.repository}{suffix}"


def parse_ref(value: str) -> LayoutRef | RegistryRef:
    if value.startswith("oci:"):
        # Like skopeo's oci: transport, the first colon after the path separates the tag.
        path, _, tag = value[4:].partition(":")
        if not path:
            raise UsageError(f"{value!r}: expected oci:DIR[:TAG]")
        tag = tag or DEFAULT_TAG
        if not _TAG_RE.match(tag):
            raise UsageError(f"{value!r}: invalid tag {tag!r}")
        return LayoutRef(Path(path), tag)
    name, digest = value, None
    if "@" in value:
        name, digest = value.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(f"{value!r}: invalid digest {digest!r}")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"{value!r}: invalid tag {tag!r}")
    host, _, repo = name.partition("/")
    if not repo or not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(
            f"{value!r}: expected oci:DIR[:TAG] or REGISTRY/REPOSITORY[:TAG] with a registry host "
            "(e.g. 127.0.0.1:5000/cache/app:main)"
        )
    if not _REPO_RE.match(repo):
        raise UsageError(f"{value!r}: invalid repository name {repo!r} (lowercase letters, digits, . _ - /)")
    return RegistryRef(host, repo, tag if tag or digest else DEFAULT_TAG, digest)


def docker_reference(image: str) -> str:
    """A Dockerfile's image name as a registry reference: `python:3.12` → Docker Hub's `library/python`."""
    name = image.split("@", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        repo = name if "/" in name else f"library/{name}"
        image = f"registry-1.docker.io/{repo}" + image[len(name):]
    elif first == "docker.io":
        image = "registry-1.docker.io" + image[len("docker.io"):]
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return image if ":" in last or "@" in image else image + ":latest"
