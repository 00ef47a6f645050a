#!/usr/bin/env python3
"""Scale benchmarks (issue 10), in one run against a local docker-registry and a local index:

  concurrency  --pushes N concurrent pushes of different, overlapping locks (drawn from an index of
               --index-packages packages) into one registry and one --pool, --rounds times (each round
               new draws into the same, growing pool), on distribution's in-memory storage driver.
               Figures: failures, tags naming a missing blob, requests per push by method (from the
               registry's access log), bytes uploaded vs the unique bytes those images added, wall
               time of the round vs one push alone.
  big          a --big-packages lock: cold push (time per stage, layers, peak memory), no-op re-push,
               check, and how many layers change when one package is upgraded.
  gc           three services through one pool, upgraded twice: what `ocicache gc` deletes, and what
               the registry's own garbage collector then reclaims.

Usage: .venv/bin/python scripts/bench_scale.py [--pushes 50] [--rounds 3] [--big-packages 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import OCICACHE_VMHWM  # noqa: E402

from tests.support.pkgindex import PackageIndex  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402
from tests.support.scale import (  # noqa: E402
    count_requests,
    draw_services,
    fill_index,
    missing_blobs,
    package_name,
    tags_of,
    write_project,
)

UV = str(REPO / ".venv" / "bin" / "uv")
OCICACHE = [sys.executable, "-m", "ocicache"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("UV_")} | {"UV_PYTHON_DOWNLOADS": "never",
                                                                          "NO_PROXY": "127.0.0.1"}


def run(args: list[str], check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return elapsed, proc


def log_size(server: RegistryServer) -> int:
    return (server.root / "registry.log").stat().st_size


def log_since(server: RegistryServer, offset: int) -> str:
    with open(server.root / "registry.log", "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def bench_concurrency(work: Path, pushes: int, rounds: int, index_packages: int) -> list[dict[str, object]]:
    index = PackageIndex(work / "index")
    names = fill_index(index, index_packages)
    url = index.serve()
    locks = [[write_project(work / f"r{r}" / f"svc{i:02d}", deps, url, UV, work / "lock-cache", ENV)
              for i, deps in enumerate(draw_services(names, pushes, common=15, own=20, seed=r))]
             for r in range(rounds)]
    alone_lock = write_project(work / "alone", draw_services(names, 1, common=15, own=20, seed=999)[0], url, UV,
                               work / "lock-cache", ENV)
    server = RegistryServer(work / "registry", driver="inmemory")
    server.start()
    results = []
    try:
        alone_s, _ = run([*OCICACHE, "push", str(alone_lock), f"{server.host}/alone/app:main", "--json"])
        seen_layers: dict[str, int] = {}
        for r in range(rounds):
            offset = log_size(server)
            pool = f"{server.host}/shared/pool"

            def push(i: int, r: int = r, pool: str = pool) -> subprocess.CompletedProcess[str]:
                return run([*OCICACHE, "push", str(locks[r][i]), f"{server.host}/svc{i:02d}/app:r{r}", "--pool",
                            pool, "--json"], check=False)[1]

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=pushes) as executor:
                procs = list(executor.map(push, range(pushes)))
            wall = time.perf_counter() - start
            failures = [p.stderr.strip()[-300:] for p in procs if p.returncode != 0]
            outs = [json.loads(p.stdout) for p in procs if p.returncode == 0]
            requests = count_requests(log_since(server, offset))
            new_layers: dict[str, int] = {}
            for out in outs:
                for layer in out["layers"]:
                    if layer["digest"] not in seen_layers:
                        new_layers[layer["digest"]] = layer["size"]
            seen_layers |= new_layers
            problems = [p for i in range(pushes) for p in missing_blobs(server.host, f"svc{i:02d}/app", [f"r{r}"])
                        if procs[i].returncode == 0]
            pool_tags = [t for t in tags_of(server.host, "shared/pool") if t.startswith("k-")]
            problems += missing_blobs(server.host, "shared/pool", pool_tags)
            results.append({
                "round": r + 1, "pushes": pushes, "failures": len(failures), "failure_samples": failures[:3],
                "tags_naming_missing_blobs": len(problems), "pool_tags": len(pool_tags),
                "requests_per_push": {k: round(v / pushes, 1) for k, v in sorted(requests.items())},
                "requests_total_per_push": round(sum(requests.values()) / pushes, 1),
                "bytes_uploaded": sum(o["bytes_uploaded"] for o in outs),
                "unique_new_layer_bytes": sum(new_layers.values()),
                "packages_populated": sum(o["packages_populated"] for o in outs),
                "wall_s": round(wall, 1), "one_push_alone_s": round(alone_s, 2),
            })
            print(json.dumps(results[-1]), flush=True)
    finally:
        server.close()
        index.close()
    return results


def _stages(stderr: str) -> list[tuple[float, str]]:
    """Progress lines `[  1.2s] step` → (seconds, step)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("[") and "s]" in line:
            stamp, _, text = line[1:].partition("s]")
            try:
                out.append((float(stamp), text.strip()))
            except ValueError:
                continue
    return out


