"""A cluster request's own fields, split from the workload's and checked one by one.

A create body is the workload policy's request (``profile``, ``accelerator``, ``gpus`` per worker,
``image``, ``datasets``: :func:`crater_hub.policy.workload.resolve` checks those) plus:

- ``workers``: how many worker pods (default 2), 0..``Crater.ray_max_workers``;
- ``lifetime``: ``"server"`` (default): the cluster goes with a notebook server; ``"idle"``: the
  hub deletes it once idle for ``Crater.ray_idle_timeout`` (:mod:`crater_hub.ray.idle`);
- ``server``: which of the owner's servers (``""`` is the default one); absent: the server
  whose API token makes the call (unused with ``lifetime: "idle"``);
- ``name``: a short DNS label; absent: random. The cluster's name is ``ray-<owner>-<name>``.

Every refusal is a :class:`~crater_hub.policy.workload.PolicyError` naming the field.
"""

import re
from dataclasses import dataclass

from ..policy.workload import OPTION_NAMES, PolicyError
from .manifests import LIFETIMES

RAY_FIELDS = ("workers", "lifetime", "server", "name")
SHORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$")
SERVER_NAME = re.compile(r"^[^/]{0,255}$")


@dataclass(frozen=True)
class ClusterRequest:
    workload: dict
    workers: int
    lifetime: str
    server: object  # str, or None: the calling server
    name: object  # str or None


def workers(value, max_workers, field="workers"):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_workers:
        raise PolicyError(f"{field} must be a whole number from 0 to {max_workers}, got {value!r}")
    return value


def parse(body, max_workers, default_workers=2):
    if not isinstance(body, dict):
        raise PolicyError("the request must be a JSON object with: "
                          + ", ".join((*OPTION_NAMES, *RAY_FIELDS)))
    unknown = sorted(set(body) - set(OPTION_NAMES) - set(RAY_FIELDS))
    if unknown:
        raise PolicyError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                          + ", ".join((*OPTION_NAMES, *RAY_FIELDS)))
    count = workers(body.get("workers", default_workers), max_workers)
    lifetime = body.get("lifetime", "server")
    if lifetime not in LIFETIMES:
        raise PolicyError(f"lifetime must be one of: {', '.join(LIFETIMES)}; got {lifetime!r}")
    server = body.get("server")
    if server is not None and (not isinstance(server, str) or not SERVER_NAME.match(server)):
        raise PolicyError(f"server must be the name of one of your servers ('' for the default one), got {server!r}")
    if lifetime != "server" and server is not None:
        raise PolicyError(f"server applies to lifetime 'server' only; a {lifetime!r} cluster goes "
                          "with no server (leave 'server' out)")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not SHORT_NAME.match(name)):
        raise PolicyError("name must be 1 to 16 lowercase letters, digits or '-' (not at either end), "
                          f"got {name!r}")
    return ClusterRequest({k: v for k, v in body.items() if k in OPTION_NAMES}, count, lifetime,
                          server, name)
