"""Ray clusters for notebook users: KubeRay ``ray.io/v1`` RayClusters the hub creates with its own
service account, shaped by the one workload policy and counted in the one quota ledger.

- :mod:`.manifests`: a request's :class:`~crater_hub.policy.workload.WorkloadSpec` → a RayCluster
  (pure; what the CRD-schema tests check), and a RayCluster → the REST model;
- :mod:`.options`: the request's own fields (workers, lifetime, server, name), each checked;
- :mod:`.clusters`: the service: a shared watch cache of the namespace's RayClusters, the ledger
  kept true by it, and the create/scale/delete calls;
- :mod:`.idle`: ``lifetime: "idle"``: the rule (pure) and the hub's one reaper of idle clusters;
- :mod:`.starter`: the room's start with the hub (the watch cache and the reaper) and its stop.
- :mod:`.profile`: what a spawn of a ``kind: ray`` profile asks of this room (the spawner imports
  it: this room sits below the spawner in the import-linter layers and imports no sibling room).
"""
