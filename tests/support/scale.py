"""Many services, many packages: synthetic indexes and locks drawn from them (issue 10), shared by
tests/test_scale.py and scripts/bench_scale.py.

Services overlap as real ones do: every lock holds the same "platform" packages (a web framework,
a client, logging…) plus its own draw from a long tail; one package in ten is big enough for a layer
of its own.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import httpx

from tests.support.pkgindex import PackageIndex

PREFIX = "scale-lib"


def package_name(i: int) -> str:
    return f"{PREFIX}-{i:04d}"


def fill_index(index: PackageIndex, count: int, *, heavy_every: int = 10, heavy_kib: int = 1100, seed: int = 1,
               version: str = "1.0") -> list[str]:
    """`count` wheels in `index`; every `heavy_every`-th one carries incompressible data."""
    rng = random.Random(seed)
    names = []
    for i in range(count):
        name = package_name(i)
        files = None
        if heavy_every and i % heavy_every == 0:
            module = name.replace("-", "_")
            files = {f"{module}/__init__.py": b"", f"{module}/data.bin": rng.randbytes(heavy_kib * 1024)}
        index.add_wheel(name, version, **({"files": files} if files else {}))
        names.append(name)
    return names


def draw_services(names: list[str], services: int, *, common: int, own: int, seed: int) -> list[list[str]]:
    """Dependency lists: the first `common` names for everyone, then `own` drawn per service."""
    rng = random.Random(seed)
    tail = names[common:]
    return [names[:common] + sorted(rng.sample(tail, own)) for _ in range(services)]


def write_project(path: Path, deps: Iterable[str], index_url: str, uv: str, cache: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(
        f'[project]\nname = "svc"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(list(deps))}\n[tool.uv]\npackage = false\n"
        f'[[tool.uv.index]]\nname = "local"\nurl = "{index_url}"\ndefault = true\n')
    subprocess.run([uv, "lock", "--quiet"], cwd=path, check=True, timeout=600, env={**env, "UV_CACHE_DIR": str(cache)})
    return path / "uv.lock"


_ACCESS = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (/v2/\S*) HTTP/[\d.]+" (\d{3})')


def count_requests(log_text: str) -> Counter[str]:
    """Requests by method in a distribution access log."""
    return Counter(m.group(1) for m in _ACCESS.finditer(log_text))


ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"])


def missing_blobs(host: str, repository: str, tags: Iterable[str]) -> list[str]:
    """Every tag's manifest must name only blobs the registry holds (config and layers)."""
    problems = []
    with httpx.Client(base_url=f"http://{host}/v2/{repository}", timeout=60) as client:
        for tag in tags:
            resp = client.get(f"/manifests/{tag}", headers={"Accept": ACCEPT})
            if resp.status_code != 200:
                problems.append(f"{repository}:{tag}: manifest {resp.status_code}")
                continue
            doc = resp.json()
            for desc in [doc.get("config"), *doc.get("layers", [])]:
                if desc and client.head(f"/blobs/{desc['digest']}").status_code != 200:
                    problems.append(f"{repository}:{tag} names missing {desc['digest']}")
    return problems


def tags_of(host: str, repository: str) -> list[str]:
    resp = httpx.get(f"http://{host}/v2/{repository}/tags/list", params={"n": 100000}, timeout=60)
    return list(resp.json().get("tags") or []) if resp.status_code == 200 else []
