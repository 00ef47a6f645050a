"""Who fills which package's tree: ocicache unpacks plain index wheels itself, uv does the rest.

uv's cold populate writes every wheel unpacked to disk, and packing then reads it all back: on two
cores that was 1.6-1.8x uv's own `uv sync` (docs/benchmarks.md). A wheel's unpacked archive is a
pure function of the `.whl` (uvcache/unzip.py), so for wheels from an index ocicache downloads the
file and packs straight from the zip. uv stays the reference: for each index, its smallest wheel
is filled by uv as well, and unpacked by ocicache too; only if the two trees are identical (paths,
modes, links, contents and every family's pointer) are the index's other wheels unpacked by
ocicache. Anything else (sdists, git, direct URLs, an index uv disagrees on, a download that failed,
a zip that is not plain) goes to uv, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .fetch import Download, fetchable
from .normalise import index_dir_of, unpacked_wheel_tree
from .selection import Selected
from .tree import Entry, PackageTree, read_chunks, with_parents
from .uvcache import FormatSet
from .uvcache.digest import wheel_cache_key
from .uvcache.unzip import NotPlainWheelError

__all__ = ["WheelSplit", "probe_index_dir", "split_wheels", "tree_difference"]

Keyed = tuple[Selected, str]


@dataclass
class WheelSplit:
    ours: list[Keyed] = field(default_factory=list)  # downloaded and unpacked by ocicache
    probes: dict[str, Keyed] = field(default_factory=dict)  # by index: filled by uv *and* by ocicache
    wheel_dir: Path = Path()

    def downloads(self) -> list[Download]:
        """Probes first (they decide the rest), then the biggest first: they take longest to pack,
        and the small ones then fill the network's tail."""
        ours = sorted(self.ours, key=lambda sk: -(sk[0].size or 0))
        return [Download(url=s.url or "", sha256=s.sha256 or "", size=s.size, dest=self.path(s))
                for s, _ in [*self.probes.values(), *ours]]

    def path(self, selected: Selected) -> Path:
        return self.wheel_dir / f"{selected.sha256}.whl"

    def keys(self) -> set[str]:
        return {k for _, k in self.ours}


def split_wheels(keyed: Iterable[Keyed], wheel_dir: Path) -> WheelSplit:
    """Index wheels ocicache can unpack, grouped by index, the smallest of each index its probe."""
    by_index: dict[str, list[Keyed]] = {}
    for selected, key in keyed:
        if (selected.kind == "wheel" and selected.sha256 and selected.index and fetchable(selected.url)
                and (selected.url or "").rsplit("/", 1)[-1].split("#")[0] == selected.artifact
                and wheel_cache_key(selected.artifact) is not None):
            by_index.setdefault(selected.index, []).append((selected, key))
    split = WheelSplit(wheel_dir=wheel_dir)
    for index, wheels in by_index.items():
        if len(wheels) < 2:
            continue  # the probe alone: uv fills it anyway
        wheels.sort(key=lambda sk: (sk[0].size is None, sk[0].size or 0, sk[0].name))
        split.probes[index] = wheels[0]
        split.ours += wheels[1:]
    return split


def probe_index_dir(split: WheelSplit, index: str, by_uv: PackageTree, formats: FormatSet,
                    fetched: str | None) -> tuple[str | None, str]:
    """The index's directory in uv's buckets if ocicache's unpacking of the probe equals uv's, else
    (None, why not)."""
    selected, key = split.probes[index]
    if fetched is not None:
        return None, f"downloading {selected.artifact} failed ({fetched})"
    index_dir = index_dir_of(by_uv, formats)
    if index_dir is None:
        return None, f"uv's cache entry of {selected.artifact} is not where ocicache expects it"
    try:
        ours = unpacked_wheel_tree(selected, key, split.path(selected), index_dir, formats)
    except NotPlainWheelError as exc:
        return None, str(exc)
    diff = tree_difference(by_uv, ours)
    return (index_dir, "") if diff is None else (None, f"{selected.artifact}: {diff}")


def tree_difference(a: PackageTree, b: PackageTree) -> str | None:
    """None if the two trees pack to the same layer, else the first difference."""
    ea = {e.path: e for e in with_parents(a.entries)}
    eb = {e.path: e for e in with_parents(b.entries)}
    if ea.keys() != eb.keys():
        return f"paths differ ({sorted(ea.keys() ^ eb.keys())[0]})"
    if a.owned_paths() != b.owned_paths():
        return "the trees' roots differ"
    for path, x in ea.items():
        y = eb[path]
        if (x.kind, x.executable, x.link, x.data, x.size) != (y.kind, y.executable, y.link, y.data, y.size):
            return f"{path} differs"
        if x.kind == "file" and x.data is None and _content_digest(x) != _content_digest(y):
            return f"{path}: contents differ"
    return None


def _content_digest(entry: Entry) -> bytes:
    """sha256 of a file entry's bytes, streamed (a probe wheel may hold a big file)."""
    h = hashlib.sha256()
    for chunk in read_chunks(entry):
        h.update(chunk)
    return h.digest()
