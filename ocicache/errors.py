"""The one exception hierarchy users see.

    OcicacheError            the CLI prints "ocicache: error: <message>" and exits with .exit_code
      UsageError             a bad option or reference (exit 2)
      LockError              unreadable or unsupported uv.lock (the message names the context path)
      SelectionError         nothing in the lock can be installed on the target
      CacheFormatError       a uv whose cache format ocicache does not know
      DockerfileError        --dockerfile: a build ocicache cannot read or match (names the line and the flag)
      PopulateError          filling or packing the cache failed (uv's last stderr lines, or the file)
      DestinationError       the destination cannot be read or written
        LayoutError          an OCI image layout directory

Anything that is not an OcicacheError is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CacheFormatError",
    "DestinationError",
    "DockerfileError",
    "LayoutError",
    "LockError",
    "OcicacheError",
    "PopulateError",
    "SelectionError",
    "UsageError",
]


class OcicacheError(Exception):
    """An error the user can act on; its message is one line."""

    exit_code = 1


class UsageError(OcicacheError):
    exit_code = 2


class LockError(OcicacheError):
    pass


class SelectionError(OcicacheError):
    pass


class CacheFormatError(OcicacheError):
    pass


class DockerfileError(OcicacheError):
    exit_code = 2


class PopulateError(OcicacheError):
    pass


class DestinationError(OcicacheError):
    pass


class LayoutError(DestinationError):
    pass
