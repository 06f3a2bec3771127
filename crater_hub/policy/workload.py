"""From ``user_options`` to a frozen :class:`WorkloadSpec`: one validator for form and REST spawns.

``user_options`` keep KubeSpawner's shape — ``{"profile": slug, "<option>": choice}`` with the
options ``image``, ``accelerator`` and ``gpus`` — so ``POST /hub/api/users/:name/servers/:server``
with ``{"user_options": {...}}`` works as it does with plain KubeSpawner. Every refusal is an
:class:`PolicyError` whose message names the option and what is allowed.
"""

from dataclasses import dataclass, field

from . import profiles as profiles_mod

OPTION_NAMES = ("profile", "image", "accelerator", "gpus")
NO_ACCELERATOR = "none"


class PolicyError(Exception):
    """A spawn refused for its options or its user's rights (status 400 or 403)."""

    def __init__(self, message, status=400, reason="options"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a spawn asks for, resolved and checked; the pod is shaped from this alone."""

    profile: str
    image: str | None = None  # None: the spawner's configured image
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: str | None = None
    mem_limit: str | None = None
    accelerator: object = None  # Accelerator or None
    gpus: int = 0
    kubespawner_override: dict = field(default_factory=dict)

    def model(self):
        return {"profile": self.profile, "image": self.image,
                "accelerator": self.accelerator.slug if self.accelerator else None, "gpus": self.gpus}


def _gpus(value):
    if isinstance(value, bool):
        raise PolicyError(f"gpus must be a whole number of devices, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        n = int(value.strip())
    elif isinstance(value, str) and value.strip().startswith("-") and value.strip()[1:].isdigit():
        n = int(value.strip())
    else:
        raise PolicyError(f"gpus must be a whole number of devices, got {value!r}")
    if n < 0:
        raise PolicyError(f"gpus must not be negative, got {n}")
    return n


def _restricted(kind, slug, access):
    return PolicyError(f"{kind} {slug!r} is restricted to {access.describe()}", status=403, reason="forbidden")


def resolve(user_options, all_profiles, user_name, user_groups, accelerators):
    """Check ``user_options`` for this user and return the :class:`WorkloadSpec`.

    ``accelerators``: slug -> Accelerator, the catalog in force (configured or discovered).
    """
    options = dict(user_options or {})
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise PolicyError(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(OPTION_NAMES)}")
    visible = profiles_mod.visible_to(all_profiles, user_name, user_groups)
    slug = options.get("profile")
    if slug is None:
        profile = profiles_mod.default_profile(visible)
        if profile is None:
            raise PolicyError("no profile is available to you; ask an administrator", 403, "forbidden")
    else:
        profile = next((p for p in visible if p.slug == slug), None)
        if profile is None:
            hidden = next((p for p in all_profiles if p.slug == slug), None)
            if hidden is not None:
                raise _restricted("profile", slug, hidden.access)
            raise PolicyError(f"profile {slug!r} does not exist; choose one of: "
                               f"{', '.join(p.slug for p in visible) or 'none'}")
    full = next(p for p in all_profiles if p.slug == profile.slug)
    image = _image(options.get("image"), profile, full)
    accelerator, gpus = _accelerator(options, profile, full, accelerators)
    return WorkloadSpec(
        profile=profile.slug, image=image,
        cpu_guarantee=profile.cpu.guarantee, cpu_limit=profile.cpu.limit,
        mem_guarantee=profile.memory.guarantee, mem_limit=profile.memory.limit,
        accelerator=accelerator, gpus=gpus, kubespawner_override=dict(profile.kubespawner_override),
    )


def _image(choice, profile, full):
    if not full.images:
        if choice not in (None, "default"):
            raise PolicyError(f"profile {profile.slug!r} has no image choices; leave 'image' out")
        return None
    if choice is None:
        return profile.images[0].image
    match = next((i for i in profile.images if i.slug == choice), None)
    if match is None:
        hidden = next((i for i in full.images if i.slug == choice), None)
        if hidden is not None:
            raise _restricted("image", choice, hidden.access)
        raise PolicyError(f"image {choice!r} is not offered by profile {profile.slug!r}; choose one of: "
                           f"{', '.join(i.slug for i in profile.images)}")
    return match.image


def _accelerator(options, profile, full, catalog):
    offered = [a.accelerator for a in profile.accelerators] + ([NO_ACCELERATOR] if profile.allow_cpu_only else [])
    choice = options.get("accelerator")
    if choice is None:
        choice = profile.accelerators[0].accelerator if profile.accelerators else NO_ACCELERATOR
    if not isinstance(choice, str):
        raise PolicyError(f"accelerator must be a slug string; choose one of: {', '.join(offered)}")
    if choice == NO_ACCELERATOR:
        if not profile.allow_cpu_only:
            raise PolicyError(f"profile {profile.slug!r} needs an accelerator; choose one of: {', '.join(offered)}")
        if "gpus" in options and _gpus(options["gpus"]) != 0:
            raise PolicyError("gpus must be 0 (or left out) without an accelerator")
        return None, 0
    pick = next((a for a in profile.accelerators if a.accelerator == choice), None)
    if pick is None:
        hidden = next((a for a in full.accelerators if a.accelerator == choice), None)
        if hidden is not None:
            raise _restricted("accelerator", choice, hidden.access)
        raise PolicyError(f"accelerator {choice!r} is not offered by profile {profile.slug!r}; "
                           f"choose one of: {', '.join(offered)}")
    accelerator = catalog.get(choice)
    if accelerator is None:
        raise PolicyError(f"accelerator {choice!r} is not present in this cluster right now", 400, "capacity")
    gpus = _gpus(options.get("gpus", pick.counts[0]))
    if gpus not in pick.counts:
        raise PolicyError(f"gpus={gpus} is not offered for {choice} in profile {profile.slug!r}; "
                           f"choose one of: {', '.join(map(str, pick.counts))}")
    return accelerator, gpus