def bench_big(work: Path, packages: int, repeat: int) -> dict[str, object]:
    index = PackageIndex(work / "big-index")
    names = fill_index(index, packages, heavy_every=50, seed=2)
    url = index.serve()
    lock = write_project(work / "big", names, url, UV, work / "big-lock-cache", ENV)
    server = RegistryServer(work / "big-registry")
    server.start()
    try:
        ref = f"{server.host}/big/app:main"
        hwm = work / "hwm"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", OCICACHE_VMHWM, str(hwm), "push", str(lock), ref, "--json",
                               "--progress", "always"], capture_output=True, text=True, env=ENV)
        cold = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        first = json.loads(proc.stdout)
        peak_mib = int(hwm.read_text()) / 1024
        noop = [run([*OCICACHE, "push", str(lock), ref, "--json"])[0] for _ in range(repeat)]
        check = [run([*OCICACHE, "check", ref, str(lock), "--json"])[0] for _ in range(repeat)]
        # one package upgraded
        bumped = package_name(packages // 2)
        index.add_wheel(bumped, "1.1")
        subprocess.run([UV, "lock", "--quiet", "--upgrade-package", bumped], cwd=lock.parent, check=True,
                       env={**ENV, "UV_CACHE_DIR": str(work / "big-lock-cache"), "UV_NO_CACHE": "1"})
        _, proc2 = run([*OCICACHE, "push", str(lock), ref, "--json"])
        second = json.loads(proc2.stdout)
    finally:
        server.close()
        index.close()
    before = {layer["digest"] for layer in first["layers"]}
    changed = [layer for layer in second["layers"] if layer["digest"] not in before]
    return {"packages": packages, "layers": len(first["layers"]), "cold_push_s": round(cold, 2),
            "stages": _stages(proc.stderr), "peak_rss_mib": round(peak_mib, 1),
            "noop_repush_s": round(statistics.median(noop), 2), "noop_runs": [round(t, 2) for t in noop],
            "check_s": round(statistics.median(check), 2), "check_runs": [round(t, 2) for t in check],
            "bumped": bumped, "layers_changed_by_one_bump": len(changed),
            "changed_layers": [{"kind": c["kind"], "packages": len(c["packages"])} for c in changed],
            "second_push_populated": second["packages_populated"]}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_gc(work: Path) -> dict[str, object]:
    """Three services push through one pool, upgrade twice; gc, then the registry's collector."""
    index = PackageIndex(work / "gc-index")
    names = fill_index(index, 60, heavy_every=4, seed=3)
    for i in range(0, 12, 4):  # the upgraded packages (heavy ones among them), in two new versions
        for version in ("1.1", "1.2"):
            index.add_wheel(package_name(i), version, files={f"{package_name(i).replace('-', '_')}/d.bin":
                                                           os.urandom(1100 * 1024)})
    url = index.serve()
    server = RegistryServer(work / "gc-registry")
    server.start()
    services = draw_services(names, 3, common=12, own=15, seed=5)
    try:
        pool = f"{server.host}/team/pool"
        for version in ("1.0", "1.1", "1.2"):
            for n, deps in enumerate(services):
                pinned = [f"{d}=={version}" if int(d.rsplit("-", 1)[1]) in (0, 4, 8) else d for d in deps]
                lock = write_project(work / f"gc-svc{n}-{version}", pinned, url, UV, work / "gc-lock-cache", ENV)
                run([*OCICACHE, "push", str(lock), f"{server.host}/team/svc{n}:main", "--pool", pool])
        keep = [a for n in range(len(services)) for a in ("--keep-referenced-by", f"{server.host}/team/svc{n}")]
        storage_before = _du(server.storage)
        gc_s, proc = run([*OCICACHE, "gc", pool, *keep, "--min-age", "0s", "--json"])
        result = json.loads(proc.stdout)
        server.stop()
        start = time.perf_counter()
        subprocess.run(["docker-registry", "garbage-collect", "--delete-untagged", str(server.root / "config.yml")],
                       check=True, capture_output=True)
        collect_s = time.perf_counter() - start
        storage_after = _du(server.storage)
    finally:
        server.close()
        index.close()
    return {"pool_manifests": result["pool_manifests"], "kept": result["kept"], "deleted": len(result["deleted"]),
            "deleted_packages": sorted({p for e in result["deleted"] for p in e["packages"]}),
            "deleted_layer_bytes": result["deleted_bytes"], "gc_s": round(gc_s, 2),
            "registry_storage_before": storage_before, "registry_storage_after_collect": storage_after,
            "registry_collect_s": round(collect_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index-packages", type=int, default=300)
    parser.add_argument("--big-packages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["concurrency", "big", "gc"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocicache-bench-scale-") as tmp:
        work = Path(tmp)
        if args.only in (None, "big"):
            big = bench_big(work, args.big_packages, args.repeat)
            print(json.dumps(big, indent=2))
        if args.only in (None, "gc"):
            print(json.dumps(bench_gc(work), indent=2))
        if args.only in (None, "concurrency"):
            rounds = bench_concurrency(work, args.pushes, args.rounds, args.index_packages)
            print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
