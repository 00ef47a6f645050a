"""Issue 3 acceptance against real registries (Debian's docker-registry) started by the suite."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from tests.conftest import heavy_files, ocicache, offline_sync, push_to, require_tool
from tests.support.registry import PASSWORD, USER
from tests.support.tcpproxy import ThrottledProxy


def _skopeo(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", ["plain", "htpasswd", "tls", "token"])
def test_push_to_every_kind_of_registry_is_accepted_by_skopeo(kind, registries, make_project, tmp_path):
    server = registries[kind]
    lock = make_project(tmp_path / "project", ["heavy", "small-b", "native"])
    ref = f"{server.host}/svc/{kind}:v1"
    result = push_to(server, lock, ref).json()
    assert result["blobs_uploaded"] == len(result["layers"])

    inspected = _skopeo(server, "inspect", *server.skopeo_args(), f"docker://{ref}")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == result["manifest_digest"]
    copy_args = [a.replace("--tls-verify", "--src-tls-verify").replace("--creds", "--src-creds")
                 .replace("--cert-dir", "--src-cert-dir") for a in server.skopeo_args()]
    copied = _skopeo(server, "copy", *copy_args, f"docker://{ref}", f"oci:{tmp_path / 'copy'}:v1")
    assert copied.returncode == 0, copied.stderr
    # and ocicache reads it back
    info = ocicache("inspect", ref, *server.cli_auth(), "--json",
                    input=PASSWORD if kind in ("htpasswd", "token") else None).json()
    assert info["manifest_digest"] == result["manifest_digest"]
    if kind == "token":
        assert server.token_server.requests["token"] > 0


def test_service_b_mounts_shared_layers_and_downloads_nothing_shared(registries, make_project, index, tmp_path):
    server = registries["plain"]
    lock_a = make_project(tmp_path / "a", ["heavy", "small-a", "native"])
    lock_b = make_project(tmp_path / "b", ["heavy", "small-c==3.0"])
    a = push_to(server, lock_a, f"{server.host}/team/service-a:main").json()
    before = dict(index.downloads)
    b = push_to(server, lock_b, f"{server.host}/team/service-b:main", "--cache-from",
                f"{server.host}/team/service-a:main").json()
    after = dict(index.downloads)
    downloaded = {name for name in after if after[name] != before.get(name, 0)}
    assert downloaded == {"small_c-3.0-py3-none-any.whl"}  # heavy came from service A's layer
    a_digests = {layer["digest"] for layer in a["layers"]}
    for layer in b["layers"]:
        expected = "mounted" if layer["digest"] in a_digests else "uploaded"
        assert layer["blob"] == expected, layer
    heavy = next(layer for layer in b["layers"] if layer["packages"] == ["heavy"])
    assert heavy["blob"] == "mounted"
    assert b["bytes_uploaded"] == sum(layer["size"] for layer in b["layers"] if layer["digest"] not in a_digests)
    # the image is whole: skopeo can copy every blob of it
    copied = _skopeo(server, "copy", "--src-tls-verify=false", f"docker://{server.host}/team/service-b:main",
                     f"oci:{tmp_path / 'b-copy'}:main")
    assert copied.returncode == 0, copied.stderr


def test_pool_lets_another_repository_reuse_layers_from_a_fresh_scratch(registries, make_project, index, tmp_path):
    server = registries["plain"]
    pool = f"{server.host}/shared/uv-pool"
    lock_a = make_project(tmp_path / "a", ["heavy", "small-a"])
    lock_b = make_project(tmp_path / "b", ["heavy", "small-b"])
    a = push_to(server, lock_a, f"{server.host}/pool-a/app:1", "--pool", pool).json()
    assert a["pool_tags_written"] > 0
    before = dict(index.downloads)
    b = push_to(server, lock_b, f"{server.host}/pool-b/app:1", "--pool", pool).json()
    after = dict(index.downloads)
    assert after.get("heavy-1.0-py3-none-any.whl") == before.get("heavy-1.0-py3-none-any.whl")
    heavy = next(layer for layer in b["layers"] if layer["packages"] == ["heavy"])
    assert heavy["reused"] and heavy["blob"] == "mounted"
    assert b["packages_populated"] == 1  # small-b only (small-a came along from the pool's bucket)


def test_a_known_package_in_a_bundle_is_taken_from_the_registry_layer(registries, make_project, index, tmp_path):
    server = registries["plain"]
    lock_a = make_project(tmp_path / "a", ["small-a", "small-b", "small-c"])
    lock_b = make_project(tmp_path / "b", ["small-a", "small-c", "sdist-only"])
    push_to(server, lock_a, f"{server.host}/bundle/a:1", "--buckets", "1")
    before = dict(index.downloads)
    b = push_to(server, lock_b, f"{server.host}/bundle/b:1", "--buckets", "1", "--cache-from",
                f"{server.host}/bundle/a:1").json()
    after = dict(index.downloads)
    assert b["packages_extracted"] == 2 and b["packages_populated"] == 1
    assert {n for n in after if after[n] != before.get(n, 0)} == {"sdist_only-0.5.tar.gz"}
    # identical to a cold build of the same lock: the re-bundled layer has the same bytes
    cold = ocicache("push", lock_b, f"oci:{tmp_path / 'cold'}:1", "--buckets", "1", "--json").json()
    assert cold["manifest_digest"] == b["manifest_digest"]


def test_unchanged_lock_pushed_again_downloads_and_uploads_nothing(registries, make_project, index, tmp_path):
    server = registries["token"]
    lock = make_project(tmp_path / "p", ["heavy", "small-b", "sdist-only"])
    ref = f"{server.host}/again/app:main"
    first = push_to(server, lock, ref).json()
    before = dict(index.downloads)
    again = push_to(server, lock, ref).json()
    assert dict(index.downloads) == before
    assert again["manifest_digest"] == first["manifest_digest"]
    assert again["packages_populated"] == 0 and again["layers_built"] == 0
    assert again["blobs_uploaded"] == 0 and again["bytes_uploaded"] == 0


def test_pull_then_offline_sync(registries, make_project, tmp_path, git_repo):
    server = registries["htpasswd"]
    sources = {"gitpkg": f'{{ git = "file://{git_repo}", tag = "v0.3.0" }}'}
    lock = make_project(tmp_path / "p", ["heavy", "small-b", "sdist-only", "gitpkg"], sources=sources)
    ref = f"{server.host}/pull/app:main"
    push_to(server, lock, ref)
    cache = tmp_path / "ci-cache"
    (cache / "unrelated").mkdir(parents=True)
    (cache / "unrelated" / "keep.txt").write_text("merged, not replaced")
    pulled = ocicache("pull", ref, cache, *server.cli_auth(), "--json", input=PASSWORD).json()
    assert pulled["layers"] >= 2
    assert (cache / "unrelated" / "keep.txt").read_text() == "merged, not replaced"
    assert not [p for p in cache.iterdir() if p.name.startswith(".ocicache-pull")]
    sync = offline_sync(lock, cache, tmp_path / "consumer")
    assert sync.returncode == 0, sync.stderr


def test_pull_detects_wrong_bytes_from_the_registry(registry, make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["heavy"])
    ref = f"{registry.host}/corrupt/app:1"
    result = push_to(registry, lock, ref).json()
    heavy = next(layer for layer in result["layers"] if layer["packages"] == ["heavy"])
    data = registry.blob_file(heavy["digest"])
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))  # the registry serves it as is, under the old digest
    cache = tmp_path / "cache"
    run = ocicache("pull", ref, cache, check=False)
    assert run.returncode == 1 and "wrong" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (cache / "archive-v0").exists()  # nothing from the image reached the cache


def test_registry_stopped_mid_push_then_rerun_completes(registry, make_project, index, tmp_path):
    index.add_wheel("bigpkg", "1.0", files=heavy_files("bigpkg", 16 << 20, 3))
    lock = make_project(tmp_path / "p", ["bigpkg", "heavy", "small-a"])
    proxy = ThrottledProxy(registry.port, bytes_per_second=4 << 20)
    ref = f"127.0.0.1:{proxy.port}/interrupted/app:1"

    def stop_when_uploading() -> None:
        deadline = time.monotonic() + 60
        while proxy.forwarded < (3 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.stop()

    stopper = threading.Thread(target=stop_when_uploading)
    stopper.start()
    run = ocicache("push", lock, ref, "--json", check=False)
    stopper.join()
    assert run.returncode == 1, run.stdout
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr

    registry.start()  # same port, same storage
    tags = subprocess.run([require_tool("skopeo"), "inspect", "--tls-verify=false",
                           f"docker://{registry.host}/interrupted/app:1"], capture_output=True, text=True)
    assert tags.returncode != 0  # the tag was never written: it cannot point at missing blobs
    rerun = ocicache("push", lock, ref, "--json").json()
    copied = subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false",
                             f"docker://{registry.host}/interrupted/app:1", f"oci:{tmp_path / 'check'}:1"],
                            capture_output=True, text=True)
    assert copied.returncode == 0, copied.stderr
    assert rerun["manifest_digest"]
    proxy.close()


@pytest.mark.parametrize("kind", ["htpasswd", "token"])
def test_wrong_password_is_one_line_without_the_secret(kind, registries, make_project, tmp_path):
    server = registries[kind]
    lock = make_project(tmp_path / "p", ["small-a"])
    secret = "not-the-Right-pa55"
    run = ocicache("push", lock, f"{server.host}/denied/app:1", "--username", USER, "--password-stdin",
                   *(["--ca-cert", str(server.ca_cert)] if server.ca_cert else []), check=False, input=secret)
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1 and "authentication failed" in run.stderr
    assert secret not in run.stderr + run.stdout and PASSWORD not in run.stderr


def test_repository_without_push_rights(registries, make_project, tmp_path):
    server = registries["token"]
    lock = make_project(tmp_path / "p", ["small-a"])
    run = push_to(server, lock, f"{server.host}/readonly/app:1", check=False)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert "no push rights" in run.stderr and PASSWORD not in run.stderr


def test_docker_config_credentials(registries, make_project, tmp_path):
    import base64

    server = registries["htpasswd"]
    lock = make_project(tmp_path / "p", ["small-a"])
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
    from tests.conftest import hermetic_env

    run = ocicache("push", lock, f"{server.host}/dockercfg/app:1", "--json",
                   env=hermetic_env(DOCKER_CONFIG=str(config_dir)))
    assert run.json()["manifest_digest"]
    anonymous = ocicache("push", lock, f"{server.host}/dockercfg/app:2", check=False,
                         env=hermetic_env(DOCKER_CONFIG=str(tmp_path / "empty")))
    assert anonymous.returncode == 1 and "authentication" in anonymous.stderr


def test_closed_port_is_a_clear_error(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["small-a"])
    run = ocicache("push", lock, "127.0.0.1:9/nothing/here:1", check=False)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_memory_does_not_grow_with_blob_size(registry, tmp_path, chunked):
    """128 MiB pushed as one streamed PUT or as PATCH chunks: peak memory grows by a few MiB only."""
    import sys

    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        for i in range(128):
            f.write(bytes([i]) * (1 << 20))
    script = (
        "import hashlib, re, sys\n"
        "from pathlib import Path\n"
        "from ocicache.dest.registry import Registry, RegistryClient, RegistryOptions\n"
        "from ocicache.oci import Descriptor, Digest\n"
        "path = Path(sys.argv[2])\n"
        "h = hashlib.sha256()\n"
        "with open(path, 'rb') as f:\n"
        "    for chunk in iter(lambda: f.read(1 << 20), b''): h.update(chunk)\n"
        "desc = Descriptor(media_type='application/octet-stream', digest=Digest.from_hex(h.hexdigest()),\n"
        "                  size=path.stat().st_size)\n"
        "def hwm(): return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "opts = RegistryOptions(chunked_above=(1 << 20) if sys.argv[3] == '1' else (4 << 30), chunk_size=32 << 20)\n"
        "client = RegistryClient(sys.argv[1], opts); client.ping()\n"
        "registry = Registry(client, 'memory/test')\n"
        "before = hwm()\n"
        "registry.put_blob(desc, lambda: open(path, 'rb'))\n"
        "assert registry.has_blob(desc.digest)\n"
        "print(hwm() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, registry.host, str(blob), "1" if chunked else "0"],
                         capture_output=True, text=True, check=True)
    grown_kib = int(out.stdout)
    assert grown_kib < 24 * 1024, f"peak memory grew by {grown_kib} KiB uploading 128 MiB"


def test_credential_helper_from_docker_config(registries, make_project, tmp_path):
    """A docker-credential-<name> program (the helper protocol: `get`, server on stdin, JSON out)."""
    from tests.conftest import hermetic_env

    server = registries["token"]
    lock = make_project(tmp_path / "p", ["small-a"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-testhelper"
    answer = json.dumps({"ServerURL": server.host, "Username": USER, "Secret": PASSWORD})
    helper.write_text(f"#!/bin/sh\nread server\n[ \"$server\" = \"{server.host}\" ] || exit 1\n"
                      f"echo '{answer}'\n")
    helper.chmod(0o755)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"credHelpers": {server.host: "testhelper"}}))
    env = hermetic_env(DOCKER_CONFIG=str(config_dir), PATH=f"{bin_dir}:{hermetic_env()['PATH']}")
    run = ocicache("push", lock, f"{server.host}/helper/app:1", "--json", env=env)
    assert run.json()["blobs_uploaded"] >= 1
    assert PASSWORD not in run.stdout


def test_concurrent_pushes_to_one_pool_leave_it_consistent(registries, make_project, tmp_path):
    """Several CI jobs at once: every pool tag must name a manifest whose blobs all exist."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    server = registries["plain"]
    pool = f"{server.host}/concurrent/pool"
    locks = [make_project(tmp_path / f"p{i}", ["heavy", "small-a", f"small-{'bc'[i % 2]}"]) for i in range(4)]
    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda il: push_to(server, il[1], f"{server.host}/concurrent/app{il[0]}:1",
                                              "--pool", pool, check=False), enumerate(locks)))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    base = f"http://{server.host}/v2/concurrent/pool"
    tags = httpx.get(f"{base}/tags/list").json()["tags"]
    assert tags and all(t.startswith("k-") for t in tags)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    for tag in tags:
        manifest = httpx.get(f"{base}/manifests/{tag}", headers=accept).json()
        for blob in [manifest["config"], *manifest["layers"]]:
            assert httpx.head(f"{base}/blobs/{blob['digest']}").status_code == 200
    # and a fresh push through the pool rebuilds nothing it holds
    again = push_to(server, locks[0], f"{server.host}/concurrent/fresh:1", "--pool", pool).json()
    assert again["packages_populated"] == 0


