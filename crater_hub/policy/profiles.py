"""Profiles: what a researcher may choose for a server or a job, and who may choose it.

A profile is JSON-shaped operator configuration (``Crater.profiles``), validated once by
:func:`parse` into frozen dataclasses. Restrictions follow the 2i2c convention: ``allowed_groups``
and ``allowed_users`` on a profile and on each of its choices; an entry without either is open to
everyone. :func:`visible_to` trims profiles and choices to what one user may use — the form, the
REST API and spawn validation all start from it, so they never disagree.
"""

from dataclasses import dataclass, field, replace

from ..checks import ConfigError, check_mapping, check_slug
from ..quantity import parse_quantity
from .access import Access, parse_access
from .images import parse_patterns

PROFILE_KEYS = {"slug", "display_name", "description", "default", "image", "images", "cpu", "memory",
                "image_patterns", "accelerators", "allow_cpu_only", "allowed_groups", "allowed_users",
                "kubespawner_override", "kind", "ray"}
IMAGE_KEYS = {"slug", "display_name", "image", "allowed_groups", "allowed_users"}
ACCELERATOR_KEYS = {"accelerator", "counts", "allowed_groups", "allowed_users"}
LIMIT_KEYS = {"guarantee", "limit"}
#: ``server``: a notebook server shaped by the profile; ``ray``: a (CPU) notebook server and a
#: Ray cluster whose workers the profile's choices shape (:mod:`crater_hub.ray.profile`)
KINDS = ("server", "ray")
RAY_KEYS = {"workers"}


@dataclass(frozen=True)
class ImageChoice:
    slug: str
    display_name: str
    image: str
    access: Access = Access()


@dataclass(frozen=True)
class AcceleratorChoice:
    accelerator: str  # an accelerator slug
    counts: tuple  # positive device counts offered
    access: Access = Access()


@dataclass(frozen=True)
class Limits:
    guarantee: object = None  # cpu: float; memory: quantity string
    limit: object = None


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    description: str = ""
    default: bool = False
    images: tuple = ()  # ImageChoice; empty: the spawner's configured image
    image_patterns: tuple = ()  # ImagePattern: references allowed beyond the choices
    cpu: Limits = Limits()
    memory: Limits = Limits()
    accelerators: tuple = ()  # AcceleratorChoice
    allow_cpu_only: bool = True  # "no accelerator" is a valid choice
    access: Access = Access()
    kubespawner_override: dict = field(default_factory=dict)
    kind: str = "server"  # one of KINDS
    ray_workers: tuple = ()  # kind "ray": the worker counts offered, the first the default


def _ray(entry, where, kind):
    """The worker counts a ``kind: ray`` profile offers (``ray: {workers: [1, 2, 4]}``, default
    ``[1]``); only ray profiles take ``ray``."""
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of: {', '.join(KINDS)}; got {kind!r}")
    if kind != "ray":
        if "ray" in entry:
            raise ConfigError(f"{where}.ray is only for profiles with kind: ray")
        return ()
    ray = entry.get("ray") or {}
    check_mapping(ray, RAY_KEYS, f"{where}.ray")
    counts = ray.get("workers", [1])
    if not isinstance(counts, list) or not counts or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
        raise ConfigError(f"{where}.ray.workers must be a non-empty list of positive integers, "
                          f"got {counts!r}")
    return tuple(dict.fromkeys(counts))


def _limits(entry, where, kind):
    if entry is None:
        return Limits()
    check_mapping(entry, LIMIT_KEYS, where)
    values = {}
    for key in LIMIT_KEYS:
        if entry.get(key) is None:
            continue
        try:
            amount = parse_quantity(entry[key])
        except ValueError:
            raise ConfigError(f"{where}.{key} must be a Kubernetes quantity, got {entry[key]!r}") from None
        if amount <= 0:
            raise ConfigError(f"{where}.{key} must be positive, got {entry[key]!r}")
        values[key] = float(amount) if kind == "cpu" else str(entry[key])
    limits = Limits(values.get("guarantee"), values.get("limit"))
    if limits.guarantee is not None and limits.limit is not None and \
            parse_quantity(limits.guarantee) > parse_quantity(limits.limit):
        raise ConfigError(f"{where}.guarantee ({limits.guarantee}) exceeds {where}.limit ({limits.limit})")
    return limits


