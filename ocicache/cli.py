"""Command line: argument parsing, and OcicacheError → one stderr line + exit code."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .compress import CODEC_NAMES
from .dest.options import RegistryOptions
from .errors import OcicacheError, UsageError
from .inspect import format_size
from .plan import DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SOLO_THRESHOLD, MAX_LAYERS_CAP
from .populate import Narrowing
from .progress import Progress
from .target import DEFAULT_GLIBC
from .uvcache import PINNED_UV_VERSION, supported_range

if TYPE_CHECKING:
    from .consumer import Consumer

_EPILOG = """\
examples:
  ocicache push uv.lock oci:build/uv-cache:main
  ocicache push uv.lock oci:build/uv-cache:py312 --python 3.12 --python-platform x86_64-manylinux_2_36
  ocicache inspect oci:build/uv-cache:main

Then, in a Dockerfile (same uv version, same target):
  RUN --mount=type=bind,from=<cache image>,target=/root/.cache/uv,rw \\
      uv sync --frozen --offline --no-install-project
See docs/ for every pattern.
"""


def _size(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", value, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {value!r} (e.g. 512KiB, 1MiB, 0)")
    unit = (m.group(2) or "B").upper()[:1]
    return int(m.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def _layers(value: str) -> int:
    n = int(value)
    if not 2 <= n <= MAX_LAYERS_CAP:
        raise argparse.ArgumentTypeError(f"must be between 2 and {MAX_LAYERS_CAP} (docker refuses more than 125)")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocicache",
        description="Turn a uv.lock into an OCI image whose filesystem is a uv cache, one layer per "
                    "big package, so Docker builds install without downloading.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"ocicache {__version__} (uv {PINNED_UV_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    push = sub.add_parser(
        "push", help="build the cache image of a lock and write it to a destination",
        description="Read LOCK, fill a uv cache for the exact target, split it into deterministic "
                    "per-package layers and write the image to DEST.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="DEST is oci:DIR[:TAG] (an OCI image layout directory) or REGISTRY/REPO[:TAG];\n"
               "the tag is 'latest' by default.\n"
               "Same lock + same target + same options give the same manifest digest.")
    push.add_argument("lock", type=Path, metavar="LOCK", help="the project's uv.lock (its pyproject.toml beside it)")
    push.add_argument("destination", metavar="DEST", help="oci:DIR[:TAG] or REGISTRY/REPO[:TAG]")
    tgt = push.add_argument_group("target (match the image your Dockerfile builds on)")
    tgt.add_argument("--platform", action="append", default=[],
                     help="OCI platform: linux/amd64 or linux/arm64 (default: this machine's); repeat it "
                          "for one image per platform under one tag (an image index)")
    tgt.add_argument("--python", help="CPython version of the target, 3.Y or 3.Y.Z (default: the lowest "
                                      "3.Y from 3.10 up that the lock's requires-python allows)")
    tgt.add_argument("--python-platform", metavar="TRIPLE", action="append", default=[],
                     help="exact libc level in uv's syntax (repeatable, one per platform), e.g. x86_64-manylinux_2_36, "
                          "aarch64-manylinux_2_28, x86_64-unknown-linux-musl "
                          f"(default: <arch>-manylinux_{DEFAULT_GLIBC[0]}_{DEFAULT_GLIBC[1]}, Debian 12)")
    tgt.add_argument("--uv-version", action="append", default=[], metavar="X.Y.Z",
                     help=f"only serve the cache format of this uv release (repeatable; default: every uv from "
                          f"{supported_range()}, each format's pointers beside one copy of the wheels)")
    _dockerfile_arguments(push, "push for exactly the target and uv release that build uses (no target flags "
                                "needed; flags given win)")
    _selection_arguments(push, "selection (default: every workspace package, extra and group)")
    lay = push.add_argument_group("layers")
    lay.add_argument("--max-layers", type=_layers, default=DEFAULT_MAX_LAYERS,
                     help=f"layer budget, at most {MAX_LAYERS_CAP} (default: {DEFAULT_MAX_LAYERS})")
    lay.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS,
                     help=f"buckets for small packages (default: {DEFAULT_BUCKETS})")
    lay.add_argument("--solo-threshold", type=_size, default=DEFAULT_SOLO_THRESHOLD, metavar="SIZE",
                     help="packages at least this big (unpacked; with --venv-only, installed) get a layer of "
                          "their own (default: 1MiB)")
    lay.add_argument("--compression", choices=CODEC_NAMES, default="gzip",
                     help="layer codec (default: gzip, readable by every builder; zstd: buildah, podman, "
                          "Docker >= 23; none: uncompressed tar, for builders that pull from a registry on a "
                          "fast local network, docs/dockerfile-patterns.md)")
    reuse = push.add_argument_group("reuse (known packages are neither downloaded nor built; blobs are mounted)")
    reuse.add_argument("--cache-from", action="append", default=[], metavar="REF",
                       help="an earlier cache image whose layers may be reused (repeatable; any repository "
                            "of the registry, or oci:DIR:TAG)")
    reuse.add_argument("--pool", metavar="REGISTRY/REPO",
                       help="a shared repository where every pushed layer stays findable by its reuse key; "
                            "looked up before populating and updated after pushing; pushes running at once "
                            "claim their new layers there, so each is uploaded once (docs/registries.md)")
    _registry_arguments(push)
    stk = push.add_argument_group("stacking (a build FROM the image, nothing copied)")
    stk.add_argument("--base", metavar="IMAGE",
                     help="write the base image's layers followed by the cache's, rooted at /root/.cache/uv (or "
                          "the --dockerfile build's cache directory): build FROM the result and run "
                          "`uv sync --frozen --offline --link-mode symlink`; see docs/dockerfile-patterns.md")
    stk.add_argument("--venv", metavar="PATH",
                     help="with --base: also install the project's environment at PATH in the image (the "
                          "pinned uv runs in the base image: needs root, a glibc base of this machine's "
                          "architecture), so the build's `uv sync` finds it complete and does nothing; PATH is "
                          "where the build's uv puts it, e.g. /app/.venv for WORKDIR /app; `auto`: read from "
                          "--dockerfile (WORKDIR, UV_PROJECT_ENVIRONMENT)")
    stk.add_argument("--venv-only", action="store_true",
                     help="with --venv: the environment holds the packages' own files (not links), a layer "
                          "per package of at least --solo-threshold (same digest in every image with that path; "
                          "the small ones ride with uv's own files), and the image carries "
                          "no cache: the smallest image and the fastest FROM; a build whose lock asks for a "
                          "package it lacks cannot install it offline")
    stk.add_argument("--venv-archives", action="store_true",
                     help="as --venv-only (implied), each layer holding its files as one tar under "
                          "/ocicache/venv and no base layers: the build bind-mounts the image and extracts the "
                          "tars with the base image's tar before `uv sync` (docs/dockerfile-patterns.md); on fresh "
                          "runners faster than FROM on Docker 23-28's overlay2 store, which applies a layer's "
                          "files slowly; elsewhere, and on warm runners, --venv-only is faster")
    byt = push.add_argument_group("bytecode (what uv's `--compile-bytecode` would do in every build, done once)")
    byt.add_argument("--compile-bytecode", action="store_true",
                     help="put each package's .pyc files in its layer, compiled for the target's CPython: a build "
                          "that installs with `--link-mode symlink` (FROM a --base image) or `hardlink` gets "
                          "them as links, and `UV_COMPILE_BYTECODE=1` then compiles nothing (default: on when "
                          "the --dockerfile build compiles bytecode)")
    byt.add_argument("--bytecode-python", metavar="PATH",
                     help="the CPython that compiles, implies --compile-bytecode (default: this interpreter if "
                          "its minor is the target's, else python3.Y on PATH); its full version is part of each "
                          "layer's reuse key")
    push.add_argument("--uv", type=Path, metavar="PATH",
                      help=f"the uv that fills the cache (default: the pinned uv {PINNED_UV_VERSION}); any "
                           f"release from {supported_range()}")
    push.add_argument("--uv-unpacks-all", action="store_true",
                      help="let uv download and unpack every wheel (slower). By default ocicache downloads the "
                           "wheels of an index itself and packs them straight from the .whl, once uv has filled "
                           "the index's smallest wheel and ocicache's tree of it is identical to uv's; the "
                           "layers are the same bytes either way")
    push.add_argument("--sign-key", type=Path, metavar="KEY",
                      help="sign the pushed image with this ECDSA P-256 private key (PEM; cosign's format, see "
                           "`ocicache sign`)")
    push.add_argument("--jobs", type=int, default=2, help="layers packed at once (default: 2)")
    push.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    push.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                      help="progress lines on stderr (default: only on a terminal)")

    insp = sub.add_parser("inspect", help="show the layers, packages, sizes, uv version and target of an image")
    _image_arguments(insp, "show", json_help="print JSON instead of a table")

    pull = sub.add_parser(
        "pull", help="write a cache image's uv cache into a directory (CI without Docker)",
        description="Download every layer of REF, verify each digest, and merge the cache into DIR "
                    "(created if missing). Unsafe paths and links are refused.")
    _image_arguments(pull, "pull", extra=lambda p: p.add_argument(
        "directory", type=Path, metavar="DIR", help="the uv cache directory, e.g. ~/.cache/uv"))
    _signature_arguments(pull, "pull")

    check = sub.add_parser(
        "check", help="say before a build whether `uv sync --frozen --offline` will find everything",
        description="Compare what LOCK needs on the target with what the cache image REF holds, and its uv "
                    "version and target with yours. Exit 0 if the offline sync will find everything, 1 and "
                    "the missing packages otherwise.")
    check.add_argument("reference", metavar="REF", help="the cache image: oci:DIR[:TAG] or REGISTRY/REPO[:TAG]")
    check.add_argument("lock", type=Path, metavar="LOCK", help="the project's uv.lock")
    ctgt = check.add_argument_group("target (as for push)")
    ctgt.add_argument("--platform")
    ctgt.add_argument("--python")
    ctgt.add_argument("--python-platform", metavar="TRIPLE")
    ctgt.add_argument("--uv-version", metavar="X.Y.Z",
                      help="the uv release your build runs: checked against the releases the image serves")
    _dockerfile_arguments(check, "check for that build: its target, its uv, and where its uv looks for the cache "
                                 "(USER, HOME, UV_CACHE_DIR) against where the Dockerfile mounts it")
    _selection_arguments(check, "selection: the flags your `uv sync` uses (default: everything)")
    check.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _signature_arguments(check, "check")
    _registry_arguments(check)

    verify = sub.add_parser(
        "verify", help="prove an image holds what its lock says: every layer, every hash, optionally a rebuild",
        description="Verify every layer's digest and diff_id, and that every package the image records has the "
                    "artifact hash LOCK selects for the image's target (read from its annotations). With --key, "
                    "its signature; with --rebuild, fill the cache again from the index and compare it file by "
                    "file: any change to a package's files is found and the package named. Exit 1 on any "
                    "difference.",
        epilog="example:\n  ocicache verify registry.example/cache/api:main uv.lock --key cosign.pub --rebuild",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("reference", metavar="REF",
                        help="the cache image: oci:DIR[:TAG] or REGISTRY/REPO[:TAG|@DIGEST]")
    verify.add_argument("lock", type=Path, metavar="LOCK", help="the uv.lock the image was pushed from")
    verify.add_argument("--key", type=Path, metavar="PUB", help="also require a signature by this public key (PEM)")
    verify.add_argument("--rebuild", action="store_true",
                        help="fill the cache again from the index and compare it file by file (downloads the lock)")
    verify.add_argument("--bytecode-python", metavar="PATH",
                        help="with --rebuild of an image with bytecode: the CPython that compiles it again (the "
                             "image's own release, as its annotation names; default: found as push finds it)")
    verify.add_argument("--platform", help="for an index: the platform to verify (default: the only one, or "
                                           "this machine's)")
    _selection_arguments(verify, "selection: as the push was made (default: everything)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _registry_arguments(verify)

    sign = sub.add_parser(
        "sign", help="sign an image in cosign's key-based format (cosign verify --key accepts it)",
        description="Sign the manifest REF resolves to with an ECDSA P-256 key and store the signature beside "
                    "it, as cosign does (tag sha256-<hex>.sig). An encrypted key's password is read from "
                    "$COSIGN_PASSWORD.",
        epilog="make a key:  openssl ecparam -name prime256v1 -genkey -noout -out key.pem\n"
               "its public key:  openssl ec -in key.pem -pubout -out key.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sign.add_argument("reference", metavar="REF", help="oci:DIR[:TAG] or REGISTRY/REPO[:TAG|@DIGEST]")
    sign.add_argument("--key", type=Path, metavar="KEY", required=True, help="the private key (PEM)")
    sign.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _registry_arguments(sign)

    gc = sub.add_parser(
        "gc", help="delete pool entries no image of the given repositories uses (keeps a pool bounded)",
        description="Delete the pool's one-layer manifests (and so their k-<key> tags) that no tag of the "
                    "--keep-referenced-by repositories references, once they have stayed unreferenced for "
                    "--min-age (gc records when it first saw each one unreferenced, in the pool's "
                    "ocicache-gc-state tag), and upload claims (c-<digest>) whose lease ran out. Blobs are "
                    "never deleted by ocicache: run the registry's own "
                    "garbage collector afterwards to reclaim storage; a layer an image still uses stays.",
        epilog=("example:\n  ocicache gc registry.example/cache/pool "
                "--keep-referenced-by registry.example/cache/api \\\n"
                "      --keep-referenced-by registry.example/cache/worker --min-age 7d --dry-run"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gc.add_argument("pool", metavar="POOL", help="the pool: REGISTRY/REPOSITORY")
    gc.add_argument("--keep-referenced-by", action="append", default=[], metavar="REGISTRY/REPO", required=True,
                    help="keep what any tag of this repository uses (repeat for every repository that pushes "
                         "with this pool)")
    gc.add_argument("--min-age", default="7d", metavar="AGE",
                    help="delete only what has been unreferenced for this long: 7d, 12h, 30m, 0s (default: 7d)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    gc.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _registry_arguments(gc)

    copy = sub.add_parser("copy", help="copy an image between a layout and a registry (blobs mounted or streamed)")
    copy.add_argument("source", metavar="SRC", help="oci:DIR[:TAG] or REGISTRY/REPO[:TAG|@DIGEST]")
    copy.add_argument("destination", metavar="DEST", help="oci:DIR[:TAG] or REGISTRY/REPO[:TAG]")
    copy.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _registry_arguments(copy)
    return parser


def _image_arguments(parser: argparse.ArgumentParser, verb: str, *,
                     extra: Callable[[argparse.ArgumentParser], object] = lambda _p: None,
                     json_help: str = "print the result as JSON on stdout") -> None:
    """REF (and what `extra` adds), --json, --platform for an index, and registry access."""
    parser.add_argument("reference", metavar="REF", help="oci:DIR[:TAG] or REGISTRY/REPO[:TAG|@DIGEST]")
    extra(parser)
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--platform",
                        help=f"for an index: the platform to {verb} (default: the only one, or this machine's)")
    _registry_arguments(parser)


def _selection_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """`uv sync`'s narrowing flags (--package, --extra, --group, --no-dev), read by `_narrowing`."""
    group = parser.add_argument_group(title)
    group.add_argument("--package", action="append", default=[], help="only this workspace member (repeatable)")
    group.add_argument("--extra", action="append", default=[], help="only these extras (repeatable)")
    group.add_argument("--group", action="append", default=[], help="only these dependency groups (repeatable)")
    group.add_argument("--no-dev", action="store_true", help="leave out the dev group")


