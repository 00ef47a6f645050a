"""Issue 9: tampered images are caught (verify --rebuild, signatures), honest ones pass.

The attacker here has push rights: one file of one package's layer is changed and everything is
rewritten consistently (layer, diff_ids, manifest, annotations), under the same tag. Digests then
all check out; only a rebuild or a signature by a key the attacker lacks tells the images apart.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import httpx

from tests.conftest import ocicache

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _keys(directory: Path, name: str) -> tuple[Path, Path]:
    key, pub = directory / f"{name}.pem", directory / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(client: httpx.Client, host: str, base: str, blob: bytes) -> None:
    location = str(httpx.URL(f"http://{host}").join(client.post(f"{base}/blobs/uploads/").headers["location"]))
    sep = "&" if "?" in location else "?"
    client.put(f"{location}{sep}digest={_digest(blob)}", content=blob).raise_for_status()


def tamper(host: str, repo: str, tag: str, package_file: str, new_content: bytes) -> str:
    """Change one file in the layer that holds it and rewrite the image consistently; return the
    new manifest digest."""
    base = f"http://{host}/v2/{repo}"
    with httpx.Client() as client:
        manifest = client.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}).json()
        config = client.get(f"{base}/blobs/{manifest['config']['digest']}").json()
        for i, layer in enumerate(manifest["layers"]):
            plain = gzip.decompress(client.get(f"{base}/blobs/{layer['digest']}").content)
            out = io.BytesIO()
            changed = False
            with tarfile.open(fileobj=io.BytesIO(plain)) as src, tarfile.open(fileobj=out, mode="w") as dst:
                for member in src:
                    data = src.extractfile(member).read() if member.isreg() else None
                    if member.isreg() and member.name.endswith(package_file):
                        data, changed = new_content, True
                        member.size = len(data)
                    dst.addfile(member, io.BytesIO(data) if data is not None else None)
            if not changed:
                continue
            new_plain = out.getvalue()
            blob = gzip.compress(new_plain, mtime=0)
            _upload(client, host, base, blob)
            layer["digest"], layer["size"] = _digest(blob), len(blob)
            layer["annotations"]["dev.ocicache.layer.diff-id"] = _digest(new_plain)
            config["rootfs"]["diff_ids"][i] = _digest(new_plain)
            break
        else:
            raise AssertionError(f"no layer holds {package_file}")
        config_bytes = json.dumps(config).encode()
        _upload(client, host, base, config_bytes)
        manifest["config"]["digest"], manifest["config"]["size"] = _digest(config_bytes), len(config_bytes)
        body = json.dumps(manifest).encode()
        client.put(f"{base}/manifests/{tag}", content=body, headers={"Content-Type": ACCEPT}).raise_for_status()
        return _digest(body)


def test_a_tampered_image_is_named_by_verify_rebuild_and_refused_without_its_signature(registries, make_project,
                                                                                          tmp_path):
    server = registries["plain"]
    key, pub = _keys(tmp_path, "signer")
    _, other_pub = _keys(tmp_path, "other")
    lock = make_project(tmp_path / "p", ["heavy", "small-a", "sdist-only"])
    ref = f"{server.host}/trust/app:1"
    pushed = ocicache("push", lock, ref, "--sign-key", key, "--json").json()
    assert pushed["signature"]["added"] and pushed["signature"]["manifest_digest"] == pushed["manifest_digest"]

    honest = ocicache("verify", ref, lock, "--key", pub, "--rebuild", "--json").json()
    assert honest["ok"] and honest["rebuilt"] and honest["problems"] == [] and honest["layers_verified"] >= 2
    ocicache("pull", ref, tmp_path / "cache-ok", "--require-signature", "--key", pub)
    wrong_key = ocicache("pull", ref, tmp_path / "cache-other", "--require-signature", "--key", other_pub,
                         check=False)
    assert wrong_key.returncode == 1 and "none made by this key" in wrong_key.stderr

    tampered = tamper(server.host, "trust/app", "1", "small_a/__init__.py", b"import os  # evil\n")
    assert tampered != pushed["manifest_digest"]
    # every digest checks out: a plain verify (and a plain pull) cannot tell
    assert ocicache("verify", ref, lock, "--json").json()["ok"]
    rebuilt = ocicache("verify", ref, lock, "--rebuild", check=False)
    assert rebuilt.returncode == 1, rebuilt.stdout
    problems = [line for line in rebuilt.stdout.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and "small-a 1.0" in problems[0] and "small_a/__init__.py" in problems[0]
    refused = ocicache("pull", ref, tmp_path / "cache-bad", "--require-signature", "--key", pub, check=False)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "signature required and no signature" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "cache-bad").exists()  # refused before anything was written
    check = ocicache("check", ref, lock, "--require-signature", "--key", pub, check=False)
    assert check.returncode == 1 and "signature required" in check.stderr
    signed_check = ocicache("verify", ref, lock, "--key", pub, check=False)
    assert signed_check.returncode == 1 and "signature" in signed_check.stdout


def test_sign_then_verify_in_a_layout_and_signing_twice_adds_nothing(make_project, tmp_path):
    key, pub = _keys(tmp_path, "k")
    lock = make_project(tmp_path / "p", ["small-a"])
    ref = f"oci:{tmp_path / 'l'}:t"
    ocicache("push", lock, ref)
    first = ocicache("sign", ref, "--key", key, "--json").json()
    again = ocicache("sign", ref, "--key", key, "--json").json()
    assert first["added"] and not again["added"] and again["signatures"] == 1
    assert first["signature_tag"] == "sha256-" + first["manifest_digest"].split(":")[1] + ".sig"
    assert ocicache("verify", ref, lock, "--key", pub, "--json").json()["ok"]
    bad_key = tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(bad_key), "2048"], check=True, capture_output=True)
    run = ocicache("sign", ref, "--key", bad_key, check=False)
    assert run.returncode == 1 and "P-256" in run.stderr and len(run.stderr.strip().splitlines()) == 1
