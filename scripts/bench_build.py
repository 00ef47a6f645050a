#!/usr/bin/env python3
"""Benchmark: Docker builds with ocicache's cache images against uv's Docker guide, real builders.

Everything is local and measured in one run: the projects are locked at run time, their artifacts
mirrored to a package index on 127.0.0.1, a real registry (Debian's docker-registry) holds the base
image (this machine's Debian CPython 3.11, tests/support/baseimage.py) and the cache images.

Variants (each a Dockerfile installing the project with `uv sync --frozen --no-install-project`):
  guide     uv's Docker guide: `RUN --mount=type=cache,target=/root/.cache/uv uv sync`, from the index
  bind      `RUN --mount=type=bind,from=<cache image>,target=/root/.cache/uv,rw uv sync --offline`
  stacked   `FROM <push --base image>` then `uv sync --offline --link-mode symlink`
  stacked-zstd  the same, the image's layers zstd-compressed (`push --compression zstd`; not run by
            default: Docker 20.10 cannot read zstd)
  stacked-venv  the same, the project's environment installed in the image too (`push --venv /app/.venv`;
            the build's `uv sync` then finds it complete; not run by default: the push needs root)
  stacked-venv-only  the environment's own files, one layer per package, and no cache (`push --venv
            /app/.venv --venv-only`; not run by default: the push needs root); `-zstd`: zstd layers
  venv-archives  --venv-only's layers as one tar each (`push --venv /app/.venv --venv-archives`), the
            image bind-mounted and its tars extracted with tar before `uv sync --offline` (not run by
            default: the push needs root)
  stacked-one   the same, every package in one layer (`--buckets 1 --solo-threshold 1024GiB`; not
            run by default: it gives up the per-package layers; it measures what the layer count costs)
Scenarios:
  a  fresh runner (empty builder store), the worker service
  b  fresh runner, a service whose dependencies have no wheel for the target: compiled from sdists
  c  warm runner: the store kept from a build of the previous lock, one dependency bumped
  d  fresh runner, the monorepo's second service (most of its layers shared with the first's)
  e  the monorepo's job: the first service then the second on one fresh runner, the second timed
  f  as e, the two services being members of one uv workspace (one lock, one cache image)
Builders: buildah (overlay storage, runc) and dockerd's BuildKit: `docker`, Debian 12's 20.10 (overlay2);
`docker26-containerd`, Debian 13's 26.1 (unpacked by scripts/docker-engine.sh) with containerd's image
store; `docker26`, the same on overlay2; `docker28` and `docker28-containerd`, Debian testing's 28.5
(`scripts/docker-engine.sh forky`), on either store (not run by default). Docker gunzips layers with Go's gzip
unless `unpigz` is on its PATH: Debian's docker.io does not install pigz, Docker's own packages
recommend it (and CI runner images carry it), so each dockerd builder also comes as `<builder>-pigz`
(not run by default); without the suffix, unpigz is turned off. A fresh store per run; the order
of the variants rotates from one repeat to the next. Medians and ratios to the guide are printed.

Usage: .venv/bin/python scripts/bench_build.py [--repeat 3] [--scenario a] [--builder buildah]
       [--variant guide --variant stacked] [--workdir DIR] [--rate-mbps 25] [--bytecode]
With --rate-mbps, the index and the registry share one bandwidth limit (a CI runner's network).
BuildKit's step timings of every timed build are kept in <workdir>/logs/<run>/.
With --push, each timed build's image is pushed to the registry afterwards (a CI job's last step),
timed apart and added: the build plus the push of the final image.
With --bytecode, every variant compiles bytecode (`ENV UV_COMPILE_BYTECODE=1`, as the Dockerfiles of
uv's Docker guide do) and the cache images carry it (`push --compile-bytecode`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from benchlib import mirror, quiesce, relock  # noqa: E402

_HEAD = '[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = "==3.11.*"\n'
# Resolved for the image's Python and Linux only, as a service built into images may be: the mirror
# holds that target's files, and a universal lock would also need other Pythons' wheels (numpy forks
# for 3.14) and Windows-only dependencies (kombu's tzdata).
_TAIL = '\n[tool.uv]\npackage = false\nenvironments = ["sys_platform == \'linux\'"]\n'
PROJECTS = {
    # The "worker" service of the issue: numpy, pandas, scipy, pyarrow, celery, redis.
    "worker": _HEAD.format(name="worker") + 'dependencies = ["numpy", "pandas", "scipy", "pyarrow", "celery", '
                                            '"redis==5.0.8"]\n' + _TAIL,
    # The same service a week later: one dependency bumped.
    "worker-bumped": _HEAD.format(name="worker") + 'dependencies = ["numpy", "pandas", "scipy", "pyarrow", '
                                                   '"celery", "redis==5.2.1"]\n' + _TAIL,
    # The monorepo's second service: shares numpy, pandas and their dependencies with the worker.
    "api": _HEAD.format(name="api") + 'dependencies = ["numpy", "pandas", "fastapi", "uvicorn", "httpx", '
                                      '"sqlalchemy"]\n' + _TAIL,
    # Dependencies with no wheel for CPython 3.11 on Linux, compiled from their sdists (C extensions):
    # a release from before the Python minor (psutil, netifaces) and a stack that ships sdists only
    # for that release (mercurial 6.5, whose build dominates).
    "native": _HEAD.format(name="native") + 'dependencies = ["mercurial==6.5", "psutil==5.9.0", '
                                            '"netifaces==0.11.0", "requests"]\n' + _TAIL,
}
# Mirrored only: what building those sdists needs from the index (uv's build isolation).
BUILD_DEPS = _HEAD.format(name="build-deps") + 'dependencies = ["setuptools", "wheel"]\n' + _TAIL
BASES = {"native": "base-cc"}  # the sdist service's base image carries a C compiler
# The monorepo as one uv workspace: the same two services as members (virtual: nothing to build).
WORKSPACE_ROOT = ('[tool.uv.workspace]\nmembers = ["services/*"]\n'
                  '[tool.uv]\nenvironments = ["sys_platform == \'linux\'"]\n')
MEMBERS = {name: PROJECTS[name] for name in ("worker", "api")}
SCENARIOS = {"a": ("worker", None), "b": ("native", None), "c": ("worker-bumped", "worker"), "d": ("api", None),
             "e": ("api", "worker"), "f": ("ws:api", "ws:worker")}
# the stacked image's variants: what `push --base` is given beside the default
STACKED_PUSH_ARGS = {
    "stacked": [],
    "stacked-zstd": ["--compression", "zstd"],
    "stacked-one": ["--buckets", "1", "--solo-threshold", "1024GiB"],  # every package in one layer
    "stacked-venv": ["--venv", "/app/.venv"],  # the environment installed too: the build's uv sync does nothing
    # the environment's own files, a layer per big package, and no cache: the build's uv sync does nothing
    "stacked-venv-only": ["--venv", "/app/.venv", "--venv-only"],
    "stacked-venv-only-zstd": ["--venv", "/app/.venv", "--venv-only", "--compression", "zstd"],  # Docker >= 23
    "stacked-venv-only-tar": ["--venv", "/app/.venv", "--venv-only", "--compression", "none"],  # no codec at all
    # one layer per package, as before the small ones rode with uv's own files
    "stacked-venv-only-each": ["--venv", "/app/.venv", "--venv-only", "--solo-threshold", "0"],
    # --venv-only's layers, each as one tar, bind-mounted by the build and extracted with tar
    "venv-archives": ["--venv", "/app/.venv", "--venv-archives"],
}
VARIANTS = ("guide", "bind", *STACKED_PUSH_ARGS)
DEFAULT_VARIANTS = ["guide", "bind", "stacked"]


def dockerfile(variant: str, images: dict[str, str], project: str, bytecode: bool = False) -> str:
    """With `bytecode`, every variant compiles bytecode as the guide's example Dockerfiles do
    (`ENV UV_COMPILE_BYTECODE=1`), and the cache images carry it (`push --compile-bytecode`)."""
    install = "uv sync --frozen --no-install-project"
    env = "ENV UV_COMPILE_BYTECODE=1\n" if bytecode else ""
    if project.startswith("ws:"):  # a workspace member: the workspace's lock and images
        install = f"uv sync --frozen --no-install-workspace --package {project[3:]}"
        project = "ws"
    base = images[BASES.get(project, "base")]
    if variant == "guide":
        return (f"FROM {base}\nWORKDIR /app\nENV UV_LINK_MODE=copy\n{env}COPY . /app/\n"
                f"RUN --mount=type=cache,target=/root/.cache/uv {install}\n")
    if variant == "bind":
        return (f"FROM {images[project + ':cache']} AS uvcache\nFROM {base}\nWORKDIR /app\n"
                f"ENV UV_LINK_MODE=copy\n{env}COPY . /app/\n"
                f"RUN --mount=type=bind,from=uvcache,target=/root/.cache/uv,rw {install} --offline\n")
    stacked = images[f"{project}:{variant}"]
    if variant == "venv-archives":  # not FROM: the tars, extracted by the base image's tar
        return (f"FROM {base}\nWORKDIR /app\n{env}COPY . /app/\n"
                f"RUN --mount=type=bind,from={stacked},source=/ocicache/venv,target=/tmp/ocicache-venv "
                f"for a in /tmp/ocicache-venv/*.tar; do tar -xf \"$a\" -C /; done && {install} --offline\n")
    return (f"FROM {stacked}\nWORKDIR /app\n{env}COPY . /app/\n"
            f"RUN {install} --offline --link-mode symlink\n")


@dataclass
class BuildahRunner:
    """buildah with a store of its own (and its own TMPDIR: buildah keeps cache mounts there)."""

    root: Path
    driver: str = "overlay"
    name: str = "buildah"

    def build(self, context: Path, network: str) -> float:
        env = {**os.environ, "TMPDIR": str(self.root / "tmp")}
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = ["buildah", "--root", str(self.root / "store"), "--runroot", str(self.root / "run"),
               "--storage-driver", self.driver, "bud", "--isolation", "oci", "--runtime", "runc",
               "--network", network, "--tls-verify=false", "--layers", "-t", "bench", "-f", "Dockerfile", "src"]
        return _timed(cmd, cwd=context, env=env)

    def push(self, ref: str) -> float:
        """Push the image just built, as a CI job ends; buildah knows which blobs it pulled from where."""
        cmd = ["buildah", "--root", str(self.root / "store"), "--runroot", str(self.root / "run"),
               "--storage-driver", self.driver, "push", "--tls-verify=false", "bench", f"docker://{ref}"]
        return _timed(cmd, env={**os.environ, "TMPDIR": str(self.root / "tmp")})

    def close(self) -> None:
        subprocess.run(["buildah", "--root", str(self.root / "store"), "--runroot", str(self.root / "run"),
                        "--storage-driver", self.driver, "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.root / "store" / self.driver)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class DockerRunner:
    """dockerd with a data-root of its own, BuildKit builds: Debian 12's (20.10), or with `engine` the
    newer one scripts/docker-engine.sh unpacks (Debian 13's 26.1)."""

    name = "docker-buildkit"

    def __init__(self, root: Path, engine: Path | None = None, containerd_store: bool = False,
                 unpigz: bool = False) -> None:
        from tests.support.builders import Dockerd

        self.root = root
        self.daemon = Dockerd(root, engine, containerd_store, unpigz)
        self.log: Path | None = None
        self.builds = 0

    def build(self, context: Path, network: str) -> float:
        start = time.perf_counter()
        # A tag per build, as a runner building two services has: with containerd's image store, a
        # second build under the first one's tag failed once while unpacking its result (dockerd 26.1,
        # the guide's (f): "parent snapshot ... does not exist").
        self.builds += 1
        proc = self.daemon.docker("build", "--progress", "plain", "--network", network, "-t", f"bench-{self.builds}",
                                  "-f", "Dockerfile", "src", cwd=context)
        elapsed = time.perf_counter() - start
        if self.log is not None:  # BuildKit's step timings (--progress plain), for the breakdown
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_text(proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"docker build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return elapsed

    def push(self, ref: str) -> float:
        """Tag the image just built and push it, as a CI job ends."""
        tagged = self.daemon.docker("tag", f"bench-{self.builds}", ref)
        if tagged.returncode != 0:
            raise SystemExit(f"docker tag failed:\n{tagged.stderr[-3000:]}")
        start = time.perf_counter()
        proc = self.daemon.docker("push", ref)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"docker push failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return elapsed

    def close(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _timed(cmd: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kwargs)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


DOCKERDS = ["docker", "docker26", "docker26-containerd", "docker28", "docker28-containerd"]
ENGINE_SUITES = {"docker26": "trixie", "docker28": "forky"}  # scripts/docker-engine.sh's suites
BUILDERS = ["buildah", *DOCKERDS, *(f"{d}-pigz" for d in DOCKERDS)]
DEFAULT_BUILDERS = ["buildah", "docker", "docker26-containerd"]
RUN_STAMP = time.strftime("%Y%m%dT%H%M%S")  # each run's BuildKit logs in a directory of their own


@dataclass(frozen=True)
class DockerdSetup:
    suite: str | None  # scripts/docker-engine.sh's suite, None for the system's dockerd
    containerd_store: bool
    unpigz: bool


def dockerd_setup(builder: str) -> DockerdSetup:
    """What a dockerd builder's name asks for: `<engine>[-containerd][-pigz]`."""
    engine = builder.removesuffix("-pigz").removesuffix("-containerd")
    return DockerdSetup(ENGINE_SUITES.get(engine), builder.removesuffix("-pigz").endswith("-containerd"),
                        builder.endswith("-pigz"))


def dockerd_engine(builder: str) -> Path | None:
    """The unpacked engine a dockerd builder runs (None: the system's), fetched on first use."""
    from tests.support.builders import unpacked_docker_engine

    suite = dockerd_setup(builder).suite
    try:
        return unpacked_docker_engine(suite) if suite else None
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def print_engines(builders: list[str]) -> None:
    """The dockerd version each builder runs, on stderr: the record a run's results need."""
    from tests.support.builders import dockerd_version

    for builder in builders:
        if builder != "buildah":
            print(f"{builder}: {dockerd_version(dockerd_engine(builder))}", file=sys.stderr, flush=True)


def _runner(builder: str, work: Path) -> BuildahRunner | DockerRunner:
    if builder == "buildah":
        return BuildahRunner(work)
    setup = dockerd_setup(builder)
    return DockerRunner(Path(tempfile.mkdtemp(prefix="bk-", dir="/tmp")), dockerd_engine(builder),  # short paths
                        containerd_store=setup.containerd_store, unpigz=setup.unpigz)


def _context(work: Path, lock: Path, text: str) -> Path:
    """`src/`, the build context: the lock, its pyproject.toml and any workspace members' (what
    `COPY . /app/` copies); the Dockerfile beside it, passed with -f."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    shutil.copy(lock, work / "src" / "uv.lock")
    for pyproject in lock.parent.rglob("pyproject.toml"):
        dest = work / "src" / pyproject.relative_to(lock.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pyproject, dest)
    (work / "Dockerfile").write_text(text)
    return work


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def setup(work: Path, rate_mbps: float | None, bytecode: bool = False,
          stacked: tuple[str, ...] = ("stacked",)) -> tuple[dict[str, Path], dict[str, str], list[object]]:
    """Mirror, registry, base image, cache images (the `stacked` variants' too); returns (locks, images,
    servers to close).

    With `rate_mbps`, the index and the registry are reached through proxies sharing that bandwidth
    (both variants' builds then compete for one network, as on a CI runner); pushes go direct.
    """
    from ocicache.populate import find_uv
    from tests.support.baseimage import TOOLCHAIN, build_base_image
    from tests.support.pkgindex import PackageIndex
    from tests.support.registry import RegistryServer
    from tests.support.tcpproxy import SharedLimit, ThrottledProxy

    uv = find_uv(None).path
    index_root = work / "mirror"
    for name, text in [*PROJECTS.items(), ("build-deps", BUILD_DEPS)]:
        mirror(text, work / f"{name}-upstream", index_root, uv)
    index = PackageIndex(index_root)
    url = index.serve()
    registry = RegistryServer(work / "registry", "plain")
    registry.start()
    servers: list[object] = [index, registry]
    pull_host = host = registry.host
    if rate_mbps:
        limit = SharedLimit(int(rate_mbps * 1_000_000))
        index_proxy = ThrottledProxy(int(url.split(":")[2].split("/")[0]), shared=limit)
        registry_proxy = ThrottledProxy(registry.port, shared=limit)
        servers += [index_proxy, registry_proxy]
        url = f"http://127.0.0.1:{index_proxy.port}/simple"
        pull_host = f"127.0.0.1:{registry_proxy.port}"
    locks = {name: relock(text, work / f"{name}-local", uv, url) for name, text in PROJECTS.items()}
    locks["ws"] = _relock_workspace(work / "ws-local", uv, url)
    images = {"base": f"{host}/bench/python:3.11", "base-cc": f"{host}/bench/python-cc:3.11"}
    ocicache = [sys.executable, "-m", "ocicache"]
    _run([*ocicache, "copy", build_base_image(work / "base-layout", str(uv)), images["base"]])
    _run([*ocicache, "copy", build_base_image(work / "base-cc-layout", str(uv), packages=TOOLCHAIN), images["base-cc"]])
    for name, lock in locks.items():
        images[f"{name}:cache"] = f"{host}/bench/{name}-cache:1"
        compile_flag = ["--compile-bytecode"] if bytecode else []
        _run([*ocicache, "push", str(lock), images[f"{name}:cache"], "--pool", f"{host}/bench/pool", *compile_flag])
        for variant in stacked:  # each after the cache image's push: the pool holds every package (a CI push)
            images[f"{name}:{variant}"] = f"{host}/bench/{name}-{variant}:1"
            start = time.perf_counter()
            _run([*ocicache, "push", str(lock), images[f"{name}:{variant}"], "--base", images[BASES.get(name, "base")],
                  "--pool", f"{host}/bench/pool", *compile_flag, *STACKED_PUSH_ARGS[variant]])
            print(f"  push {name} {variant} (pool warm): {time.perf_counter() - start:.1f} s", file=sys.stderr,
                  flush=True)
    images["registry"] = host
    return locks, {k: v.replace(host, pull_host, 1) for k, v in images.items()}, servers


def _lock(locks: dict[str, Path], project: str) -> Path:
    return locks["ws" if project.startswith("ws:") else project]


def _relock_workspace(work: Path, uv: Path, url: str) -> Path:
    """The two services as members of one workspace at `work`, locked against the mirror."""
    for name, text in MEMBERS.items():
        (work / "services" / name).mkdir(parents=True, exist_ok=True)
        (work / "services" / name / "pyproject.toml").write_text(text)
    return relock(WORKSPACE_ROOT, work, uv, url)


Times = dict[str, list[float]]  # by variant


def run_scenario(scenario: str, builder: str, variants: list[str], repeat: int, work: Path,
                 locks: dict[str, Path], images: dict[str, str], bytecode: bool = False,
                 push_to: str | None = None) -> tuple[Times, Times, Times]:
    """Times of the scenario's build per variant, of the build before it on the same runner (if any),
    and, with `push_to` (a registry host), of pushing the image built, each to a repository of its own."""
    project, previous = SCENARIOS[scenario]
    times: Times = {v: [] for v in variants}
    firsts: Times = {v: [] for v in variants}
    pushes: Times = {v: [] for v in variants}
    for i in range(repeat):
        order = variants[i % len(variants):] + variants[: i % len(variants)]  # alternate who goes first
        for variant in order:
            runner = _runner(builder, work / "builder")
            try:
                network = "host" if variant == "guide" else "none"
                if previous is not None:  # a warm runner: another lock built in this store first
                    quiesce()
                    firsts[variant].append(runner.build(
                        _context(work / "ctx", _lock(locks, previous), dockerfile(variant, images, previous, bytecode)),
                        network))
                context = _context(work / "ctx", _lock(locks, project), dockerfile(variant, images, project, bytecode))
                quiesce()
                if isinstance(runner, DockerRunner):
                    runner.log = work / "logs" / RUN_STAMP / f"{scenario}-{builder}-{variant}-{i + 1}.log"
                times[variant].append(runner.build(context, network))
                if push_to is not None:
                    pushes[variant].append(runner.push(f"{push_to}/bench/out-{scenario}-{builder}-{variant}:{i + 1}"))
            finally:
                runner.close()
            pushed = f", push {pushes[variant][-1]:.1f} s" if push_to is not None else ""
            print(f"  {scenario} {builder} {variant}: {times[variant][-1]:.1f} s{pushed}", file=sys.stderr, flush=True)
    return times, firsts, pushes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--builder", action="append", choices=BUILDERS,
                        help="docker: Debian 12's dockerd 20.10; docker26: Debian 13's dockerd 26.1 "
                             "(scripts/docker-engine.sh); docker28: Debian testing's 28.5 (scripts/docker-engine.sh "
                             "forky); <engine>-containerd: with containerd's image store instead of overlay2; "
                             "<builder>-pigz: the same with unpigz (as Docker's own packages "
                             "install it); default: buildah, docker and docker26-containerd")
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="default: " + ", ".join(DEFAULT_VARIANTS))
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "bench-build")
    parser.add_argument("--rate-mbps", type=float, metavar="MB/S",
                        help="the index and the registry share this bandwidth (a CI network), e.g. 25")
    parser.add_argument("--bytecode", action="store_true",
                        help="every variant compiles bytecode (UV_COMPILE_BYTECODE=1, as in uv's guide's examples); "
                             "the cache images are pushed with --compile-bytecode")
    parser.add_argument("--push", action="store_true",
                        help="after each timed build, push the image built to the registry (a CI job's last "
                             "step) and time that too")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work / "registry", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    variants = list(args.variant or DEFAULT_VARIANTS)
    stacked = tuple(v for v in STACKED_PUSH_ARGS if v in variants)
    print_engines(args.builder or DEFAULT_BUILDERS)
    locks, images, servers = setup(work, args.rate_mbps, args.bytecode, stacked)
    results = []
    try:
        for scenario in args.scenario or sorted(SCENARIOS):
            for builder in args.builder or DEFAULT_BUILDERS:
                times, firsts, pushes = run_scenario(scenario, builder, variants, args.repeat, work, locks, images,
                                                     args.bytecode, images["registry"] if args.push else None)
                results.append({"scenario": scenario, "builder": builder,
                                "median_s": {v: statistics.median(t) for v, t in times.items()}, "runs_s": times,
                                "first_build_runs_s": {v: t for v, t in firsts.items() if t},
                                "push_runs_s": {v: t for v, t in pushes.items() if t}})
    finally:
        for server in servers:
            server.close()  # type: ignore[attr-defined]
    print("| scenario | builder | " + " | ".join(variants) + " | " +
          " | ".join(f"{v} / guide" for v in variants if v != "guide") + " |")
    print("|---|---|" + "---|" * (len(variants) * 2 - 1))
    for r in results:
        med = r["median_s"]
        ratios = [f"{med[v] / med['guide']:.2f}x" for v in variants if v != "guide" and "guide" in med]
        print(f"| {r['scenario']} | {r['builder']} | " + " | ".join(f"{med[v]:.1f} s" for v in variants) + " | "
              + " | ".join(ratios) + " |")
    pushed = [r for r in results if r["push_runs_s"]]
    if pushed:  # the CI job: the build, then the push of what it built
        print()
        print("| scenario | builder | " + " | ".join(f"{v}: build + push" for v in variants) + " | " +
              " | ".join(f"{v} / guide" for v in variants if v != "guide") + " |")
        print("|---|---|" + "---|" * (len(variants) * 2 - 1))
        for r in pushed:
            total = {v: r["median_s"][v] + statistics.median(t) for v, t in r["push_runs_s"].items()}
            cells = [f"{r['median_s'][v]:.1f} + {statistics.median(r['push_runs_s'][v]):.1f} = {total[v]:.1f} s"
                     for v in variants]
            ratios = [f"{total[v] / total['guide']:.2f}x" for v in variants if v != "guide" and "guide" in total]
            print(f"| {r['scenario']} | {r['builder']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    jobs = [r for r in results if r["first_build_runs_s"]]
    if jobs:  # scenarios that build on a runner after another build: the job as a whole
        print()
        print("| scenario | builder | " + " | ".join(f"{v}: first + timed" for v in variants) + " |")
        print("|---|---|" + "---|" * len(variants))
        for r in jobs:
            first = {v: statistics.median(t) for v, t in r["first_build_runs_s"].items()}
            cells = [f"{first[v]:.1f} + {r['median_s'][v]:.1f} = {first[v] + r['median_s'][v]:.1f} s" for v in variants]
            print(f"| {r['scenario']} | {r['builder']} | " + " | ".join(cells) + " |")
    print()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
