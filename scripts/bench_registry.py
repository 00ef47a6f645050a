#!/usr/bin/env python3
"""Benchmark the registry side, in one run against local registries (Debian's docker-registry):

  (a) push of a 1 GiB single-layer image: `ocicache copy oci:… REG/…` vs `skopeo copy oci:… docker://…`
      (each to its own fresh registry, alternating, median of --repeat)
  (b) ocicache's peak RSS while pushing it (VmHWM of its process)
  (c) no-op re-push of a 300-package lock (`ocicache push` of an unchanged lock to its own tag)
  (d) service B after service A (shared heavy package, --cache-from): bytes uploaded vs B's total

Usage: .venv/bin/python scripts/bench_registry.py [--repeat 5] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import OCICACHE_VMHWM  # noqa: E402

from tests.support.pkgindex import PackageIndex  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402


def timed(cmd: list[str], **kwargs: object) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def big_layout(work: Path, size_mib: int) -> Path:
    """An OCI layout with one layer of `size_mib` MiB of incompressible data (built by ocicache's own code)."""
    from ocicache.assemble import LayerDescription, assemble_image
    from ocicache.compress import get_codec
    from ocicache.dest import BlobOrigin, write_image
    from ocicache.dest.layout import open_layout_for_write
    from ocicache.pack import pack_layer
    from ocicache.target import make_target
    from ocicache.tree import file_entry

    layout = work / "big-layout"
    if (layout / "index.json").exists():
        return layout
    data = work / "big.bin"
    rnd = random.Random(42)
    with open(data, "wb") as f:
        for _ in range(size_mib):
            f.write(rnd.randbytes(1 << 20))
    packed = pack_layer([file_entry("archive-v0/big/big.bin", data)], work / "big.blob", get_codec("gzip"))
    data.unlink()
    layer = LayerDescription(digest=packed.digest, diff_id=packed.diff_id, size=packed.size,
                             media_type=packed.media_type, kind="package", key="sha256:" + "0" * 64, packages=())
    target = make_target(platform="linux/amd64", python="3.12", python_platform=None)
    image = assemble_image([layer], target, {})
    with open_layout_for_write(layout) as dest:
        write_image(dest, image, [(image.layers[0], BlobOrigin(path=packed.path))], "big")
    return layout


def bench_big(work: Path, size_mib: int, repeat: int) -> dict[str, object]:
    layout = big_layout(work, size_mib)
    times: dict[str, list[float]] = {"ocicache": [], "skopeo": []}
    rss = []
    for i in range(repeat):
        for tool in ("ocicache", "skopeo") if i % 2 == 0 else ("skopeo", "ocicache"):
            server = RegistryServer(work / f"reg-{tool}-{i}")
            server.start()
            try:
                ref = f"{server.host}/bench/{tool}:big"
                if tool == "ocicache":
                    hwm = work / "hwm"
                    t, _ = timed([sys.executable, "-c", OCICACHE_VMHWM, str(hwm), "copy", f"oci:{layout}:big", ref])
                    rss.append(int(hwm.read_text()) / 1024)
                else:
                    t, _ = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:big",
                                  f"docker://{ref}"])
                times[tool].append(t)
            finally:
                server.close()
                shutil.rmtree(work / f"reg-{tool}-{i}", ignore_errors=True)
    blob = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    return {"blob_mib": blob.stat().st_size / 2**20,
            "ocicache_s": statistics.median(times["ocicache"]), "skopeo_s": statistics.median(times["skopeo"]),
            "ratio": statistics.median(times["ocicache"]) / statistics.median(times["skopeo"]),
            "ocicache_peak_rss_mib": max(rss), "runs": times}


def _project(path: Path, deps: list[str], index_url: str, cache: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(
        f'[project]\nname = "bench"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = {json.dumps(deps)}\n'
        f'[tool.uv]\npackage = false\n[[tool.uv.index]]\nname = "local"\nurl = "{index_url}"\ndefault = true\n')
    subprocess.run([str(REPO / ".venv/bin/uv"), "lock", "--quiet"], cwd=path, check=True,
                   env={**os.environ, "UV_CACHE_DIR": str(cache)})
    return path / "uv.lock"


def bench_reuse(work: Path, repeat: int) -> dict[str, object]:
    index = PackageIndex(work / "index")
    names = [f"pkg-{i:03d}" for i in range(300)]
    for name in names:
        index.add_wheel(name, "1.0")
    rnd = random.Random(7)
    for name, size in (("heavyweight", 64), ("service-a-only", 4), ("service-b-only", 4)):
        module = name.replace("-", "_")
        index.add_wheel(name, "1.0", files={f"{module}/__init__.py": b"",
                                            f"{module}/data.bin": rnd.randbytes(size << 20)})
    url = index.serve()
    server = RegistryServer(work / "reg-reuse")
    server.start()
    try:
        ocicache = [sys.executable, "-m", "ocicache"]
        lock = _project(work / "p300", names, url, work / "lock-cache")
        ref = f"{server.host}/bench/p300:main"
        timed([*ocicache, "push", str(lock), ref])
        noop = [timed([*ocicache, "push", str(lock), ref, "--json"])[0] for _ in range(repeat)]

        lock_a = _project(work / "svc-a", ["heavyweight", "service-a-only", *names[:50]], url, work / "lock-cache")
        lock_b = _project(work / "svc-b", ["heavyweight", "service-b-only", *names[25:75]], url, work / "lock-cache")
        timed([*ocicache, "push", str(lock_a), f"{server.host}/team/a:main"])
        _, out = timed([*ocicache, "push", str(lock_b), f"{server.host}/team/b:main", "--cache-from",
                        f"{server.host}/team/a:main", "--json"])
        b = json.loads(out)
    finally:
        server.close()
        index.close()
    total = sum(layer["size"] for layer in b["layers"])
    return {"noop_repush_300_s": statistics.median(noop), "noop_runs": noop,
            "b_bytes_uploaded": b["bytes_uploaded"], "b_total_bytes": total,
            "b_blobs": {k: b[k] for k in ("blobs_uploaded", "blobs_mounted", "blobs_present")},
            "b_packages_populated": b["packages_populated"], "b_packages_extracted": b["packages_extracted"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (the disk is noisy)")
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ocicache-bench-registry-"))
    try:
        big = bench_big(work, args.size_mib, args.repeat)
        reuse = bench_reuse(work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"(a) push {big['blob_mib']:.0f} MiB single-layer image: ocicache {big['ocicache_s']:.2f} s, "
          f"skopeo {big['skopeo_s']:.2f} s, ratio {big['ratio']:.2f}x")
    print(f"(b) ocicache peak RSS while pushing it: {big['ocicache_peak_rss_mib']:.0f} MiB")
    print(f"(c) no-op re-push of a 300-package lock: {reuse['noop_repush_300_s']:.2f} s")
    print(f"(d) service B after A: uploaded {reuse['b_bytes_uploaded'] / 2**20:.1f} MiB of "
          f"{reuse['b_total_bytes'] / 2**20:.1f} MiB ({reuse['b_blobs']}; packages populated "
          f"{reuse['b_packages_populated']}, re-bundled from A's layers {reuse['b_packages_extracted']})")
    print(json.dumps({"big": big, "reuse": reuse}, indent=1))


if __name__ == "__main__":
    main()
