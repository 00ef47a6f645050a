"""Credentials for the wheels ocicache downloads itself, found where uv finds them.

uv authenticates to a named index (`[[tool.uv.index]]` in the project's pyproject.toml, or
`[[index]]` in its uv.toml) from
`UV_INDEX_<NAME>_USERNAME` / `UV_INDEX_<NAME>_PASSWORD`, and to any host from a netrc file (`NETRC`,
else `~/.netrc`); credentials apply to their realm (scheme, host and port), so files served from the
index's own host get them and files elsewhere do not. ocicache reads the same two sources (not uv's
keyring provider, nor credentials written into the index URL: those stay uv's, and their wheels
uv's to download). The secrets live only in memory, in the Authorization header of requests to
their realm: httpx drops that header on a redirect to another origin. Nothing here logs or formats
them.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .project_settings import uv_settings

__all__ = ["IndexCredentials", "find_index_credentials"]

Realm = tuple[str, str, int]


def realm_of(url: str) -> Realm | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class IndexCredentials:
    """(username, password) by realm; `netrc_hosts` from a netrc file, for any realm on that host."""

    by_realm: dict[Realm, tuple[str, str]] = field(default_factory=dict, repr=False)
    netrc_hosts: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    # the named indexes whose credentials are in the environment, as `name=url` for uv's `--index`:
    # a pylock install names no index, and uv applies UV_INDEX_<NAME>_* only to an index it knows
    named: tuple[str, ...] = ()

    def for_url(self, url: str) -> tuple[str, str] | None:
        realm = realm_of(url)
        if realm is None:
            return None
        return self.by_realm.get(realm) or self.netrc_hosts.get(realm[1])

    def __bool__(self) -> bool:
        return bool(self.by_realm or self.netrc_hosts)


def _env_name(index_name: str) -> str:
    # uv: the name upper-cased, every character other than A-Z and 0-9 an underscore
    return re.sub(r"[^A-Z0-9]", "_", index_name.upper())


def find_index_credentials(project_dir: Path, env: Mapping[str, str] | None = None) -> IndexCredentials:
    """What uv would authenticate with for the project's indexes (an unreadable pyproject.toml or
    netrc gives none: uv then reports the problem when it runs)."""
    env = os.environ if env is None else env
    by_realm: dict[Realm, tuple[str, str]] = {}
    named: list[str] = []
    indexes = uv_settings(project_dir).get("index", [])
    for index in indexes if isinstance(indexes, list) else []:
        name, url = (index.get("name"), index.get("url")) if isinstance(index, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(url, str) or (realm := realm_of(url)) is None:
            continue
        user = env.get(f"UV_INDEX_{_env_name(name)}_USERNAME")
        password = env.get(f"UV_INDEX_{_env_name(name)}_PASSWORD")
        if user is not None or password is not None:
            by_realm[realm] = (user or "", password or "")
            if "@" not in urlsplit(url).netloc:  # credentials in the URL itself stay out of uv's arguments
                named.append(f"{name}={url}")
    netrc_hosts: dict[str, tuple[str, str]] = {}
    path = env.get("NETRC") or str(Path.home() / ".netrc")
    if os.path.isfile(path):
        try:
            parsed = netrc.netrc(path)
        except (OSError, netrc.NetrcParseError):
            parsed = None
        for host, (login, _account, password) in (parsed.hosts.items() if parsed else []):
            netrc_hosts[host.lower()] = (login or "", password or "")
    return IndexCredentials(by_realm=by_realm, netrc_hosts=netrc_hosts, named=tuple(named))
