"""What a build's base image offers uv: platform(s), CPython, libc and level, users' homes.

Read from the registry (or a layout) with the same verified layer streams `pull` uses: the config
first, then each layer's tar headers, keeping only the few files that decide the target
(`etc/passwd`, `pythonX.Y` executables and links, glibc's `libc.so.6`, musl's loader and apk
database). Whiteouts of later layers are applied, as the builder's union filesystem would.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from . import oci
from .dest import ImageSource
from .image import SourceImage, open_image
from .oci import Descriptor

__all__ = ["BaseFacts", "probe_base_image"]

Libc = Literal["glibc", "musl"]

_PYTHON_RE = re.compile(r"^(usr/local/bin|usr/bin|bin|opt/[^/]+/bin|usr/local/python[^/]*/bin)/python3\.(\d+)$")
_PYTHON3_RE = re.compile(r"^(usr/local/bin|usr/bin|bin)/python3$")
_GLIBC_RE = re.compile(r"^(?:usr/)?lib(?:64)?/(?:(?:x86_64|aarch64)-linux-gnu/)?libc(?:\.so\.6|-2\.(\d+)\.so)$")
_MUSL_RE = re.compile(r"^(?:usr/)?lib/ld-musl-(\w+)\.so\.1$")
_MUSL_LIBC_RE = re.compile(r"^(?:usr/)?lib/(?:ld-musl-\w+\.so\.1|[\w-]+-linux-musl/libc\.so)$")
_APK_DB = "lib/apk/db/installed"
_SMALL = 1 << 20  # passwd, apk database: read whole when under this
_LIBC_MAX = 32 << 20


@dataclass(slots=True)
class BaseFacts:
    reference: str
    platform: str
    platforms: list[str]  # every platform of the tag (an index), empty for a single image
    env: dict[str, str]  # config Env
    user: str | None  # config User
    pythons: dict[str, str] = field(default_factory=dict)  # path → "3.Y"
    python3_links: dict[str, str] = field(default_factory=dict)  # path of python3 → its link target
    libc: Libc | None = None
    libc_level: tuple[int, int] | None = None
    passwd: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (uid, home)

    def home_of(self, user: str) -> str | None:
        name = user.split(":", 1)[0]
        if name in self.passwd:
            return self.passwd[name][1]
        return next((home for uid, home in self.passwd.values() if uid == name), None)


def config_env(config: dict) -> dict[str, str]:
    """An image config's `Env` (`NAME=value` items) as a mapping; malformed items left out."""
    return dict(str(item).split("=", 1) for item in config.get("Env") or [] if "=" in str(item))


def probe_base_image(source: ImageSource, tag: str, where: str, platform: str | None) -> BaseFacts:
    """Facts of the image at `tag` (for an index: `platform`'s, by default this machine's or the only one)."""
    image = open_image(source, tag, where, platform)
    config = image.config
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    env = config_env(cfg)
    facts = BaseFacts(reference=where, platform=image.platform, platforms=list(image.platforms), env=env,
                      user=cfg.get("User") or None)
    files: dict[str, bytes | str | None] = {}  # path → content (bytes), link target (str), or None (present)
    for desc in image.layers:
        if oci.A_LAYER_KEY not in desc.annotations:  # a stacked image's cache layers hold no system files
            _scan_layer(image, desc, files)
    _derive(facts, files)
    return facts


def _wanted(name: str) -> str | None:
    """How much of member `name` to keep: 'content', 'presence', or None."""
    if name in ("etc/passwd", _APK_DB) or _GLIBC_RE.match(name) or _MUSL_LIBC_RE.match(name):
        return "content"
    if _PYTHON_RE.match(name) or _PYTHON3_RE.match(name):
        return "presence"
    return None


def _scan_layer(image: SourceImage, desc: Descriptor, files: dict[str, bytes | str | None]) -> None:
    with image.open_layer(desc) as tf:
        for member in tf:
            name = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
            base = posixpath.basename(name)
            parent = posixpath.dirname(name)
            if base == ".wh..wh..opq":
                for path in [p for p in files if p.startswith(parent + "/")]:
                    del files[path]
                continue
            if base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                for path in [p for p in files if p == gone or p.startswith(gone + "/")]:
                    del files[path]
                continue
            keep = _wanted(name)
            if keep is None:
                continue
            if member.issym() or member.islnk():
                files[name] = member.linkname
            elif member.isreg():
                limit = _LIBC_MAX if _GLIBC_RE.match(name) or _MUSL_LIBC_RE.match(name) else _SMALL
                if keep == "content" and member.size <= limit:
                    handle = tf.extractfile(member)
                    files[name] = handle.read() if handle else b""
                else:
                    files[name] = None


def _derive(facts: BaseFacts, files: dict[str, bytes | str | None]) -> None:
    for path, value in files.items():
        m = _PYTHON_RE.match(path)
        if m:
            facts.pythons[path] = f"3.{m.group(2)}"
        elif _PYTHON3_RE.match(path) and isinstance(value, str):
            facts.python3_links[path] = value
    passwd = files.get("etc/passwd")
    if isinstance(passwd, bytes):
        for line in passwd.decode(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 6:
                facts.passwd[parts[0]] = (parts[2], parts[5])
    loaders = [p for p in files if _MUSL_RE.match(p)]
    if loaders:
        facts.libc = "musl"
        facts.libc_level = _musl_level(files.get(_APK_DB)) or _musl_level_of(files, loaders[0])
        return
    levels = []
    for path, value in files.items():
        m = _GLIBC_RE.match(path)
        if not m:
            continue
        if m.group(1):  # libc-2.31.so: the version is in the name
            levels.append(int(m.group(1)))
        elif isinstance(value, str):
            link = re.search(r"libc-2\.(\d+)\.so$", value)
            if link:
                levels.append(int(link.group(1)))
            else:  # libc.so.6 → another name: follow within what was kept
                target = files.get(posixpath.normpath(posixpath.join(posixpath.dirname(path), value)))
                if isinstance(target, bytes):
                    levels += _glibc_levels(target)
        elif isinstance(value, bytes):
            levels += _glibc_levels(value)
    if levels:
        facts.libc, facts.libc_level = "glibc", (2, max(levels))


def _glibc_levels(content: bytes) -> list[int]:
    banner = re.search(rb"release version 2\.(\d+)", content)
    if banner:
        return [int(banner.group(1))]
    return [int(v) for v in re.findall(rb"GLIBC_2\.(\d+)\b", content)]


def _musl_level_of(files: dict[str, bytes | str | None], loader: str) -> tuple[int, int] | None:
    """musl's version string, in its loader (Alpine) or the libc it links to (Debian's musl)."""
    content = files.get(loader)
    if isinstance(content, str):
        content = files.get(posixpath.normpath(posixpath.join(posixpath.dirname(loader), content)))
    if isinstance(content, bytes):
        m = re.search(rb"\x00(1)\.(\d+)\.\d+\x00", content)
        if m:
            return (int(m.group(1)), int(m.group(2)))
    return None


def _musl_level(apk_db: bytes | str | None) -> tuple[int, int] | None:
    if isinstance(apk_db, bytes):
        m = re.search(rb"^P:musl\nV:(\d+)\.(\d+)", apk_db, re.MULTILINE)
        if m:
            return (int(m.group(1)), int(m.group(2)))
    return None
