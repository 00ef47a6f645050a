"""Debian's docker-registry (CNCF distribution 2.8), started by the tests on 127.0.0.1.

Variants: plain HTTP, htpasswd (bcrypt cost 4: cost 12 costs ~190 ms per request), TLS with a
self-signed CA, and bearer tokens from a small token server (ES256 JWTs with an x5c chain, the
flow of Docker Hub, GHCR and Harbor). A registry can be stopped and started again on the same port
and storage, to test interrupted pushes.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER, PASSWORD = "ci-user", "s3cret-Pa55word"


def make_cert(directory: Path, name: str = "registry") -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1/localhost (also usable as its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return crt, pem


def make_htpasswd(path: Path, user: str = USER, password: str = PASSWORD) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**4))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this libcrypt cannot make bcrypt hashes")
    path.write_text(f"{user}:{hashed}\n")


class TokenServer:
    """Grants requested scopes to USER/PASSWORD (push refused on `readonly/*`), pull to anonymous.

    `stale_first`: the first token for each scope set is already expired (the registry refuses it,
    as it does a revoked token or one signed by a rotated key), the next one is valid.
    """

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.cert, key_path = make_cert(directory, "token")
        self._key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.requests: Counter[str] = Counter()
        self.stale_first = False
        self._seen_scopes: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, secret = base64.b64decode(header[6:]).decode().partition(":")
                    if (name, secret) != (USER, PASSWORD):
                        server.requests["denied"] += 1
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = name
                server.requests["token"] += 1
                access = []
                for scope in " ".join(query.get("scope", [])).split():
                    kind, _, rest = scope.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    granted = actions.split(",")
                    if user is None or repo.startswith("readonly/"):
                        granted = [a for a in granted if a == "pull"]
                    access.append({"type": kind, "name": repo, "actions": granted})
                # per set of repositories: the actions' spelling varies between challenges
                scopes = " ".join(sorted({s.rsplit(":", 1)[0] for s in " ".join(query.get("scope", [])).split()}))
                stale = server.stale_first and scopes not in server._seen_scopes
                server._seen_scopes.add(scopes)
                server.requests["stale" if stale else "fresh"] += 1
                token = server._token(user or "", access, expired=stale)
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def _token(self, subject: str, access: list[dict], expired: bool = False) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time()) - (7200 if expired else 0)  # well past the registry's leeway
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {"iss": "test-issuer", "sub": subject, "aud": "test-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class RegistryServer:
    root: Path
    kind: str = "plain"  # plain | htpasswd | tls | token
    port: int = 0
    driver: str = "filesystem"  # or "inmemory": distribution's other built-in storage driver
    ca_cert: Path | None = None
    token_server: TokenServer | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.driver not in ("filesystem", "inmemory"):
            raise ValueError(f"storage driver {self.driver!r}")
        self.storage = self.root / "storage"  # the filesystem driver's directory
        lines = ["version: 0.1", "log:", "  level: info", "  formatter: text",
                 "storage:", (f"  filesystem: {{rootdirectory: {self.storage}}}" if self.driver == "filesystem"
                              else "  inmemory: {}"), "  delete: {enabled: true}",
                 "http:", "  addr: 127.0.0.1:PORT", "  secret: test-secret"]
        if self.kind == "tls":
            crt, key = make_cert(self.root)
            self.ca_cert = crt
            lines += [f"  tls: {{certificate: {crt}, key: {key}}}"]
        if self.kind == "htpasswd":
            make_htpasswd(self.root / "htpasswd")
            lines += ["auth:", f"  htpasswd: {{realm: test-realm, path: {self.root / 'htpasswd'}}}"]
        if self.kind == "token":
            self.token_server = TokenServer(self.root)
            lines += ["auth:", "  token:", f"    realm: {self.token_server.url}", "    service: test-registry",
                      "    issuer: test-issuer", f"    rootcertbundle: {self.token_server.cert}"]
        self._config_template = "\n".join(lines) + "\n"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed: run scripts/bootstrap.sh --test")
        config = self.root / "config.yml"
        config.write_text(self._config_template.replace("PORT", str(self.port)))
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 (kept open for the process)
        start_offset = log.tell()
        self._proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = (self.root / "registry.log").read_bytes()[start_offset:].decode(errors="replace")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 20 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self.token_server is not None:
            self.token_server.close()

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def cli_auth(self) -> list[str]:
        """ocicache arguments for this registry's credentials and TLS (password on stdin)."""
        args = []
        if self.kind in ("htpasswd", "token"):
            args += ["--username", USER, "--password-stdin"]
        if self.ca_cert is not None:
            args += ["--ca-cert", str(self.ca_cert)]
        return args

    def skopeo_args(self) -> list[str]:
        args = ["--tls-verify=false"] if self.kind != "tls" else ["--cert-dir", str(self._skopeo_certs())]
        if self.kind in ("htpasswd", "token"):
            args += ["--creds", f"{USER}:{PASSWORD}"]
        return args

    def _skopeo_certs(self) -> Path:
        d = self.root / "skopeo-certs"
        d.mkdir(exist_ok=True)
        assert self.ca_cert is not None
        shutil.copy(self.ca_cert, d / "ca.crt")
        return d
