"""docs/deploy.md: every command that needs neither a cluster nor the network runs here, as written.

Shell blocks preceded by ``<!-- runs offline -->`` are run, in order, in one shell, from a copy of
what an operator has at that point: this repository's helm-values/ and the chart unpacked next to
it (``helm pull jupyterhub/jupyterhub --untar`` leaves ``jupyterhub/``). Every other shell block
may only call the tools that need a cluster or the network.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HELM_VALUES, REPO

DOCS = REPO / "docs" / "deploy.md"
MARK = "<!-- runs offline -->"
NEEDS_CLUSTER_OR_NETWORK = ("helm", "kubectl", "docker", "curl")


def shell_blocks(text):
    """``[(runs_offline, [command lines])]`` for each ```sh block, in order."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            commands = [line.strip() for line in lines[i + 1:end] if line.strip()]
            out.append((previous == MARK, commands))
            i = end
        i += 1
    return out


BLOCKS = shell_blocks(DOCS.read_text())
OFFLINE = [cmd for offline, cmds in BLOCKS if offline for cmd in cmds]


def test_commands_not_run_here_need_a_cluster_or_the_network():
    assert len(BLOCKS) >= 8 and len(OFFLINE) >= 2
    for offline, commands in BLOCKS:
        for command in commands:
            tool = command.split()[0]
            if offline:
                assert tool not in NEEDS_CLUSTER_OR_NETWORK, command
            else:
                assert tool in NEEDS_CLUSTER_OR_NETWORK, f"not run by the tests, yet runs offline: {command}"


@pytest.fixture
def checkout(tmp_path, chart_dir):
    """An operator's working directory: helm-values/ and the pulled chart."""
    shutil.copytree(HELM_VALUES, tmp_path / "helm-values")
    shutil.copytree(chart_dir, tmp_path / "jupyterhub")
    return tmp_path


def run(script, cwd):
    """bash in ``cwd``, ``python`` being the one with crater_hub installed (the test's)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_offline_commands_run_as_written(checkout):
    result = run("\n".join(OFFLINE), checkout)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "chart schema: valid (jupyterhub)"
    assert "spawner: crater_hub.spawner.CraterSpawner" in out
    assert "accelerators: l40s (nvidia.com/gpu)" in out  # from the example the docs copy
    assert "  gpu: L40S — l40s × 1, 2, 4" in out
    assert "quotas: default: servers 2, gpus 2; group staff: gpus 4; admins exempt" in out
    assert "scope custom:crater:use: every user" in out
    assert "scope custom:crater:admin: group crater-admins (role crater-admin)" in out


@pytest.mark.parametrize("mistake, error", [
    ("crater:\n  profiles: []\n",
     "error: chart schema: (top level): Additional properties are not allowed ('crater' was unexpected)"),
    ("singleuser:\n  profileList: {gpu: {}}\n",
     "error: chart schema: singleuser.profileList: {'gpu': {}} is not of type 'array'"),
    ("hub:\n  config:\n    Crater:\n      acelerators: []\n",
     "error: hub.config.Crater has unknown keys ['acelerators']"),
])
def test_the_documented_check_refuses_mistakes(checkout, mistake, error):
    (check,) = [cmd for cmd in OFFLINE if "crater_hub.deploy check" in cmd]
    (checkout / "my-values.yaml").write_text(mistake)
    result = run(check, checkout)
    assert result.returncode == 1
    assert re.search("^" + re.escape(error), result.stderr, re.M), result.stderr
