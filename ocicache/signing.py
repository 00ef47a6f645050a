"""Image signatures in cosign's key-based format ("simple signing"), made and checked with `cryptography`.

What goes on the wire (sigstore/cosign specs/SIGNATURE_SPEC.md; docs/security.md, "Signatures"):

    tag       sha256-<hex of the signed manifest's digest>.sig, in the signed image's repository
    manifest  an OCI image manifest, one layer per signature (cosign keeps every signature)
    layer     blob: the payload below, as signed; mediaType application/vnd.dev.cosign.simplesigning.v1+json;
              annotation dev.cosignproject.cosign/signature: base64 of the ASN.1 DER ECDSA P-256 SHA-256
              signature over the payload bytes
    config    what cosign (go-containerregistry) writes: empty architecture and os, the zero time, one
              {"created": zero time} history entry and one diff_id (the payload's digest) per layer
    payload   {"critical":{"identity":{"docker-reference":REF},"image":{"docker-manifest-digest":DIGEST},
              "type":"cosign container image signature"},"optional":null}

Verification trusts nothing but the public key: a layer counts when its payload blob matches its digest,
the signature over it verifies, and the signed payload names the image's digest with cosign's type.
There is no transparency log and no certificate: `cosign verify` needs `--key` and `--insecure-ignore-tlog`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from . import oci
from .assemble import Image
from .dest import BlobOrigin, Destination, ImageSource, write_image
from .errors import DestinationError, OcicacheError
from .oci import Descriptor, Digest, canonical_json

__all__ = [
    "COSIGN_SIGNATURE_TYPE",
    "MAX_PAYLOAD_SIZE",
    "MAX_SIGNATURES",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "SignatureCheck",
    "SignatureImage",
    "SignatureStore",
    "SigningError",
    "add_signature",
    "load_private_key",
    "load_public_key",
    "sign_image",
    "sign_payload",
    "signature_image",
    "signature_tag",
    "simple_signing_payload",
    "verify_payload",
    "verify_signatures",
]

SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
SIMPLESIGNING_MEDIA_TYPE: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_TYPE: Final = "cosign container image signature"
MAX_PAYLOAD_SIZE: Final = 1 << 20  # a payload is ~250 bytes; cosign itself allows 128 MiB
MAX_SIGNATURES: Final = 1000  # cosign refuses signature images with more layers (pkg/oci/remote/signatures.go)
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # Go's zero time.Time: cosign's "created" unless told otherwise
_KEY_FILE_LIMIT: Final = 64 << 10
_MAX_SIGNATURE_B64: Final = 512  # a DER P-256 signature is at most 72 bytes (96 base64 characters)
# Registry references only (cosign writes REGISTRY/REPOSITORY): characters that JSON-encode the same in
# Python and in Go, which escapes <, > and & and would make the payload bytes differ.
_REFERENCE_RE = re.compile(r"[A-Za-z0-9._:/@\[\]-]{1,1024}")
_PEM_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)
_COSIGN_KEY_TYPES = (b"ENCRYPTED SIGSTORE PRIVATE KEY", b"ENCRYPTED COSIGN PRIVATE KEY")
_PRIVATE_KEY_TYPES = (b"PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY")
_MAKE_PEM_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out key.pem"


class SigningError(OcicacheError):
    """A key that cannot be used, or a signature image that cannot be read or extended; one line, no secret."""


class _MalformedError(Exception):
    """A document from a signature image that is not what cosign writes (the message says what is wrong)."""


# -- the tag and the payload -----------------------------------------------------------------------

def signature_tag(manifest_digest: Digest) -> str:
    """Where cosign looks for the signatures of `manifest_digest`: `sha256-<hex>.sig`."""
    return f"sha256-{manifest_digest.hex}.sig"


def simple_signing_payload(docker_reference: str, manifest_digest: Digest) -> bytes:
    """The bytes `cosign sign` signs for this image: Go's `json.Marshal` of sigstore's payload.Cosign.

    Keys in the struct order (critical: identity, image, type; then optional), no whitespace, no
    trailing newline, "optional": null (no -a annotations). `docker_reference` is what cosign calls the
    claimed identity: by default the repository without tag or digest (`127.0.0.1:5000/cache/app`,
    `index.docker.io/library/python` for Docker Hub). Verifiers ignore it (SIGNATURE_SPEC.md, "Simple Signing").
    """
    if not _REFERENCE_RE.fullmatch(docker_reference):
        raise SigningError(f"{docker_reference[:200]!r}: not an image reference to sign as")
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": str(manifest_digest)},
                        "type": COSIGN_SIGNATURE_TYPE},
           "optional": None}
    return json.dumps(doc, separators=(",", ":")).encode()


# -- keys ------------------------------------------------------------------------------------------

def _read_key_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > _KEY_FILE_LIMIT:
            raise SigningError(f"{path}: {size} bytes, too large to be a PEM {what} key")
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{path}: no such {what} key file") from None
    except IsADirectoryError:
        raise SigningError(f"{path}: is a directory, not a PEM {what} key") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the {what} key ({exc.strerror or type(exc).__name__})") from None


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole block) of every PEM block, in file order."""
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK_RE.finditer(data)]


