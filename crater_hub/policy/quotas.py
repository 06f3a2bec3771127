"""Per-user quotas on servers and GPUs, with per-group overrides.

Configuration (``Crater.quotas``)::

    {"default": {"servers": 2, "gpus": 2, "accelerators": {"a100": 1}},
     "groups": {"ml-staff": {"gpus": 8, "accelerators": {"a100": 4}}},
     "admins_exempt": true}

``gpus`` caps devices of all types together, ``accelerators`` caps each type, ``servers`` caps
running servers (named ones included). A limit that is absent is unlimited.

When a user is in several groups with quotas, **the most generous wins, limit by limit**: each
limit is the largest value among the user's groups that name it; a limit none of them names keeps
the default. (Groups grant; they never take away what another group gave.) Admins are exempt
unless ``admins_exempt`` is false.
"""

from dataclasses import dataclass, field

from ..checks import ConfigError, check_mapping

QUOTA_KEYS = {"servers", "gpus", "accelerators"}


@dataclass(frozen=True)
class Quota:
    servers: int | None = None
    gpus: int | None = None
    accelerators: dict = field(default_factory=dict)  # slug -> int


@dataclass(frozen=True)
class QuotaPolicy:
    default: Quota = Quota()
    groups: dict = field(default_factory=dict)  # group -> Quota
    admins_exempt: bool = True

    def for_user(self, groups, is_admin=False):
        """The quota that applies to a user in ``groups`` (None: unlimited)."""
        if is_admin and self.admins_exempt:
            return None
        mine = [self.groups[g] for g in sorted(groups) if g in self.groups]
        if not mine:
            return self.default

        def most_generous(values, fallback):
            named = [v for v in values if v is not None]
            return max(named) if named else fallback

        slugs = {s for q in mine for s in q.accelerators}
        return Quota(
            servers=most_generous([q.servers for q in mine], self.default.servers),
            gpus=most_generous([q.gpus for q in mine], self.default.gpus),
            accelerators={**self.default.accelerators,
                          **{s: max(q.accelerators[s] for q in mine if s in q.accelerators) for s in slugs}},
        )


def _count(value, where):
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _quota(entry, where):
    check_mapping(entry, QUOTA_KEYS, where)
    per_type = entry.get("accelerators", {})
    if not isinstance(per_type, dict):
        raise ConfigError(f"{where}.accelerators must map accelerator slugs to counts")
    return Quota(_count(entry.get("servers"), f"{where}.servers"), _count(entry.get("gpus"), f"{where}.gpus"),
                 {slug: _count(n, f"{where}.accelerators.{slug}") for slug, n in per_type.items()})


def parse(config, where="Crater.quotas"):
    check_mapping(config, {"default", "groups", "admins_exempt"}, where)
    groups = config.get("groups", {})
    if not isinstance(groups, dict):
        raise ConfigError(f"{where}.groups must map group names to quotas")
    return QuotaPolicy(
        default=_quota(config.get("default", {}), f"{where}.default"),
        groups={g: _quota(q, f"{where}.groups.{g}") for g, q in groups.items()},
        admins_exempt=bool(config.get("admins_exempt", True)),
    )


@dataclass(frozen=True)
class Usage:
    servers: int = 0
    gpus: int = 0
    accelerators: dict = field(default_factory=dict)

    @classmethod
    def of(cls, specs):
        by_type = {}
        for spec in specs:
            if spec.accelerator:
                by_type[spec.accelerator.slug] = by_type.get(spec.accelerator.slug, 0) + spec.gpus
        return cls(len(specs), sum(by_type.values()), by_type)


def violation(quota, usage, spec):
    """Why starting ``spec`` on top of ``usage`` breaks ``quota``, or None when it fits."""
    if quota is None:
        return None
    if quota.servers is not None and usage.servers + 1 > quota.servers:
        return f"you already run {usage.servers} of your {quota.servers} allowed servers"
    if spec.accelerator and spec.gpus:
        slug = spec.accelerator.slug
        if quota.gpus is not None and usage.gpus + spec.gpus > quota.gpus:
            return (f"{spec.gpus} more {_gpus(spec.gpus)} would exceed your GPU quota: {usage.gpus} of "
                    f"{quota.gpus} in use, {max(quota.gpus - usage.gpus, 0)} left")
        cap = quota.accelerators.get(slug)
        used = usage.accelerators.get(slug, 0)
        if cap is not None and used + spec.gpus > cap:
            return (f"{spec.gpus} more {spec.accelerator.display_name} would exceed your quota for them: "
                    f"{used} of {cap} in use, {max(cap - used, 0)} left")
    return None


def beyond(quota, spec):
    """Why ``spec`` alone is more than ``quota`` allows, so that it could never start however
    much the user frees; None when it fits an empty quota."""
    if quota is None or not spec.accelerator or not spec.gpus:
        return None
    if quota.gpus is not None and spec.gpus > quota.gpus:
        return f"{spec.gpus} {_gpus(spec.gpus)} is more than your GPU quota of {quota.gpus}"
    cap = quota.accelerators.get(spec.accelerator.slug)
    if cap is not None and spec.gpus > cap:
        return (f"{spec.gpus} × {spec.accelerator.display_name} is more than your quota of "
                f"{cap} for them")
    return None


def _gpus(n):
    return "GPU" if n == 1 else "GPUs"


def remaining(quota, usage):
    """What is left, for the form and the REST API (None: unlimited)."""
    if quota is None:
        return {"servers": None, "gpus": None, "accelerators": {}}
    left = lambda cap, used: None if cap is None else max(cap - used, 0)  # noqa: E731
    return {"servers": left(quota.servers, usage.servers), "gpus": left(quota.gpus, usage.gpus),
            "accelerators": {s: left(c, usage.accelerators.get(s, 0)) for s, c in quota.accelerators.items()}}