def _signature_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    group = parser.add_argument_group("signatures (cosign's key-based format; docs/security.md)")
    group.add_argument("--require-signature", action="store_true",
                       help=f"refuse to {verb} unless the image is signed by --key (checked before any layer is read)")
    group.add_argument("--key", type=Path, metavar="PUB", help="the signer's ECDSA P-256 public key (PEM)")


def _dockerfile_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("the Dockerfile that uses the cache image")
    group.add_argument("--dockerfile", type=Path, metavar="PATH",
                       help=f"read the build that runs `uv sync`/`uv pip install` and its base image, and {what}")
    group.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                       help="set a Dockerfile ARG, as for docker build (repeatable)")
    group.add_argument("--stage", metavar="NAME", help="the stage docker build --target builds (default: the first "
                                                       "stage that runs uv)")


def _consumers(args: argparse.Namespace, registry: RegistryOptions, stacked_on: str | None) -> list[Consumer]:
    """The build --dockerfile names, once per --platform given (none without --dockerfile).
    `stacked_on`: the image a uv stage `FROM ${ARG}` without a value builds on (consumer.infer_consumer)."""
    if args.dockerfile is None:
        if args.build_arg or args.stage:
            raise UsageError("--build-arg and --stage need --dockerfile")
        return []
    from .consumer import infer_consumer

    build_args = {}
    for item in args.build_arg:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--build-arg {item!r}: expected NAME=VALUE")
        build_args[key] = value
    platforms = _as_list(args.platform)
    python_platforms = _as_list(args.python_platform)
    uv_versions = _as_list(args.uv_version)
    if python_platforms and len(python_platforms) != max(len(platforms), 1):
        platforms = []  # one target per --python-platform: the platforms follow from them
    consumers = []
    for i, platform in enumerate(platforms or [None]):
        consumers.append(infer_consumer(
            args.dockerfile, build_args, registry, platform=platform, python=args.python,
            python_platform=python_platforms[i] if len(python_platforms) > i else None,
            uv_version=uv_versions[0] if uv_versions else None, stage=args.stage, stacked_on=stacked_on))
    for consumer in consumers:
        print(f"ocicache: from {consumer.describe()}", file=sys.stderr)
    for note in dict.fromkeys(n for c in consumers for n in c.notes):
        print(f"ocicache: note: {note}", file=sys.stderr)
    return consumers


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry access (credentials also from docker config.json and helpers)")
    group.add_argument("--username", help="registry user (with --password-stdin)")
    group.add_argument("--password-stdin", action="store_true", help="read the password or token from stdin")
    group.add_argument("--ca-cert", type=Path, metavar="FILE", help="trust this CA for the registry's TLS certificate")
    group.add_argument("--insecure", action="store_true",
                       help="allow plain HTTP and unverified TLS (loopback registries may use HTTP anyway)")
    group.add_argument("--registry-jobs", type=int, default=4, metavar="N", help="concurrent blob uploads (default: 4)")
    group.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                       help="give up on a registry that sends nothing for this long (default: 120)")


