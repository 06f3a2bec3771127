"""One request → one frozen :class:`WorkloadSpec`: the resolver every workload passes through.

A server spawn and a job submit ask in the same words, with the same meaning:

- ``profile``: a profile slug; absent: the user's default profile;
- ``accelerator``: an accelerator slug of that profile; ``null`` or ``"none"``: no accelerator
  (a CPU-only workload); absent: the profile's first accelerator, or none when it has none or
  when ``gpus`` is 0;
- ``gpus``: how many devices (a whole number, or its decimal string as forms send it); absent:
  the smallest count the profile offers for the accelerator;
- ``image``: the slug of one of the profile's image choices, or a reference the profile allows
  (:mod:`.images`); absent: the first choice, else the configured default.

A spawn's ``user_options`` are this request as they are (KubeSpawner's names: the form's fields
``profile`` and ``profile-option-{profile}--{option}`` become ``{"profile": slug, "<option>":
choice}``); a job's body is this request plus its own fields, which the queue validates on top.
Every refusal is a :class:`PolicyError` whose message names the field and what is allowed: 400
for what is invalid, 403 for what this user may not use.
"""

import re
from dataclasses import dataclass, field

from . import images as images_mod
from . import profiles as profiles_mod

OPTION_NAMES = ("profile", "image", "accelerator", "gpus")
NO_ACCELERATOR = "none"
WHOLE_NUMBER = re.compile(r"^[+-]?[0-9]{1,6}$")


class PolicyError(Exception):
    """A workload refused for what it asks or its user's rights.

    ``status``: 400 (invalid), 403 (not allowed for this user: ``reason`` forbidden or quota),
    409 (not now: capacity); ``reason``: a short label for logs and JupyterHub's spawn events."""

    def __init__(self, message, status=400, reason="options"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a workload asks for, resolved and checked; pods are shaped from this alone."""

    profile: str
    image: str | None = None  # None: the configured default image
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
    elif isinstance(value, str) and WHOLE_NUMBER.match(value.strip()):
        n = int(value.strip())
    else:
        raise PolicyError(f"gpus must be a whole number of devices, got {value!r}")
    if n < 0:
        raise PolicyError(f"gpus must not be negative, got {n}")
    return n


def _restricted(kind, slug, access):
    return PolicyError(f"{kind} {slug!r} is restricted to {access.describe()}", status=403, reason="forbidden")


def resolve(request, all_profiles, user_name, user_groups, accelerators, default_image=None, extra_images=()):
    """Check ``request`` for this user and return the :class:`WorkloadSpec`.

    ``extra_images``: references this user may run in any profile besides the profile's own
    (the image library's images they may use: theirs, shared with them, public, admin's).

    ``accelerators``: slug -> Accelerator, the catalog in force (configured or discovered);
    ``default_image``: the image a workload runs when its profile lists none (the spawner's
    configured image), which a request may also name by reference.
    """
    if request is not None and not isinstance(request, dict):
        raise PolicyError(f"the request must be an object with: {', '.join(OPTION_NAMES)}")
    options = dict(request or {})
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
        if not isinstance(slug, str):
            raise PolicyError(f"profile must be a profile slug; choose one of: "
                              f"{', '.join(p.slug for p in visible) or 'none'}")
        profile = next((p for p in visible if p.slug == slug), None)
        if profile is None:
            hidden = next((p for p in all_profiles if p.slug == slug), None)
            if hidden is not None:
                raise _restricted("profile", slug, hidden.access)
            raise PolicyError(f"profile {slug!r} does not exist; choose one of: "
                              f"{', '.join(p.slug for p in visible) or 'none'}")
    full = next(p for p in all_profiles if p.slug == profile.slug)
    choice = options.get("image")
    if isinstance(choice, str) and choice in extra_images:
        image = choice
    else:
        image = _image(choice, profile, full, default_image)
    accelerator, gpus = _accelerator(options, profile, full, accelerators)
    return WorkloadSpec(
        profile=profile.slug, image=image,
        cpu_guarantee=profile.cpu.guarantee, cpu_limit=profile.cpu.limit,
        mem_guarantee=profile.memory.guarantee, mem_limit=profile.memory.limit,
        accelerator=accelerator, gpus=gpus, kubespawner_override=dict(profile.kubespawner_override),
    )


def allowed_images(profile, default_image=None):
    """What the ``image`` field of ``profile`` (as trimmed for one user) accepts, in words."""
    parts = []
    if profile.images:
        parts.append("one of " + ", ".join(i.slug for i in profile.images))
    elif default_image:
        parts.append(f"{default_image!r}")
    if profile.image_patterns:
        parts.append("an image matching " + ", ".join(repr(p.pattern) for p in profile.image_patterns))
    return " or ".join(parts) or "no image (leave 'image' out)"


def _image(choice, profile, full, default_image):
    """The image reference ``choice`` stands for, or None for the configured default."""
    if choice is None:
        if profile.images:
            return profile.images[0].image
        if full.images:  # every choice is restricted: visible_to kept the profile for its patterns
            raise PolicyError(f"image is required in profile {profile.slug!r}: {allowed_images(profile)}")
        return None
    if not isinstance(choice, str):
        raise PolicyError(f"image must be a string: {allowed_images(profile, default_image)}")
    match = next((i for i in profile.images if i.slug == choice or i.image == choice), None)
    if match is not None:
        return match.image
    if not full.images and choice == "default":  # what KubeSpawner-style forms send
        return None
    if not full.images and default_image and choice == default_image:
        return choice
    if images_mod.is_reference(choice) and any(p.matches(choice) for p in profile.image_patterns):
        return choice
    hidden = next((i for i in full.images if i.slug == choice or i.image == choice), None)
    if hidden is not None:
        raise _restricted("image", choice, hidden.access)
    hidden = next((p for p in full.image_patterns if p.matches(choice)), None)
    if hidden is not None and images_mod.is_reference(choice):
        raise _restricted("image", choice, hidden.access)
    if not images_mod.is_reference(choice):
        raise PolicyError(f"image {choice!r} is not a slug or an image reference; profile "
                          f"{profile.slug!r} allows {allowed_images(profile, default_image)}")
    raise PolicyError(f"image {choice!r} is not allowed in profile {profile.slug!r}; allowed: "
                      f"{allowed_images(profile, default_image)}")


def _accelerator(options, profile, full, catalog):
    offered = [a.accelerator for a in profile.accelerators] + ([NO_ACCELERATOR] if profile.allow_cpu_only else [])
    if "accelerator" in options:
        choice = options["accelerator"]
        if choice is None:
            choice = NO_ACCELERATOR
    elif "gpus" in options and _gpus(options["gpus"]) == 0:
        choice = NO_ACCELERATOR
    else:
        choice = profile.accelerators[0].accelerator if profile.accelerators else NO_ACCELERATOR
    if not isinstance(choice, str):
        raise PolicyError(f"accelerator must be a slug string or null; choose one of: {', '.join(offered)}")
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
        raise PolicyError(f"accelerator {choice!r} is not present in this cluster: no node has it",
                          400, "capacity")
    gpus = _gpus(options.get("gpus", pick.counts[0]))
    if gpus not in pick.counts:
        raise PolicyError(f"gpus={gpus} is not offered for {choice} in profile {profile.slug!r}; "
                          f"choose one of: {', '.join(map(str, pick.counts))}")
    return accelerator, gpus
