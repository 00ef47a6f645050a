"""Registry client fault injection with httpx.MockTransport (unit level; the real registry tests are
in test_registry.py). Each handler plays a registry that misbehaves in one precise way."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest

from ocicache.assemble import Image
from ocicache.dest import BlobOrigin, write_image
from ocicache.dest.registry import Registry, RegistryClient, RegistryError, RegistryOptions
from ocicache.oci import MANIFEST_MEDIA_TYPE, Descriptor, Digest


class FakeRegistry:
    """Just enough of the distribution API, in memory, with hooks to inject faults."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.log: list[str] = []
        self.body_bytes = 0
        self.fault = None  # callable(request) -> Response | None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.fault is not None:
            injected = self.fault(request)
            if injected is not None:
                return injected
        path = request.url.path
        body = request.read()
        self.body_bytes += len(body)
        self.log.append(f"{request.method} {path}")
        if path == "/v2/":
            return httpx.Response(200)
        m = re.match(r"^/v2/(.+)/blobs/uploads/(.*)$", path)
        if m:
            uuid = m.group(2)
            if request.method == "POST":
                uuid = f"u{len(self.sessions)}"
                self.sessions[uuid] = bytearray()
                return httpx.Response(202, headers={"Location": f"/v2/{m.group(1)}/blobs/uploads/{uuid}?_state=a+b%3D",
                                                    "Range": "0-0"})
            if uuid not in self.sessions:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
            if request.method == "PATCH":
                self.sessions[uuid] += body
                return httpx.Response(202, headers={"Location": f"/v2/{m.group(1)}/blobs/uploads/{uuid}",
                                                    "Range": f"0-{len(self.sessions[uuid]) - 1}"})
            if request.method == "GET":
                return httpx.Response(204, headers={"Range": f"0-{len(self.sessions[uuid]) - 1}",
                                                    "Location": f"/v2/{m.group(1)}/blobs/uploads/{uuid}"})
            if request.method == "PUT":
                assert "_state=a+b%3D" in str(request.url) or "_state" not in str(request.url)
                data = bytes(self.sessions.pop(uuid) + body)
                digest = request.url.params["digest"]
                if Digest.of(data) != Digest(digest):
                    return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
                self.blobs[digest] = data
                return httpx.Response(201, headers={"Docker-Content-Digest": digest})
            if request.method == "DELETE":
                self.sessions.pop(uuid, None)
                return httpx.Response(204)
        m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$", path)
        if m:
            data = self.blobs.get(m.group(2))
            if data is None:
                return httpx.Response(404)
            return httpx.Response(200, content=b"" if request.method == "HEAD" else data,
                                  headers={"Content-Length": str(len(data))})
        m = re.match(r"^/v2/(.+)/manifests/(.+)$", path)
        if m and request.method == "PUT":
            self.manifests[m.group(2)] = body
            return httpx.Response(201, headers={"Docker-Content-Digest": str(Digest.of(body))})
        return httpx.Response(404)


def _client(fake: FakeRegistry, **options) -> tuple[Registry, list[float]]:
    slept: list[float] = []
    opts = RegistryOptions(backoff=0.01, **options)
    client = RegistryClient("registry.test", opts, transport=httpx.MockTransport(fake.handler), sleep=slept.append)
    client.ping()
    return Registry(client, "team/app"), slept


def _desc(data: bytes) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=Digest.of(data), size=len(data))


def test_500_then_success_is_retried_and_the_blob_lands_once():
    fake = FakeRegistry()
    failures = iter([True, True, False])

    def fault(request):
        if request.method == "PUT" and "/blobs/uploads/" in request.url.path and next(failures):
            request.read()
            return httpx.Response(500)
        return None

    fake.fault = fault
    registry, slept = _client(fake)
    data = b"x" * 1000
    registry.put_blob(_desc(data), lambda: io.BytesIO(data))
    assert fake.blobs == {str(Digest.of(data)): data}
    assert len(slept) == 2 and slept[1] > slept[0] * 0.5  # exponential backoff


