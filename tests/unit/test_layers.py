"""The rooms' layering (``[tool.importlinter]`` in pyproject.toml) holds, and the check bites.

Runs import-linter as CI does. The second test proves the contract can fail: on a copy of the
package where the policy room imports the spawner, ``lint-imports`` must report that import.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where):
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(where / "pyproject.toml")],
                          cwd=where, env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_every_room_imports_only_rooms_below_it():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layers point down KEPT" in result.stdout


def test_a_lower_room_importing_a_higher_one_fails_the_check(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "crater_hub", tmp_path / "crater_hub",
                    ignore=shutil.ignore_patterns("__pycache__", "templates", "static"))
    quotas = tmp_path / "crater_hub" / "policy" / "quotas.py"
    quotas.write_text(quotas.read_text() + "\nfrom ..spawner import spawner  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Layers point down BROKEN" in result.stdout
    assert "crater_hub.policy.quotas -> crater_hub.spawner.spawner" in result.stdout
