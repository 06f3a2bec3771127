"""crater_hub's operator configuration: accelerators, profiles and quotas, validated at load.

Everything is JSON/YAML-shaped so it can be set from ``jupyterhub_config.py``
(``c.Crater.profiles = [...]``) and from z2jh (``hub.config.Crater.profiles``). A mistake fails
the hub's start with a message naming the key, instead of surfacing as a broken spawn later.
"""

from traitlets import Dict, List, TraitError, observe, validate
from traitlets.config import LoggingConfigurable

from . import accelerators as accelerators_mod
from .accelerators import ConfigError
from .spawner import profiles as profiles_mod
from .spawner import quotas as quotas_mod


class Crater(LoggingConfigurable):
    """The settings every crater_hub room reads."""

    accelerators = List(
        Dict(), config=True,
        help="""Accelerator types offered, e.g.
        ``{"slug": "a100", "display_name": "A100 80GB", "resource": "nvidia.com/gpu",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "tolerations": [],
        "memory": "80Gi", "env": "NVIDIA_VISIBLE_DEVICES"}``. Empty: discovered from node labels
        (GPU feature discovery) and extended resources.""",
    )
    profiles = List(
        Dict(), config=True,
        help="""Spawn profiles: slug, display_name, description, default, image or images
        (choices), cpu/memory ``{guarantee, limit}``, accelerators
        (``[{"accelerator": slug, "counts": [1, 2]}]``), allow_cpu_only, allowed_groups,
        allowed_users (on the profile and on each choice) and kubespawner_override.
        Empty: CraterSpawner behaves as KubeSpawner (its profile_list, if any).""",
    )
    quotas = Dict(
        config=True,
        help="""``{"default": {"servers", "gpus", "accelerators": {slug: n}}, "groups": {name: {...}},
        "admins_exempt": true}``; among several groups the most generous limit wins.""",
    )

    @validate("accelerators")
    def _check_accelerators(self, proposal):
        self._parse(accelerators_mod.parse, proposal.value)
        return proposal.value

    @validate("profiles")
    def _check_profiles(self, proposal):
        self._parse(profiles_mod.parse, proposal.value, self._known_slugs())
        return proposal.value

    @validate("quotas")
    def _check_quotas(self, proposal):
        self._parse(quotas_mod.parse, proposal.value)
        return proposal.value

    @observe("accelerators")
    def _recheck_profiles(self, change):
        self._parse(profiles_mod.parse, self.profiles, self._known_slugs())

    @staticmethod
    def _parse(parser, *args):
        try:
            return parser(*args)
        except ConfigError as e:
            raise TraitError(str(e)) from None

    def _known_slugs(self):
        return [a["slug"] for a in self.accelerators] if self.accelerators else None

    # -- parsed views ----------------------------------------------------------------------------

    def accelerator_catalog(self):
        """The configured accelerators, or None to discover them from the cluster."""
        return accelerators_mod.parse(self.accelerators) or None

    def profile_list(self):
        return profiles_mod.parse(self.profiles, self._known_slugs())

    def quota_policy(self):
        return quotas_mod.parse(self.quotas)
