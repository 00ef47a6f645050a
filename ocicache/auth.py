"""Registry credentials and the challenge/response flow (Basic and Bearer tokens).

Credentials come from, in order: `--username` with `--password-stdin`, docker's `config.json`
(`$DOCKER_CONFIG/config.json` first, then `~/.docker/config.json`: `auths`, `credHelpers`,
`credsStore`). Secrets live only in memory: `Credentials.__repr__` hides them, error messages never
include them, and nothing ocicache writes contains them.

After the first challenge the scheme is known and every later request carries credentials
pre-emptively, so a request body is never sent only to be refused (and never sent twice).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import DestinationError

__all__ = ["Credentials", "RegistryAuth", "load_credentials"]

_CHALLENGE_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_TOKEN_MARGIN = 30.0  # refresh a bearer token this long before it expires, never mid-upload


class AuthError(DestinationError):
    pass


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    identity_token: bool = False  # a helper's "<token>" user: the secret is an OAuth2 refresh token

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def _docker_config_paths() -> list[Path]:
    paths = []
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    paths.append(Path.home() / ".docker" / "config.json")
    return paths


def _host_of(key: str) -> str:
    """docker config keys: `host:port`, `https://host:port`, `https://host/v1/` → host[:port]."""
    key = re.sub(r"^https?://", "", key)
    return key.split("/", 1)[0]


def _from_helper(helper: str, registry: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, "get"], input=registry, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} (from docker config.json) is not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within 60 s") from None
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain": anonymous
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} returned something that is not credentials") from None
    return Credentials(user, secret, identity_token=user == "<token>")


def load_credentials(registry: str, username: str | None = None, password: str | None = None) -> Credentials | None:
    """The credentials to use for `registry` (host[:port]), or None for anonymous access."""
    if username is not None:
        if password is None:
            raise AuthError("--username needs --password-stdin")
        return Credentials(username, password)
    for path in _docker_config_paths():
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AuthError(f"{path}: not a readable docker config.json") from None
        helper = (config.get("credHelpers") or {}).get(registry)
        if helper:
            return _from_helper(helper, registry)
        for key, entry in (config.get("auths") or {}).items():
            if _host_of(key) != registry or not isinstance(entry, dict):
                continue
            if entry.get("identitytoken"):
                return Credentials("<token>", str(entry["identitytoken"]), identity_token=True)
            if entry.get("auth"):
                try:
                    user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise AuthError(f"{path}: the auth entry for {registry} is not base64 user:password") from None
                return Credentials(user, secret)
            if entry.get("username"):
                return Credentials(str(entry["username"]), str(entry.get("password", "")))
        if config.get("credsStore"):
            return _from_helper(str(config["credsStore"]), registry)
        return None  # the first config file found is the one docker uses
    return None


def is_loopback(host: str) -> bool:
    """`host[:port]` names this machine (plain HTTP is then allowed, as docker allows it)."""
    name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _CHALLENGE_RE.finditer(rest)}
    return scheme.lower(), params


def scopes_for(request: httpx.Request) -> list[str]:
    """The token scopes a registry request needs: pull or pull,push on its repository, plus pull
    on the source of a cross-repository mount."""
    m = re.match(r"^/v2/(.+?)/(blobs|manifests|tags)/", request.url.path)
    if not m:
        return []
    action = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    scopes = [f"repository:{m.group(1)}:{action}"]
    source = request.url.params.get("from")
    if source:
        scopes.append(f"repository:{source}:pull")
    return scopes


def scope_key(scopes: list[str]) -> tuple[str, ...]:
    """The one spelling of a scope set: one scope per resource, its actions merged and sorted (a
    registry's challenge may spell `push,pull` what we asked as `pull,push`)."""
    actions: dict[str, set[str]] = {}
    for scope in scopes:
        resource, _, acts = scope.rpartition(":")
        if not resource:  # not type:name:actions; keep it as it is
            actions.setdefault(scope, set())
            continue
        actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in actions.items()))


@dataclass
class _Token:
    value: str
    expires: float


