"""`ocicache check`: the verdict before a build, proven against the real offline sync."""

from __future__ import annotations

from tests.conftest import ocicache, offline_sync, unpack_layout


def test_check_agrees_with_the_offline_sync(make_project, tmp_path):
    lock = make_project(tmp_path / "a", ["heavy", "small-b"], groups={"dev": ["small-c"]})
    layout = tmp_path / "layout"
    ocicache("push", lock, f"oci:{layout}:v1", "--no-dev")

    ok = ocicache("check", f"oci:{layout}:v1", lock, "--no-dev", "--json").json()
    assert ok["ok"] and ok["missing"] == [] and ok["found"] == ok["needed"] == 3
    assert offline_sync(lock, unpack_layout(layout, "v1", tmp_path / "b1"), tmp_path / "c1",
                        "--no-dev").returncode == 0

    # the default selection includes the dev group, which the image lacks: check says so, and uv fails
    miss = ocicache("check", f"oci:{layout}:v1", lock, check=False)
    assert miss.returncode == 1 and "missing: small-c 3" in miss.stdout, miss.stdout
    assert offline_sync(lock, unpack_layout(layout, "v1", tmp_path / "b2"), tmp_path / "c2").returncode != 0

    wrong_target = ocicache("check", f"oci:{layout}:v1", lock, "--no-dev", "--python-platform",
                            "x86_64-manylinux_2_28", "--json", check=False)
    assert wrong_target.returncode == 1
    assert any("manylinux_2_28" in p for p in wrong_target.json()["problems"])
