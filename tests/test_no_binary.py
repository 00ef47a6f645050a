"""The project's `no-binary-package` / `no-binary` (uv.toml or `[tool.uv]`): `uv sync` builds those
packages from their sdists even where the lock has a wheel, so the image must hold the build.

Before: the push packed the index's wheel, `check` predicted every hit, and the consumer's
`uv sync --frozen --offline` failed on the package (it looks for the sdist's build).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ocicache, offline_sync

WHEEL_ONLY_MARK = b"ORIGIN = 'the index wheel'\n"


def _project(index, make_project, path: Path, setting: str, where: str = "pyproject") -> Path:
    index.add_wheel("nobin", "1.0", files={"nobin/__init__.py": WHEEL_ONLY_MARK})
    index.add_sdist("nobin", "1.0")  # its module says VERSION = '1.0', not ORIGIN
    lock = make_project(path, ["nobin", "small-a"])
    if where == "pyproject":
        pyproject = lock.parent / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace("package = false", f"package = false\n{setting}"))
    else:  # uv.toml: uv reads it instead of [tool.uv], so it carries the index too
        (lock.parent / "uv.toml").write_text(f'{setting}\n[[index]]\nname = "local"\nurl = "{index.url}"\n'
                                             "default = true\n")
    return lock


def _installed_module(consumer: Path) -> bytes:
    return (consumer / ".venv" / "lib" / "python3.11" / "site-packages" / "nobin" / "__init__.py").read_bytes()


def test_a_no_binary_package_is_built_from_its_sdist_as_uv_sync_does(index, make_project, tmp_path):
    lock = _project(index, make_project, tmp_path / "p", 'no-binary-package = ["nobin"]')
    ref = f"oci:{tmp_path / 'layout'}:t"
    pushed = ocicache("push", lock, ref, "--python", "3.11", "--json").json()
    assert {p for row in pushed["layers"] for p in row["packages"]} >= {"nobin", "small-a"}
    check = ocicache("check", ref, lock, "--json").json()
    assert check["ok"], check
    ocicache("pull", ref, tmp_path / "cache")
    result = offline_sync(lock, tmp_path / "cache", tmp_path / "consumer")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _installed_module(tmp_path / "consumer") == b"VERSION = '1.0'\n"  # the sdist's build, not the wheel


def test_no_binary_for_everything_in_uv_toml(index, make_project, tmp_path):
    """uv.toml beside pyproject.toml is what uv reads; `no-binary = true` covers every package (and
    small-a, wheel-only in the lock, cannot be built: one clear error, as uv sync would fail)."""
    lock = _project(index, make_project, tmp_path / "p", "no-binary = true", where="uv.toml")
    run = ocicache("push", lock, f"oci:{tmp_path / 'layout'}:t", "--python", "3.11", check=False)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "small-a" in run.stderr and "no sdist" in run.stderr, run.stderr
    assert not (tmp_path / "layout" / "index.json").exists()


def test_the_dockerfiles_no_binary_settings_count_with_dockerfile(index, make_project, tmp_path):
    """`ENV UV_NO_BINARY_PACKAGE` in the build (no setting in the project): `push --dockerfile`
    builds the package from its sdist, and `check --dockerfile` predicts that build's hits (a
    check without the Dockerfile expects the index wheel, which the image does not hold)."""
    lock = _project(index, make_project, tmp_path / "p", "")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM 127.0.0.1:9/base/python:3.11\nUSER root\nENV UV_NO_BINARY_PACKAGE=nobin\n"
                          "RUN --mount=type=bind,from=cache,target=/root/.cache/uv,rw uv sync --frozen --offline\n")
    target = ("--platform", "linux/amd64", "--python", "3.11", "--python-platform", "x86_64-manylinux_2_36")
    ref = f"oci:{tmp_path / 'layout'}:t"
    ocicache("push", lock, ref, "--dockerfile", dockerfile, *target)
    # (the layout cannot be named in a Dockerfile: check reports that the build mounts another image)
    checked = ocicache("check", ref, lock, "--dockerfile", dockerfile, *target, "--json", check=False).json()
    assert checked["missing"] == [] and checked["found"] == checked["needed"] == 2, checked
    plain = ocicache("check", ref, lock, *target, "--json", check=False)
    assert plain.returncode == 1 and [m.split()[0] for m in plain.json()["missing"]] == ["nobin"], plain.stdout
    ocicache("pull", ref, tmp_path / "cache")
    result = offline_sync(lock, tmp_path / "cache", tmp_path / "consumer", "--no-binary-package", "nobin")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _installed_module(tmp_path / "consumer") == b"VERSION = '1.0'\n"


def test_no_binary_settings_of_a_uv_step():
    from ocicache.project_settings import build_settings_of_step

    sync = build_settings_of_step("sync", ["uv", "sync", "--no-binary-package", "Foo", "--no-binary-package=bar"],
                                  {"UV_NO_BINARY_PACKAGE": "baz qux"})
    assert sync.no_binary_packages == {"foo", "bar", "baz", "qux"} and not sync.no_binary
    assert build_settings_of_step("sync", ["uv", "sync", "--no-binary"], {}).no_binary
    assert build_settings_of_step("sync", ["uv", "sync"], {"UV_NO_BINARY": "1"}).no_binary
    pip = build_settings_of_step("pip install", ["uv", "pip", "install", "--no-binary", "a,b", "-r", "x"], {})
    assert pip.no_binary_packages == {"a", "b"} and not pip.no_binary
    assert build_settings_of_step("pip install", ["uv", "pip", "install", "--no-binary", ":all:"], {}).no_binary
    assert not build_settings_of_step("sync", ["uv", "sync", "--frozen"], {})


def test_the_pushing_machines_uv_build_settings_do_not_change_the_image(index, make_project, tmp_path):
    """`UV_NO_BINARY*` / `UV_NO_BUILD*` / `UV_ONLY_BINARY` in the environment of the push are that
    machine's, not the consumer build's (a Docker build does not inherit them): the image is the same
    as without them. A guard: the pinned uv ignores them for a pylock install, another `--uv` need
    not, so the populate does not pass them on."""
    from tests.conftest import hermetic_env

    index.add_wheel("nobin", "1.0", files={"nobin/__init__.py": WHEEL_ONLY_MARK})
    index.add_sdist("nobin", "1.0")
    index.add_sdist("envbuilt", "1.0")  # sdist only: built by uv in every push
    lock = make_project(tmp_path / "p", ["nobin", "small-a", "envbuilt"])
    env = {**hermetic_env(), "UV_NO_BINARY_PACKAGE": "nobin small-a", "UV_NO_BINARY": "1", "UV_NO_BUILD": "1",
           "UV_ONLY_BINARY": ":all:", "UV_NO_BUILD_PACKAGE": "nobin envbuilt"}
    pushed = ocicache("push", lock, f"oci:{tmp_path / 'env'}:t", "--python", "3.11", "--json", env=env).json()
    plain = ocicache("push", lock, f"oci:{tmp_path / 'plain'}:t", "--python", "3.11", "--json").json()
    assert pushed["manifest_digest"] == plain["manifest_digest"]
    ocicache("pull", f"oci:{tmp_path / 'env'}:t", tmp_path / "cache")
    result = offline_sync(lock, tmp_path / "cache", tmp_path / "consumer")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _installed_module(tmp_path / "consumer") == WHEEL_ONLY_MARK
