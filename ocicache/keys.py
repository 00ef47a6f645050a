"""Reuse keys: a layer's identity computed before any download (DESIGN contract 4).

A package key depends on what decides the layer's bytes: the set of uv cache formats, ocicache's
normalisation recipe, the codec, the package's lock entry (name, version, source, every artifact
hash) and the artifact chosen for the target. For a wheel from the index the target is left out on
purpose: the chosen artifact already says everything the target changes, so a pure-Python wheel gets
one key (and one layer) for every platform and Python version. A wheel built from an sdist or a git
checkout is another matter: what the build produces depends on the interpreter and machine it was
built for, so its key includes the target (a pure build still gives identical layer bytes, hence one
blob, under each target's key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .compress import Codec
from .oci import canonical_json
from .selection import Selected
from .target import Target
from .uvcache import FormatSet

# Bump when normalise.py or pack.py change the bytes they produce for the same cache entries.
NORMALISATION_VERSION = 4


def package_key(selected: Selected, formats: FormatSet, codec: Codec, target: Target, root: str = "",
                bytecode: str = "") -> str:
    """`root`: the directory a stacked image (`--base`) puts the cache under; its layers differ.
    `bytecode`: the compiling interpreter's id (`push --compile-bytecode`, bytecode.py), whose pycs
    the layer then holds."""
    pkg = selected.package
    doc: dict[str, object] = {
        "normalisation": NORMALISATION_VERSION,
        "cache-format": formats.id,
        "codec": codec.id,
        "name": str(pkg.name),
        "version": str(pkg.version),
        "source": str(pkg.source),
        "artifacts": sorted(a.hash or a.filename for a in (*pkg.wheels, *([pkg.sdist] if pkg.sdist else []))),
        "chosen": {"kind": selected.kind, "artifact": selected.artifact, "hash": selected.hash},
    }
    if selected.kind != "wheel":  # built here: the build is for one interpreter and platform
        doc["built-for"] = {"python": target.python_minor, "python-platform": target.python_platform}
    if root:
        doc["root"] = root
    if bytecode:
        doc["bytecode"] = bytecode
    return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


def group_key(kind: str, member_keys: Iterable[str], extra: str = "") -> str:
    """Key of a layer holding several packages (or the base scaffold): a hash of its members."""
    doc = {"kind": kind, "members": sorted(member_keys), "extra": extra,
           "normalisation": NORMALISATION_VERSION}
    return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()
