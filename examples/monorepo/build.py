#!/usr/bin/env python3
"""Push both services' cache images with a shared pool, build both, report what the second one cost.

Environment: REGISTRY=host:port (default: a docker-registry started here on 127.0.0.1),
BASE_IMAGE / UV_IMAGE (default: built from this machine's files), UV_DEFAULT_INDEX (the index to lock
against). Prints a JSON summary last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from tests.support.baseimage import build_base_image, build_uv_image  # noqa: E402
from tests.support.builders import Buildah  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402

SERVICES = ("api", "worker")
BIN = Path(sys.executable).parent


def run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def served_bytes(log: Path, start: int) -> int:
    """Bytes the registry sent for blob GETs since `start` (its log records each response's size)."""
    text = log.read_bytes()[start:].decode(errors="replace")
    return sum(int(m.group(2)) for m in re.finditer(
        r'http\.request\.method=GET http\.request\.remoteaddr=\S+ http\.request\.uri="/v2/[^"]+/blobs/sha256:[0-9a-f]+"'
        r'.*?http\.response\.status=(200) http\.response\.written=(\d+)', text))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ocicache-monorepo-"))
    server = None
    registry = os.environ.get("REGISTRY")
    if not registry:
        server = RegistryServer(work / "registry")
        server.start()
        registry = server.host
    try:
        base = os.environ.get("BASE_IMAGE")
        uv_image = os.environ.get("UV_IMAGE")
        uv = str(BIN / "uv")
        if not base:
            base = f"{registry}/base/python:3.11"
            run(str(BIN / "ocicache"), "copy", build_base_image(work / "base", uv), base)
        if not uv_image:
            uv_image = f"{registry}/base/uv:0.13.9"
            run(str(BIN / "ocicache"), "copy", build_uv_image(work / "uv", uv), uv_image)
        pool = f"{registry}/uvcache/pool"
        summary: dict[str, dict] = {}
        for service in SERVICES:
            project = work / service
            shutil.copytree(HERE / "services" / service, project)
            run(uv, "lock", "--quiet", cwd=project)
            cache = f"{registry}/uvcache/{service}:main"
            pushed = json.loads(run(str(BIN / "ocicache"), "push", str(project / "uv.lock"), cache, "--pool", pool,
                                    "--json"))
            start = (server.root / "registry.log").stat().st_size if server else 0
            # one store for both builds, as on one CI runner: the second pulls only what it lacks
            result = Buildah(work / "buildah").build(
                project, f"localhost/{service}", pull_always=False,
                build_args={"UV_CACHE_IMAGE": cache, "BASE_IMAGE": base, "UV_IMAGE": uv_image})
            if result.returncode != 0 or "service ready" not in result.stdout:
                raise SystemExit(f"building {service} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
            pulled = served_bytes(server.root / "registry.log", start) if server else None
            total = sum(layer["size"] for layer in pushed["layers"])
            summary[service] = {"cache_image": cache, "layers": len(pushed["layers"]),
                                "cache_bytes": total, "bytes_uploaded": pushed["bytes_uploaded"],
                                "blobs_mounted": pushed["blobs_mounted"],
                                "packages_populated": pushed["packages_populated"],
                                "build_pulled_bytes": pulled,
                                "numpy_layer": next(layer["blob"] for layer in pushed["layers"]
                                                    if "numpy" in layer["packages"])}
            print(f"{service}: cache image {cache}: {len(pushed['layers'])} layers, {total} bytes; "
                  f"uploaded {pushed['bytes_uploaded']} bytes, {pushed['blobs_mounted']} blobs mounted; "
                  f"numpy layer {summary[service]['numpy_layer']}; build pulled "
                  f"{pulled if pulled is not None else 'n/a'} bytes from the registry", file=sys.stderr)
        print(json.dumps(summary, indent=2))
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