def test_429_retry_after_is_honoured():
    fake = FakeRegistry()
    calls = {"n": 0}

    def fault(request):
        if request.method == "HEAD" and calls["n"] == 0:
            calls["n"] += 1
            return httpx.Response(429, headers={"Retry-After": "7"})
        return None

    fake.fault = fault
    registry, slept = _client(fake)
    assert registry.has_blob(Digest.of(b"nope")) is False
    assert slept == [7.0]


def test_connection_reset_is_retried_then_gives_up_with_one_clear_line():
    fake = FakeRegistry()

    def fault(request):
        if request.method == "HEAD":
            raise httpx.ReadError("connection reset by peer")
        return None

    fake.fault = fault
    registry, slept = _client(fake, attempts=3)
    with pytest.raises(RegistryError, match="gave up after 3 attempts") as info:
        registry.has_blob(Digest.of(b"x"))
    assert "\n" not in str(info.value) and len(slept) == 2


def test_chunked_upload_resumes_from_the_registry_offset():
    fake = FakeRegistry()
    state = {"patches": 0, "broken": False}

    def fault(request):
        if request.method == "PATCH":
            state["patches"] += 1
            if state["patches"] == 3 and not state["broken"]:
                state["broken"] = True
                raise httpx.WriteError("connection reset mid-chunk")
        return None

    fake.fault = fault
    registry, _ = _client(fake, chunked_above=100, chunk_size=256)
    data = bytes(range(256)) * 5  # 1280 bytes: 5 chunks
    registry.put_blob(_desc(data), lambda: io.BytesIO(data))
    assert fake.blobs[str(Digest.of(data))] == data
    patches = [entry for entry in fake.log if entry.startswith("PATCH")]
    assert len(patches) == 5  # the interrupted chunk was resent once, nothing else twice
    assert fake.log.count("POST /v2/team/app/blobs/uploads/") == 1  # resumed, not restarted


def test_write_order_blobs_before_config_before_manifest_each_blob_once():
    fake = FakeRegistry()
    registry, _ = _client(fake)
    layer = b"layer-bytes" * 100
    config = b'{"rootfs":{}}'
    manifest = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    image = Image(config=config, config_descriptor=_desc(config), manifest=manifest,
                  manifest_descriptor=Descriptor(media_type=MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest),
                                                 size=len(manifest)),
                  layers=(_desc(layer),))
    class Source:
        def open_blob(self, digest):
            return io.BytesIO(layer)

    origin = BlobOrigin(source=Source())  # type: ignore[arg-type]
    report = write_image(registry, image, [(_desc(layer), origin), (_desc(layer), origin)], "v1")
    puts = [e for e in fake.log if e.startswith("PUT")]
    assert puts[-1] == "PUT /v2/team/app/manifests/v1"
    assert sum(1 for e in puts if "/blobs/" in e) == 2  # the layer once, the config once
    assert report.count("uploaded") == 1


def test_basic_credentials_go_pre_emptively_and_a_body_is_sent_once():
    fake = FakeRegistry()
    seen = []

    def fault(request):
        seen.append((request.method, "Authorization" in request.headers))
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        return None

    fake.fault = fault
    registry, _ = _client(fake, username="u", password="p")
    data = b"y" * 5000
    registry.put_blob(_desc(data), lambda: io.BytesIO(data))
    assert fake.body_bytes == len(data)
    assert seen.count(("PUT", False)) == 0  # the body never went out without credentials
    assert seen[0] == ("GET", False)  # only the very first request met the challenge


def test_unknown_host_is_named_as_such():
    def handler(request):
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    client = RegistryClient("no-such-registry.test", RegistryOptions(), transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError, match="unknown host"):
        client.ping()


def test_bearer_token_scopes_include_pull_on_the_mount_source():
    from ocicache.auth import scopes_for

    request = httpx.Request("POST", "https://r.test/v2/team/b/blobs/uploads/?mount=sha256:ab&from=team/a")
    assert scopes_for(request) == ["repository:team/b:pull,push", "repository:team/a:pull"]
    assert scopes_for(httpx.Request("HEAD", "https://r.test/v2/x/y/blobs/sha256:ab")) == ["repository:x/y:pull"]


