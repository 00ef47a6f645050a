#!/usr/bin/env python3
"""Benchmark: uv's own cold populate vs `ocicache push` (cold and unchanged), side by side in one run.

For each project (the README's example and a 20+ package data-science service), the script locks
it against the configured package index, mirrors exactly the artifacts the target needs into a
local index on 127.0.0.1 (so network speed and caching proxies do not skew the comparison),
re-locks against that mirror, then measures, --repeat times each, median reported:

  uv cold       `uv sync --frozen --no-install-project` into an empty cache and a new venv
  push cold     `ocicache push LOCK oci:<new dir>` (its scratch cache is always empty)
  push again    `ocicache push` of the unchanged lock to the same layout
  one family    (once) the image for uv 0.13.9 only, to size what serving every uv release costs

wall time, peak RSS of the whole process tree (ocicache + uv) and of ocicache's own process.
Usage: .venv/bin/python scripts/bench_push.py [--repeat N] [--project example|datasci] [--workdir DIR]
       [--rate-mbps 25]   (the index behind a proxy of that bandwidth, as on a CI runner)
       [--bytecode]       (uv syncs with --compile-bytecode, pushes with --compile-bytecode)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import OCICACHE_VMHWM, mirror, quiesce, relock, serve  # noqa: E402

PROJECTS = {
    "example": (REPO / "examples" / "demo" / "pyproject.toml").read_text(),
    "datasci": """[project]
name = "datasci-service"
version = "0.1.0"
requires-python = "==3.11.*"  # the image's Python: the mirror holds that target's files only
dependencies = ["numpy", "pandas", "scipy", "pyarrow", "matplotlib", "scikit-learn", "requests", "rich",
                "pydantic", "sqlalchemy", "httpx", "jinja2", "click", "pyyaml"]

[tool.uv]
package = false
environments = ["sys_platform == 'linux'"]  # a service built into images; the mirror is Linux's
""",
}


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of the process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    return elapsed, usage.ru_maxrss


def bench(project: str, workdir: Path, repeat: int, rate_mbps: float | None = None,
          bytecode: bool = False) -> dict[str, object]:
    """Measure one project. This process stays small (stdlib only): children's ru_maxrss starts
    from the launcher's size at fork, so heavy work (downloads, serving) runs in subprocesses."""
    uv = Path(REPO / ".venv" / "bin" / "uv")
    subprocess.run([sys.executable, __file__, "--mirror", project, "--workdir", str(workdir)], check=True)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(workdir / f"{project}-mirror"),
                               *(["--rate-mbps", str(rate_mbps)] if rate_mbps else [])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    lock = relock(PROJECTS[project], workdir / f"{project}-local", uv, server.stdout.readline().strip())
    env = {**os.environ, "UV_LINK_MODE": "copy"}
    results: dict[str, list[tuple[float, int, int]]] = {"uv cold": [], "push cold": [], "push again": []}
    for i in range(repeat):
        scratch = workdir / f"{project}-run{i}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        consumer = scratch / "consumer"
        consumer.mkdir()
        shutil.copy(lock.parent / "pyproject.toml", consumer)
        shutil.copy(lock, consumer)
        quiesce()
        compile_flag = ["--compile-bytecode"] if bytecode else []
        t, rss = run([str(uv), "sync", "--frozen", "--no-install-project", "--quiet", *compile_flag], cwd=consumer,
                     env={**env, "UV_CACHE_DIR": str(scratch / "uv-cache")})
        results["uv cold"].append((t, rss, 0))
        dest = f"oci:{scratch / 'layout'}:bench"
        for label in ("push cold", "push again"):
            rss_file = scratch / "self-rss"
            quiesce()
            t, rss = run([sys.executable, "-c", OCICACHE_VMHWM, str(rss_file), "push", str(lock), dest, "--progress",
                          "never", *compile_flag], env=env)
            results[label].append((t, rss, int(rss_file.read_text())))
    # The same lock as an image for one uv family only: what serving every release costs in bytes.
    single = workdir / f"{project}-single"
    shutil.rmtree(single, ignore_errors=True)
    run([sys.executable, "-m", "ocicache", "push", str(lock), f"oci:{single}:bench", "--uv-version", "0.13.9",
         "--progress", "never"], env=env)
    assert server.stdin is not None
    server.stdin.close()
    server.wait()
    size = sum(p.stat().st_size for p in (workdir / f"{project}-run0" / "layout" / "blobs").rglob("*"))
    single_size = sum(p.stat().st_size for p in (single / "blobs").rglob("*"))
    packages = lock.read_text().count("[[package]]")
    return {"project": project, "packages": packages, "image_bytes": size, "single_family_bytes": single_size,
            **{label: {"seconds": statistics.median(r[0] for r in rows), "runs_s": [round(r[0], 2) for r in rows],
                       "tree_rss_mib": max(r[1] for r in rows) / 1024,
                       "ocicache_rss_mib": max(r[2] for r in rows) / 1024}
               for label, rows in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--project", action="append", choices=sorted(PROJECTS))
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--mirror", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate-mbps", type=float, metavar="MB/S",
                        help="reach the index through a proxy limited to this bandwidth (a CI runner's network)")
    parser.add_argument("--bytecode", action="store_true",
                        help="uv syncs with --compile-bytecode and pushes with --compile-bytecode")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.mirror:
        return mirror(PROJECTS[args.mirror], args.workdir / f"{args.mirror}-upstream",
                      args.workdir / f"{args.mirror}-mirror", REPO / ".venv" / "bin" / "uv")
    if args.serve:
        return serve(args.serve, args.rate_mbps)
    rows = [bench(p, args.workdir, args.repeat, args.rate_mbps, args.bytecode)
            for p in (args.project or ["example", "datasci"])]
    print("| project | packages | image | uv cold | push cold | ratio | push again | peak RSS push (ocicache / tree) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        uvc, cold, again = r["uv cold"], r["push cold"], r["push again"]
        print(f"| {r['project']} | {r['packages']} | {r['image_bytes'] / 2**20:.0f} MiB | {uvc['seconds']:.2f} s "
              f"| {cold['seconds']:.2f} s | {cold['seconds'] / uvc['seconds']:.2f}x | {again['seconds']:.2f} s "
              f"| {cold['ocicache_rss_mib']:.0f} / {cold['tree_rss_mib']:.0f} MiB |")
    print()
    print("| project | image, every uv 0.9.0-0.13.9 | image, uv 0.13.9 only | growth |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['project']} | {r['image_bytes']:,} B | {r['single_family_bytes']:,} B "
              f"| {100 * (r['image_bytes'] / r['single_family_bytes'] - 1):.2f}% |")
    print()
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
