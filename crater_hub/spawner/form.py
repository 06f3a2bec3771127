"""The spawn form: an HTML fragment for JupyterHub's spawn page, and its submitted fields back.

:func:`render` draws the offer model (:func:`crater_hub.policy.offer.offer`, the same JSON that
``GET /hub/api/crater/profiles`` answers) with ``templates/crater/spawn_form.html``; the fragment's
small inline script polls that endpoint and updates availability in place, so the form and the
API never disagree. Field names are KubeSpawner's (``profile``,
``profile-option-{profile}--{option}``), so :func:`options_from_form` yields the same
``user_options`` a REST spawn sends; validation happens later, in :func:`crater_hub.policy.workload.resolve`.
"""

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..policy.workload import NO_ACCELERATOR

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FORM_TEMPLATE = "crater/spawn_form.html"
#: ``workers``: a Ray profile's worker count (:mod:`crater_hub.ray.profile`)
FIELDS = ("image", "accelerator", "gpus", "workers")
REFRESH_SECONDS = 10


def field_name(profile, option):
    """KubeSpawner's form field name for ``option`` of ``profile``."""
    return f"profile-option-{profile}--{option}"


@lru_cache(maxsize=1)
def _environment():
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))


def _selected_profile(profiles, user_options):
    wanted = user_options.get("profile")
    if any(p["slug"] == wanted for p in profiles):
        return wanted
    default = next((p for p in profiles if p["default"]), profiles[0] if profiles else None)
    return default["slug"] if default else None


def _choices(profile, user_options, is_selected):
    """The initial image, accelerator and count of each accelerator for one profile's controls."""
    mine = user_options if is_selected else {}
    images = [i["slug"] for i in profile["images"]]
    image = mine.get("image") if mine.get("image") in images else (images[0] if images else None)
    other = mine.get("image") if mine.get("image") and mine.get("image") not in images else None
    offered = [a["slug"] for a in profile["accelerators"]]
    if profile["allow_cpu_only"]:
        offered.append(NO_ACCELERATOR)
    accelerator = mine.get("accelerator")
    if accelerator not in offered:  # resolve()'s default: the first accelerator, else none
        accelerator = offered[0] if offered else NO_ACCELERATOR
    counts = {}
    for acc in profile["accelerators"]:
        wanted = str(mine.get("gpus")) if acc["slug"] == accelerator and "gpus" in mine else None
        values = [str(c["count"]) for c in acc["counts"]]
        usable = [str(c["count"]) for c in acc["counts"] if c["available"]]
        counts[acc["slug"]] = wanted if wanted in usable else (usable or values or [None])[0]
    offered_workers = [str(n) for n in profile.get("workers") or ()]
    workers = str(mine.get("workers")) if str(mine.get("workers")) in offered_workers else \
        (offered_workers or [None])[0]
    return {"image": image, "other_image": other, "accelerator": accelerator, "gpus": counts,
            "workers": workers}


def _accelerator_summary(profiles):
    """Each accelerator type offered in any profile, once, in first-seen order."""
    seen = {}
    for profile in profiles:
        for acc in profile["accelerators"]:
            seen.setdefault(acc["slug"], acc)
    return list(seen.values())


def render(offer_model, user_options=None, datasets=(), max_datasets=8):
    """The spawn form for ``offer_model``, preselecting ``user_options`` (or the default profile).

    ``datasets``: the models of the datasets this user may mount (the multi-select)."""
    user_options = dict(user_options or {})
    profiles = offer_model["profiles"]
    selected = _selected_profile(profiles, user_options)
    choices = {p["slug"]: _choices(p, user_options, p["slug"] == selected) for p in profiles}
    summary = _accelerator_summary(profiles)
    return _environment().get_template(FORM_TEMPLATE).render(
        offer=offer_model, profiles=profiles, selected=selected, choices=choices, summary=summary,
        names={a["slug"]: a["display_name"] for a in summary}, field_name=field_name,
        no_accelerator=NO_ACCELERATOR, refresh_seconds=REFRESH_SECONDS,
        datasets=list(datasets), max_datasets=max_datasets,
        chosen_datasets=set(user_options.get("datasets") or ()),
    )


def _first(formdata, key):
    values = formdata.get(key)
    if isinstance(values, (list, tuple)):
        return values[0] if values else None
    return values


def options_from_form(formdata):
    """``user_options`` from the submitted fields (lists of strings, as JupyterHub passes them).

    Only the chosen profile's fields are read; values stay strings for :func:`crater_hub.policy.workload.resolve`.
    An image typed in the "Other image" field (KubeSpawner's ``--unlisted-choice`` field, shown
    for profiles with ``image_patterns``) replaces the chosen image.
    """
    profile = _first(formdata, "profile")
    if profile is None:
        return {}
    options = {"profile": profile}
    for option in FIELDS:
        value = _first(formdata, field_name(profile, option))
        if value is not None:
            options[option] = value
    other = _first(formdata, field_name(profile, "image") + "--unlisted-choice")
    if other and other.strip():
        options["image"] = other.strip()
    datasets = [d for d in formdata.get("datasets") or () if d]
    if datasets:
        options["datasets"] = datasets
    return options