def _registry_options(args: argparse.Namespace) -> RegistryOptions:
    password = None
    if args.password_stdin:
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: nothing on standard input")
    elif args.username:
        raise UsageError("--username needs --password-stdin (passwords are never taken as arguments)")
    if args.registry_jobs < 1:
        raise UsageError("--registry-jobs must be at least 1")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    return RegistryOptions(insecure=args.insecure, ca_cert=args.ca_cert, username=args.username,
                           password=password, jobs=args.registry_jobs, timeout=args.timeout)


def _narrowing(args: argparse.Namespace) -> Narrowing:
    return Narrowing(packages=tuple(args.package), extras=tuple(args.extra), groups=tuple(args.group),
                     no_dev=args.no_dev)


def _push(args: argparse.Namespace) -> int:
    from .project_settings import BuildSettings
    from .push import PushOptions, push

    if args.buckets < 1:
        raise UsageError("--buckets must be at least 1")
    narrowing = _narrowing(args)
    registry = _registry_options(args)
    consumers = _consumers(args, registry, stacked_on=args.base)  # the build runs FROM the pushed image
    python, python_platforms, uv_versions = args.python, tuple(args.python_platform), tuple(args.uv_version)
    venv = None
    if args.venv is not None:
        from .venv import check_venv_path

        if not args.base:
            raise UsageError("--venv installs the environment in a stacked image: it needs --base IMAGE")
        if args.venv == "auto":
            if not consumers:
                raise UsageError("--venv auto reads where the build's uv puts the environment: it needs --dockerfile")
            if consumers[0].environment is None:
                raise UsageError(f"--venv auto: {consumers[0].dockerfile}:{consumers[0].step_line}: cannot tell where "
                                 "this uv step puts the environment (no WORKDIR, a cd, or uv pip install): pass "
                                 "--venv PATH")
            venv = consumers[0].environment
        else:
            venv = check_venv_path(args.venv)
    venv_only = args.venv_only or args.venv_archives
    if venv_only and venv is None:
        flag = "--venv-archives" if args.venv_archives else "--venv-only"
        raise UsageError(f"{flag} puts the environment in place of the cache: it needs --venv PATH and --base")
    cache_dir = None
    compile_bytecode = args.compile_bytecode or args.bytecode_python is not None
    bytecode_required = compile_bytecode  # asked for: no compiler is an error; inferred: a note
    if consumers:
        compile_bytecode = compile_bytecode or consumers[0].compile_bytecode
        python = python or consumers[0].python
        python_platforms = python_platforms or tuple(c.python_platform for c in consumers if c.python_platform)
        uv_versions = uv_versions or tuple(c.uv_version for c in consumers[:1] if c.uv_version)
        cache_dir = consumers[0].cache_dir
        if args.base and consumers[0].user.split(":", 1)[0] not in ("root", "0"):
            raise UsageError(f"--base: the build runs as {consumers[0].user}, and a stacked cache is owned by root "
                             "(uv must write to its cache); run the uv step as root, or drop --base")
        if not args.destination.startswith("oci:"):
            for problem in consumers[0].problems(args.destination, installed=venv_only,
                                                 archives=args.venv_archives):
                print(f"ocicache: warning: {problem}", file=sys.stderr)
    opts = PushOptions(lock=args.lock, destination=args.destination, platforms=tuple(args.platform),
                       python=python, python_platforms=python_platforms, narrowing=narrowing,
                       max_layers=args.max_layers, buckets=args.buckets, solo_threshold=args.solo_threshold,
                       compression=args.compression, uv=args.uv, uv_versions=uv_versions, jobs=args.jobs,
                       cache_from=tuple(args.cache_from), pool=args.pool, registry=registry,
                       consumer_cache_dir=cache_dir, base=args.base, venv=venv, venv_only=venv_only,
                       venv_archives=args.venv_archives,
                       unpack_wheels=not args.uv_unpacks_all,
                       compile_bytecode=compile_bytecode, bytecode_required=bytecode_required,
                       bytecode_python=args.bytecode_python,
                       build_no_binary=consumers[0].no_binary if consumers else BuildSettings())
    key = None
    if args.sign_key is not None:
        from .verify import load_signing_key

        key = load_signing_key(args.sign_key)  # a bad key fails before any work
    enabled = {"auto": None, "always": True, "never": False}[args.progress]
    result = push(opts, Progress(enabled=enabled))
    signed = None
    if key is not None:
        from .verify import sign_ref

        signed = sign_ref(args.destination, key, registry, digest=result.manifest_digest)
    if args.json:
        print(json.dumps({**result.to_json(), "signature": signed}, indent=2, sort_keys=True))
    else:
        r = result
        packages = sum(len(layer["packages"]) for layer in r.layers)
        print(f"pushed {r.reference}@{r.manifest_digest}")
        print(f"  {packages} packages in {len(r.layers)} layers: {r.layers_built} built, {r.layers_reused} reused; "
              f"read by uv {r.uv_releases}")
        print(f"  packages downloaded or built: {r.packages_populated} ({r.packages_unpacked} wheels unpacked by "
              f"ocicache, the rest by uv); re-bundled from known layers: {r.packages_extracted}")
        print(f"  blobs: {r.blobs_uploaded} uploaded ({format_size(r.bytes_uploaded)}), {r.blobs_mounted} mounted, "
              f"{r.blobs_present} already there; {r.seconds:.1f}s")
        if r.bytecode:
            print(f"  bytecode: compiled by {r.bytecode}")
        for note in r.notes:
            print(f"  note: {note}")
        if r.pool_tags_written:
            print(f"  pool: {r.pool_tags_written} keys published")
        for note in r.skipped:
            print(f"  left out: {note}")
        if signed:
            print(f"  signed: {signed['signature_tag']}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import format_table, inspect_ref

    info = inspect_ref(args.reference, _registry_options(args), args.platform)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_table(info))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .pull import pull

    result = pull(args.reference, args.directory, _registry_options(args), args.platform,
                  require_key=_required_key(args))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"pulled {result['reference']}@{result['manifest_digest']} into {result['directory']}: "
              f"{result['layers']} layers verified, {result['files']} files, {format_size(result['bytes'])} downloaded")
    return 0


