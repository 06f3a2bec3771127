"""The backend choice (``Crater.job_queue_backend`` by name, ``job_queue_backend_class`` by
class) and the engine's decisions whose positions and estimates wait for their first read."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from crater_hub.config import Crater
from crater_hub.queue.backends import EmbeddedBackend, KueueBackend, QueueBackend, backend_class
from crater_hub.queue.engine import NodeFree, QueuedJob, schedule


class VolcanoLike(QueueBackend):
    name = "volcano"

    async def cycle(self):
        pass


def crater(**settings):
    config = Config()
    for key, value in settings.items():
        setattr(config.Crater, key, value)
    return Crater(config=config)


def test_the_names_still_choose_the_shipped_backends():
    assert backend_class(crater()) is EmbeddedBackend
    assert backend_class(crater(job_queue_backend="kueue")) is KueueBackend


def test_an_operator_plugs_a_backend_of_their_own_by_class_or_import_path():
    assert backend_class(crater(job_queue_backend_class=VolcanoLike)) is VolcanoLike
    path = f"{__name__}.VolcanoLike"
    assert backend_class(crater(job_queue_backend_class=path)) is VolcanoLike


def test_a_class_that_is_no_backend_is_refused():
    with pytest.raises(TraitError):
        crater(job_queue_backend_class="collections.OrderedDict")


def test_positions_and_estimates_are_computed_on_first_read_once():
    queued = [QueuedJob(id=i, owner="ann", accelerator="t4", gpus=1, submitted=i, runtime=60)
              for i in range(1, 4)]
    nodes = [NodeFree("n", {"t4": 1}, 8000, 2**34)]
    decision = schedule(queued, [], nodes, {}, {}, now=10)
    assert decision.admit == [(1, "n")]
    assert decision.pending
    assert decision.positions == {2: 1, 3: 2}
    assert not decision.pending
    assert decision.estimated_start == {2: 70, 3: 130}
    assert decision.waiting[3] == "waiting for capacity"
