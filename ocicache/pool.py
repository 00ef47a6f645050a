"""The pool: one repository where every pushed layer stays discoverable by its reuse key.

For each layer it knows, the pool holds a one-layer image (config + manifest, the layer descriptor
with all its annotations) tagged `k-<hex of the key>`, once for the layer's key and once for every
package key it holds. A push looks up its packages' keys there (one manifest GET each, in parallel)
and mounts what it finds.

Why this is safe under many concurrent CI jobs: nothing is ever read-modify-written. Blobs are
content-addressed; a manifest is written only after its blobs exist in the pool repository; a
layer-key tag always gets the same bytes (same key ⇒ same layer ⇒ same manifest, which names no
platform: a pure wheel's layer is published alike by every target's push), and a package-key
tag written by two jobs points, whichever wins, at a valid layer that holds that package.

Upload claims: pushes that run at once often pack the same new layer (a dependency bumped in many
repositories). Before uploading a layer it packed, a push claims it: a small layerless manifest
tagged `c-<hex of the blob digest>` in the pool. Registries offer no atomic create (a tag write is
last-writer-wins), so a claim follows Fischer's timed mutual exclusion: look (another push's live
claim: wait for its upload), write ours, wait longer than any push takes between its look and its
write, look again; the claim is ours only if our write is still there. Claims are advice, never
needed for correctness: a waiter whose claimant does not deliver within the lease uploads the blob
itself, and a claim the registry refuses to store or delete changes nothing but the bytes uploaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import oci
from .assemble import Image, LayerDescription, assemble_layer_image, assemble_record
from .dest import BlobOrigin, put_one
from .dest.registry import Registry, RegistryError
from .image import ImageError, parse_manifest
from .oci import Descriptor, Digest
from .reuse import KnownLayers

__all__ = ["CLAIM_PREFIX", "Pool", "UploadClaims", "claim_lease", "claim_tag", "pool_tag"]

CLAIM_PREFIX = "c-"
CLAIM_MEDIA_TYPE = "application/vnd.dev.ocicache.upload-claim.v1+json"
A_CLAIM_BLOB = "dev.ocicache.claim.blob"
A_CLAIM_CREATED = "dev.ocicache.claim.created"  # seconds since the epoch, the claimant's clock
A_CLAIM_LEASE = "dev.ocicache.claim.lease-seconds"
A_CLAIM_NONCE = "dev.ocicache.claim.nonce"
# Fischer's delay: longer than any push's look-to-write time, measured from our own (the pushes at
# once share the registry, so theirs are alike), within these bounds.
CLAIM_SETTLE_MIN_S = 0.5
CLAIM_SETTLE_MAX_S = 3.0
_CLAIM_CONFIG = oci.canonical_json({})  # every claim's config: the data is in the annotations


def pool_tag(key: str) -> str:
    """A key as a tag: `k-` + its 64 hex digits (tags allow 128 characters)."""
    return "k-" + key.split(":", 1)[1]


def claim_tag(digest: Digest) -> str:
    return CLAIM_PREFIX + digest.hex


def claim_lease(size: int) -> float:
    """How long a claim holds: time to upload `size` bytes at a slow CI runner's 4 MB/s, plus margin."""
    return 30.0 + size / 4e6


