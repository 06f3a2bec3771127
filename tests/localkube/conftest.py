import pytest_asyncio

from tests.localkube.helpers import Cluster


@pytest_asyncio.fixture
async def make_cluster(tmp_path):
    """``make_cluster(spec=None)``: a Cluster on the demo nodes (or ``spec``), stopped after the test."""
    made = []

    def make(spec=None):
        made.append(Cluster(tmp_path, spec))
        return made[-1]

    yield make
    for cluster in made:
        await cluster.stop()
