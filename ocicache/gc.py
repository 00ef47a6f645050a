"""`ocicache gc POOL --keep-referenced-by REPO …`: keep a pool bounded.

A pool holds one one-layer manifest per layer it ever saw, tagged by the layer's key and by each of
its packages' keys (pool.py). Registries reclaim storage only for manifests nothing references, so
a pool grows forever unless its manifests are deleted. gc deletes a pool manifest when none of its
tags is referenced by a tag of the repositories given (their images' layer and package keys), and it
has been so for at least `--min-age`.

Age without clocks in the images: pool manifests are deterministic (same key, same bytes), so they
carry no date. gc keeps its own record instead, a small image tagged `ocicache-gc-state` in the pool:
for each unreferenced manifest, when a gc run first saw it unreferenced. A manifest is deleted only
once it has stayed unreferenced for `--min-age` (default 7 days: rollbacks and pushes in flight keep
their layers); one that is referenced again leaves the record. Only pool manifests are ever deleted,
never a blob: a layer an image still needs stays referenced by that image's own manifest, so the
registry's garbage collector keeps it. Upload claims (`c-…`, pool.py) whose lease ran out, left by
pushes that stopped, are deleted too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import oci
from .assemble import assemble_record
from .dest import write_image
from .dest.options import RegistryOptions
from .dest.registry import Registry, RegistryError
from .endpoints import Endpoints
from .errors import DestinationError, UsageError
from .image import ImageError, find_images, layer_packages, parse_manifest
from .oci import Descriptor, Digest, canonical_json
from .pool import Pool, pool_tag
from .refs import RegistryRef, parse_ref

__all__ = ["GcResult", "collect_garbage", "parse_age"]

STATE_TAG = "ocicache-gc-state"
STATE_MEDIA_TYPE = "application/vnd.dev.ocicache.gc-state.v1+json"
_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> float:
    m = _AGE_RE.match(value.strip())
    if not m:
        raise UsageError(f"--min-age {value!r}: expected a number and a unit, e.g. 7d, 12h, 30m, 0s")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One pool manifest: its layer, every pool tag naming it, what the layer holds."""

    digest: Digest
    tags: tuple[str, ...]
    layer_size: int
    packages: tuple[str, ...]  # "name version"

    def to_json(self) -> dict[str, Any]:
        return {"digest": str(self.digest), "tags": len(self.tags), "size": self.layer_size,
                "packages": list(self.packages)}


@dataclass
class GcResult:
    pool: str
    dry_run: bool
    referenced_tags: int = 0  # pool tags some kept image names
    entries: int = 0  # pool manifests
    kept: int = 0
    deleted: list[PoolEntry] = field(default_factory=list)  # (or, with --dry-run, would be)
    waiting: list[tuple[PoolEntry, float]] = field(default_factory=list)  # unreferenced, younger than --min-age
    expired_claims: int = 0  # upload claims left by pushes that died (deleted, or with --dry-run, would be)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "dry_run": self.dry_run, "pool_manifests": self.entries, "kept": self.kept,
                "referenced_tags": self.referenced_tags,
                "deleted": [e.to_json() for e in self.deleted],
                "deleted_bytes": sum(e.layer_size for e in self.deleted),
                "waiting": [{**e.to_json(), "unreferenced_for_seconds": round(age)} for e, age in self.waiting],
                "expired_claims": self.expired_claims, "notes": self.notes}


def _registry_ref(value: str, flag: str) -> RegistryRef:
    ref = parse_ref(value)
    if not isinstance(ref, RegistryRef) or "@" in value or ":" in value.rsplit("/", 1)[-1]:
        raise UsageError(f"{flag} {value}: expected REGISTRY/REPOSITORY (a repository, no tag)")
    return ref


def _referenced(repo: Registry, jobs: int, notes: list[str]) -> set[str]:
    """The pool tags the images of every tag of `repo` name (their layers' and packages' keys)."""
    tags = repo.list_tags()
    if not tags:
        raise UsageError(f"--keep-referenced-by {repo}: no such repository, or it has no tags; refusing to "
                         "collect garbage against it (a typo would delete what it uses)")

    def keys(tag: str) -> set[str]:
        if tag.endswith(".sig") or tag == STATE_TAG:
            return set()  # signatures: no cache layers
        try:
            images = find_images(repo, tag, f"{repo}:{tag}")
        except ImageError as exc:
            notes.append(f"{repo}:{tag} skipped: {exc}")
            return set()
        out = set()
        for image in images:
            for layer in image.layers:
                if oci.A_LAYER_KEY in layer.annotations:
                    out.add(pool_tag(layer.annotations[oci.A_LAYER_KEY]))
                out |= {pool_tag(key) for p in layer_packages(layer)
                        if isinstance(key := p.get("key"), str) and key.startswith("sha256:")}
        return out

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return set().union(*pool.map(keys, tags))


