"""A uv cache pointer as plain fields, whatever release wrote it.

uv keeps a `.http` file beside each cached wheel (`wheels-vN/.../<key>.http`) and each sdist
revision (`sdists-vN/.../revision.http`): a msgpack payload naming the archive or revision id and
the artifact's hashes, followed by an archived HTTP cache policy. The payload shape and the framing
changed between releases (one codec module per framing: `rkyv07`, `rkyv08`); the fields did not, so
normalisation reads a pointer into this record and each format family writes it back its own way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from .msgpack import Value

__all__ = ["Pointer", "PointerCodec", "PointerError", "fastid"]

PointerKind = Literal["wheel", "revision"]


class PointerError(ValueError):
    """Not a pointer this codec can read (uv itself would ignore the entry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pointer:
    kind: PointerKind
    id: str  # archive id (wheel) or revision id (sdist)
    hashes: tuple[tuple[str, str], ...]  # (uv's algorithm name, e.g. "Sha256", hex digest)
    uri: str  # the URL the artifact came from: part of the cache policy
    filename: str | None = None  # wheels only
    size: int | None = None

    @property
    def sha256(self) -> str | None:
        return next((digest for alg, digest in self.hashes if alg == "Sha256"), None)

    @classmethod
    def from_payload(cls, value: Value, kind: PointerKind, uri: str) -> Pointer:
        """The fields of uv's `Archive` (wheel) or `Revision` payload, an array or a map."""
        hashes = hashes_from(field(value, 1, "hashes"))
        if kind == "wheel":
            return cls(kind=kind, id=str_field(value, 0, "id"), hashes=hashes, uri=uri,
                       filename=str_field(value, 2, "filename"), size=size_field(value, 4))
        return cls(kind=kind, id=str_field(value, 0, "id"), hashes=hashes, uri=uri, size=size_field(value, 2))

    def canonical(self, new_id: str, size: int | None) -> Pointer:
        """This pointer as every filler uv would have written it: the derived id, and the size the
        lock records (uv 0.9-0.11 leave the size out, 0.12 and 0.13 record the index's)."""
        return replace(self, id=new_id, size=size)


class PointerCodec(Protocol):
    """Reads and writes one framing of `.http` pointers."""

    def read(self, raw: bytes, kind: PointerKind) -> Pointer: ...

    def write(self, pointer: Pointer) -> bytes: ...


def fastid(seed: bytes) -> str:
    """16 chars of uv_fastid's alphabet derived from `seed` (revision ids are validated as fastids)."""
    alphabet = b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return bytes(alphabet[b & 63] for b in hashlib.sha256(seed).digest()[:16]).decode()


def hashes_from(value: Value) -> tuple[tuple[str, str], ...]:
    """uv's hash list: `[["Sha256", hex]]` (rmp_serde before 0.13) or `[{"Sha256": hex}]` (0.13)."""
    if not isinstance(value, list):
        raise PointerError("pointer hashes are not a list")
    out = []
    for item in value:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append((str(item[0]), str(item[1])))
        elif isinstance(item, dict) and len(item) == 1:
            ((alg, digest),) = item.items()
            if not isinstance(digest, str):
                raise PointerError("pointer hash is not a string")
            out.append((alg, digest))
        else:
            raise PointerError("unexpected pointer hash shape")
    return tuple(out)


def field(value: Value, index: int, name: str) -> Value:
    """Field `name` of an rmp_serde struct, written as an array (by position) or a map (by name)."""
    if isinstance(value, dict):
        return value.get(name)
    if isinstance(value, list):
        return value[index] if index < len(value) else None
    raise PointerError("pointer payload is neither an array nor a map")


def str_field(value: Value, index: int, name: str) -> str:
    out = field(value, index, name)
    if not isinstance(out, str):
        raise PointerError(f"pointer field {name} is not a string")
    return out


def size_field(value: Value, index: int) -> int | None:
    out = field(value, index, "size")
    return out if isinstance(out, int) and not isinstance(out, bool) else None
