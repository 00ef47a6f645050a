"""A Python base image built from this machine's own files (there is no Docker Hub here).

Debian's CPython 3.11 (`/usr/bin/python3.11` and its standard library), the shared libraries it and
its extension modules load (found with ldd), busybox for a shell, and the pinned uv at
/usr/local/bin/uv: enough for `uv sync --frozen --offline` in a Dockerfile. The glibc level is the
machine's (2.36 on Debian 12), matching ocicache's default target. Packed with ocicache's own
deterministic layer code into an OCI layout, then copied to a registry.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ocicache.assemble import Image
from ocicache.compress import get_codec
from ocicache.dest import BlobOrigin, write_image
from ocicache.dest.layout import open_layout_for_write
from ocicache.oci import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Descriptor, Digest, canonical_json
from ocicache.pack import pack_layer
from ocicache.tree import Entry, file_entry

PYTHON = "/usr/bin/python3.11"
STDLIB = Path("/usr/lib/python3.11")
_SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "__pycache__"}
APPLETS = ["sh", "ls", "cat", "test", "echo", "mkdir", "rm", "cp", "find", "du", "env", "id", "true", "grep", "wc"]


def _libraries(binaries: list[str]) -> set[str]:
    libs: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        libs |= {m.group(1) for m in re.finditer(r"(/\S+\.so[\w.]*)", out)}
    return libs


def _add_file(entries: dict[str, Entry], path: str) -> None:
    """Add `path` as it appears, following symlinks into real files (merged /usr layout)."""
    rel = path.lstrip("/")
    if rel.split("/", 1)[0] in ("bin", "lib", "lib64", "sbin"):
        rel = "usr/" + rel
    if rel in entries:
        return
    if os.path.islink(path):
        target = os.path.realpath(path)  # merged /usr: always under /usr here
        entries[rel] = Entry(path=rel, kind="symlink", link=target)
        if os.path.isfile(target):  # a link to a directory or nowhere stays a link
            _add_file(entries, target)
    else:
        entries[rel] = file_entry(rel, Path(path))


# What compiling a CPython C extension needs (`packages=` of build_base_image), as installed here.
TOOLCHAIN = ("gcc", "gcc-12", "cpp", "cpp-12", "binutils", "binutils-x86-64-linux-gnu", "libbinutils", "libctf0",
             "libgprofng0", "libjansson4", "libisl23", "libmpc3", "libmpfr6", "libgmp10", "libcc1-0", "libgcc-12-dev",
             "libgomp1", "libitm1", "libatomic1", "libquadmath0", "libc6-dev", "linux-libc-dev", "libcrypt-dev",
             "libpython3.11-dev", "python3.11-dev", "libexpat1-dev", "zlib1g-dev")
_SKIP_SHARE = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/")


def _package_files(packages: tuple[str, ...]) -> list[str]:
    """The files and links Debian installed for `packages` (dpkg -L), documentation left out."""
    out = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.splitlines() if p.startswith("/") and not p.startswith(_SKIP_SHARE)
                  and (os.path.islink(p) or os.path.isfile(p)))


def build_base_image(layout: Path, uv_binary: str, tag: str = "python3.11", packages: tuple[str, ...] = ()) -> str:
    """Write the base image to `layout` (an OCI layout) and return `oci:<layout>:<tag>`. `packages`:
    Debian packages of this machine to add, with the libraries their programs load (e.g. TOOLCHAIN)."""
    entries: dict[str, Entry] = {}
    dynload = sorted(str(p) for p in (STDLIB / "lib-dynload").glob("*.so"))
    extra = _package_files(packages) if packages else []
    programs = [p for p in extra if not os.path.islink(p) and os.access(p, os.X_OK)]
    for lib in sorted(_libraries([PYTHON, uv_binary, "/bin/busybox", *dynload, *programs])):
        _add_file(entries, lib)
    for path in extra:
        _add_file(entries, path)
    _add_file(entries, "/lib64/ld-linux-x86-64.so.2")
    entries["usr/bin/python3.11"] = file_entry("usr/bin/python3.11", Path(PYTHON))
    entries["usr/bin/python3"] = Entry(path="usr/bin/python3", kind="symlink", link="python3.11")
    entries["usr/local/bin/uv"] = file_entry("usr/local/bin/uv", Path(uv_binary))
    entries["usr/bin/busybox"] = file_entry("usr/bin/busybox", Path("/bin/busybox"))
    for applet in APPLETS:
        entries[f"usr/bin/{applet}"] = Entry(path=f"usr/bin/{applet}", kind="symlink", link="busybox")
    for dirpath, dirnames, filenames in os.walk(STDLIB):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_STDLIB)
        for name in sorted(filenames):
            full = Path(dirpath, name)
            rel = str(full).lstrip("/")
            entries[rel] = Entry(path=rel, kind="symlink", link=os.readlink(full)) if full.is_symlink() \
                else file_entry(rel, full)
    for top in ("bin", "lib", "lib64", "sbin"):
        entries[top] = Entry(path=top, kind="symlink", link=f"usr/{top}")
    for rel, data in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
                      ("etc/group", b"root:x:0:\nnogroup:x:65534:\n")):
        entries[rel] = Entry(path=rel, kind="file", data=data, size=len(data))
    for rel in ("tmp", "root", "app", "usr/lib64"):
        entries.setdefault(rel, Entry(path=rel, kind="dir"))

    return _write_image(layout, list(entries.values()), tag, {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "UV_PYTHON_DOWNLOADS=never"], "WorkingDir": "/",
        "Cmd": ["/bin/sh"]})


def build_uv_image(layout: Path, uv_binary: str, tag: str = "0.13.9") -> str:
    """An image holding only /uv, like the official uv images (for `COPY --from=<uv image> /uv ...`)."""
    return _write_image(layout, [file_entry("uv", Path(uv_binary))], tag, {"Entrypoint": ["/uv"]})


def _write_image(layout: Path, entries: list[Entry], tag: str, container_config: dict) -> str:
    """One deterministic layer (ocicache's own packer) as an image in an OCI layout."""
    work = layout.parent / f".{layout.name}-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    packed = pack_layer(entries, work / "layer", get_codec("gzip"))
    config = canonical_json({"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                             "config": container_config,
                             "rootfs": {"type": "layers", "diff_ids": [str(packed.diff_id)]},
                             # builders match history to layers (buildah --layers refuses an image without)
                             "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/support"}]})
    layer_desc = Descriptor(media_type=packed.media_type, digest=packed.digest, size=packed.size)
    config_desc = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=Digest.of(config), size=len(config))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                               "config": config_desc.to_json(), "layers": [layer_desc.to_json()]})
    image = Image(config=config, config_descriptor=config_desc, manifest=manifest,
                  manifest_descriptor=Descriptor(media_type=MANIFEST_MEDIA_TYPE, digest=Digest.of(manifest),
                                                 size=len(manifest)), layers=(layer_desc,))
    with open_layout_for_write(layout) as dest:
        write_image(dest, image, [(layer_desc, BlobOrigin(path=packed.path))], tag)
    shutil.rmtree(work, ignore_errors=True)
    return f"oci:{layout}:{tag}"


def build_musl_image(layout: Path, tag: str = "musl") -> str:
    """A musl-based image from Debian's musl package (loader link and libc), configured like the
    official python:3.12-alpine images (PYTHON_VERSION in Env). No musl CPython exists on the package
    registries here, so this image proves detection, not an install."""
    loader = "/lib/ld-musl-x86_64.so.1"
    libc = os.path.realpath(loader)
    entries = [Entry(path="lib/ld-musl-x86_64.so.1", kind="symlink", link=os.readlink(loader)),
               file_entry(libc.lstrip("/"), Path(libc)),
               file_entry("bin/busybox", Path("/bin/busybox")),
               Entry(path="etc/passwd", kind="file", data=(pw := b"root:x:0:0:root:/root:/bin/sh\n"), size=len(pw))]
    return _write_image(layout, entries, tag, {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.12.8"],
                                               "Cmd": ["/bin/sh"]})