def _images(entry, where):
    if "image" in entry and "images" in entry:
        raise ConfigError(f"{where} sets both 'image' and 'images'; use one")
    if "image" in entry:
        if not isinstance(entry["image"], str) or not entry["image"]:
            raise ConfigError(f"{where}.image must be an image reference string")
        return (ImageChoice("default", entry["image"], entry["image"]),)
    out, seen = [], set()
    for i, img in enumerate(entry.get("images", [])):
        here = f"{where}.images[{i}]"
        check_mapping(img, IMAGE_KEYS, here)
        slug = check_slug(img.get("slug"), f"{here}.slug")
        if slug in seen:
            raise ConfigError(f"{here}.slug {slug!r} is used twice")
        seen.add(slug)
        if not isinstance(img.get("image"), str) or not img["image"]:
            raise ConfigError(f"{here}.image must be an image reference string")
        out.append(ImageChoice(slug, str(img.get("display_name") or slug), img["image"], parse_access(img, here)))
    return tuple(out)


def _accelerators(entry, where, known):
    out, seen = [], set()
    for i, acc in enumerate(entry.get("accelerators", [])):
        here = f"{where}.accelerators[{i}]"
        check_mapping(acc, ACCELERATOR_KEYS, here)
        slug = acc.get("accelerator")
        if known is not None and slug not in known:
            raise ConfigError(f"{here}.accelerator {slug!r} is not in Crater.accelerators; "
                              f"known: {', '.join(sorted(known)) or 'none'}")
        check_slug(slug, f"{here}.accelerator")
        if slug in seen:
            raise ConfigError(f"{here}.accelerator {slug!r} is listed twice")
        seen.add(slug)
        counts = acc.get("counts", [1])
        if not isinstance(counts, list) or not counts or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
            raise ConfigError(f"{here}.counts must be a non-empty list of positive integers, got {counts!r}")
        out.append(AcceleratorChoice(slug, tuple(sorted(set(counts))), parse_access(acc, here)))
    return tuple(out)


def parse(entries, accelerator_slugs=None, where="Crater.profiles"):
    """Validate the operator's profile list.

    ``accelerator_slugs``: the configured catalog's slugs, to catch typos at load; None when the
    catalog is discovered from the cluster at run time (then unknown slugs are refused per spawn).
    """
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{where} must be a list of profiles, got {type(entries).__name__}")
    known = set(accelerator_slugs) if accelerator_slugs is not None else None
    out, seen = [], set()
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        check_mapping(entry, PROFILE_KEYS, here)
        slug = check_slug(entry.get("slug"), f"{here}.slug")
        if slug in seen:
            raise ConfigError(f"{here}.slug {slug!r} is used twice")
        seen.add(slug)
        override = entry.get("kubespawner_override", {})
        if not isinstance(override, dict):
            raise ConfigError(f"{here}.kubespawner_override must be a mapping of KubeSpawner traits")
        accelerators = _accelerators(entry, here, known)
        out.append(Profile(
            slug=slug, display_name=str(entry.get("display_name") or slug),
            description=str(entry.get("description") or ""), default=bool(entry.get("default", False)),
            images=_images(entry, here),
            image_patterns=parse_patterns(entry.get("image_patterns", []), f"{here}.image_patterns"),
            cpu=_limits(entry.get("cpu"), f"{here}.cpu", "cpu"),
            memory=_limits(entry.get("memory"), f"{here}.memory", "memory"), accelerators=accelerators,
            allow_cpu_only=bool(entry.get("allow_cpu_only", not accelerators)),
            access=parse_access(entry, here), kubespawner_override=dict(override),
            kind=entry.get("kind", "server"), ray_workers=_ray(entry, here, entry.get("kind", "server")),
        ))
    if sum(p.default for p in out) > 1:
        raise ConfigError(f"{where}: more than one profile has default: true")
    return out


def visible_to(profiles, user_name, user_groups):
    """The profiles ``user_name`` may use, each trimmed to the choices they may pick."""
    out = []
    for profile in profiles:
        if not profile.access.allows(user_name, user_groups):
            continue
        images = tuple(i for i in profile.images if i.access.allows(user_name, user_groups))
        patterns = tuple(p for p in profile.image_patterns if p.access.allows(user_name, user_groups))
        accelerators = tuple(a for a in profile.accelerators if a.access.allows(user_name, user_groups))
        if profile.images and not images and not patterns:
            continue
        if not accelerators and not profile.allow_cpu_only:
            continue
        out.append(replace(profile, images=images, image_patterns=patterns, accelerators=accelerators))
    return out


def default_profile(profiles):
    return next((p for p in profiles if p.default), profiles[0] if profiles else None)
