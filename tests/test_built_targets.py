"""Wheels built from sdists belong to one target (issue 9).

uv builds an sdist with this machine's interpreter. The reuse key of a built package used to leave
the target out, so a compiled wheel built for one target was reused for another (same tag, the pool,
a multi-target push); and uv itself accepts a glibc build for a musl target.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ocicache, offline_sync


def _one_error_line(run) -> str:
    assert run.returncode == 1, run.stdout
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.stderr


def _speed_so_in_layout(layout, tag: str) -> list[str]:
    """Names of compiled extension files in the image at `tag`, read from its layers."""
    import gzip
    import io
    import tarfile

    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads((blobs / entry["digest"].split(":")[1]).read_bytes())
    names = []
    for layer in manifest["layers"]:
        data = gzip.decompress((blobs / layer["digest"].split(":")[1]).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names += [m.name for m in tf if m.name.endswith(".so")]
    return names


def test_the_built_target_installs_and_imports_its_compiled_extension_offline(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["compiled", "small-a"])
    ocicache("push", lock, f"oci:{tmp_path / 'l'}:x86")
    assert any("cpython-311-x86_64-linux-gnu" in n for n in _speed_so_in_layout(tmp_path / "l", "x86"))
    ocicache("pull", f"oci:{tmp_path / 'l'}:x86", tmp_path / "cache")
    consumer = tmp_path / "consumer"
    assert offline_sync(lock, tmp_path / "cache", consumer).returncode == 0
    out = subprocess.run([str(consumer / ".venv" / "bin" / "python"), "-c",
                          "import compiled._speed as s; print(s.answer())"], capture_output=True, text=True)
    assert out.stdout.strip() == "42", out.stderr


def test_a_multi_target_push_never_gives_one_target_the_other_targets_build(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["compiled", "small-a"])
    run = ocicache("push", lock, f"oci:{tmp_path / 'l'}:both", "--platform", "linux/amd64",
                   "--platform", "linux/arm64", check=False)
    err = _one_error_line(run)
    assert "compiled" in err and "aarch64" in err
    assert not (tmp_path / "l").exists()  # nothing written: no image with a wrong wheel


def test_a_later_push_for_another_target_does_not_reuse_the_built_layer(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["compiled", "small-a"])
    dest = f"oci:{tmp_path / 'l'}:app"
    ocicache("push", lock, dest)
    for args in (["--platform", "linux/arm64"], ["--python", "3.12"]):
        err = _one_error_line(ocicache("push", lock, dest, *args, check=False))
        assert "compiled" in err and ("not compatible" in err or "cannot run" in err)


def test_a_musl_target_refuses_a_glibc_build_that_uv_itself_would_take(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["compiled"])
    run = ocicache("push", lock, f"oci:{tmp_path / 'l'}:musl", "--python-platform", "x86_64-unknown-linux-musl",
                   check=False)
    err = _one_error_line(run)
    assert "compiled 1.0 has no wheel for" in err and "musl" in err and "glibc" in err


def test_a_pure_sdist_serves_every_target_with_one_blob(make_project, tmp_path):
    lock = make_project(tmp_path / "p", ["sdist-only", "small-a"])
    pushed = ocicache("push", lock, f"oci:{tmp_path / 'l'}:both", "--platform", "linux/amd64",
                      "--platform", "linux/arm64", "--json").json()
    rows = [r for r in pushed["layers"] if "sdist-only" in r["packages"]]
    assert len(rows) == 2 and rows[0]["key"] != rows[1]["key"]  # one key per target...
    assert rows[0]["digest"] == rows[1]["digest"]  # ...and the same bytes
