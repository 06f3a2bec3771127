import pytest_asyncio

from tests.localkube.helpers import Cluster


@pytest_asyncio.fixture
async def make_cluster(tmp_path):
    """``make_cluster(spec=None, **store_options)``: a Cluster on the demo nodes (or ``spec``),
    stopped after the test."""
    made = []

    def make(spec=None, **store_options):
        made.append(Cluster(tmp_path, spec, **store_options))
        return made[-1]

    yield make
    for cluster in made:
        await cluster.stop()