def _entries(pool: Registry, tags: Iterable[str], jobs: int) -> list[PoolEntry]:
    """The pool's manifests, each with every tag that names it."""

    def fetch(tag: str) -> tuple[str, Digest, dict[str, Any]] | None:
        found = pool.get_manifest(tag)
        if found is None:
            return None  # deleted meanwhile
        try:
            return tag, found[0].digest, parse_manifest(found[1], f"{pool}:{tag}")
        except ImageError:
            return tag, found[0].digest, {}

    with ThreadPoolExecutor(max_workers=jobs) as executor:
        fetched = [f for f in executor.map(fetch, tags) if f is not None]
    by_digest: dict[Digest, list[str]] = {}
    docs: dict[Digest, dict[str, Any]] = {}
    for tag, digest, doc in fetched:
        by_digest.setdefault(digest, []).append(tag)
        docs[digest] = doc
    entries = []
    for digest, names in sorted(by_digest.items()):
        layers = docs[digest].get("layers") or []
        layer = Descriptor.from_json(layers[0]) if layers else None
        packages = tuple(f"{p.get('name')} {p.get('version')}" for p in layer_packages(layer)) if layer else ()
        entries.append(PoolEntry(digest, tuple(sorted(names)), layer.size if layer else 0, packages))
    return entries


def _read_state(pool: Registry) -> dict[str, float]:
    """When each unreferenced pool manifest was first seen so (seconds since the epoch)."""
    found = pool.get_manifest(STATE_TAG)
    if found is None:
        return {}
    try:
        config = Descriptor.from_json(json.loads(found[1])["config"])
        state = json.loads(pool.read_blob(config.digest, limit=16 << 20)).get("unreferenced_since", {})
        return {str(k): float(v) for k, v in state.items()}
    except (ValueError, KeyError, TypeError, AttributeError, DestinationError):
        return {}  # unreadable: start afresh (it only delays deletions)


def _write_state(pool: Registry, state: dict[str, float]) -> None:
    config = canonical_json({"unreferenced_since": {k: round(v, 3) for k, v in sorted(state.items())}})
    image = assemble_record(STATE_MEDIA_TYPE, config, {"org.opencontainers.image.title": "ocicache gc state"})
    write_image(pool, image, [], STATE_TAG)


def collect_garbage(pool_value: str, keep: list[str], *, min_age: float, dry_run: bool,
                    options: RegistryOptions | None = None, now: float | None = None) -> GcResult:
    if not keep:
        raise UsageError("gc needs at least one --keep-referenced-by REGISTRY/REPOSITORY")
    pool_ref = _registry_ref(pool_value, "gc")
    keep_refs = [_registry_ref(v, "--keep-referenced-by") for v in keep]
    if any(k.registry != pool_ref.registry for k in keep_refs):
        raise UsageError("gc: the pool and the --keep-referenced-by repositories must be on one registry")
    if any(k.repository == pool_ref.repository for k in keep_refs):
        raise UsageError("gc: the pool cannot keep itself (--keep-referenced-by names the pool)")
    now = time.time() if now is None else now
    options = options or RegistryOptions()
    result = GcResult(pool=f"{pool_ref.registry}/{pool_ref.repository}", dry_run=dry_run)
    with Endpoints(options) as endpoints:
        pool = endpoints.registry(pool_ref)
        referenced: set[str] = set()
        for ref in keep_refs:
            referenced |= _referenced(endpoints.registry(ref), options.jobs * 2, result.notes)
        all_tags = pool.list_tags() or []
        pool_tags = [t for t in all_tags if t.startswith("k-")]
        claim_pool = Pool(pool, options.jobs * 2)
        claims, dangling = claim_pool.expired_claims(all_tags)
        result.expired_claims = len(claims) + len(dangling)
        entries = _entries(pool, pool_tags, options.jobs * 2)
        result.entries = len(entries)
        result.referenced_tags = sum(1 for t in pool_tags if t in referenced)
        state = _read_state(pool)
        new_state: dict[str, float] = {}
        for entry in entries:
            if any(t in referenced for t in entry.tags):
                result.kept += 1
                continue
            since = state.get(str(entry.digest), now)
            if now - since >= min_age:
                result.deleted.append(entry)
            else:
                result.waiting.append((entry, now - since))
                new_state[str(entry.digest)] = since
        if dry_run:
            return result
        if not result.deleted and not claims and not dangling and new_state == state:
            return result
        try:
            claims += claim_pool.revive_dangling(dangling)
            for digest in [*claims, *(entry.digest for entry in result.deleted)]:
                pool.delete_manifest(digest)
        except RegistryError as exc:
            raise RegistryError(f"gc {result.pool}: {exc}", status=exc.status, codes=exc.codes) from None
        _write_state(pool, new_state)
    return result