class RegistryAuth(httpx.Auth):
    """httpx auth flow: remember the registry's scheme, fetch and cache bearer tokens per scope set."""

    def __init__(self, registry: str, credentials: Credentials | None, token_client: httpx.Client) -> None:
        self.registry = registry
        self.credentials = credentials
        self._token_client = token_client
        self._scheme: str | None = None
        self._params: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()

    # httpx drives this generator: yield a request, receive its response, maybe yield a retry.
    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        self._authorize(request, scopes_for(request))
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return
        scheme, params = parse_challenge(response.headers["www-authenticate"])
        with self._lock:
            self._scheme, self._params = scheme, params
        if scheme not in ("basic", "bearer"):
            raise AuthError(f"{self.registry}: unsupported authentication scheme {scheme!r}")
        if scheme == "basic" and self.credentials is None:
            return  # anonymous: let the 401 surface as an error
        needed = scopes_for(request)
        if params.get("scope"):
            needed = list(scope_key([*needed, *params["scope"].split(" ")]))
        sent = request.headers.get("Authorization", "")
        if sent.startswith("Bearer ") and scheme == "bearer":
            refused = sent.removeprefix("Bearer ")
            with self._lock:  # the token we sent was refused: never send it again, whatever scopes it was for
                self._tokens = {k: t for k, t in self._tokens.items() if t.value != refused}
        if _has_unreplayable_body(request):
            return  # never send a big body twice; the caller retries the whole unit
        self._authorize(request, needed, force=True)
        yield request

    def _authorize(self, request: httpx.Request, scopes: list[str], force: bool = False) -> None:
        if self._scheme == "basic" and self.credentials is not None:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif self._scheme == "bearer" and (scopes or force):
            request.headers["Authorization"] = "Bearer " + self._token(scope_key(scopes))

    def _token(self, scopes: tuple[str, ...]) -> str:
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached and cached.expires - _TOKEN_MARGIN > time.monotonic():
                return cached.value
            realm = self._params.get("realm")
            if not realm:
                raise AuthError(f"{self.registry}: bearer challenge without a realm")
            try:
                url = httpx.URL(realm)
            except httpx.InvalidURL:
                raise AuthError(f"{self.registry}: the bearer challenge's realm is not a URL") from None
            if url.scheme not in ("http", "https") or not url.host:
                raise AuthError(f"{self.registry}: the bearer challenge's realm is not an HTTP(S) URL")
            if self.credentials is not None and url.scheme != "https" and not is_loopback(url.netloc.decode()):
                # the realm may be another host (Docker Hub's is); credentials never cross the network in clear
                raise AuthError(f"{self.registry}: the token service {url.host} is plain HTTP; refusing to send "
                                "credentials to it")
            query: list[tuple[str, str]] = [("scope", s) for s in scopes]
            if self._params.get("service"):
                query.append(("service", self._params["service"]))
            auth = None
            if self.credentials is not None and not self.credentials.identity_token:
                auth = httpx.BasicAuth(self.credentials.username, self.credentials.password)
            try:
                if self.credentials is not None and self.credentials.identity_token:
                    form = {"grant_type": "refresh_token", "refresh_token": self.credentials.password,
                            "service": self._params.get("service", ""), "scope": " ".join(scopes),
                            "client_id": "ocicache"}
                    resp = self._token_client.post(realm, data=form)
                else:
                    resp = self._token_client.get(realm, params=query, auth=auth)
            except httpx.HTTPError as exc:
                raise AuthError(f"{self.registry}: token service {httpx.URL(realm).host} unreachable "
                                f"({type(exc).__name__})") from None
            if resp.status_code in (401, 403):
                raise AuthError(f"{self.registry}: authentication failed (the token service refused the "
                                "credentials; check the username and password)")
            if resp.status_code != 200:
                raise AuthError(f"{self.registry}: token service answered HTTP {resp.status_code}")
            try:
                body = resp.json()
                token = body.get("token") or body.get("access_token")
                lifetime = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError):
                token = None
            if not token:
                raise AuthError(f"{self.registry}: token service returned no token")
            self._tokens[scopes] = _Token(str(token), time.monotonic() + lifetime)
            return str(token)


def _has_unreplayable_body(request: httpx.Request) -> bool:
    """A streamed body (a blob read from a file) cannot be sent again by the auth flow."""
    return not isinstance(request.stream, httpx.ByteStream)
