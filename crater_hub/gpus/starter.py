"""GPU accounting's life in the hub process: :data:`ROOM` starts
:class:`~crater_hub.gpus.accounting.Accounting` once the hub has started (or on a handler's
first use) and stops it when the hub stops; :mod:`crater_hub.hubstart` says how and why.

Accounting runs on the hub's database (or ``Crater.jobs_db_url``), the shared pod and node
caches, and the hub's users' groups (read from its database).
"""

from ..hubstart import HubRoom, HubUsers


async def _start(app, crater=None):
    from ..config import Crater
    from ..db.session import Database
    from ..kube.inventory import shared_inventory
    from .accounting import Accounting
    from .devices import gpu_equivalent
    from .prometheus import shared_prometheus
    from .workloads import classify, device_requests

    crater = crater or Crater.shared(app.config)
    inventory = shared_inventory(crater.accelerator_catalog())
    namespace = crater.jobs_namespace or None
    accounting = Accounting(
        Database(crater.jobs_db_url or app.db_url), inventory.pod_cache, inventory.node_cache,
        accelerators=inventory.accelerators, groups_of=HubUsers(app).groups_of,
        prometheus=shared_prometheus(crater), classify=classify, device_requests=device_requests,
        gpu_equivalent=gpu_equivalent, system_namespaces=(namespace,) if namespace else ())
    await accounting.start()
    return accounting


async def _stop(accounting):
    await accounting.stop()


ROOM = HubRoom("GPU accounting", _start, _stop)


def schedule_start(c):
    """From ``setup(c)``: start accounting once the hub has started, when this is a hub's start."""
    return ROOM.schedule()


async def accounting_for(settings):
    """The started accounting of this loop, starting it now if the hub start did not."""
    return await ROOM.get(settings.get("crater"))
