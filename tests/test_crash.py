"""Writers that race, die or lose a directory entry never leave a tag naming a missing blob (issue 9)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import hermetic_env, ocicache, offline_sync

REF_NAME = "org.opencontainers.image.ref.name"


def _layout_problems(layout: Path) -> list[str]:
    """Every tag's manifest, config and layers must exist (children of an index too)."""
    if not (layout / "index.json").exists():
        return []
    blobs = layout / "blobs" / "sha256"
    problems = []
    pending = [m["digest"] for m in json.loads((layout / "index.json").read_text())["manifests"]]
    while pending:
        digest = pending.pop()
        path = blobs / digest.split(":")[1]
        if not path.is_file():
            problems.append(f"missing {digest}")
            continue
        doc = json.loads(path.read_bytes())
        pending += [m["digest"] for m in doc.get("manifests", [])]
        for desc in [doc["config"], *doc["layers"]] if "layers" in doc else []:
            if not (blobs / desc["digest"].split(":")[1]).is_file():
                problems.append(f"{digest} names missing {desc['digest']}")
    return problems


def _popen_push(*args: str | Path, stdin: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ocicache", "push", *map(str, args), "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=hermetic_env(), start_new_session=True)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


def test_two_first_writers_of_one_new_layout_both_land(tmp_path):
    """They used to race on the final rename: one failed with "Directory not empty" and lost its tag.
    A barrier holds both writers inside their block, so each stages a layout of its own."""
    import io
    import threading

    from ocicache.dest.layout import open_layout_for_write
    from ocicache.oci import MANIFEST_MEDIA_TYPE, Descriptor, Digest

    layout = tmp_path / "shared-layout"
    writers = 6
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "n": i}).encode()
        blob = f"blob {i}".encode()
        try:
            with open_layout_for_write(layout) as out:
                out.put_blob(Descriptor(media_type="x", digest=Digest.of(blob), size=len(blob)),
                             lambda: io.BytesIO(blob))
                out.put_manifest(Descriptor(media_type=MANIFEST_MEDIA_TYPE, digest=Digest.of(body), size=len(body)),
                                 body, tag=f"t{i}")
                barrier.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tags = sorted(m["annotations"][REF_NAME] for m in json.loads((layout / "index.json").read_text())["manifests"])
    assert tags == [f"t{i}" for i in range(writers)]
    assert _layout_problems(layout) == []
    assert len(list((layout / "blobs" / "sha256").iterdir())) == 2 * writers
    assert not list(tmp_path.glob(".shared-layout.ocicache-*"))


def test_a_first_push_killed_midway_leaves_its_verified_blobs_to_the_next(tmp_path):
    """kill -9 during a first push leaves a staging directory; the next writer adopts it."""
    import io

    from ocicache.dest.layout import open_layout_for_write
    from ocicache.oci import Descriptor, Digest

    layout = tmp_path / "l"
    stale = tmp_path / ".l.ocicache-partial-dead"
    (stale / "blobs" / "sha256").mkdir(parents=True)
    blob = b"written before the kill"
    (stale / "blobs" / "sha256" / Digest.of(blob).hex).write_bytes(blob)
    (stale / "blobs" / "sha256" / ".tmp-half").write_bytes(b"half a blob")
    with open_layout_for_write(layout) as out:
        assert out.has_blob(Digest.of(blob))
        out.put_blob(Descriptor(media_type="x", digest=Digest.of(b"new"), size=3), lambda: io.BytesIO(b"new"))
    assert (layout / "blobs" / "sha256" / Digest.of(blob).hex).read_bytes() == blob
    assert not (layout / "blobs" / "sha256" / ".tmp-half").exists() and not stale.exists()


