"""Registry connection settings, kept apart from the client so that commands working on a layout
directory never import the HTTP stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RegistryOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryOptions:
    insecure: bool = False  # allow plain HTTP (and unverified TLS) for this registry
    ca_cert: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or an error
    jobs: int = 4  # concurrent blob uploads, like ggcr's default
    chunk_size: int = 64 << 20
    # One streamed PUT up to this size (the fastest, and what every registry accepts); PATCH chunks above
    # it, or whenever the registry asks for them (OCI-Chunk-Min-Length).
    chunked_above: int = 4 << 30
    attempts: int = 5
    backoff: float = 0.5
    timeout: float = 120.0
