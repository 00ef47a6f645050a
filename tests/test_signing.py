"""Signatures in cosign's key-based format (ocicache/signing.py).

Vectors come from cosign's spec (sigstore/cosign specs/SIGNATURE_SPEC.md) and the golden strings of the
code cosign signs with (sigstore/sigstore pkg/signature/payload/payload_test.go, cosign
pkg/cosign/obsolete_test.go). openssl is the independent ECDSA implementation: it checks our
signatures and makes signatures we must accept. `.sig` images live in a real OCI layout.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ocicache import oci
from ocicache.dest import BlobOrigin, write_image
from ocicache.dest.layout import Layout, open_layout_for_write
from ocicache.errors import DestinationError, LayoutError, OcicacheError
from ocicache.oci import Descriptor, Digest
from ocicache.signing import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    SignatureCheck,
    SigningError,
    add_signature,
    load_private_key,
    load_public_key,
    sign_image,
    sign_payload,
    signature_image,
    signature_tag,
    simple_signing_payload,
    verify_payload,
    verify_signatures,
)
from tests.conftest import require_tool

PASSWORD = "correct-horse-battery"
# SIGNATURE_SPEC.md, "Tag-based Discovery", steps 2 and 3.
SPEC_DIGEST = Digest("sha256:97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36")
SPEC_TAG = "sha256-97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36.sig"
IMAGE = Digest.of(b"the manifest of an ocicache image")
OTHER_IMAGE = Digest.of(b"the manifest of another image")
REF = "127.0.0.1:5000/cache/app"


def _openssl(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("openssl"), *map(str, args)], cwd=cwd, check=check,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys made by openssl, never by the code under test."""
    d = tmp_path_factory.mktemp("keys")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sec1.pem", cwd=d)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "sec1.pem", "-out", "pkcs8.pem", cwd=d)
    _openssl("pkcs8", "-topk8", "-in", "sec1.pem", "-passout", f"pass:{PASSWORD}", "-out", "encrypted.pem", cwd=d)
    _openssl("ec", "-in", "sec1.pem", "-pubout", "-out", "pub.pem", cwd=d)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", "with-params.pem", cwd=d)  # EC PARAMETERS first
    _openssl("ec", "-in", "with-params.pem", "-pubout", "-out", "with-params-pub.pem", cwd=d)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "other.pem", cwd=d)
    _openssl("ec", "-in", "other.pem", "-pubout", "-out", "other-pub.pem", cwd=d)
    _openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "p384.pem", cwd=d)
    _openssl("ec", "-in", "p384.pem", "-pubout", "-out", "p384-pub.pem", cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem", cwd=d)
    _openssl("rsa", "-in", "rsa.pem", "-traditional", "-out", "rsa-traditional.pem", cwd=d)
    _openssl("genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem", cwd=d)
    # cosign generate-key-pair's format: only the PEM type matters here (the body is scrypt + secretbox).
    body = base64.encodebytes(b'{"kdf":{"name":"scrypt"},"cipher":{"name":"nacl/secretbox"}}').decode()
    (d / "cosign.key").write_text(f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
                                  "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    return {p.stem: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def key(keys: dict[str, Path]) -> ec.EllipticCurvePrivateKey:
    return load_private_key(keys["pkcs8"])


@pytest.fixture(scope="module")
def pub(keys: dict[str, Path]) -> ec.EllipticCurvePublicKey:
    return load_public_key(keys["pub"])


@pytest.fixture(scope="module")
def other_pub(keys: dict[str, Path]) -> ec.EllipticCurvePublicKey:
    return load_public_key(keys["other-pub"])


# -- the spec's vectors ----------------------------------------------------------------------------

def test_signature_tag_is_the_spec_example():
    # SIGNATURE_SPEC.md "Tag-based Discovery": replace ':' with '-', append '.sig'.
    assert signature_tag(SPEC_DIGEST) == SPEC_TAG


@pytest.mark.parametrize(("reference", "digest", "expected"), [
    # SIGNATURE_SPEC.md "Simple Signing": critical.identity.docker-reference, critical.image.docker-manifest-digest
    # (lower case: the JSON tags of sigstore's payload.SimpleContainerImage), critical.type "cosign container image
    # signature", optional; encoded as Go's json.Marshal does: struct order, no whitespace, nil map -> null.
    ("gcr.io/dlorenc-vmtest2/demo", SPEC_DIGEST,
     b'{"critical":{"identity":{"docker-reference":"gcr.io/dlorenc-vmtest2/demo"},"image":{"docker-manifest-digest":'
     b'"sha256:97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36"},'
     b'"type":"cosign container image signature"},"optional":null}'),
    # sigstore/sigstore pkg/signature/payload/payload_test.go, TestMarshalCosign "no claims".
    ("example.com/test/image", Digest("sha256:" + "d34db33f" * 8),
     b'{"critical":{"identity":{"docker-reference":"example.com/test/image"},"image":{"docker-manifest-digest":'
     b'"sha256:d34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33fd34db33f"},'
     b'"type":"cosign container image signature"},"optional":null}'),
    # sigstore/cosign pkg/cosign/obsolete_test.go: "exactly the same string as previous versions".
    ("index.docker.io/namespace/image",
     Digest("sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"),
     b'{"critical":{"identity":{"docker-reference":"index.docker.io/namespace/image"},"image":{"docker-manifest-digest":'
     b'"sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"},'
     b'"type":"cosign container image signature"},"optional":null}'),
])
def test_payload_is_byte_for_byte_what_cosign_signs(reference, digest, expected):
    assert simple_signing_payload(reference, digest) == expected


@pytest.mark.parametrize("reference", ["", "a<b/c", "repo&x", "with space/x", "line\nbreak", "é/x"])
def test_payload_refuses_a_reference_go_would_encode_differently(reference):
    with pytest.raises(SigningError, match="not an image reference"):
        simple_signing_payload(reference, IMAGE)


# -- keys ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "password"), [
    ("sec1", None), ("pkcs8", None), ("encrypted", PASSWORD.encode()), ("with-params", None)])
