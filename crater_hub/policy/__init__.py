"""The one policy every workload passes through — servers, jobs and the rooms to come.

Pure code, below :mod:`crater_hub.config` and above only ``checks``, ``accelerators``,
``merging`` and ``quantity``; the spawner, the queue and the handlers import it, never the other
way (``pyproject.toml``'s import-linter contracts check it). Modules:

- ``access``: who may use an entry (``allowed_groups``/``allowed_users``);
- ``profiles``: the operator's profiles and what one user may see of them;
- ``priorities``: the job priority classes;
- ``workload``: one request (``profile``, ``accelerator``, ``gpus``, ``image``) → one validated
  :class:`~.workload.WorkloadSpec`, for a server spawn and a job submit alike;
- ``quotas``: per-user quotas and what a set of workloads uses of them;
- ``offer``: what one user may start now, the model of the spawn form and the profiles API.
"""
