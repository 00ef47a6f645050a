"""Shared by the benchmarks: a project's artifacts mirrored to a package index on 127.0.0.1.

Projects are locked at run time against the configured index (no lockfile naming a public index is
ever committed), then exactly the artifacts the target needs are downloaded into a local PEP 503
index, and the project is locked again against that mirror: both sides of a comparison then fetch
over the same loopback network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = ["OCICACHE_VMHWM", "mirror", "quiesce", "relock", "serve"]

# `python -c OCICACHE_VMHWM FILE ARGS…` runs `ocicache ARGS…` and writes its own peak memory (KiB) to
# FILE: VmHWM belongs to the process's current address space (reset by exec), so unlike ru_maxrss it
# cannot inherit the launcher's size.
OCICACHE_VMHWM = (
    "import re, sys\n"
    "from ocicache.cli import main\n"
    "code = main(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "raise SystemExit(code)\n"
)


def quiesce() -> None:
    """Start each timed step from the same state: dirty pages written back and the page cache dropped
    (a fresh runner's disk is cold; the previous step's writeback would otherwise land on the next)."""
    import contextlib
    import time

    os.sync()
    with contextlib.suppress(OSError):  # not root: the sync alone
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(1)


def mirror(pyproject: str, work: Path, index_root: Path, uv: Path, python: str | None = None) -> None:
    """Lock `pyproject` upstream in `work` and download what the target needs into `index_root`."""
    import httpx

    from ocicache.lock import read_lock
    from ocicache.populate import Narrowing, export_pylock, find_uv
    from ocicache.selection import select_packages
    from ocicache.target import make_target
    from tests.support.pkgindex import PackageIndex

    work.mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text(pyproject)
    subprocess.run([str(uv), "lock", "--quiet"], cwd=work, check=True)
    lock = read_lock(work / "uv.lock")
    tool = find_uv(uv)
    target = make_target(platform=None, python=python, python_platform=None, requires_python=lock.requires_python)
    pylock = export_pylock(tool, lock.path, Narrowing(), work / "export-cache")
    selection = select_packages(pylock, lock, target)
    index = PackageIndex(index_root)
    with httpx.Client(follow_redirects=True, timeout=120) as client:
        for sel in selection.selected:
            path = index.root / "files" / sel.artifact
            if path.exists():
                continue
            artifacts = [*sel.package.wheels, *([sel.package.sdist] if sel.package.sdist else [])]
            url = next(a.url for a in artifacts if a.filename == sel.artifact and a.url)
            partial = path.with_suffix(path.suffix + ".partial")
            with client.stream("GET", url) as resp, open(partial, "wb") as out:
                resp.raise_for_status()
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
            partial.rename(path)


def serve(root: Path, rate_mbps: float | None = None) -> None:
    """Serve a mirror on 127.0.0.1 until stdin closes (run as a subprocess); print its URL. With
    `rate_mbps`, the URL is a proxy that limits every connection together to that many MB/s."""
    from tests.support.pkgindex import PackageIndex
    from tests.support.tcpproxy import SharedLimit, ThrottledProxy

    index = PackageIndex(root)
    url = index.serve()
    proxy = None
    if rate_mbps:
        proxy = ThrottledProxy(int(url.split(":")[2].split("/")[0]), shared=SharedLimit(int(rate_mbps * 1_000_000)))
        url = f"http://127.0.0.1:{proxy.port}/simple"
    print(url, flush=True)
    sys.stdin.read()
    if proxy is not None:
        proxy.close()
    index.close()


def relock(pyproject: str, work: Path, uv: Path, url: str) -> Path:
    """`pyproject` locked against the mirror at `url`, in `work`; returns the lock."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text(
        pyproject + f'\n[[tool.uv.index]]\nname = "mirror"\nurl = "{url}"\ndefault = true\n')
    (work / "uv.lock").unlink(missing_ok=True)
    subprocess.run([str(uv), "lock", "--quiet"], cwd=work, check=True,
                   env={**os.environ, "UV_CACHE_DIR": str(work.parent / "lock-cache")})
    return work / "uv.lock"