def _required_key(args: argparse.Namespace) -> Path | None:
    if args.require_signature and args.key is None:
        raise UsageError("--require-signature needs --key PUB (the signer's public key)")
    if args.key is not None and not args.require_signature:
        raise UsageError("--key without --require-signature: add it, or use `ocicache verify --key`")
    return args.key


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify_image

    result = verify_image(args.reference, args.lock, key=args.key, rebuild=args.rebuild, platform=args.platform,
                          narrowing=_narrowing(args), options=_registry_options(args),
                          bytecode_python=args.bytecode_python)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        verdict = "verified" if result.ok else "FAILED"
        what = f"{result.layers_verified} layers, {result.packages} packages" + (
            ", rebuilt and compared" if result.rebuilt else "")
        print(f"{verdict}: {result.reference}@{result.manifest_digest}: {what}")
        if result.signature and result.ok:
            print(f"  signature: {result.signature}")
        for problem in result.problems:
            print(f"  problem: {problem}")
    return 0 if result.ok else 1


def _sign(args: argparse.Namespace) -> int:
    from .verify import load_signing_key, sign_ref

    key = load_signing_key(args.key)
    result = sign_ref(args.reference, key, _registry_options(args))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        state = "signed" if result["added"] else "already signed by this key"
        print(f"{state}: {result['reference']}@{result['manifest_digest']} ({result['signature_tag']}, "
              f"{result['signatures']} signature{'s' if result['signatures'] != 1 else ''})")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from .gc import collect_garbage, parse_age

    result = collect_garbage(args.pool, args.keep_referenced_by, min_age=parse_age(args.min_age),
                             dry_run=args.dry_run, options=_registry_options(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return 0
    verb = "would delete" if result.dry_run else "deleted"
    freed = sum(e.layer_size for e in result.deleted)
    print(f"{result.pool}: {result.entries} pool entries, {result.kept} in use; {verb} {len(result.deleted)} "
          f"({format_size(freed)} of layers once the registry collects its garbage); "
          f"{len(result.waiting)} unreferenced but younger than --min-age")
    for entry in result.deleted:
        print(f"  {verb}: {format_size(entry.layer_size):>10}  {', '.join(entry.packages) or '(cache scaffold)'}")
    for entry, age in result.waiting:
        print(f"  waiting: {format_size(entry.layer_size):>10}  {', '.join(entry.packages) or '(cache scaffold)'} "
              f"(unreferenced for {age / 3600:.1f} h)")
    if result.expired_claims:
        print(f"  {verb} {result.expired_claims} expired upload claims (left by pushes that stopped)")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import check_image

    narrowing = _narrowing(args)
    registry = _registry_options(args)
    # a uv stage FROM ${ARG} without a value runs FROM the checked (stacked) image; its base layers say
    # the target (base_image.probe_base_image reads no cache layer)
    consumers = _consumers(args, registry, stacked_on=args.reference)
    consumer = consumers[0] if consumers else None
    result = check_image(
        args.reference, args.lock, narrowing=narrowing, options=registry,
        platform=args.platform or (consumer.platform if consumer else None),
        python=args.python or (consumer.python if consumer else None),
        python_platform=args.python_platform or (consumer.python_platform if consumer else None),
        uv_version=args.uv_version or (consumer.uv_version if consumer else None),
        build_problems=functools.partial(consumer.problems, args.reference) if consumer else None,
        build_cache_dir=consumer.cache_dir if consumer else None, require_key=_required_key(args),
        build_bytecode=(consumer.compile_bytecode, consumer.link_mode) if consumer else None,
        build_no_binary=consumer.no_binary if consumer else None,
        build_environment=consumer.environment if consumer else None)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        verdict = "ok" if result.ok else "WILL MISS"
        print(f"{verdict}: {result.reference} holds {result.found} of the {result.needed} packages the lock needs")
        for problem in result.problems:
            print(f"  problem: {problem}")
        for missing in result.missing:
            print(f"  missing: {missing}")
        for note in result.notes:
            print(f"  note: {note}")
    return 0 if result.ok else 1


def _copy(args: argparse.Namespace) -> int:
    from .copy import copy_image

    result = copy_image(args.source, args.destination, _registry_options(args))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"copied {result['source']} to {result['destination']}@{result['manifest_digest']}: "
              f"{result['blobs_uploaded']} blobs uploaded ({format_size(result['bytes_uploaded'])}), "
              f"{result['blobs_mounted']} mounted, {result['blobs_present']} already there")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"push": _push, "inspect": _inspect, "pull": _pull, "copy": _copy, "check": _check,
                    "verify": _verify, "sign": _sign, "gc": _gc}
        return commands[args.command](args)
    except OcicacheError as exc:
        print(f"ocicache: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ocicache: interrupted; nothing was left half written", file=sys.stderr)
        return 130