def test_a_first_push_killed_before_its_staging_directory_was_named_leaves_nothing_behind(tmp_path):
    """A writer killed between making its staging directory and renaming it left an empty
    `.l.ocicache-new-*` beside the layout for good; the next first writer removes it."""
    import io

    from ocicache.dest.layout import open_layout_for_write
    from ocicache.oci import Descriptor, Digest

    unborn = tmp_path / ".l.ocicache-new-dead"
    unborn.mkdir()
    os.utime(unborn, (time.time() - 3600, time.time() - 3600))
    being_born = tmp_path / ".l.ocicache-new-live"  # another writer's, made just now: left alone
    being_born.mkdir()
    with open_layout_for_write(tmp_path / "l") as out:
        out.put_blob(Descriptor(media_type="x", digest=Digest.of(b"new"), size=3), lambda: io.BytesIO(b"new"))
    assert not unborn.exists() and being_born.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".l.ocicache-new-live", "l"]


def test_a_layout_that_lost_a_blob_is_repaired_by_the_next_push(make_project, tmp_path):
    """After a power loss, index.json may name a blob whose directory entry is gone: the next push
    of the same lock notices and writes it again instead of trusting the tag."""
    lock = make_project(tmp_path / "p", ["heavy", "small-a"])
    layout = tmp_path / "l"
    first = ocicache("push", lock, f"oci:{layout}:t", "--json").json()
    heavy = next(r for r in first["layers"] if r["packages"] == ["heavy"])
    (layout / "blobs" / "sha256" / heavy["digest"].split(":")[1]).unlink()
    assert _layout_problems(layout)
    pull = ocicache("pull", f"oci:{layout}:t", tmp_path / "c0", check=False)
    assert pull.returncode == 1 and "missing" in pull.stderr and "Traceback" not in pull.stderr
    again = ocicache("push", lock, f"oci:{layout}:t", "--json").json()
    assert again["manifest_digest"] == first["manifest_digest"]
    assert _layout_problems(layout) == []
    ocicache("pull", f"oci:{layout}:t", tmp_path / "cache")
    assert offline_sync(lock, tmp_path / "cache", tmp_path / "consumer").returncode == 0


def _registry_problems(host: str, repo: str, tag: str) -> list[str]:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    with httpx.Client(base_url=f"http://{host}/v2/{repo}") as client:
        resp = client.get(f"/manifests/{tag}", headers={"Accept": accept})
        if resp.status_code == 404:
            return []
        doc = resp.json()
        return [f"{tag} names missing {d['digest']}" for d in [doc["config"], *doc["layers"]]
                if client.head(f"/blobs/{d['digest']}").status_code != 200]


def test_kill_9_at_random_points_of_20_pushes_leaves_no_tag_naming_a_missing_blob(registries, make_project,
                                                                                   tmp_path):
    server = registries["plain"]
    rng = random.Random(9)
    locks = [make_project(tmp_path / f"p{i}", ["heavy", "small-a", "small-b", "sdist-only"][: 2 + i % 3])
             for i in range(4)]
    started = time.monotonic()
    ocicache("push", locks[0], f"oci:{tmp_path / 'timing'}:t")
    duration = time.monotonic() - started
    reused = killed = 0
    for round_ in range(20):
        lock = locks[round_ % len(locks)]
        on_registry = round_ % 2 == 1
        dest = f"{server.host}/crash/r{round_ % 4}:t" if on_registry else f"oci:{tmp_path / f'l{round_ % 4}'}:t"
        proc = _popen_push(lock, dest)
        time.sleep(rng.uniform(0.05, 0.8 * duration))  # inside the push, whatever its own speed
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        killed += proc.returncode == -signal.SIGKILL
        if on_registry:
            repo, tag = dest.split("/", 1)[1].rsplit(":", 1)
            assert _registry_problems(server.host, repo, tag) == [], f"round {round_}"
        else:
            assert _layout_problems(Path(dest[4:].rsplit(":", 1)[0])) == [], f"round {round_}"
        again = ocicache("push", lock, dest, "--json").json()  # a re-run completes...
        reused += again["blobs_present"] + again["layers_reused"]  # ...taking what was already written
        if on_registry:
            assert _registry_problems(server.host, *dest.split("/", 1)[1].rsplit(":", 1)) == []
        else:
            assert _layout_problems(Path(dest[4:].rsplit(":", 1)[0])) == []
    assert reused > 0 and killed >= 15  # the kills landed mid-push, not after it
