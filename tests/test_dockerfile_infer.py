"""Issue 7: `--dockerfile` works out the target, the uv release and the cache directory of a build.

The parser's rules are checked on their own; the inference end to end against base images in the
suite's registry (the Debian CPython image of tests/support/baseimage.py, and a musl one), then the
very Dockerfile builds offline from what `push --dockerfile` wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocicache.dockerfile import find_uv_step, parse_dockerfile
from ocicache.errors import DockerfileError
from tests.conftest import build_context, hermetic_env, ocicache, require_tool
from tests.support.baseimage import build_musl_image, build_uv_image
from tests.support.builders import Buildah
from tests.support.uvreleases import uv_release
from tests.test_cli_errors import _assert_one_line_error


def _write(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_parser_follows_args_stages_continuations_and_users(tmp_path):
    path = _write(tmp_path, """\
# syntax=docker/dockerfile:1
ARG UV_VERSION=0.13.8
ARG BASE=python:3.12-slim-bookworm
ARG UV_CACHE_IMAGE
FROM ${UV_CACHE_IMAGE} AS uvcache
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv
FROM $BASE AS base
ENV UV_LINK_MODE=copy \\
    # a comment inside a continuation is dropped
    APP_HOME=/srv
USER app
FROM base AS build
COPY --from=uv /uv /uvx /bin/
RUN --mount=type=bind,from=uvcache,target=/root/.cache/uv,rw \\
    --mount=type=bind,source=uv.lock,target=uv.lock \\
    UV_CACHE_DIR=$APP_HOME/uv-cache uv sync --frozen --offline --python 3.12