def test_openssl_keys_load(keys, name, password):
    loaded = load_private_key(keys[name], password)
    expected = load_public_key(keys["with-params-pub" if name == "with-params" else "pub"])
    assert loaded.public_key().public_numbers() == expected.public_numbers()


def test_encrypted_key_needs_the_right_password(keys):
    with pytest.raises(SigningError, match="encrypted; give its password"):
        load_private_key(keys["encrypted"])
    with pytest.raises(SigningError, match="wrong password") as info:
        load_private_key(keys["encrypted"], b"not-the-password")
    assert "not-the-password" not in str(info.value) and PASSWORD not in str(info.value)


@pytest.mark.parametrize(("name", "message"), [
    ("p384", "curve secp384r1; ocicache signs with ECDSA P-256 keys only"),
    ("rsa", "an RSA key; ocicache signs with ECDSA P-256 keys only"),
    ("rsa-traditional", "an RSA key; ocicache signs with ECDSA P-256 keys only"),
    ("ed25519", "an Ed25519 key"),
    ("cosign", r"scrypt \+ NaCl secretbox.*cosign import-key-pair --key key\.pem"),
    ("pub", "a public key; signing needs the private key"),
])
def test_unusable_private_keys_are_refused_clearly(keys, name, message):
    with pytest.raises(SigningError, match=message) as info:
        load_private_key(keys[name])
    assert "\n" not in str(info.value) and str(keys[name]) in str(info.value)


def test_missing_and_unreadable_key_files(tmp_path):
    with pytest.raises(SigningError, match="no such private key file"):
        load_private_key(tmp_path / "absent.pem")
    with pytest.raises(SigningError, match="no such public key file"):
        load_public_key(tmp_path / "absent.pub")
    with pytest.raises(SigningError, match="is a directory"):
        load_private_key(tmp_path)
    (tmp_path / "junk.pem").write_bytes(b"just some text\n")
    with pytest.raises(SigningError, match=r"not a PEM private key \(no PEM block\)"):
        load_private_key(tmp_path / "junk.pem")


@pytest.mark.parametrize(("name", "message"), [
    ("p384-pub", "curve secp384r1"), ("pkcs8", "a private key; give its public key"),
    ("cosign", "a private key"), ("rsa", "a private key")])
def test_unusable_public_keys_are_refused_clearly(keys, name, message):
    with pytest.raises(SigningError, match=message):
        load_public_key(keys[name])


# -- signatures, checked by openssl both ways ------------------------------------------------------

