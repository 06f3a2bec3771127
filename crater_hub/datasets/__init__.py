"""Datasets: users' datasets as records, their shares, and what servers and jobs may mount.

A room of its own, below the spawner and the queue (both check a request's datasets at every
spawn, submit and dispatch through it) and above ``kube``/``db``/``config``/``policy``
(``pyproject.toml``'s layers). The rules are the policy's (:mod:`crater_hub.policy.datasets`,
pure); this room adds what needs I/O:

- ``store``: the records (``crater_datasets``, ``crater_dataset_shares``) on the database
  worker thread, and the references of a request looked up as policy datasets;
- ``choices``: one call for the spawner, the job submit and a queued job's dispatch: a request's
  ``datasets`` → the :class:`~crater_hub.policy.datasets.Choices` the resolver checks;
- ``usage``: where each dataset is mounted now, from the shared pod watch cache (pods carry the
  ``crater.io/datasets`` annotation);
- ``operations``: create, share, unshare, describe, delete (refused while mounted);
- ``seed``: the data volume's claim and the demo catalog dataset at the hub's first start.
"""