def _key_kind(key: object) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "an RSA key"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "an Ed25519 key"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "an Ed448 key"
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "a DSA key"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"an EC key on curve {key.curve.name}"
    return f"a {type(key).__name__}"


def _refuse_key(path: Path, key: object) -> NoReturn:
    raise SigningError(f"{path}: {_key_kind(key)}; ocicache signs with ECDSA P-256 keys only "
                       f"(prime256v1, cosign's default), e.g. `{_MAKE_PEM_KEY}`")


def _is_p256(key: object) -> bool:
    return isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and \
        isinstance(key.curve, ec.SECP256R1)


def load_private_key(path: Path, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """A PEM ECDSA P-256 private key: PKCS#8 ("PRIVATE KEY", or "ENCRYPTED PRIVATE KEY" with `password`)
    or SEC1 ("EC PRIVATE KEY", what `openssl ecparam -genkey` writes). cosign's own encrypted format is
    refused with a way out."""
    data = _read_key_file(path, "private")
    blocks = _pem_blocks(data)
    types = {kind for kind, _ in blocks}
    if types & set(_COSIGN_KEY_TYPES):
        raise SigningError(
            f"{path}: a cosign-encrypted key (scrypt + NaCl secretbox, which the `cryptography` library does not "
            f"implement) and cosign cannot export it; make a PEM key with `{_MAKE_PEM_KEY}` and, to sign with "
            "cosign too, `cosign import-key-pair --key key.pem`")
    block = next((b for kind, b in blocks if kind in _PRIVATE_KEY_TYPES), None)
    if block is None:
        if b"PUBLIC KEY" in types:
            raise SigningError(f"{path}: a public key; signing needs the private key")
        if b"RSA PRIVATE KEY" in types:
            raise SigningError(f"{path}: an RSA key; ocicache signs with ECDSA P-256 keys only "
                               f"(prime256v1, cosign's default), e.g. `{_MAKE_PEM_KEY}`")
        if b"OPENSSH PRIVATE KEY" in types:
            raise SigningError(f"{path}: an OpenSSH key; ocicache needs a PEM ECDSA P-256 key, e.g. `{_MAKE_PEM_KEY}`")
        found = ", ".join(sorted(kind.decode() for kind in types)) or "no PEM block"
        raise SigningError(f"{path}: not a PEM private key ({found})")
    encrypted = block.startswith(b"-----BEGIN ENCRYPTED") or b"Proc-Type: 4,ENCRYPTED" in block
    try:
        key = serialization.load_pem_private_key(block, password=password if encrypted else None)
    except TypeError:  # encrypted and no password given
        raise SigningError(f"{path}: the key is encrypted; give its password") from None
    except ValueError:
        if encrypted and password is not None:
            raise SigningError(f"{path}: wrong password for the encrypted key (or a damaged key)") from None
        raise SigningError(f"{path}: not a valid PEM private key") from None
    except UnsupportedAlgorithm:
        raise SigningError(f"{path}: a key type or curve ocicache cannot use; it needs ECDSA P-256, "
                           f"e.g. `{_MAKE_PEM_KEY}`") from None
    if not _is_p256(key):
        _refuse_key(path, key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A PEM SubjectPublicKeyInfo ("PUBLIC KEY") ECDSA P-256 key: what `cosign public-key` and
    `openssl ec -pubout` print, and what `cosign verify --key` takes."""
    data = _read_key_file(path, "public")
    blocks = _pem_blocks(data)
    block = next((b for kind, b in blocks if kind == b"PUBLIC KEY"), None)
    if block is None:
        types = {kind for kind, _ in blocks}
        if types & {*_PRIVATE_KEY_TYPES, *_COSIGN_KEY_TYPES, b"RSA PRIVATE KEY"}:
            raise SigningError(f"{path}: a private key; give its public key "
                               "(`openssl ec -in KEY -pubout`, or `cosign public-key --key cosign.key`)")
        if b"CERTIFICATE" in types:
            raise SigningError(f"{path}: a certificate; give its public key (`openssl x509 -in CERT -pubkey -noout`)")
        found = ", ".join(sorted(kind.decode() for kind in types)) or "no PEM block"
        raise SigningError(f"{path}: not a PEM public key ({found})")
    try:
        key = serialization.load_pem_public_key(block)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{path}: not a valid PEM public key, or one of a type ocicache cannot use") from None
    if not _is_p256(key):
        _refuse_key(path, key)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# -- signatures ------------------------------------------------------------------------------------

@functools.cache
def _signing_algorithm() -> ec.ECDSA:
    """RFC 6979 deterministic ECDSA where the library and OpenSSL offer it (the same key and payload then
    give the same signature, and the same `.sig` image); ordinary ECDSA otherwise. Verifiers cannot
    tell the two apart."""
    try:
        return ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    except (TypeError, UnsupportedAlgorithm):
        return ec.ECDSA(hashes.SHA256())


def sign_payload(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """base64 (standard alphabet, padded) of the ASN.1 DER ECDSA signature over SHA-256(payload)."""
    if not _is_p256(key):
        raise SigningError(f"signing needs an ECDSA P-256 key, not {_key_kind(key)}")
    return base64.b64encode(key.sign(payload, _signing_algorithm())).decode("ascii")


def verify_payload(public_key: ec.EllipticCurvePublicKey, payload: bytes, signature_b64: str) -> bool:
    """Whether `signature_b64` (cosign's annotation value) is `public_key`'s signature over `payload`.
    False for anything else, malformed base64 or DER included; never raises for bad input."""
    if not isinstance(signature_b64, str) or not isinstance(payload, bytes) or \
            len(signature_b64) > _MAX_SIGNATURE_B64:
        return False
    try:
        der = base64.b64decode(signature_b64, validate=True)
        public_key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


# -- the .sig image --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignatureImage:
    """A `.sig` image ready for `write_image(dest, sig.image, sig.blobs, signature_tag(digest))`.

    `blobs`: every layer (payload) blob with where its bytes are (in memory for new payloads, the
    source it was read from for kept ones); write_image writes `image.config` itself. `added` is False
    when the signature was already there (nothing needs writing).
    """

    image: Image
    blobs: tuple[tuple[Descriptor, BlobOrigin], ...]
    added: bool = True


class _MemoryBlobs:
    """An ImageSource over payloads held in memory, so a BlobOrigin can name them."""

    def __init__(self, blobs: dict[Digest, bytes]) -> None:
        self._blobs = blobs

    def get_manifest(self, ref: str) -> tuple[Descriptor, bytes] | None:
        return None

    def read_blob(self, digest: Digest, limit: int = 64 << 20) -> bytes:
        data = self._blobs[digest]
        if len(data) > limit:
            raise SigningError(f"blob {digest} larger than {limit} bytes")
        return data

    def open_blob(self, digest: Digest) -> BinaryIO:
        return io.BytesIO(self._blobs[digest])


def _check_signature_text(signature: str) -> None:
    try:
        ok = 0 < len(signature) <= _MAX_SIGNATURE_B64 and bool(base64.b64decode(signature, validate=True))
    except (binascii.Error, ValueError, TypeError):
        ok = False
    if not ok:
        raise SigningError("the signature is not base64 of a DER ECDSA signature")


def _signature_layer(payload: bytes, signature: str) -> Descriptor:
    _check_signature_text(signature)
    return Descriptor(media_type=SIMPLESIGNING_MEDIA_TYPE, digest=Digest.of(payload), size=len(payload),
                      annotations={SIGNATURE_ANNOTATION: signature})


def _image_of(layers: Sequence[Descriptor]) -> Image:
    """Manifest and config over these layers, shaped as cosign's (go-containerregistry's empty image with
    OCI media types, plus one `mutate.Append` per signature); our canonical JSON encoding."""
    config = canonical_json({
        "architecture": "",
        "os": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        # a signature layer is its uncompressed payload: diff_id == digest
        "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]},
        "config": {},
    })
    config_desc = Descriptor(media_type=oci.CONFIG_MEDIA_TYPE, digest=Digest.of(config), size=len(config))
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_MEDIA_TYPE,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layers],
    })
    return Image(config=config, config_descriptor=config_desc, manifest=manifest,
                 manifest_descriptor=Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest),
                                                size=len(manifest)),
                 layers=tuple(layers))


def signature_image(signatures: Sequence[tuple[bytes, str]]) -> SignatureImage:
    """A new `.sig` image: one layer per (payload, base64 signature), in order, repeats dropped."""
    if not signatures:
        raise SigningError("a signature image needs at least one signature")
    layers: list[Descriptor] = []
    payloads: dict[Digest, bytes] = {}
    for payload, signature in signatures:
        layer = _signature_layer(payload, signature)
        if layer not in layers:
            layers.append(layer)
            payloads[layer.digest] = payload
    if len(layers) > MAX_SIGNATURES:
        raise SigningError(f"{len(layers)} signatures; cosign reads at most {MAX_SIGNATURES}")
    memory = BlobOrigin(source=_MemoryBlobs(payloads))
    return SignatureImage(image=_image_of(layers), blobs=tuple((d, memory) for d in layers))


def _parse_json(data: bytes) -> Any:
    """Strict UTF-8 JSON, as Go reads it (no NaN/Infinity); hostile documents raise _MalformedError."""
    def no_constants(name: str) -> NoReturn:
        raise ValueError(name)

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _MalformedError("not JSON") from None


def _manifest_layers(body: bytes) -> list[Any]:
    doc = _parse_json(body)
    if not isinstance(doc, dict):
        raise _MalformedError("not a JSON object")
    if doc.get("mediaType") == oci.INDEX_MEDIA_TYPE or "manifests" in doc:
        raise _MalformedError("an image index, not a signature image")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _MalformedError("not an image manifest (no layers list)")
    if len(layers) > MAX_SIGNATURES:
        raise _MalformedError(f"{len(layers)} layers, more than cosign's limit of {MAX_SIGNATURES}")
    return layers


def _descriptor(obj: Any) -> Descriptor:
    """A layer descriptor from a manifest, checked field by field."""
    if not isinstance(obj, dict):
        raise _MalformedError("a layer that is not a JSON object")
    media_type, digest, size, annotations = (obj.get(k) for k in ("mediaType", "digest", "size", "annotations"))
    if not isinstance(media_type, str) or not isinstance(digest, str) or \
            not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _MalformedError("a layer without a valid mediaType, digest and size")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise _MalformedError("a layer whose annotations are not strings")
    platform = obj.get("platform")
    try:
        return Descriptor(media_type=media_type, digest=Digest(digest), size=size, annotations=dict(annotations),
                          platform=platform if isinstance(platform, dict) and platform else None)
    except ValueError:
        raise _MalformedError(f"a layer with an invalid digest {digest[:80]!r}") from None


def _payload_claims(payload: bytes) -> tuple[str, str]:
    """(critical.image.docker-manifest-digest, critical.type) of a payload, read with the rules Go's
    json.Unmarshal applies to sigstore's SimpleContainerImage (null leaves a field empty; a value of
    the wrong type is an error). Keys match exactly (Go would also accept other letter cases)."""
    doc = _parse_json(payload)

    def member(obj: Any, key: str, kind: type, where: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is not None and not isinstance(value, kind):
            raise _MalformedError(f"{where}{key} is not a JSON {'object' if kind is dict else 'string'}")
        return value

    if not isinstance(doc, dict):
        raise _MalformedError("not a JSON object")
    member(doc, "optional", dict, "")
    critical = member(doc, "critical", dict, "")
    identity = member(critical, "identity", dict, "critical.")
    member(identity, "docker-reference", str, "critical.identity.")
    image = member(critical, "image", dict, "critical.")
    digest = member(image, "docker-manifest-digest", str, "critical.image.")
    kind = member(critical, "type", str, "critical.")
    if not digest:
        raise _MalformedError("no critical.image.docker-manifest-digest")
    return digest, kind or ""


def add_signature(source: ImageSource | None, manifest_digest: Digest, payload: bytes, signature: str, *,
                  signer: ec.EllipticCurvePublicKey | None = None) -> SignatureImage:
    """The `.sig` image of `manifest_digest` with one more signature: the one `source` holds at
    `signature_tag(manifest_digest)` (every layer kept as it is, other tools' annotations too) plus a
    layer for (payload, signature), or a new image when there is none.

    Unchanged (`added=False`) when a layer already holds this payload with this signature, or, given
    `signer`, with any signature that key verifies (what cosign's duplicate detector does: ECDSA
    signatures of one payload differ from run to run unless they are deterministic).
    """
    try:
        claimed, kind = _payload_claims(payload)
    except _MalformedError as exc:
        raise SigningError(f"the payload to sign is not a cosign simple-signing payload ({exc})") from None
    if claimed != str(manifest_digest) or kind != COSIGN_SIGNATURE_TYPE:
        raise SigningError(f"the payload is for {claimed[:80]} ({kind[:80]!r}), not a signature of {manifest_digest}")
    new = signature_image([(payload, signature)])
    tag = signature_tag(manifest_digest)
    try:
        found = source.get_manifest(tag) if source is not None else None
    except DestinationError as exc:
        raise SigningError(f"cannot read the existing signatures at tag {tag}: {exc}") from None
    if found is None:
        return new
    try:
        existing = [_descriptor(obj) for obj in _manifest_layers(found[1])]
    except _MalformedError as exc:
        raise SigningError(f"tag {tag} holds something other than a cosign signature image ({exc}); "
                           "delete that tag to start afresh") from None
    layer = new.image.layers[0]
    for old in existing:
        if old.digest != layer.digest or old.media_type != SIMPLESIGNING_MEDIA_TYPE:
            continue
        old_signature = old.annotations.get(SIGNATURE_ANNOTATION, "")
        if old_signature == signature or (signer is not None and verify_payload(signer, payload, old_signature)):
            kept = BlobOrigin(source=source)
            return SignatureImage(image=_image_of(existing), blobs=tuple((d, kept) for d in existing), added=False)
    if len(existing) >= MAX_SIGNATURES:
        raise SigningError(f"tag {tag} already holds {len(existing)} signatures, cosign's limit")
    kept = BlobOrigin(source=source)
    return SignatureImage(image=_image_of([*existing, layer]),
                          blobs=(*((d, kept) for d in existing), *new.blobs))


class SignatureStore(Destination, ImageSource, Protocol):
    """Somewhere signatures are read from and written to: a layout or a registry repository."""


def sign_image(store: SignatureStore, manifest_digest: Digest, docker_reference: str,
               key: ec.EllipticCurvePrivateKey) -> SignatureImage:
    """Sign `manifest_digest` as cosign would and write the `.sig` image next to it (nothing is written
    when this key already signed it). Concurrent signers of one image can lose each other's layer,
    as with cosign: the tag is read, extended and replaced."""
    payload = simple_signing_payload(docker_reference, manifest_digest)
    sig = add_signature(store, manifest_digest, payload, sign_payload(key, payload), signer=key.public_key())
    if sig.added:
        write_image(store, sig.image, sig.blobs, signature_tag(manifest_digest))
    return sig


# -- verification ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome of verify_signatures: `reason` is one line, for the user, either way."""

    ok: bool
    signatures_found: int
    reason: str


# How far a layer got before it failed; the furthest failure explains the outcome best.
_UNREADABLE, _OTHER_KEY, _BAD_PAYLOAD, _OTHER_IMAGE = range(4)


def _check_layer(source: ImageSource, layer: Descriptor, manifest_digest: Digest,
                 public_key: ec.EllipticCurvePublicKey) -> tuple[int, str] | None:
    """None when the layer is a valid signature of `manifest_digest` by `public_key`, else (stage, why)."""
    if layer.size > MAX_PAYLOAD_SIZE:
        return _UNREADABLE, f"a payload of {layer.size} bytes (the limit is {MAX_PAYLOAD_SIZE})"
    try:
        payload = source.read_blob(layer.digest, MAX_PAYLOAD_SIZE)  # verifies the digest
    except (DestinationError, OSError) as exc:
        return _UNREADABLE, f"payload {layer.digest} unreadable: {exc}"
    if len(payload) != layer.size or Digest.of(payload) != layer.digest:
        return _UNREADABLE, f"payload {layer.digest} does not match its descriptor"
    if not verify_payload(public_key, payload, layer.annotations[SIGNATURE_ANNOTATION]):
        return _OTHER_KEY, "not made by this key"
    try:
        claimed, kind = _payload_claims(payload)
    except _MalformedError as exc:
        return _BAD_PAYLOAD, f"signed payload is not a cosign simple-signing payload ({exc})"
    if kind != COSIGN_SIGNATURE_TYPE:
        return _BAD_PAYLOAD, f"signed payload has type {kind[:80]!r}, not {COSIGN_SIGNATURE_TYPE!r}"
    if claimed != str(manifest_digest):
        return _OTHER_IMAGE, f"signature is for another image ({claimed[:80]})"
    return None


def verify_signatures(source: ImageSource, manifest_digest: Digest,
                      public_key: ec.EllipticCurvePublicKey) -> SignatureCheck:
    """Whether the `.sig` image of `manifest_digest` at `source` holds at least one valid signature of
    it by `public_key`. Hostile documents give ok=False; a source that cannot be read, SigningError."""
    if not _is_p256(public_key):
        raise SigningError(f"verifying needs an ECDSA P-256 public key, not {_key_kind(public_key)}")
    tag = signature_tag(manifest_digest)
    try:
        found = source.get_manifest(tag)
    except DestinationError as exc:
        raise SigningError(f"cannot read the signatures at tag {tag}: {exc}") from None
    if found is None:
        return SignatureCheck(False, 0, f"no signature (no tag {tag})")
    try:
        candidates = [obj for obj in _manifest_layers(found[1])
                      if isinstance(obj, dict) and obj.get("mediaType") == SIMPLESIGNING_MEDIA_TYPE
                      and isinstance(obj.get("annotations"), dict) and SIGNATURE_ANNOTATION in obj["annotations"]]
    except _MalformedError as exc:
        return SignatureCheck(False, 0, f"tag {tag} is not a cosign signature image ({exc})")
    n = len(candidates)
    if not n:
        return SignatureCheck(False, 0, f"tag {tag} holds no cosign signature layer")
    failures: list[tuple[int, str]] = []
    for obj in candidates:
        try:
            failure = _check_layer(source, _descriptor(obj), manifest_digest, public_key)
        except _MalformedError as exc:
            failure = (_UNREADABLE, f"{exc}")
        if failure is not None:
            failures.append(failure)
    plural = "s" if n != 1 else ""
    if len(failures) < n:
        return SignatureCheck(True, n, f"{n - len(failures)} of {n} signature{plural} made by this key "
                                       f"for {manifest_digest}")
    stage, why = max(failures, key=lambda f: f[0])
    if stage >= _BAD_PAYLOAD:
        return SignatureCheck(False, n, why)
    unreadable = [w for s, w in failures if s == _UNREADABLE]
    if stage == _OTHER_KEY:
        extra = f" ({len(unreadable)} unreadable: {unreadable[0]})" if unreadable else ""
        return SignatureCheck(False, n, f"{n} signature{plural}, none made by this key{extra}")
    return SignatureCheck(False, n, f"{n} signature{plural}, none readable ({unreadable[0]})")