def test_openssl_verifies_our_signature(tmp_path, keys, key):
    payload = simple_signing_payload(REF, IMAGE)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(sign_payload(key, payload), validate=True))
    ok = _openssl("dgst", "-sha256", "-verify", keys["pub"], "-signature", "sig.der", "payload", cwd=tmp_path)
    assert ok.stdout.strip() == "Verified OK"
    # and openssl is not just saying yes: another key's check fails
    bad = _openssl("dgst", "-sha256", "-verify", keys["other-pub"], "-signature", "sig.der", "payload",
                   cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "Verified OK" not in bad.stdout


def test_we_verify_an_openssl_signature(tmp_path, keys, pub, other_pub):
    payload = simple_signing_payload(REF, IMAGE)
    (tmp_path / "payload").write_bytes(payload)
    _openssl("dgst", "-sha256", "-sign", keys["sec1"], "-out", "sig.der", "payload", cwd=tmp_path)
    signature = base64.b64encode((tmp_path / "sig.der").read_bytes()).decode()
    assert verify_payload(pub, payload, signature)
    assert not verify_payload(other_pub, payload, signature)


def test_signatures_are_deterministic(key):
    payload = simple_signing_payload(REF, IMAGE)
    assert sign_payload(key, payload) == sign_payload(key, payload)  # RFC 6979: one .sig image per key+payload


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_bad_signatures_are_false_never_an_exception(key, pub, other_pub):
    payload = simple_signing_payload(REF, IMAGE)
    signature = sign_payload(key, payload)
    der = base64.b64decode(signature)
    assert verify_payload(pub, payload, signature)
    assert not verify_payload(other_pub, payload, signature)  # wrong key
    assert not verify_payload(pub, simple_signing_payload(REF, OTHER_IMAGE), signature)  # another digest
    assert not verify_payload(pub, _flip(payload, 40), signature)  # one payload bit
    assert not verify_payload(pub, payload, base64.b64encode(_flip(der, len(der) - 1)).decode())  # one signature bit
    assert not verify_payload(pub, payload, base64.b64encode(der + b"\x00").decode())  # trailing garbage after DER
    for garbage in ("", "not base64!", signature[:-2], "é" * 8, "A" * 100_000, None, 42):
        assert not verify_payload(pub, payload, garbage)  # type: ignore[arg-type]


# -- the .sig image in an OCI layout ---------------------------------------------------------------

def _manifest(layout: Path, tag: str) -> dict:
    found = Layout.open(layout).get_manifest(tag)
    assert found is not None, f"no tag {tag}"
    return json.loads(found[1])


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_signed_layout_is_cosigns_sig_image_and_verifies(tmp_path, key, pub, other_pub):
    with open_layout_for_write(tmp_path / "oci") as layout:
        sig = sign_image(layout, IMAGE, REF, key)
    assert sig.added
    assert Layout.open(tmp_path / "oci").tags() == [signature_tag(IMAGE)]
    manifest = _manifest(tmp_path / "oci", signature_tag(IMAGE))
    assert manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE and manifest["schemaVersion"] == 2
    assert manifest["config"]["mediaType"] == oci.CONFIG_MEDIA_TYPE
    (layer,) = manifest["layers"]
    payload = _blob(tmp_path / "oci", layer["digest"])
    assert payload == simple_signing_payload(REF, IMAGE)
    assert layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["size"] == len(payload) and layer["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert list(layer["annotations"]) == [SIGNATURE_ANNOTATION] == ["dev.cosignproject.cosign/signature"]
    assert verify_payload(pub, payload, layer["annotations"][SIGNATURE_ANNOTATION])
    config = json.loads(_blob(tmp_path / "oci", manifest["config"]["digest"]))
    assert config == {"architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
                      "history": [{"created": "0001-01-01T00:00:00Z"}],
                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}, "config": {}}

    source = Layout.open(tmp_path / "oci")
    assert verify_signatures(source, IMAGE, pub) == SignatureCheck(
        True, 1, f"1 of 1 signature made by this key for {IMAGE}")
    assert verify_signatures(source, IMAGE, other_pub) == SignatureCheck(False, 1, "1 signature, none made by this key")
    assert verify_signatures(source, OTHER_IMAGE, pub) == SignatureCheck(
        False, 0, f"no signature (no tag {signature_tag(OTHER_IMAGE)})")


def test_signature_for_another_image_is_rejected(tmp_path, key, pub):
    payload = simple_signing_payload(REF, OTHER_IMAGE)  # validly signed, but names another digest
    sig = signature_image([(payload, sign_payload(key, payload))])
    with open_layout_for_write(tmp_path / "oci") as layout:
        write_image(layout, sig.image, sig.blobs, signature_tag(IMAGE))
    check = verify_signatures(Layout.open(tmp_path / "oci"), IMAGE, pub)
    assert check == SignatureCheck(False, 1, f"signature is for another image ({OTHER_IMAGE})")


def test_signature_image_bytes_are_deterministic():
    pairs = [(simple_signing_payload(REF, IMAGE), "MEUCIQDrpzMEUCIQ=="), (b"second", "MEQCIDrpz+/A")]
    first, second = signature_image(pairs), signature_image(list(pairs))
    assert first.image.manifest == second.image.manifest and first.image.config == second.image.config
    assert first.image.manifest_descriptor.digest == Digest.of(second.image.manifest)
    assert first.image.manifest == oci.canonical_json(json.loads(first.image.manifest))
    assert [d.digest for d, _ in first.blobs] == [Digest.of(p) for p, _ in pairs]
    assert signature_image([*pairs, pairs[0]]).image.manifest == first.image.manifest  # a repeat is dropped
    with pytest.raises(SigningError, match="not base64"):
        signature_image([(b"payload", "not base64!")])


def test_signing_twice_keeps_one_layer_and_another_key_appends(tmp_path, keys, key, pub, other_pub):
    other = load_private_key(keys["other"])
    with open_layout_for_write(tmp_path / "oci") as layout:
        sign_image(layout, IMAGE, REF, key)
    first = _manifest(tmp_path / "oci", signature_tag(IMAGE))
    index = (tmp_path / "oci" / "index.json").read_bytes()
    with open_layout_for_write(tmp_path / "oci") as layout:
        again = sign_image(layout, IMAGE, REF, key)
    assert not again.added and (tmp_path / "oci" / "index.json").read_bytes() == index
    with open_layout_for_write(tmp_path / "oci") as layout:
        sign_image(layout, IMAGE, "127.0.0.1:5000/cache/app-mirror", other)
    manifest = _manifest(tmp_path / "oci", signature_tag(IMAGE))
    assert len(manifest["layers"]) == 2 and manifest["layers"][0] == first["layers"][0]  # the first kept as it was
    config = json.loads(_blob(tmp_path / "oci", manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert len(config["history"]) == 2
    source = Layout.open(tmp_path / "oci")
    assert verify_signatures(source, IMAGE, pub) == SignatureCheck(True, 2, f"1 of 2 signatures made by this key "
                                                                               f"for {IMAGE}")
    assert verify_signatures(source, IMAGE, other_pub).ok


def test_duplicates_are_found_as_cosign_finds_them(tmp_path, key, pub):
    """cosign's duplicate detector: same payload, and an existing signature the signer's key verifies."""
    payload = simple_signing_payload(REF, IMAGE)
    with open_layout_for_write(tmp_path / "oci") as layout:
        sign_image(layout, IMAGE, REF, key)
    source = Layout.open(tmp_path / "oci")
    randomised = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()  # cosign's own kind
    assert not add_signature(source, IMAGE, payload, randomised, signer=pub).added
    appended = add_signature(source, IMAGE, payload, randomised)
    assert appended.added and [d.annotations[SIGNATURE_ANNOTATION] for d in appended.image.layers][1] == randomised
    with pytest.raises(SigningError, match="not a signature of"):
        add_signature(source, IMAGE, simple_signing_payload(REF, OTHER_IMAGE), randomised)


def _go_order_json(obj: object) -> bytes:
    """JSON in the key order it is written in (like Go's struct order), not sorted."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _put(layout: Layout, data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    desc = Descriptor(media_type=media_type, digest=Digest.of(data), size=len(data))
    layout.put_blob(desc, lambda: io.BytesIO(data))
    return desc


def _store_sig_manifest(path: Path, digest: Digest, manifest: bytes, blobs: Sequence[bytes] = ()) -> Layout:
    """Any bytes as the manifest at digest's .sig tag of a real layout, with these blobs."""
    with open_layout_for_write(path) as layout:
        for blob in blobs:
            _put(layout, blob)
        desc = Descriptor(media_type=oci.MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest), size=len(manifest))
        layout.put_manifest(desc, manifest, tag=signature_tag(digest))
    return Layout.open(path)


def test_a_cosign_written_sig_image_verifies_and_is_extended_verbatim(tmp_path, keys, key, pub):
    # What cosign pushes, in go-containerregistry's field order, with the extras cosign may add: optional
    # claims in the payload (sigstore's "arbitrary claims" shape) and a Rekor bundle annotation on the layer.
    payload = (b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/cache/app"},"image":'
               b'{"docker-manifest-digest":"' + str(IMAGE).encode() + b'"},"type":"cosign container image signature"},'
               b'"optional":{"CamelCase WithSpace":8.314,"creator":"anyone","some_struct":{"false":true,"foo":"bar",'
               b'"nothing":null}}}')
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    config = _go_order_json({"architecture": "", "created": "0001-01-01T00:00:00Z",
                             "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                             "rootfs": {"type": "layers", "diff_ids": [digest]}, "config": {}})
    layer = {"mediaType": SIMPLESIGNING_MEDIA_TYPE, "size": len(payload), "digest": digest,
             "annotations": {SIGNATURE_ANNOTATION: sign_payload(key, payload),
                             "dev.sigstore.cosign/bundle": '{"SignedEntryTimestamp":"MEUC"}'}}
    manifest = _go_order_json({"schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE,
                               "config": {"mediaType": oci.CONFIG_MEDIA_TYPE, "size": len(config),
                                          "digest": str(Digest.of(config))},
                               "layers": [layer]})
    source = _store_sig_manifest(tmp_path / "oci", IMAGE, manifest, [payload, config])
    assert verify_signatures(source, IMAGE, pub).ok

    other = load_private_key(keys["other"])
    new_payload = simple_signing_payload(REF, IMAGE)
    extended = add_signature(source, IMAGE, new_payload, sign_payload(other, new_payload))
    assert extended.added and len(extended.image.layers) == 2
    assert extended.image.layers[0].to_json() == layer  # cosign's annotations kept
    with open_layout_for_write(tmp_path / "oci") as layout:
        write_image(layout, extended.image, extended.blobs, signature_tag(IMAGE))
    check = verify_signatures(Layout.open(tmp_path / "oci"), IMAGE, load_public_key(keys["other-pub"]))
    assert check.ok and check.signatures_found == 2


# -- hostile signature images ----------------------------------------------------------------------

def _sig_layer(payload: bytes, signature: str) -> dict:
    return {"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": str(Digest.of(payload)), "size": len(payload),
            "annotations": {SIGNATURE_ANNOTATION: signature}}


@pytest.mark.parametrize(("manifest", "reason"), [
    (b"not json at all", "not JSON"),
    (b"[" * 100_000, "not JSON"),  # nesting deep enough to blow Python's recursion limit
    (b"\xff\xfe{}", "not JSON"),
    (b'{"layers": NaN}', "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"layers": 5}', "no layers list"),
    (b'{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}', "an image index"),
    (json.dumps({"layers": [{"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1}] * 1001}).encode(),
     "1001 layers, more than cosign's limit of 1000"),
    (json.dumps({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                             "digest": "sha256:" + "0" * 64, "size": 1}]}).encode(), "holds no cosign signature layer"),
])
def test_hostile_manifests_give_ok_false(tmp_path, pub, manifest, reason):
    check = verify_signatures(_store_sig_manifest(tmp_path / "oci", IMAGE, manifest), IMAGE, pub)
    assert not check.ok and reason in check.reason and "\n" not in check.reason


@pytest.mark.parametrize(("layer", "reason"), [
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:nothex", "size": 3,
      "annotations": {SIGNATURE_ANNOTATION: "MEUC"}}, "invalid digest"),
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": "3",
      "annotations": {SIGNATURE_ANNOTATION: "MEUC"}}, "without a valid mediaType, digest and size"),
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": True,
      "annotations": {SIGNATURE_ANNOTATION: "MEUC"}}, "without a valid mediaType, digest and size"),
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": 3,
      "annotations": {SIGNATURE_ANNOTATION: 12}}, "annotations are not strings"),
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": 3 << 20,
      "annotations": {SIGNATURE_ANNOTATION: "MEUC"}}, f"a payload of {3 << 20} bytes"),
    ({"mediaType": SIMPLESIGNING_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": 3,
      "annotations": {SIGNATURE_ANNOTATION: "MEUC"}}, "unreadable"),  # no such blob
])
def test_hostile_layers_give_ok_false(tmp_path, pub, layer, reason):
    manifest = json.dumps({"schemaVersion": 2, "layers": [layer]}).encode()
    check = verify_signatures(_store_sig_manifest(tmp_path / "oci", IMAGE, manifest), IMAGE, pub)
    assert check.signatures_found == 1 and not check.ok and reason in check.reason, check.reason


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"critical": "yes"}', "critical is not a JSON object"),
    (b'{"critical": {"image": {"docker-manifest-digest": 7}}}', "docker-manifest-digest is not a JSON string"),
    (b'{"critical": {"image": {}, "type": "cosign container image signature"}}', "no critical.image.docker-manif"),
    (b'{"critical": {"identity": [], "image": {"docker-manifest-digest": "x"}}}', "identity is not a JSON object"),
    (b'{"critical": {"image": {"docker-manifest-digest": "x"}}, "optional": "str"}', "optional is not a JSON obj"),
    (json.dumps({"critical": {"image": {"docker-manifest-digest": str(IMAGE)}, "type": "atomic container signature"},
                 "optional": None}).encode(), "type 'atomic container signature'"),
    (json.dumps({"critical": {"image": {"docker-manifest-digest": str(IMAGE)},
                              "type": "cosign container image signature"}}).encode("utf-16"), "not JSON"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "not JSON"),  # deep nesting, under the size limit
    (b'{"critical": {"image": {"docker-manifest-digest": "sha256:x"}, "type": Infinity}}', "not JSON"),
])
def test_signed_but_malformed_payloads_give_ok_false(tmp_path, key, pub, payload, reason):
    """Validly signed by the trusted key, so every check past the signature is exercised."""
    manifest = json.dumps({"schemaVersion": 2, "layers": [_sig_layer(payload, sign_payload(key, payload))]}).encode()
    check = verify_signatures(_store_sig_manifest(tmp_path / "oci", IMAGE, manifest, [payload]), IMAGE, pub)
    assert check.signatures_found == 1 and not check.ok and reason in check.reason, check.reason