def test_secrets_stay_out_of_reprs_and_errors():
    from ocicache.auth import Credentials

    secret = "hunter2-very-secret"
    assert secret not in repr(RegistryOptions(username="u", password=secret))
    assert secret not in repr(Credentials("u", secret))
    fake = FakeRegistry()
    fake.fault = lambda request: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
    client = RegistryClient("registry.test", RegistryOptions(username="u", password=secret),
                            transport=httpx.MockTransport(fake.handler))
    client.ping()  # 401 is an answer at ping time
    with pytest.raises(RegistryError) as info:
        Registry(client, "a/b").check_push_access()
    assert "authentication failed" in str(info.value) and secret not in str(info.value)


def test_manifest_blob_unknown_during_a_concurrent_commit_is_retried_and_codes_are_reported():
    fake = FakeRegistry()
    answers = iter([400, 201])

    def fault(request):
        if request.method == "PUT" and "/manifests/" in request.url.path:
            status = next(answers)
            if status == 400:
                request.read()
                return httpx.Response(400, json={"errors": [{"code": "MANIFEST_BLOB_UNKNOWN",
                                                             "message": "blob unknown to registry"}]})
        return None

    fake.fault = fault
    registry, slept = _client(fake)
    body = b'{"schemaVersion":2}'
    registry.put_manifest(Descriptor(media_type=MANIFEST_MEDIA_TYPE, digest=Digest.of(body), size=len(body)),
                          body, tag="v1")
    assert fake.manifests["v1"] == body and len(slept) == 1

    fake.fault = lambda request: httpx.Response(400, json={"errors": [{"code": "NAME_INVALID",
                                                                       "message": "invalid repository name"}]})
    with pytest.raises(RegistryError, match=r"NAME_INVALID: invalid repository name") as info:
        registry.put_manifest(Descriptor(media_type=MANIFEST_MEDIA_TYPE, digest=Digest.of(body), size=len(body)),
                              body, tag="v2")
    assert not info.value.temporary


