"""Wheels of installed distributions, rebuilt from their RECORD (for a hermetic index of real packages).

The suite cannot download from a public index, yet the tool image test needs ocicache's real
dependencies (httpx, isal, zstandard, uv, ...). They are installed in the test environment: their
files, listed in RECORD, go back into a wheel with the tag their WHEEL file declares.
"""

from __future__ import annotations

import csv
import importlib.metadata
import zipfile
from pathlib import Path


def repack(name: str, out_dir: Path) -> Path:
    dist = importlib.metadata.distribution(name)
    wheel_meta = dist.read_text("WHEEL") or ""
    tag = next(line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:"))
    site = Path(str(dist.locate_file("")))
    dist_name = dist.metadata["Name"].replace("-", "_")
    data_dir = f"{dist_name}-{dist.version}.data"
    record_path = next(f for f in dist.files or [] if str(f).endswith(".dist-info/RECORD"))
    out = out_dir / f"{dist_name}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        rows = list(csv.reader((site / record_path).read_text().splitlines()))
        for row in rows:
            rel = row[0]
            if not rel or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            source = (site / rel).resolve()
            # scripts installed outside site-packages (uv's binary) go back into the .data directory
            arcname = f"{data_dir}/scripts/{Path(rel).name}" if rel.startswith("../") else rel
            info = zipfile.ZipInfo(arcname, (1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if source.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, source.read_bytes())
    return out