def test_payload_blobs_that_lie_give_ok_false(tmp_path, key, pub):
    good = simple_signing_payload(REF, IMAGE)
    layer = _sig_layer(good, sign_payload(key, good))
    huge = b" " * ((1 << 20) + 1)
    small_claim = {**_sig_layer(huge, "MEUC"), "size": 10}  # a descriptor that understates the blob
    manifest = json.dumps({"layers": [layer, small_claim]}).encode()
    source = _store_sig_manifest(tmp_path / "oci", IMAGE, manifest, [good, huge])
    blob = tmp_path / "oci" / "blobs" / "sha256" / Digest.of(good).hex
    blob.chmod(0o644)
    blob.write_bytes(_flip(good, 30))  # the stored payload no longer matches its digest
    check = verify_signatures(source, IMAGE, pub)
    assert check.signatures_found == 2 and not check.ok
    assert check.reason.startswith("2 signatures, none readable (payload ") and "does not match" in check.reason


class _Unreachable:
    """An ImageSource whose reads fail as a registry's do."""

    def get_manifest(self, ref: str) -> tuple[Descriptor, bytes] | None:
        raise DestinationError(f"127.0.0.1:5000/cache/app:{ref}: connection refused")

    def read_blob(self, digest: Digest, limit: int = 64 << 20) -> bytes:
        raise OSError("unreachable")

    def open_blob(self, digest: Digest) -> io.BytesIO:
        raise OSError("unreachable")