""")
    step = find_uv_step(parse_dockerfile(path, {"UV_VERSION": "0.12.3"}))
    assert (step.line, step.base_image, step.base_line) == (14, "python:3.12-slim-bookworm", 7)
    assert (step.uv_version, step.uv_line) == ("0.12.3", 13)  # the --build-arg overrides the ARG default
    assert step.python_request == "3.12" and step.user == "app"
    assert step.env["UV_CACHE_DIR"] == "/srv/uv-cache" and step.env["UV_LINK_MODE"] == "copy"
    (use,) = [u for u in step.cache_uses if u.source]
    assert (use.source, use.target, use.how, use.writable, use.unresolved) == \
        ("uvcache", "/root/.cache/uv", "bind mount", True, True)
    # the default of the ARG, and `pip install uv==X` as the uv
    other = _write(tmp_path / "other",
                   "FROM python:3.11\nRUN pip install uv==0.10.4\nRUN uv pip install --system -r r.txt\n")
    assert find_uv_step(parse_dockerfile(other)).uv_version == "0.10.4"
    assert find_uv_step(parse_dockerfile(path)).uv_version == "0.13.8"


def test_parser_errors_name_the_line_and_the_flag(tmp_path):
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: FROM uses ARG BASE, which has no value: pass "
                                              r"--build-arg BASE="):
        find_uv_step(parse_dockerfile(_write(tmp_path, "ARG BASE\nFROM $BASE\nRUN uv sync --frozen\n")))
    with pytest.raises(DockerfileError, match=r"no RUN step runs `uv sync`.*--python-platform"):
        find_uv_step(parse_dockerfile(_write(tmp_path, "FROM python:3.11\nRUN pip install -r r.txt\n")))
    with pytest.raises(DockerfileError, match="no stage named 'nope'"):
        find_uv_step(parse_dockerfile(_write(tmp_path, "FROM python:3.11\nRUN uv sync\n")), "nope")


def test_a_stacked_push_reads_the_build_from_the_image_as_built_on_its_base(tmp_path):
    """`push --base B --dockerfile`: the build runs FROM the pushed image through an ARG that has no
    value yet; the push reads that stage as built on B (B's Python, libc and user are the image's)."""
    text = "ARG UV_STACKED_IMAGE\nFROM ${UV_STACKED_IMAGE}\nWORKDIR /srv\nRUN uv sync --frozen --offline\n"
    path = _write(tmp_path, text)
    step = find_uv_step(parse_dockerfile(path), stacked_on="python:3.12-slim-bookworm")
    assert (step.base_image, step.base_line, step.environment) == ("python:3.12-slim-bookworm", 2, "/srv/.venv")
    # a --build-arg given wins; an ARG that is only part of the name is not the stacked image
    given = find_uv_step(parse_dockerfile(path, {"UV_STACKED_IMAGE": "python:3.11"}), stacked_on="python:3.12")
    assert given.base_image == "python:3.11"
    partial = _write(tmp_path / "partial", "ARG PY\nFROM python:${PY}-slim\nRUN uv sync --frozen\n")
    with pytest.raises(DockerfileError, match="Dockerfile:2: FROM uses ARG PY, which has no value"):
        find_uv_step(parse_dockerfile(partial), stacked_on="python:3.12")


@pytest.fixture(scope="module")
def images(build_setup, registries, tmp_path_factory) -> dict[str, str]:
    server = registries["plain"]
    work = tmp_path_factory.mktemp("infer")
    uv_image = f"{server.host}/base/uv:0.13.8"
    ocicache("copy", build_uv_image(work / "uv", str(uv_release("0.13.8")), "0.13.8"), uv_image)
    musl = f"{server.host}/base/musl:1"
    ocicache("copy", build_musl_image(work / "musl"), musl)
    return {"base": str(build_setup["base"]), "uv": uv_image, "musl": musl, "host": server.host}


def _service(tmp_path: Path, setup: dict, images: dict, *, user: str = "", mount_at: str = "/root/.cache/uv") -> Path:
    return build_context(tmp_path, setup["lock"],
        "ARG UV_CACHE_IMAGE\n"
        "FROM ${UV_CACHE_IMAGE} AS uvcache\n"
        f"FROM {images['uv']} AS uv\n"
        f"FROM {images['base']}\n"
        "COPY --from=uv /uv /usr/local/bin/uv\n"
        "WORKDIR /app\n"
        "COPY pyproject.toml uv.lock /app/\n"
        + (f"USER {user}\n" if user else "")
        + f"RUN --mount=type=bind,from=uvcache,target={mount_at},rw \\\n"
        "    UV_LINK_MODE=copy uv sync --frozen --offline --no-install-project\n"
        "RUN /app/.venv/bin/python -c \"import heavy, small_b, sdist_only, gitpkg; print('imports ok')\"\n")


def test_push_with_dockerfile_needs_no_target_flag_and_that_build_runs_offline(build_setup, images, tmp_path):
    context = _service(tmp_path, build_setup, images)
    cache = f"{images['host']}/cache/inferred:1"
    run = ocicache("push", build_setup["lock"], cache, "--dockerfile", context / "Dockerfile",
                   "--build-arg", f"UV_CACHE_IMAGE={cache}", "--json")
    pushed = run.json()
    assert [(t["platform"], t["python"], t["python_platform"]) for t in pushed["targets"]] == \
        [("linux/amd64", "3.11.0", "x86_64-manylinux_2_36")]
    assert pushed["uv_releases"] == "0.13.0-0.13.8"  # exactly the family of the uv the Dockerfile copies
    assert "Dockerfile:8: linux/amd64, CPython 3.11" in run.stderr
    assert "reads its cache from /root/.cache/uv" in run.stderr
    info = ocicache("inspect", cache, "--json").json()
    assert info["target"]["python_platform"] == "x86_64-manylinux_2_36"

    require_tool("buildah")
    result = Buildah(tmp_path / "buildah").build(context, "localhost/inferred", {"UV_CACHE_IMAGE": cache})
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]

    ok = ocicache("check", cache, build_setup["lock"], "--dockerfile", context / "Dockerfile", "--json").json()
    assert ok["ok"], ok
    # explicit flags win over the Dockerfile
    flagged = ocicache("check", cache, build_setup["lock"], "--dockerfile", context / "Dockerfile",
                       "--uv-version", "0.13.9", "--json", check=False)
    assert flagged.returncode == 1 and any("0.13.9" in p for p in flagged.json()["problems"])


@pytest.mark.parametrize("user,expected", [("app", "/home/app/.cache/uv"), ("nobody", "/.cache/uv")])
def test_check_catches_a_cache_mounted_where_the_builds_user_does_not_look(user, expected, build_setup, images,
                                                                         tmp_path):
    """The common bug: the cache at /root/.cache/uv, the build running as another user."""
    context = _service(tmp_path, build_setup, images, user=user)
    run = ocicache("check", build_setup["cache"], build_setup["lock"], "--dockerfile", context / "Dockerfile",
                   "--uv-version", "0.13.9", "--json", check=False)
    assert run.returncode == 1
    (problem,) = run.json()["problems"]
    assert f"runs as {user} and reads {expected}" in problem and "/root/.cache/uv" in problem and ":9:" in problem
    fixed = _service(tmp_path / "fixed", build_setup, images, user=user, mount_at=expected)
    assert ocicache("check", build_setup["cache"], build_setup["lock"], "--dockerfile", fixed / "Dockerfile",
                    "--uv-version", "0.13.9", "--json").json()["ok"]


def test_musl_base_image_gives_a_musl_target(make_project, images, tmp_path):
    lock = make_project(tmp_path / "project", ["small-a"])
    dockerfile = _write(tmp_path, f"FROM {images['musl']}\nRUN uv sync --frozen --offline\n")
    pushed = ocicache("push", lock, f"oci:{tmp_path / 'out'}:m", "--dockerfile", dockerfile, "--json").json()
    assert [(t["python"], t["python_platform"]) for t in pushed["targets"]] == \
        [("3.12.8", "x86_64-unknown-linux-musl")]


def test_a_build_that_compiles_bytecode_gets_pycs_or_a_note(make_project, images, tmp_path):
    """`--dockerfile` turns --compile-bytecode on for a build with UV_COMPILE_BYTECODE=1. With no
    CPython of the target's minor here (3.12, PATH without one), the push goes on without pycs and
    says so; asked for explicitly, the same is an error."""
    lock = make_project(tmp_path / "project", ["small-a"])
    dockerfile = _write(tmp_path, f"FROM {images['musl']}\nENV UV_COMPILE_BYTECODE=1\n"
                                  "RUN uv sync --frozen --offline\n")
    no_312 = hermetic_env(PATH="/usr/bin:/bin")
    pushed = ocicache("push", lock, f"oci:{tmp_path / 'out'}:m", "--dockerfile", dockerfile, "--json",
                      env=no_312).json()
    assert pushed["bytecode"] == "" and len(pushed["notes"]) == 1
    assert "no bytecode in the image for CPython 3.12" in pushed["notes"][0]
    asked = ocicache("push", lock, f"oci:{tmp_path / 'out2'}:m", "--dockerfile", dockerfile, "--compile-bytecode",
                     env=no_312, check=False)
    assert asked.returncode == 2 and "--compile-bytecode needs a CPython 3.12" in asked.stderr
    assert not (tmp_path / "out2").exists()
    # a 3.11 build on this machine: compiled by this interpreter, as the Dockerfile asks
    lock_311 = make_project(tmp_path / "p311", ["small-a"])
    df_311 = tmp_path / "Dockerfile.311"
    df_311.write_text(f"FROM {images['base']}\nENV UV_COMPILE_BYTECODE=1\nRUN uv sync --frozen --offline\n")
    compiled = ocicache("push", lock_311, f"oci:{tmp_path / 'out3'}:m", "--dockerfile", df_311, "--json").json()
    assert compiled["bytecode"].startswith("cpython-3.11.") and compiled["notes"] == []


def test_bad_dockerfiles_each_give_one_clear_error(build_setup, images, tmp_path):
    lock = build_setup["lock"]
    host = images["host"]
    cases = {
        "no uv step": (f"FROM {images['base']}\nRUN pip install -r requirements.txt\n",
                       ["no RUN step runs `uv sync`", "--python-platform"]),
        "unknown base": (f"FROM {host}/base/nope:1\nRUN uv sync --frozen --offline\n",
                         ["Dockerfile:1: cannot read the base image", "no such image", "--python-platform"]),
        "unreachable registry": ("FROM 127.0.0.1:9/base/python:3.11\nRUN uv sync --frozen --offline\n",
                                 ["Dockerfile:1: cannot read the base image 127.0.0.1:9/base/python:3.11"]),
        "ARG without value": ("ARG BASE\nFROM ${BASE}\nRUN uv sync --frozen --offline\n",
                              ["Dockerfile:2:", "--build-arg BASE="]),
        "unknown uv": (f"FROM {host}/base/uv:0.14.2 AS uv\nFROM {images['base']}\nCOPY --from=uv /uv /bin/uv\n"
                       "RUN uv sync --frozen --offline\n", ["Dockerfile:3:", "uv 0.14.2 is newer than"]),
    }
    for name, (text, fragments) in cases.items():
        dockerfile = _write(tmp_path / name.replace(" ", "-"), text)
        run = ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--dockerfile", dockerfile, check=False)
        _assert_one_line_error(run, *fragments)
        assert run.returncode == 2, name
        assert not (tmp_path / "out").exists(), name
    # check reads a uv stage FROM an ARG without a value as running FROM the checked image (right for a
    # stacked one); for a cache image that has no Python, the error says so and names the --build-arg
    cache = f"oci:{tmp_path / 'cache'}:v1"
    ocicache("push", lock, cache)
    arg_from = _write(tmp_path / "arg-from", cases["ARG without value"][0])
    run = ocicache("check", cache, lock, "--dockerfile", arg_from, check=False)
    _assert_one_line_error(run, "Dockerfile:2:", "has no CPython", "ARG BASE has no value", "--build-arg BASE=")
    assert run.returncode == 2
    missing = ocicache("push", lock, f"oci:{tmp_path / 'out'}", "--dockerfile", tmp_path / "absent", check=False)
    _assert_one_line_error(missing, "absent")
