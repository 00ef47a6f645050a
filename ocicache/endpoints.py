"""References → live sources and destinations, one registry connection per host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .dest import ImageSource
from .dest.layout import Layout
from .dest.options import RegistryOptions
from .refs import LayoutRef, RegistryRef, parse_ref

if TYPE_CHECKING:  # the HTTP stack is imported only when a registry is used
    from .dest.registry import Registry, RegistryClient

__all__ = ["Endpoints"]


@dataclass
class Endpoints:
    options: RegistryOptions = field(default_factory=RegistryOptions)
    _clients: dict[str, RegistryClient] = field(default_factory=dict)

    def client(self, host: str) -> RegistryClient:
        from .dest.registry import RegistryClient

        if host not in self._clients:
            client = RegistryClient(host, self.options)
            client.ping()
            self._clients[host] = client
        return self._clients[host]

    def registry(self, ref: RegistryRef) -> Registry:
        from .dest.registry import Registry

        return Registry(self.client(ref.registry), ref.repository)

    def source(self, value: str) -> tuple[ImageSource, str, LayoutRef | RegistryRef]:
        """An image to read: (source, tag or digest, parsed reference)."""
        ref = parse_ref(value)
        if isinstance(ref, LayoutRef):
            return Layout.open(ref.path), ref.tag, ref
        return self.registry(ref), ref.digest or ref.tag or "latest", ref

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
