"""Issue 10: `ocicache gc` keeps a pool bounded, and never costs an image a layer it needs.

Three services push through one pool, then upgrade twice (gc-alpha and gc-beta 1.0 → 2.0 → 3.0).
gc keeps what their current tags use, deletes the rest once it has been unreferenced for
--min-age; the registry's own garbage collector then runs, and every kept image still pulls and
installs offline.
"""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.conftest import build_context, ocicache, offline_sync, require_tool
from tests.support.builders import Buildah
from tests.support.registry import RegistryServer

SERVICES = {
    "svc1": ["gc-alpha=={v}", "small-a"],
    "svc2": ["gc-alpha=={v}", "gc-beta=={v}", "heavy"],
    "svc3": ["gc-beta=={v}", "heavy", "small-c"],
}


@pytest.fixture
def registry(tmp_path):
    server = RegistryServer(tmp_path / "registry")
    server.start()
    yield server
    server.close()


def _pool_tags(host: str) -> set[str]:
    resp = httpx.get(f"http://{host}/v2/team/pool/tags/list", params={"n": 10000})
    return {t for t in resp.json().get("tags") or [] if t.startswith("k-")}


def _push_round(server, make_project, tmp_path, version: str) -> dict[str, object]:
    locks = {}
    for name, deps in SERVICES.items():
        lock = make_project(tmp_path / f"{name}-{version}", [d.format(v=version) for d in deps])
        ocicache("push", lock, f"{server.host}/team/{name}:main", "--pool", f"{server.host}/team/pool", "--json")
        locks[name] = lock
    return locks


def test_gc_keeps_what_images_use_and_the_registry_gc_keeps_every_image_installable(registry, make_project,
                                                                                     build_setup, tmp_path):
    host = registry.host
    for version in ("1.0", "2.0"):
        _push_round(registry, make_project, tmp_path, version)
    locks = _push_round(registry, make_project, tmp_path, "3.0")
    keep = [a for name in SERVICES for a in ("--keep-referenced-by", f"{host}/team/{name}")]
    pool = f"{host}/team/pool"
    before = _pool_tags(host)

    dry = ocicache("gc", pool, *keep, "--min-age", "0s", "--dry-run", "--json").json()
    gone = {p for e in dry["deleted"] for p in e["packages"]}
    assert {"gc-alpha 1.0", "gc-alpha 2.0", "gc-beta 1.0", "gc-beta 2.0"} <= gone
    assert not any(p.endswith("3.0") or p.startswith(("heavy", "small-a", "small-c")) for p in gone), gone
    assert dry["deleted_bytes"] > 2 * 1024 * 1024  # two old gc-alpha layers at least
    assert _pool_tags(host) == before  # a dry run changes nothing

    # --min-age: the first run only records when it saw them unreferenced
    waiting = ocicache("gc", pool, *keep, "--min-age", "1h", "--json").json()
    assert waiting["deleted"] == [] and len(waiting["waiting"]) == len(dry["deleted"])
    assert _pool_tags(host) == before
    text = ocicache("gc", pool, *keep, "--min-age", "1h", "--dry-run").stdout
    assert "waiting:" in text and "gc-alpha 1.0" in text

    done = ocicache("gc", pool, *keep, "--min-age", "0s", "--json").json()
    assert {p for e in done["deleted"] for p in e["packages"]} == gone
    after = _pool_tags(host)
    assert after < before and len(after) == len(before) - sum(e["tags"] for e in done["deleted"])
    again = ocicache("gc", pool, *keep, "--min-age", "0s", "--json").json()
    assert again["deleted"] == [] and again["kept"] == done["kept"]

    # the registry's own garbage collector, then every kept image still installs offline
    registry.stop()
    collect = subprocess.run([shutil.which("docker-registry"), "garbage-collect", "--delete-untagged",
                              str(registry.root / "config.yml")], capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-2000:]
    assert "blob eligible for deletion" in collect.stdout + collect.stderr  # it did reclaim something
    registry.start()
    for name, lock in locks.items():
        cache = tmp_path / f"pulled-{name}"
        ocicache("pull", f"{registry.host}/team/{name}:main", cache)
        assert offline_sync(lock, cache, tmp_path / f"consumer-{name}").returncode == 0, name
    # and a real builder, with no network, from a kept image after both collectors
    require_tool("buildah")
    require_tool("runc")
    dockerfile = (f"FROM {registry.host}/team/svc2:main AS uvcache\nFROM {build_setup['base']}\nWORKDIR /app\n"
                  "COPY pyproject.toml uv.lock /app/\nENV UV_LINK_MODE=copy\n"
                  "RUN --mount=type=bind,from=uvcache,target=/root/.cache/uv,rw uv sync --frozen --offline "
                  "--no-install-project --python /usr/bin/python3.11\n"
                  "RUN /app/.venv/bin/python -c \"import gc_alpha, gc_beta, heavy; print('imports ok')\"\n")
    built = Buildah(tmp_path / "buildah").build(build_context(tmp_path / "build", locks["svc2"], dockerfile),
                                                "localhost/gc-svc2")
    assert built.returncode == 0 and "imports ok" in built.stdout, built.stdout[-3000:] + built.stderr[-3000:]
    # and a push through the collected pool still finds what it holds
    lock = make_project(tmp_path / "svc4", ["gc-alpha==3.0", "heavy"])
    pushed = ocicache("push", lock, f"{registry.host}/team/svc4:main", "--pool", f"{registry.host}/team/pool",
                      "--json").json()
    assert pushed["packages_populated"] == 0


def test_gc_refuses_a_keep_repository_that_does_not_exist(registry, make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["small-a"])
    ocicache("push", lock, f"{registry.host}/team/app:main", "--pool", f"{registry.host}/team/pool")
    run = ocicache("gc", f"{registry.host}/team/pool", "--keep-referenced-by", f"{registry.host}/team/typo",
                   "--min-age", "0s", check=False)
    assert run.returncode == 2 and "no such repository" in run.stderr and len(run.stderr.splitlines()) == 1
    assert _pool_tags(registry.host)  # nothing deleted


def test_gc_deletes_upload_claims_left_by_pushes_that_died_and_keeps_live_ones(registry, make_project, tmp_path):
    import time

    from ocicache.dest.options import RegistryOptions
    from ocicache.endpoints import Endpoints
    from ocicache.oci import Digest
    from ocicache.pool import Pool, claim_tag
    from ocicache.refs import parse_ref

    lock = make_project(tmp_path / "p", ["small-a"])
    ocicache("push", lock, f"{registry.host}/team/app:main", "--pool", f"{registry.host}/team/pool")
    with Endpoints(RegistryOptions()) as endpoints:
        pool = Pool(endpoints.registry(parse_ref(f"{registry.host}/team/pool")))
        pool.ensure_claim_config()
        for name, created in (("dead", time.time() - 7200), ("live", time.time())):
            pool.put_claim(Digest.of(name.encode()), lease=600, created=created, nonce=name)
    args = ["gc", f"{registry.host}/team/pool", "--keep-referenced-by", f"{registry.host}/team/app"]
    dry = ocicache(*args, "--dry-run", "--json").json()
    assert dry["expired_claims"] == 1 and dry["deleted"] == []
    assert "expired upload claims" in ocicache(*args).stdout
    tags = set(httpx.get(f"http://{registry.host}/v2/team/pool/tags/list").json()["tags"])
    assert claim_tag(Digest.of(b"dead")) not in tags and claim_tag(Digest.of(b"live")) in tags
    assert ocicache(*args, "--json").json()["expired_claims"] == 0