def test_a_refused_bearer_token_is_never_sent_again_whatever_order_its_scopes_have():
    """Issue 9: tokens were cached under sorted scopes but evicted under the request's order, so a
    mount from a repository that sorts first re-sent the refused token and failed with a 401."""
    issued: list[str] = []
    refused: set[str] = set()
    sent: list[str] = []
    challenge = {"WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="r.test",error="invalid_token"'}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            issued.append(f"t{len(issued) + 1}")
            return httpx.Response(200, json={"token": issued[-1], "expires_in": 3600})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        sent.append(token)
        if not token or token in refused:
            return httpx.Response(401, headers=challenge)
        return httpx.Response(201 if request.method == "POST" else 200)

    client = RegistryClient("r.test", RegistryOptions(username="u", password="p"),
                            transport=httpx.MockTransport(handler), sleep=lambda _s: None)
    mount = client.url("zzz/dst", "blobs", "uploads/") + "?mount=sha256:" + "a" * 64 + "&from=aaa/src"
    client.request("POST", mount, what="mount", expect=(201,))
    assert issued == ["t1"]
    refused.add("t1")  # the registry now refuses it (expired, revoked, or rotated keys)
    client.request("POST", mount, what="mount", expect=(201,))
    assert issued == ["t1", "t2"] and sent[-2:] == ["t1", "t2"]


def test_a_403_names_the_right_that_is_missing():
    """Issue 9: every 403 said "no push rights", a refused pull too."""
    fake = FakeRegistry()
    fake.fault = lambda request: httpx.Response(403, json={"errors": [{"code": "DENIED"}]}) \
        if request.url.path != "/v2/" else None
    registry, _ = _client(fake)
    with pytest.raises(RegistryError, match="no pull rights") as info:
        registry.get_manifest("v1")
    assert "push" not in str(info.value)
    with pytest.raises(RegistryError, match="no push rights"):
        registry.check_push_access()


class _DroppingStream(httpx.SyncByteStream):
    """A body that sends `upto` bytes of `data`, then loses the connection."""

    def __init__(self, data: bytes, upto: int) -> None:
        self.data, self.upto = data, upto

    def __iter__(self):
        yield self.data[: self.upto // 2]
        yield self.data[self.upto // 2: self.upto]
        raise httpx.ReadError("connection reset by peer")


def _blob_server(data: bytes, *, drops: int, honour_range: bool, log: list) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        start = 0
        header = request.headers.get("range")
        log.append(header)
        if header and honour_range:
            start = int(re.match(r"bytes=(\d+)-", header).group(1))
        body = data[start:]
        if len(log) <= drops:
            return httpx.Response(206 if start else 200, stream=_DroppingStream(body, len(body) // 3))
        return httpx.Response(206 if start else 200, stream=httpx.ByteStream(body))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("honour_range", [True, False])
def test_a_blob_stream_that_drops_is_resumed_where_it_stopped(honour_range):
    """Issue 9: a connection dropped mid-blob raised httpx.ReadError to the user (pull, copy, re-bundling)."""
    data = bytes(range(256)) * 100_000  # 25.6 MB: several 4 MiB chunks arrive before each drop
    log: list = []
    client = RegistryClient("r.test", RegistryOptions(), sleep=lambda _s: None,
                            transport=_blob_server(data, drops=2, honour_range=honour_range, log=log))
    with Registry(client, "a/b").open_blob(Digest.of(data)) as f:
        assert f.read() == data
    assert log[0] is None and log[1] is not None and log[1].startswith("bytes=")  # resumed, not restarted
    assert len(log) == 3


def test_a_blob_stream_that_keeps_dropping_ends_in_one_clear_error():
    data = b"z" * 3_000_000
    log: list = []
    client = RegistryClient("r.test", RegistryOptions(attempts=3), sleep=lambda _s: None,
                            transport=_blob_server(data, drops=99, honour_range=True, log=log))
    with pytest.raises(RegistryError, match=r"connection kept dropping \(ReadError at byte \d+\); gave up after 3"), \
            Registry(client, "a/b").open_blob(Digest.of(data)) as f:
        f.read()


def test_credentials_never_go_to_a_plain_http_token_service_on_another_host():
    contacted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        contacted.append(request.url.host)
        if request.url.host == "auth.elsewhere.test":
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(401, headers={"WWW-Authenticate":
                                            'Bearer realm="http://auth.elsewhere.test/token",service="r.test"'})

    client = RegistryClient("r.test", RegistryOptions(username="u", password="s3cret"), sleep=lambda _s: None,
                            transport=httpx.MockTransport(handler))
    from ocicache.auth import AuthError

    with pytest.raises(AuthError, match="plain HTTP; refusing to send credentials") as info:
        Registry(client, "a/b").get_manifest("v1")
    assert "auth.elsewhere.test" not in contacted and "s3cret" not in str(info.value)


def test_scope_sets_are_spelled_one_way():
    from ocicache.auth import scope_key

    assert scope_key(["repository:a/b:pull,push", "repository:a/b:push,pull", "repository:c:pull"]) == (
        "repository:a/b:pull,push", "repository:c:pull")
    assert scope_key(["repository:a/b:pull", "repository:a/b:push"]) == ("repository:a/b:pull,push",)


def test_tag_listing_follows_link_pages_to_the_end():
    """Issue 10: registries page tag lists (distribution, GHCR, ECR cap a page); every page is read."""
    tags = [f"k-{i:04d}" for i in range(25)]
    pages: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        pages.append(str(request.url))
        n = int(request.url.params.get("n", 10))
        last = request.url.params.get("last")
        start = tags.index(last) + 1 if last else 0
        chunk = tags[start:start + n]
        headers = {}
        if start + n < len(tags):
            headers["Link"] = f'</v2/team/pool/tags/list?last={chunk[-1]}&n={n}>; rel="next"'
        return httpx.Response(200, json={"name": "team/pool", "tags": chunk}, headers=headers)

    client = RegistryClient("r.test", RegistryOptions(), transport=httpx.MockTransport(handler))
    assert Registry(client, "team/pool").list_tags(page=10) == tags
    assert len(pages) == 3
