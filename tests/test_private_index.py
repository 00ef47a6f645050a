"""A private index: ocicache downloads its wheels with the credentials uv would use
(`UV_INDEX_<NAME>_USERNAME/PASSWORD`, netrc), so a push from it is as fast as from a public one; the
secret appears in no output and no file the push writes.

Real components: the local test index requiring HTTP Basic, the pinned uv (which authenticates the
same way), a layout pulled and installed offline.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocicache.index_credentials import find_index_credentials
from tests.conftest import hermetic_env, offline_sync, uv_bin
from tests.conftest import ocicache as run_ocicache
from tests.support.pkgindex import PackageIndex

SECRET = "s3cret-token-7f3a"


@pytest.fixture(scope="module")
def private(index, tmp_path_factory) -> Iterator[PackageIndex]:
    """The same artifacts as the session's index, behind HTTP Basic."""
    root = tmp_path_factory.mktemp("private-index")
    shutil.copytree(index.root / "files", root / "files", dirs_exist_ok=True)
    server = PackageIndex(root, credentials=("ci", SECRET))
    server.serve()
    yield server
    server.close()


def _project(path: Path, url: str, env: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        '[project]\nname = "svc"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["heavy", "small-b", "small-c"]\n\n[tool.uv]\npackage = false\n\n'
        f'[[tool.uv.index]]\nname = "corp-private"\nurl = "{url}"\ndefault = true\n')
    subprocess.run([uv_bin(), "lock", "--quiet"], cwd=path, check=True, timeout=300,
                   env=hermetic_env(UV_CACHE_DIR=str(path / "lock-cache"), **env))
    return path / "uv.lock"


def test_a_private_index_push_downloads_with_uvs_credentials_and_leaks_nothing(private, tmp_path):
    creds = {"UV_INDEX_CORP_PRIVATE_USERNAME": "ci", "UV_INDEX_CORP_PRIVATE_PASSWORD": SECRET}
    lock = _project(tmp_path / "svc", private.url, creds)
    assert SECRET not in lock.read_text()
    refused_before = private.refused
    layout = tmp_path / "layout"
    result = run_ocicache("push", lock, f"oci:{layout}:1", "--json", "--progress", "always",
                          env=hermetic_env(**creds))
    pushed = result.json()
    # every index wheel but the probe was downloaded and unpacked by ocicache, authenticated
    assert pushed["packages_unpacked"] >= 2, result.stderr[-2000:]
    assert "uv unpacks the wheels" not in result.stderr
    assert private.refused == refused_before  # no request went out without them
    assert SECRET not in result.stdout + result.stderr
    for path in layout.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    cache = tmp_path / "cache"
    run_ocicache("pull", f"oci:{layout}:1", cache)
    installed = offline_sync(lock, cache, tmp_path / "consumer")
    assert installed.returncode == 0, installed.stderr[-2000:]


def test_without_credentials_the_push_fails_clearly_and_with_wrong_ones_leaks_nothing(private, tmp_path):
    creds = {"UV_INDEX_CORP_PRIVATE_USERNAME": "ci", "UV_INDEX_CORP_PRIVATE_PASSWORD": SECRET}
    lock = _project(tmp_path / "svc", private.url, creds)
    wrong = {"UV_INDEX_CORP_PRIVATE_USERNAME": "ci", "UV_INDEX_CORP_PRIVATE_PASSWORD": "wrong-" + SECRET[::-1]}
    for env in ({}, wrong):
        result = run_ocicache("push", lock, f"oci:{tmp_path / 'layout'}:1", env=hermetic_env(**env), check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert SECRET not in result.stderr and SECRET[::-1] not in result.stderr
        assert not (tmp_path / "layout").exists()


def test_netrc_credentials_apply_to_their_host_and_index_names_follow_uvs_rule(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.uv.index]]\nname = "corp.private-2"\nurl = "https://pkgs.example.test/simple"\n'
        '[[tool.uv.index]]\nname = "other"\nurl = "https://other.example.test/simple"\n')
    netrc = tmp_path / "netrc"
    netrc.write_text("machine files.example.test login bob password hunter2\n")
    creds = find_index_credentials(tmp_path, {"UV_INDEX_CORP_PRIVATE_2_USERNAME": "u",
                                              "UV_INDEX_CORP_PRIVATE_2_PASSWORD": "p", "NETRC": str(netrc)})
    assert creds.for_url("https://pkgs.example.test/files/a.whl") == ("u", "p")
    assert creds.for_url("https://pkgs.example.test:8443/files/a.whl") is None  # another realm
    assert creds.for_url("http://pkgs.example.test/files/a.whl") is None
    assert creds.for_url("https://other.example.test/files/a.whl") is None
    assert creds.for_url("https://files.example.test/x/a.whl") == ("bob", "hunter2")
    assert "hunter2" not in repr(creds) and "'p'" not in repr(creds)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("not toml [")
    assert not find_index_credentials(broken, {"NETRC": str(tmp_path / "none")})
