"""Upload claims (pool.py): pushes running at once upload each new blob once, against a real registry."""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ocicache import oci
from ocicache.dest import BlobOrigin, put_one
from ocicache.dest.options import RegistryOptions
from ocicache.endpoints import Endpoints
from ocicache.oci import Descriptor, Digest
from ocicache.pool import (
    Pool,
    claim_tag,
)
from ocicache.refs import parse_ref
from tests.conftest import ocicache, push_to
from tests.support.registry import PASSWORD, USER


def _blob(tmp_path, name: str, size: int = 256 << 10) -> tuple[Descriptor, object]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return Descriptor(media_type=oci.LAYER_GZIP_MEDIA_TYPE, digest=Digest.of(data), size=size), path


def _pool(endpoints: Endpoints, host: str, repo: str = "shared/pool") -> Pool:
    return Pool(endpoints.registry(parse_ref(f"{host}/{repo}")))


def test_pushes_claiming_the_same_blobs_at_once_get_one_claimant_each(registry, tmp_path, monkeypatch):
    """Fischer's algorithm holds while every claimant's look-to-write time stays under the others'
    pause. 32 claiming threads released at once on two cores broke the 0.5 s floor once in a full
    suite run (a duplicate upload, the cost of a wrong guess); the property is tested here with a
    pause no stall on this machine reaches, the cost under real load in tests/test_scale.py."""
    import ocicache.pool as pool_module

    monkeypatch.setattr(pool_module, "CLAIM_SETTLE_MIN_S", 2.0)
    blobs = [_blob(tmp_path, f"b{i}", 1024)[0] for i in range(6)]
    with Endpoints(RegistryOptions()) as endpoints:
        pools = [_pool(endpoints, registry.host) for _ in range(4)]
        barrier = threading.Barrier(len(pools))

        def claim(pool: Pool):
            barrier.wait()
            return pool.claim_uploads(blobs)

        with ThreadPoolExecutor(max_workers=len(pools)) as executor:
            outcomes = list(executor.map(claim, pools))
        for desc in blobs:
            claimants = [i for i, c in enumerate(outcomes) if desc.digest not in c.theirs]
            assert len(claimants) == 1, (desc.digest, claimants)
        for pool, claims in zip(pools, outcomes, strict=True):
            pool.release(claims)
        assert all(pools[0].registry.get_manifest(claim_tag(d.digest)) is None for d in blobs)


def test_a_push_waits_for_the_claimant_and_mounts_what_it_uploaded(registry, tmp_path):
    desc, path = _blob(tmp_path, "layer")
    with Endpoints(RegistryOptions()) as endpoints:
        first, second = _pool(endpoints, registry.host), _pool(endpoints, registry.host)
        mine = first.claim_uploads([desc])
        assert desc.digest not in mine.theirs
        theirs = second.claim_uploads([desc])
        assert desc.digest in theirs.theirs  # a live claim: wait for that push
        dest = endpoints.registry(parse_ref(f"{registry.host}/svc-b/app"))

        def upload_late() -> None:
            time.sleep(1.5)
            first.registry.put_blob(desc, lambda: open(path, "rb"))  # noqa: SIM115

        uploader = threading.Thread(target=upload_late)
        uploader.start()
        started = time.monotonic()
        outcome = put_one(dest, desc, BlobOrigin(path=path, source=second.registry, source_may_lack=True,
                                                 wait_until=theirs.theirs[desc.digest]))
        uploader.join()
        assert outcome == "mounted" and time.monotonic() - started >= 1.4
        assert dest.has_blob(desc.digest)
        first.release(mine)


def test_a_claimant_that_never_uploads_costs_a_waiter_its_lease_not_the_blob(registry, tmp_path):
    desc, path = _blob(tmp_path, "layer")
    with Endpoints(RegistryOptions()) as endpoints:
        pool = _pool(endpoints, registry.host)
        pool.ensure_claim_config()
        pool.put_claim(desc.digest, lease=3, created=time.time() - 1, nonce="dead")  # claimed 1 s ago, then died
        claims = pool.claim_uploads([desc])
        deadline = claims.theirs[desc.digest]
        assert 1.0 < deadline - time.monotonic() <= 2.1
        dest = endpoints.registry(parse_ref(f"{registry.host}/svc/app"))
        started = time.monotonic()
        assert put_one(dest, desc, BlobOrigin(path=path, source=pool.registry, source_may_lack=True,
                                              wait_until=deadline)) == "uploaded"
        assert 1.0 < time.monotonic() - started < 4
        assert dest.has_blob(desc.digest)