def test_refused_bearer_tokens_are_replaced_on_every_kind_of_request(registries, make_project, tmp_path):
    """Issue 9: a token the registry refuses (here: expired) is dropped and a new one fetched, for
    blob HEADs, uploads, cross-repository mounts (source sorting before the destination) and manifests."""
    server = registries["token"]
    assert server.token_server is not None
    lock = make_project(tmp_path / "p", ["heavy", "small-a"])
    push_to(server, lock, f"{server.host}/aaa-src/app:1")
    server.token_server.stale_first = True
    try:
        run = push_to(server, lock, f"{server.host}/zzz-dst/app:1", "--cache-from", f"{server.host}/aaa-src/app:1")
    finally:
        server.token_server.stale_first = False
    assert run.json()["blobs_mounted"] >= 1 and run.json()["blobs_uploaded"] <= 1
    assert server.token_server.requests["stale"] >= 2  # the destination alone, and with the mount source


def test_a_pool_tag_is_the_same_whichever_target_published_it(registries, make_project, tmp_path):
    """Issue 9: pool images carried the pushing target's platform, so a pure wheel's tags flipped
    between the amd64 and arm64 pushes that shared its layer."""
    server = registries["plain"]
    lock = make_project(tmp_path / "p", ["small-a"])
    digests = {}
    for platform in ("linux/amd64", "linux/arm64"):
        pool = f"{server.host}/flip/pool-{platform.split('/')[1]}"
        pushed = push_to(server, lock, f"{server.host}/flip/app:{platform.split('/')[1]}", "--platform", platform,
                         "--pool", pool).json()
        keys = {row["key"] for row in pushed["layers"] if row["packages"] == ["small-a"]}
        assert len(keys) == 1
        tag = "k-" + keys.pop().split(":", 1)[1]
        digests[platform] = ocicache("inspect", f"{pool}:{tag}", "--json").json()["manifest_digest"]
    assert digests["linux/amd64"] == digests["linux/arm64"]


def test_a_pool_without_push_rights_is_refused_before_the_image_is_tagged(registries, make_project, tmp_path):
    """Issue 9: pool rights were checked only after the image's tag had been written."""
    server = registries["token"]
    lock = make_project(tmp_path / "p", ["small-a"])
    ref = f"{server.host}/poolrights/app:1"
    run = push_to(server, lock, ref, "--pool", f"{server.host}/readonly/pool", check=False)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "--pool" in run.stderr and "no push rights" in run.stderr
    inspect = ocicache("inspect", ref, *server.cli_auth(), check=False, input=PASSWORD)
    assert inspect.returncode == 1 and "no such image" in inspect.stderr
