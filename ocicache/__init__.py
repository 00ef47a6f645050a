"""ocicache: a uv.lock → a deterministic, per-package uv-cache OCI image."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
