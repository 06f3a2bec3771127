"""docs/deploy.md: every command that needs neither a cluster nor the network runs here, as written.

Shell blocks preceded by ``<!-- runs offline -->`` are run, in order, in one shell, from a copy of
what an operator has at that point: this repository's helm-values/, the chart unpacked next to
it (``helm pull jupyterhub/jupyterhub --untar`` leaves ``jupyterhub/``) and the copy of the hub's
database the upgrade's dry run starts from. Every other shell block may only call the tools that
need a cluster or the network; what they say is checked here where it can be: the ``kubectl auth
can-i`` lines against helm-values/rbac.yaml, the job the ``curl`` submits against the values.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from jupyterhub import orm

from crater_hub import deploy
from crater_hub.config import Crater
from crater_hub.db import migrate
from crater_hub.queue import spec as job_spec

from .conftest import BASE, HELM_VALUES, REPO, values_for
from .test_manifests import RBAC, Permissions, documents

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
ONLINE = [cmd for offline, cmds in BLOCKS if not offline for cmd in cmds]
HUB_DB_COPY = "jupyterhub-copy.sqlite"  # what the upgrade's `kubectl exec ... cat` leaves


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
    """An operator's working directory: helm-values/, the pulled chart, and a copy of the hub's
    database as JupyterHub left it (its tables and alembic_version, none of crater_hub's)."""
    shutil.copytree(HELM_VALUES, tmp_path / "helm-values")
    shutil.copytree(chart_dir, tmp_path / "jupyterhub")
    session = orm.new_session_factory(f"sqlite:///{tmp_path / HUB_DB_COPY}")()
    session.close()
    return tmp_path


def tables_and_versions(path):
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        names = set(sa.inspect(engine).get_table_names())
        with engine.connect() as c:
            versions = {table: c.execute(sa.text(f"SELECT version_num FROM {table}")).scalar()
                        for table in ("alembic_version", migrate.VERSION_TABLE) if table in names}
        return names, versions
    finally:
        engine.dispose()


def run(script, cwd):
    """bash in ``cwd``, ``python`` being the one with crater_hub installed (the test's)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_offline_commands_run_as_written(checkout):
    jupyterhub_tables, before = tables_and_versions(checkout / HUB_DB_COPY)
    assert set(before) == {"alembic_version"}
    result = run("\n".join(OFFLINE), checkout)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "chart schema: valid (jupyterhub)"
    assert out.count("chart schema: valid (jupyterhub)") == 2  # my-values.yaml, then Kueue's
    assert "accelerators: h100 (nvidia.com/gpu)" in out  # the Kueue example's check
    # the upgrade's dry run: crater_hub's tables and version table added next to JupyterHub's
    # (untouched), at this release's head, which it prints
    assert out[-1] == migrate.head() == "0005_images"
    tables, after = tables_and_versions(checkout / HUB_DB_COPY)
    assert after == {**before, migrate.VERSION_TABLE: migrate.head()}
    assert tables - jupyterhub_tables == {migrate.VERSION_TABLE, "crater_jobs", "crater_job_transitions",
                                          "crater_datasets", "crater_dataset_shares",
                                          "crater_gpu_intervals", "crater_gpu_usage_daily",
                                          "crater_gpu_usage_daily_group", "crater_gpu_usage_daily_total",
                                          "crater_gpu_usage_monthly",
                                          "crater_images", "crater_image_commits"}
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
    (check,) = [cmd for cmd in OFFLINE if "crater_hub.deploy check" in cmd and "my-values.yaml" in cmd]
    (checkout / "my-values.yaml").write_text(mistake)
    result = run(check, checkout)
    assert result.returncode == 1
    assert re.search("^" + re.escape(error), result.stderr, re.M), result.stderr


# -- what the commands that need a cluster say -------------------------------------------------------


def can_i_lines():
    return [cmd for cmd in ONLINE if cmd.startswith("kubectl auth can-i ")]


def test_the_documented_can_i_lines_answer_yes_under_rbac_yaml():
    """The docs say every `kubectl auth can-i` line answers yes: it must, under rbac.yaml."""
    allows = Permissions(documents(RBAC)).allows
    lines = can_i_lines()
    assert len(lines) >= 6
    for line in lines:
        args = shlex.split(line)[3:]
        verb, resource = args[0], args[1]
        flags = dict(a.split("=", 1) if "=" in a else (a, None) for a in args[2:])
        namespace = next((args[i + 1] for i, a in enumerate(args) if a == "--namespace"), None)
        assert flags["--as"] == "system:serviceaccount:jhub:hub", line
        name, _, group = resource.partition(".")
        if "--subresource" in flags:
            name += "/" + flags["--subresource"]
        assert allows(verb, group, name, namespace), line


def documented_submission():
    (line,) = [cmd for cmd in ONLINE if cmd.startswith("curl -X POST") and "/api/crater/jobs" in cmd]
    args = shlex.split(line)
    return json.loads(args[args.index("-d") + 1])


@pytest.mark.parametrize("overlay", ["small-lab.yaml", "kueue.yaml"])
def test_the_documented_job_is_one_the_values_accept(chart_defaults, overlay):
    """The job the docs submit (step 10) passes the hub's checks with the values the docs install:
    my-values.yaml (a copy of small-lab.yaml), or the Kueue example."""
    crater = Crater(config=deploy.hub_config(
        values_for(chart_defaults, BASE, HELM_VALUES / "examples" / overlay)))
    body = documented_submission()
    spec = job_spec.resolve(
        body, owner="admin", groups=[], profiles=crater.profile_list(),
        catalog={a.slug: a for a in crater.accelerator_catalog()},
        priorities=crater.priority_classes(), default_image="unused",
        default_runtime=crater.job_default_runtime, max_runtime=crater.job_max_runtime)
    assert (spec.profile, spec.gpus, spec.image, spec.max_runtime) == ("cpu", 0, "unused", 600)
    assert spec.command == ("sh", "-c", "echo hello from a crater job")
    assert spec.priority == "normal"  # the default class of crater.yaml


def test_no_placeholders_left():
    """No "issue N", TODO or placeholder text in what operators read: features not built yet say
    "not used yet by this release"."""
    files = [DOCS, *sorted(p for p in HELM_VALUES.rglob("*") if p.is_file())]
    pattern = re.compile(r"\bissue \d+|\bTODO\b|placeholder", re.I)
    assert {str(p.relative_to(REPO)): pattern.findall(p.read_text()) for p in files
            if pattern.search(p.read_text())} == {}
