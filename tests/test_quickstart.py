"""The README's two commands, on a fresh clone.

The quick start runs for real against the local test index (UV_DEFAULT_INDEX) with the suite's
prepared virtualenv (OCICACHE_VENV), so it stays hermetic; the install step itself is what .ci/run
exercises on its clean clone.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO, hermetic_env


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert commands == ["./scripts/quickstart.sh", "./scripts/test.sh"]
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert ci[-1] == commands[1]


def test_quickstart_on_a_fresh_clone(index, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert not (clone / "examples" / "demo" / "uv.lock").exists()  # locked by the command, not committed
    env = hermetic_env(OCICACHE_VENV=sys.prefix, UV_DEFAULT_INDEX=index.url,
                       UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    run = subprocess.run(["./scripts/quickstart.sh"], cwd=clone, capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (clone / "build" / "demo-cache" / "index.json").is_file()
    assert re.search(r"package\s+\S+ \S+\s+sha256:\w+\s+numpy 2\.3\.0", run.stdout), run.stdout
    assert "requests 2.32.0" in run.stdout
