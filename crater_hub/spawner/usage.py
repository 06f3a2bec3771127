"""What a server holds, for the quota ledger (:mod:`crater_hub.policy.ledger`).

A spawn's resolved :class:`~crater_hub.policy.workload.WorkloadSpec` is kept on its spawner
(``crater_spec``) and its holding is recorded in the ledger the moment it passes the quota check.
Servers started before a hub restart have no spec in memory: JupyterHub polls each of them as it
starts, and their holding is re-derived from their stored ``user_options``.
"""

from ..policy import workload
from ..policy.ledger import SERVER, Holding
from ..ray import profile as ray_profile


def server_key(spawner):
    """The ledger's key of a server: its name ('' for the default server)."""
    return (SERVER, spawner.name or "")


def spec_of(spawner, profiles, catalog):
    """The spec a (running or starting) spawner holds; zero GPUs when it cannot be derived."""
    spec = getattr(spawner, "crater_spec", None)
    if spec is not None:
        return spec
    user = spawner.user
    try:
        configured = getattr(spawner, "_crater_baseline", {}).get("image", spawner.image)
        # datasets do not count against quotas (and may have been unshared since): left out
        # a Ray profile's server holds no GPU: its cluster's workers do, in ("ray", name)
        options = {k: v for k, v in (spawner.user_options or {}).items()
                   if k not in ("datasets", ray_profile.WORKERS)}
        spec = workload.resolve(options, profiles, user.name,
                                [g.name for g in user.groups], catalog, default_image=configured)
        return ray_profile.server_spec(spec) if ray_profile.is_ray(profiles, spec.profile) else spec
    except workload.PolicyError:
        return workload.WorkloadSpec(profile=(spawner.user_options or {}).get("profile", "unknown"))


def holding_of(spawner, profiles, catalog):
    return Holding.of(SERVER, spec_of(spawner, profiles, catalog))