def test_an_unreadable_source_is_a_signing_error(pub, key):
    with pytest.raises(SigningError, match=r"cannot read the signatures at tag sha256-.*connection refused"):
        verify_signatures(_Unreachable(), IMAGE, pub)
    assert issubclass(SigningError, OcicacheError) and not issubclass(SigningError, LayoutError)
    payload = simple_signing_payload(REF, IMAGE)
    with pytest.raises(SigningError, match="cannot read the existing signatures"):
        add_signature(_Unreachable(), IMAGE, payload, sign_payload(key, payload))


def test_extending_something_that_is_not_a_signature_image_is_refused(tmp_path, key):
    source = _store_sig_manifest(tmp_path / "oci", IMAGE, b'{"mediaType":"%s","manifests":[]}'
                                 % oci.INDEX_MEDIA_TYPE.encode())
    payload = simple_signing_payload(REF, IMAGE)
    with pytest.raises(SigningError, match=r"holds something other than a cosign signature image.*an image index"):
        add_signature(source, IMAGE, payload, sign_payload(key, payload))


def test_blob_origins_serve_the_payloads():
    payload = simple_signing_payload(REF, IMAGE)
    sig = signature_image([(payload, "MEUCIQ==")])
    ((desc, origin),) = sig.blobs
    assert isinstance(origin, BlobOrigin) and origin.source is not None and origin.path is None
    assert origin.source.open_blob(desc.digest).read() == payload == origin.source.read_blob(desc.digest)
