"""Command line: argument parsing, and OcicacheError → one stderr line + exit code."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import OcicacheError, UsageError
from .plan import DEFAULT_BUCKETS, DEFAULT_MAX_LAYERS, DEFAULT_SOLO_THRESHOLD, MAX_LAYERS_CAP
from .populate import Narrowing
from .progress import Progress
from .target import DEFAULT_GLIBC
from .uvcache import PINNED_UV_VERSION, SUPPORTED_FORMATS

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
    parser.add_argument("--version", action="version", version=f"ocicache {__version__} (uv {PINNED_UV_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    push = sub.add_parser(
        "push", help="build the cache image of a lock and write it to a destination",
        description="Read LOCK, fill a uv cache for the exact target, split it into deterministic "
                    "per-package layers and write the image to DEST.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="DEST is oci:DIR[:TAG] (an OCI image layout directory, tag 'latest' by default).\n"
               "Same lock + same target + same options give the same manifest digest.")
    push.add_argument("lock", type=Path, metavar="LOCK", help="the project's uv.lock (its pyproject.toml beside it)")
    push.add_argument("destination", metavar="DEST", help="oci:DIR[:TAG]")
    tgt = push.add_argument_group("target (match the image your Dockerfile builds on)")
    tgt.add_argument("--platform", help="OCI platform: linux/amd64 or linux/arm64 (default: this machine's)")
    tgt.add_argument("--python", help="CPython version of the target, 3.Y or 3.Y.Z (default: the lowest "
                                      "3.Y from 3.10 up that the lock's requires-python allows)")
    tgt.add_argument("--python-platform", metavar="TRIPLE",
                     help="exact libc level in uv's syntax, e.g. x86_64-manylinux_2_36, "
                          "aarch64-manylinux_2_28, x86_64-unknown-linux-musl "
                          f"(default: <arch>-manylinux_{DEFAULT_GLIBC[0]}_{DEFAULT_GLIBC[1]}, Debian 12)")
    sel = push.add_argument_group("selection (default: every workspace package, extra and group)")
    sel.add_argument("--package", action="append", default=[], help="only this workspace member (repeatable)")
    sel.add_argument("--extra", action="append", default=[], help="only these extras (repeatable)")
    sel.add_argument("--group", action="append", default=[], help="only these dependency groups (repeatable)")
    sel.add_argument("--no-dev", action="store_true", help="leave out the dev group")
    lay = push.add_argument_group("layers")
    lay.add_argument("--max-layers", type=_layers, default=DEFAULT_MAX_LAYERS,
                     help=f"layer budget, at most {MAX_LAYERS_CAP} (default: {DEFAULT_MAX_LAYERS})")
    lay.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS,
                     help=f"buckets for small packages (default: {DEFAULT_BUCKETS})")
    lay.add_argument("--solo-threshold", type=_size, default=DEFAULT_SOLO_THRESHOLD, metavar="SIZE",
                     help="packages at least this big (unpacked) get a layer of their own (default: 1MiB)")
    lay.add_argument("--compression", choices=["gzip", "zstd"], default="gzip",
                     help="layer codec (default: gzip, readable by every builder)")
    push.add_argument("--uv", type=Path, metavar="PATH",
                      help=f"uv executable (default: the pinned uv {PINNED_UV_VERSION}; supported: "
                           f"{', '.join(sorted(SUPPORTED_FORMATS))})")
    push.add_argument("--jobs", type=int, default=2, help="layers packed at once (default: 2)")
    push.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    push.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                      help="progress lines on stderr (default: only on a terminal)")

    insp = sub.add_parser("inspect", help="show the layers, packages, sizes, uv version and target of an image")
    insp.add_argument("reference", metavar="REF", help="oci:DIR[:TAG]")
    insp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _push(args: argparse.Namespace) -> int:
    from .push import PushOptions, push

    if args.buckets < 1:
        raise UsageError("--buckets must be at least 1")
    narrowing = Narrowing(packages=tuple(args.package), extras=tuple(args.extra), groups=tuple(args.group),
                          no_dev=args.no_dev)
    opts = PushOptions(lock=args.lock, destination=args.destination, platform=args.platform,
                       python=args.python, python_platform=args.python_platform, narrowing=narrowing,
                       max_layers=args.max_layers, buckets=args.buckets, solo_threshold=args.solo_threshold,
                       compression=args.compression, uv=args.uv, jobs=args.jobs)
    enabled = {"auto": None, "always": True, "never": False}[args.progress]
    result = push(opts, Progress(enabled=enabled))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        packages = sum(len(layer["packages"]) for layer in result.layers)
        print(f"pushed {result.reference}@{result.manifest_digest}")
        print(f"  {packages} packages in {len(result.layers)} layers; {result.blobs_written} new blobs "
              f"({result.bytes_written} bytes written), {result.seconds:.1f}s")
        for note in result.skipped:
            print(f"  left out: {note}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import format_table, inspect_ref

    info = inspect_ref(args.reference)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_table(info))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"push": _push, "inspect": _inspect}[args.command](args)
    except OcicacheError as exc:
        print(f"ocicache: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ocicache: interrupted; nothing was left half written", file=sys.stderr)
        return 130
