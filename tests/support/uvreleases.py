"""The uv releases the compatibility tests install with: the first and last of every format family.

`python -m tests.support.uvreleases` (run by scripts/bootstrap.sh --test) downloads each release's
wheel from the package index with pip and keeps its `uv` binary under `.cache/uv-releases/<version>/`.
Tests only read that directory: a release missing there is a loud failure, never a download.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ocicache.uvcache import FAMILIES, PINNED_UV_VERSION

REPO = Path(__file__).resolve().parents[2]
RELEASES_DIR = REPO / ".cache" / "uv-releases"

# The first and last release of every family (docs/uv-versions.md), plus 0.11.33 and 0.12.0: inside
# the wheels-v6 family they write pointer shapes the others do not (ocicache/uvcache/v6.py).
EXTRA = ("0.11.33", "0.12.0")
RELEASES: tuple[str, ...] = tuple(sorted({v for f in FAMILIES for v in (f.first, f.last)} | set(EXTRA),
                                         key=lambda v: tuple(map(int, v.split(".")))))


def uv_release(version: str) -> Path:
    """The binary of uv `version` (the pinned one comes with ocicache itself)."""
    if version == PINNED_UV_VERSION:
        from uv import find_uv_bin

        return Path(find_uv_bin())
    path = RELEASES_DIR / version / "uv"
    if not path.is_file():
        raise AssertionError(f"uv {version} is not at {path}: run scripts/bootstrap.sh --test (it downloads it)")
    return path


def fetch(version: str) -> Path:
    path = RELEASES_DIR / version / "uv"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary", ":all:", "--platform", "manylinux_2_17_x86_64",
                        "--python-version", "3.11", "-d", tmp, f"uv=={version}"], check=True)
        (wheel,) = Path(tmp).glob(f"uv-{version}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"uv-{version}.data/scripts/uv")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.chmod(partial, 0o755)
    partial.rename(path)  # never a half-written binary under the final name
    return path


def main() -> None:
    for version in RELEASES:
        if version != PINNED_UV_VERSION:
            fetch(version)
    print(f"uv releases for the compatibility tests: {', '.join(RELEASES)} ({RELEASES_DIR})")


if __name__ == "__main__":
    main()
