"""Issue 10 at test scale (the full figures come from scripts/bench_scale.py): many pushes at once
through one pool on distribution's in-memory storage, and a 1,000-package lock."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import hermetic_env, ocicache, uv_bin
from tests.support.pkgindex import PackageIndex
from tests.support.registry import RegistryServer
from tests.support.scale import (
    count_requests,
    draw_services,
    fill_index,
    missing_blobs,
    package_name,
    tags_of,
    write_project,
)


@pytest.fixture(scope="module")
def scale_index(tmp_path_factory):
    index = PackageIndex(tmp_path_factory.mktemp("scale-index"))
    names = fill_index(index, 1000, heavy_every=50)
    index.serve()
    yield index, names
    index.close()


def test_concurrent_pushes_through_one_pool_on_in_memory_storage(scale_index, tmp_path):
    index, names = scale_index
    server = RegistryServer(tmp_path / "registry", driver="inmemory")
    server.start()
    try:
        rounds = []
        seen: dict[str, int] = {}
        for r in range(2):
            locks = [write_project(tmp_path / f"r{r}-svc{i}", deps, index.url, uv_bin(), tmp_path / "lock-cache",
                                   hermetic_env())
                     for i, deps in enumerate(draw_services(names[:120], 10, common=8, own=10, seed=r))]
            offset = (server.root / "registry.log").stat().st_size

            def push(i: int, locks=locks, r=r) -> subprocess.CompletedProcess:
                return subprocess.run([sys.executable, "-m", "ocicache", "push", str(locks[i]),
                                       f"{server.host}/svc{i}/app:r{r}", "--pool", f"{server.host}/shared/pool",
                                       "--json"], capture_output=True, text=True, env=hermetic_env(), timeout=600)

            with ThreadPoolExecutor(max_workers=len(locks)) as executor:
                procs = list(executor.map(push, range(len(locks))))
            assert [p.stderr for p in procs if p.returncode != 0] == []
            log = (server.root / "registry.log").read_bytes()[offset:].decode(errors="replace")
            outs = [json.loads(p.stdout) for p in procs]
            new = {layer["digest"]: layer["size"] for o in outs for layer in o["layers"] if layer["digest"] not in seen}
            seen |= new
            # each new layer uploaded once, whichever of the pushes at once packed it (upload claims)
            assert sum(o["bytes_uploaded"] for o in outs) == sum(new.values())
            rounds.append((sum(count_requests(log).values()) / len(locks), outs))
            for i in range(len(locks)):
                assert missing_blobs(server.host, f"svc{i}/app", [f"r{r}"]) == []
            pool_tags = [t for t in tags_of(server.host, "shared/pool") if t.startswith("k-")]
            assert pool_tags and missing_blobs(server.host, "shared/pool", pool_tags) == []
        # the pool grew, the requests per push did not (keys are looked up one GET each, whatever its size)
        assert rounds[1][0] <= rounds[0][0] * 1.1
        assert sum(o["packages_populated"] for o in rounds[1][1]) < sum(o["packages_populated"] for o in rounds[0][1])
    finally:
        server.close()


def test_a_1000_package_lock_stays_in_budget_re_pushes_for_nothing_and_one_bump_changes_few_layers(
        scale_index, tmp_path):
    index, names = scale_index
    lock = write_project(tmp_path / "big", names, index.url, uv_bin(), tmp_path / "lock-cache", hermetic_env())
    ref = f"oci:{tmp_path / 'layout'}:main"
    first = ocicache("push", lock, ref, "--json").json()
    assert len(first["layers"]) <= 64 and first["packages_populated"] == 1000
    assert sum(len(layer["packages"]) for layer in first["layers"]) == 1000
    again = ocicache("push", lock, ref, "--json").json()
    assert again["manifest_digest"] == first["manifest_digest"]
    assert again["packages_populated"] == 0 and again["layers_built"] == 0
    checked = ocicache("check", ref, lock, "--json").json()
    assert checked["ok"] and checked["needed"] == 1000

    bumped = package_name(500)
    index.add_wheel(bumped, "1.1")
    subprocess.run([uv_bin(), "lock", "--quiet", "--upgrade-package", bumped], cwd=lock.parent, check=True,
                   env=hermetic_env(UV_CACHE_DIR=str(tmp_path / "lock-cache"), UV_NO_CACHE="1"))
    third = ocicache("push", lock, ref, "--json").json()
    before = {layer["digest"] for layer in first["layers"]}
    changed = [layer for layer in third["layers"] if layer["digest"] not in before]
    assert 1 <= len(changed) <= 2 and third["packages_populated"] == 1
    assert any(bumped in layer["packages"] for layer in changed)