def test_an_expired_claim_is_taken_over_at_once(registry, tmp_path):
    desc, _ = _blob(tmp_path, "layer", 1024)
    with Endpoints(RegistryOptions()) as endpoints:
        pool = _pool(endpoints, registry.host)
        pool.ensure_claim_config()
        pool.put_claim(desc.digest, lease=60, created=time.time() - 3600, nonce="stale")
        claims = pool.claim_uploads([desc])
        assert claims.theirs == {} and len(claims.held) == 1
        found = pool.registry.get_manifest(claim_tag(desc.digest))
        assert found is not None and found[0].digest == claims.held[0]


def test_a_claim_whose_delete_half_failed_is_not_left_dangling(registry, tmp_path):
    """distribution, deleting a manifest while other pushes change the pool's tags, failed half way
    in a CI run (500 "invalid checksum digest format": the revision gone, the tag left; the retry
    404): the pool kept a claim tag naming no manifest, which nothing could delete. Here the half
    done delete is made on the real registry's storage, as distribution left it."""
    import httpx

    desc, _ = _blob(tmp_path, "layer", 1024)
    with Endpoints(RegistryOptions()) as endpoints:
        pool = _pool(endpoints, registry.host)
        claims = pool.claim_uploads([desc])
        (held,) = claims.held
        revision = (registry.storage / "docker" / "registry" / "v2" / "repositories" / "shared" / "pool" /
                    "_manifests" / "revisions" / "sha256" / held.hex / "link")
        revision.unlink()
        tags_url = f"http://{registry.host}/v2/shared/pool/tags/list"
        assert claim_tag(desc.digest) in httpx.get(tags_url).json()["tags"]
        assert pool.registry.get_manifest(claim_tag(desc.digest)) is None  # dangling
        pool.release(claims)
        assert claim_tag(desc.digest) not in (httpx.get(tags_url).json().get("tags") or [])
        # one left dangling by an earlier ocicache (no release retried it): gc removes it
        other, _ = _blob(tmp_path, "other", 1024)
        (held,) = pool.claim_uploads([other]).held
        (revision.parent.parent / held.hex / "link").unlink()
        keep = _pool(endpoints, registry.host, "shared/app")  # a repository with a tag, for --keep-referenced-by
        keep.ensure_claim_config()
        keep.put_claim(other.digest, lease=60, created=time.time(), nonce="keep")
    args = ("gc", f"{registry.host}/shared/pool", "--keep-referenced-by", f"{registry.host}/shared/app",
            "--min-age", "0s", "--json")
    assert ocicache(*args, "--dry-run").json()["expired_claims"] == 1
    assert claim_tag(other.digest) in httpx.get(tags_url).json()["tags"]
    assert ocicache(*args).json()["expired_claims"] == 1
    assert claim_tag(other.digest) not in (httpx.get(tags_url).json().get("tags") or [])


@pytest.mark.parametrize("kind", ["plain", "htpasswd", "tls", "token"])
def test_a_push_through_the_pool_claims_its_uploads_and_leaves_no_claim_behind(registries, make_project, tmp_path,
                                                                               kind):
    server = registries[kind]
    offset = (server.root / "registry.log").stat().st_size
    lock = make_project(tmp_path / "p", ["heavy", "small-a"])
    out = push_to(server, lock, f"{server.host}/claims-{kind}/app:1", "--pool", f"{server.host}/claims-{kind}/pool")
    assert out.json()["blobs_uploaded"] >= 1
    log = (server.root / "registry.log").read_bytes()[offset:].decode(errors="replace")
    written = re.findall(rf'"PUT /v2/claims-{kind}/pool/manifests/c-[0-9a-f]{{64}}', log)
    assert len(written) == out.json()["blobs_uploaded"]  # each packed layer claimed (nobody else wanted it)
    options = RegistryOptions(ca_cert=server.ca_cert, username=USER if kind in ("htpasswd", "token") else None,
                              password=PASSWORD if kind in ("htpasswd", "token") else None)
    with Endpoints(options) as endpoints:
        tags = endpoints.registry(parse_ref(f"{server.host}/claims-{kind}/pool")).list_tags() or []
    assert tags and not [t for t in tags if t.startswith("c-")]  # released (deleted) after the write
