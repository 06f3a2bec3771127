"""The queue tests' own localkube and hub (``tests/queue/crater-queue.yaml``), so that their
jobs never compete with other suites' servers for the demo cluster's GPUs.

``QUEUE_DB=postgresql`` runs the same tests with the jobs (and the hub) on a real PostgreSQL
server started here from Debian's binaries (``initdb``, ``pg_ctl``).
"""

import itertools
import os
from pathlib import Path

import pytest

from crater_hub.localkube import LocalKubeProcess

from ..e2e.hub import HubProcess, api_request
from .postgres import PostgresServer

HERE = Path(__file__).parent
CONFIG = HERE / "crater-queue.yaml"


@pytest.fixture(scope="session")
def queue_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("queue")


@pytest.fixture(scope="session")
def queue_cluster(queue_dir):
    cluster = LocalKubeProcess(queue_dir / "localkube", tie_to_parent=True).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres(queue_dir):
    """A PostgreSQL server when QUEUE_DB=postgresql, else None (SQLite)."""
    if os.environ.get("QUEUE_DB", "sqlite") != "postgresql":
        yield None
        return
    server = PostgresServer(queue_dir / "postgres").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(queue_dir, postgres):
    """The hub's (and so the jobs') database: SQLite by default; PostgreSQL when QUEUE_DB=postgresql."""
    if postgres is not None:
        return postgres.url("crater")
    return f"sqlite:///{queue_dir / 'hub' / 'jupyterhub.sqlite'}"


def queue_hub(state_dir, cluster, database_url, env=None):
    # JupyterHub's default slow_spawn_timeout: a refused spawn is the POST's answer
    return HubProcess(state_dir, cluster.kubeconfig, slow_spawn_timeout=10,
                      env={"CRATER_CONFIG_FILE": str(CONFIG), "CRATER_DB_URL": database_url,
                           **(env or {})})


@pytest.fixture(scope="session")
def hub(queue_dir, queue_cluster, database_url):
    (queue_dir / "hub").mkdir(exist_ok=True)
    process = queue_hub(queue_dir / "hub", queue_cluster, database_url).start()
    yield process
    process.stop()


_numbers = itertools.count()


@pytest.fixture
async def make_user(hub):
    """``await make_user(groups=[...])`` -> (name, token): a user and a token of theirs."""
    made = []

    async def make(prefix="u", groups=()):
        name = f"{prefix}{next(_numbers)}-{os.getpid()}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code == 201, r
        for group in groups:
            r = await api_request(hub, f"groups/{group}", "POST")
            assert r.code in (201, 409), r
            r = await api_request(hub, f"groups/{group}/users", "POST", {"users": [name]})
            assert r.code == 200, r
        r = await api_request(hub, f"users/{name}/tokens", "POST", {"note": "queue tests"})
        assert r.code == 201, r
        made.append(name)
        return name, r.data["token"]

    yield make
    # leave nothing running for the next test: cancel every unfinished job of these users
    for name in made:
        r = await api_request(hub, "crater/jobs?all=1&state=queued&state=admitted&state=running")
        for job in r.data["jobs"] if r.code == 200 else ():
            if job["owner"] == name:
                await api_request(hub, f"crater/jobs/{job['id']}", "DELETE")
