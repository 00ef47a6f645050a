#!/usr/bin/env python3
"""What a dockerd costs to apply a layer, per entry and per megabyte, engine beside engine.

On dockerd's overlay2 store, a `FROM` of an image whose layers hold an installed environment is
bound by how fast the engine writes the layers' files (docs/benchmarks.md, runs 24-29). This times
`docker load` of one-layer images built here with ocicache's own tar writer (the bytes its layers
have) on a fresh daemon of each engine, the page cache dropped before each load:

  empty   one directory: what a load costs whatever the layer holds
  files   --files small files (--file-bytes each) in --dirs directories: the cost of an entry
  bytes   one file of --mib MiB: the cost of a megabyte
  tree    with --tree DIR, that directory (say an installed site-packages): a real mix

`docker load` applies a layer through the same layer store as a pull (dockerd's `ApplyDiff`
into the graph driver), without the download. Per entry = (files - empty) / entries, per MiB =
(bytes - empty) / MiB, from the medians of --repeat loads; engines alternate from one repeat to
the next.

Engines are bench_build.py's dockerd builders: `docker` (Debian 12's 20.10), `docker26` (Debian 13's
26.1) and `docker28` (Debian testing's 28.5), unpacked by scripts/docker-engine.sh, each with a
`-containerd` form (containerd's image store).

Usage: .venv/bin/python scripts/bench_apply.py [--repeat 5] [--engine docker --engine docker26 ...]
       [--files 4000] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import quiesce  # noqa: E402

from ocicache.compress import get_codec  # noqa: E402
from ocicache.pack import pack_layer  # noqa: E402
from ocicache.tree import Entry, walk_tree, with_parents  # noqa: E402

ENGINES = ["docker", "docker26", "docker28", "docker26-containerd", "docker28-containerd"]
DEFAULT_ENGINES = ["docker", "docker26", "docker28"]
TAG = "bench-apply:1"


def docker_archive(entries: list[Entry], path: Path) -> int:
    """A `docker load` archive of one image whose one layer is the deterministic tar of `entries`
    (ocicache's own writer, uncompressed); returns the number of entries in the layer (parents
    included)."""
    work = Path(tempfile.mkdtemp(dir=path.parent))
    try:
        layer = pack_layer(entries, work / "layer.tar", get_codec("none"))
        config = {"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id)]}}
        (work / "config.json").write_text(json.dumps(config))
        (work / "manifest.json").write_text(json.dumps([{"Config": "config.json", "RepoTags": [TAG],
                                                         "Layers": ["layer.tar"]}]))
        with tarfile.open(path, "w") as archive:
            for name in ("manifest.json", "config.json", "layer.tar"):
                archive.add(work / name, arcname=name)
        return len(with_parents(entries))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def synthetic_tree(root: Path, files: int, dirs: int, file_bytes: int, mib: int) -> dict[str, Path]:
    """The empty, files and bytes layers' contents under `root`."""
    trees = {name: root / name for name in ("empty", "files", "bytes")}
    for tree in trees.values():
        tree.mkdir(parents=True)
    payload = os.urandom(file_bytes)
    for i in range(files):
        sub = trees["files"] / f"d{i % dirs:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.py").write_bytes(payload)
    with open(trees["bytes"] / "blob", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return trees


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", action="append", choices=ENGINES, help="default: " + ", ".join(DEFAULT_ENGINES))
    parser.add_argument("--files", type=int, default=4000, help="entries of the files layer (default 4000)")
    parser.add_argument("--dirs", type=int, default=200, help="directories they are spread over (default 200)")
    parser.add_argument("--file-bytes", type=int, default=1000, help="bytes of each small file (default 1000)")
    parser.add_argument("--mib", type=int, default=100, help="MiB of the bytes layer (default 100)")
    parser.add_argument("--tree", type=Path, help="also a layer of this directory (e.g. a site-packages)")
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "bench-apply")
    args = parser.parse_args()
    if args.repeat < 1 or args.files < 1 or args.dirs < 1 or args.mib < 1 or args.file_bytes < 0:
        parser.error("--repeat, --files, --dirs and --mib must be at least 1, --file-bytes at least 0")
    if args.tree is not None and not args.tree.is_dir():
        parser.error(f"--tree {args.tree}: not a directory")
    if os.geteuid() != 0:
        raise SystemExit("bench_apply.py starts dockerd: run it as root")
    engines = args.engine or DEFAULT_ENGINES

    from bench_build import dockerd_engine, dockerd_setup  # the build benchmark's engine names and unpacking

    from tests.support.builders import Dockerd, dockerd_version

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    trees = synthetic_tree(args.workdir / "trees", args.files, args.dirs, args.file_bytes, args.mib)
    if args.tree is not None:
        trees["tree"] = args.tree.resolve()
    archives: dict[str, Path] = {}
    entries: dict[str, int] = {}
    for name, tree in trees.items():
        archives[name] = args.workdir / f"{name}.tar"
        entries[name] = docker_archive(list(walk_tree(tree, f"opt/{name}")), archives[name])
    shutil.rmtree(args.workdir / "trees")
    print(f"layers: {', '.join(f'{n} {entries[n]} entries' for n in archives)}", file=sys.stderr)

    installs = {engine: dockerd_engine(engine) for engine in engines}
    for engine in engines:
        print(f"{engine}: {dockerd_version(installs[engine])}", file=sys.stderr)

    times: dict[tuple[str, str], list[float]] = {(e, n): [] for e in engines for n in archives}
    for repeat in range(args.repeat):
        order = engines[repeat % len(engines):] + engines[:repeat % len(engines)]
        for engine in order:
            setup = dockerd_setup(engine)
            root = Path(tempfile.mkdtemp(prefix="ba-", dir="/tmp"))  # short socket paths
            daemon = Dockerd(root, installs[engine], setup.containerd_store, False)
            try:
                for name, archive in archives.items():
                    quiesce()
                    start = time.perf_counter()
                    proc = daemon.docker("load", "-i", str(archive))
                    elapsed = time.perf_counter() - start
                    if proc.returncode != 0:
                        raise SystemExit(f"{engine}: docker load failed:\n{proc.stderr[-2000:]}")
                    times[engine, name].append(elapsed)
                    print(f"  {engine} {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
                    daemon.docker("rmi", TAG)
            finally:
                daemon.stop()
                shutil.rmtree(root, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in times.items()}
    names = list(archives)
    print("| engine | " + " | ".join(f"{n} ({entries[n]} entries)" for n in names)
          + " | per entry | per MiB |")
    print("|---|" + "---|" * (len(names) + 2))
    for engine in engines:
        per_entry = (med[engine, "files"] - med[engine, "empty"]) / (entries["files"] - entries["empty"])
        per_mib = (med[engine, "bytes"] - med[engine, "empty"]) / args.mib
        cells = " | ".join(f"{med[engine, n]:.2f} s" for n in names)
        print(f"| {engine} | {cells} | {per_entry * 1000:.3f} ms | {per_mib * 1000:.1f} ms |")
    print("\nSingle loads (s): " + "; ".join(
        f"{e} {n} " + "/".join(f"{t:.2f}" for t in times[e, n]) for e in engines for n in names))


if __name__ == "__main__":
    main()
