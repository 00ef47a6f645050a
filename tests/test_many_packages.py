"""A synthetic lock of 300 packages stays within the layer budget and still serves an offline sync."""

from __future__ import annotations

import json

from tests.conftest import ocicache, offline_sync, require_tool, unpack_layout


def test_300_packages_within_the_layer_budget(make_project, index, tmp_path):
    names = [f"synth-{i:03d}" for i in range(300)]
    for name in names:
        index.add_wheel(name, "1.0")
    lock = make_project(tmp_path / "project", names)
    layout = tmp_path / "layout"

    # Every package big enough for a layer of its own: the budget must still hold.
    forced = ocicache("push", lock, f"oci:{layout}:forced", "--solo-threshold", "0", "--json").json()
    assert len(forced["layers"]) == 64
    kinds = [layer["kind"] for layer in forced["layers"]]
    assert kinds.count("base") == 1 and kinds.count("package") == 64 - 1 - 16 and kinds.count("bucket") == 16
    held = sorted(p for layer in forced["layers"] for p in layer["packages"])
    assert held == names

    capped = ocicache("push", lock, f"oci:{layout}:capped", "--solo-threshold", "0", "--max-layers", "125",
                      "--json").json()
    assert len(capped["layers"]) == 125

    small = ocicache("push", lock, f"oci:{layout}:default", "--max-layers", "20", "--buckets", "8",
                     "--json").json()
    assert len(small["layers"]) <= 20

    bad = ocicache("push", lock, f"oci:{layout}:x", "--max-layers", "126", check=False)
    assert bad.returncode == 2 and "125" in bad.stderr

    require_tool("skopeo")
    cache = unpack_layout(layout, "forced", tmp_path / "bundle")
    sync = offline_sync(lock, cache, tmp_path / "consumer")
    assert sync.returncode == 0, sync.stderr[-2000:]
    assert "Installed 300 packages" in sync.stderr
    info = json.loads(ocicache("inspect", f"oci:{layout}:forced", "--json").stdout)
    assert len(info["layers"]) == 64