def claim_time_left(manifest: bytes) -> float | None:
    """Seconds left on the claim in `manifest`, or None if it ran out or cannot be read."""
    try:
        notes = json.loads(manifest).get("annotations") or {}
        lease = float(notes[A_CLAIM_LEASE])
        left = lease - (time.time() - float(notes[A_CLAIM_CREATED]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return min(left, lease) if left > 0 else None


@dataclass
class UploadClaims:
    """The outcome of claiming a push's new blobs: which other pushes are uploading (wait for them
    until the monotonic deadline), and the claim manifests we hold (released after the write)."""

    theirs: dict[Digest, float] = field(default_factory=dict)
    records: dict[Digest, tuple[Digest, Image]] = field(default_factory=dict)  # ours: manifest digest -> (blob, record)

    @property
    def held(self) -> list[Digest]:
        """The digests of the claim manifests we hold."""
        return list(self.records)


@dataclass
class Pool:
    registry: Registry
    jobs: int = 8

    def __str__(self) -> str:
        return str(self.registry)

    def lookup(self, keys: Iterable[str], known: KnownLayers) -> int:
        """Add the pool's layers for `keys` to `known`; return how many keys were found."""
        wanted = sorted({k for k in keys if k not in known.packages and k not in known.layers})

        def get(key: str) -> dict | None:
            found = self.registry.get_manifest(pool_tag(key))
            if found is None:
                return None
            try:  # the manifest alone: its layer descriptor carries the diff_id and the packages
                return parse_manifest(found[1], f"pool {self}:{pool_tag(key)}")
            except ImageError:
                return None  # a broken pool entry is rebuilt, not trusted

        with ThreadPoolExecutor(max_workers=self.jobs) as executor:
            manifests = list(executor.map(get, wanted))
        hits = 0
        for manifest in manifests:
            if manifest is not None:
                hits += 1
                known.add_manifest(manifest, self.registry)
        return hits

    def check_push_access(self) -> None:
        """Before any work (and before the image's own tag is written): a pool we cannot update is an
        error the user should see first, not after the push."""
        try:
            self.registry.check_push_access()
        except RegistryError as exc:
            raise RegistryError(f"--pool {self}: {exc}", status=exc.status, codes=exc.codes) from None

    def publish(self, layers: Iterable[tuple[LayerDescription, BlobOrigin]], root: str = "") -> int:
        """Make every layer discoverable by its keys; return the number of tags written. `root`: the
        directory stacked layers (--base) hold the cache under, recorded for re-bundling."""
        items = list(layers)

        def one(item: tuple[LayerDescription, BlobOrigin]) -> int:
            layer, origin = item
            desc = layer.descriptor()
            put_one(self.registry, desc, origin)  # blob first: the tag never points at missing data
            image = assemble_layer_image(layer, {oci.A_STACK_ROOT: root} if root else {})
            if not self.registry.has_blob(image.config_descriptor.digest):
                self.registry.put_blob(image.config_descriptor, lambda: io.BytesIO(image.config))
            manifest, manifest_desc = image.manifest, image.manifest_descriptor
            tags = {pool_tag(layer.key), *(pool_tag(str(p["key"])) for p in layer.packages)}
            written = 0
            for tag in sorted(tags):
                current = self.registry.get_manifest(tag)
                if current is not None and current[0].digest == manifest_desc.digest:
                    continue
                self.registry.put_manifest(manifest_desc, manifest, tag=tag)
                written += 1
            return written

        with ThreadPoolExecutor(max_workers=self.jobs) as executor:
            try:
                return sum(executor.map(one, items))
            except RegistryError as exc:
                raise RegistryError(f"pool {self}: {exc}", status=exc.status, codes=exc.codes) from None

    # -- upload claims ----------------------------------------------------------------------
    def _live_claim(self, digest: Digest) -> float | None:
        """Seconds left on another push's claim of `digest`, or None (no claim, expired, unreadable)."""
        found = self.registry.get_manifest(claim_tag(digest))
        return None if found is None else claim_time_left(found[1])

    def expired_claims(self, tags: Iterable[str]) -> tuple[list[Digest], list[str]]:
        """The claim manifests among `tags` whose lease ran out (left by pushes that died; for gc),
        and the claim tags naming no manifest (a delete distribution failed half way, see `release`)."""
        def expired(tag: str) -> Digest | str | None:
            found = self.registry.get_manifest(tag)
            if found is None:
                return tag  # listed, yet naming nothing: dangling
            return found[0].digest if claim_time_left(found[1]) is None else None

        with ThreadPoolExecutor(max_workers=self.jobs) as executor:
            found = [x for x in executor.map(expired, [t for t in tags if t.startswith(CLAIM_PREFIX)]) if x]
        return [x for x in found if isinstance(x, Digest)], [x for x in found if isinstance(x, str)]

    def revive_dangling(self, tags: Iterable[str]) -> list[Digest]:
        """Give each dangling claim tag an expired claim again: deleting that manifest removes the tag."""
        tags = list(tags)
        if tags:
            self.ensure_claim_config()
        return [self.put_claim(Digest.from_hex(t[len(CLAIM_PREFIX):]), lease=0, created=0.0,
                               nonce="gc").manifest_descriptor.digest for t in tags]

    def ensure_claim_config(self) -> None:
        """The config blob every claim names (once per push that claims)."""
        digest = Digest.of(_CLAIM_CONFIG)
        if not self.registry.has_blob(digest):
            self.registry.put_blob(Descriptor(media_type=CLAIM_MEDIA_TYPE, digest=digest, size=len(_CLAIM_CONFIG)),
                                   lambda: io.BytesIO(_CLAIM_CONFIG))

    def put_claim(self, blob: Digest, *, lease: float, created: float, nonce: str) -> Image:
        """Tag a claim of `blob` (after `ensure_claim_config`); return its record."""
        record = assemble_record(CLAIM_MEDIA_TYPE, _CLAIM_CONFIG, {
            A_CLAIM_BLOB: str(blob), A_CLAIM_NONCE: nonce, A_CLAIM_CREATED: f"{created:.3f}",
            A_CLAIM_LEASE: f"{lease:.0f}"})
        self.registry.put_manifest(record.manifest_descriptor, record.manifest, tag=claim_tag(blob))
        return record

    def claim_uploads(self, descs: Iterable[Descriptor]) -> UploadClaims:
        """Claim the upload of each blob in `descs` (blobs this push packed and would upload)."""
        wanted = list({d.digest: d for d in descs}.values())
        claims = UploadClaims()
        if not wanted:
            return claims
        nonce = secrets.token_hex(12)
        ours: dict[Digest, Image] = {}
        slowest = 0.0

        def claim(desc: Descriptor) -> None:
            nonlocal slowest
            started = time.monotonic()
            left = self._live_claim(desc.digest)
            if left is not None:
                claims.theirs[desc.digest] = time.monotonic() + left
                return
            ours[desc.digest] = self.put_claim(desc.digest, lease=claim_lease(desc.size), created=time.time(),
                                               nonce=nonce)
            slowest = max(slowest, time.monotonic() - started)

        def confirm(desc: Descriptor) -> None:
            found = self.registry.get_manifest(claim_tag(desc.digest))
            if found is None or found[0].digest != ours[desc.digest].manifest_descriptor.digest:
                claims.theirs[desc.digest] = time.monotonic() + claim_lease(desc.size)  # a later writer won

        try:
            self.ensure_claim_config()
            with ThreadPoolExecutor(max_workers=self.jobs) as executor:
                list(executor.map(claim, wanted))
                if ours:
                    time.sleep(min(CLAIM_SETTLE_MAX_S, max(CLAIM_SETTLE_MIN_S, 3 * slowest)))
                    list(executor.map(confirm, [d for d in wanted if d.digest in ours]))
        except RegistryError:
            claims.theirs.clear()  # claims are advice: a registry that will not keep them gets plain uploads
        claims.records = {record.manifest_descriptor.digest: (blob, record) for blob, record in ours.items()}
        return claims

    def release(self, claims: UploadClaims) -> None:
        """Delete the claims we hold (best effort: a registry without deletes keeps them until they expire).

        distribution can fail a delete half way while other pushes change the pool's tags (measured:
        500 "invalid checksum digest format" after the revision was gone, its tag left behind, the
        retry 404): a claim of ours found gone is written again and deleted again, so that no tag
        is left naming a deleted manifest (which no later push or gc could remove)."""
        def drop(digest: Digest) -> None:
            with contextlib.suppress(RegistryError):
                if self.registry.delete_manifest(digest):
                    return
                blob, record = claims.records[digest]
                for _ in range(2):
                    self.registry.put_manifest(record.manifest_descriptor, record.manifest, tag=claim_tag(blob))
                    if self.registry.delete_manifest(digest):
                        return

        if claims.held:
            with ThreadPoolExecutor(max_workers=self.jobs) as executor:
                list(executor.map(drop, claims.held))
