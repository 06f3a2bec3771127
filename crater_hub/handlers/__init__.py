"""The hub-side routes and scopes of every room, gathered in one place for ``crater_hub.setup``.

Each room ends its handler module with ``default_handlers`` (a list of tornado URL specs, relative
to ``{base_url}hub/``) and, when it guards them with its own scopes, ``custom_scopes`` (name ->
``{"description": ...}``, names starting with ``custom:crater:``) and optionally ``user_scopes``
(those of its scopes every user holds by default), ``server_scopes`` (those single-user servers'
API tokens ask for, held only where the user holds them) and ``admin_scopes`` (those the hub's
administrators get). Adding a room is adding its module to
``ROOMS``; ``setup`` never needs to change.
"""

from . import (
    capacity,
    dataset_pages,
    datasets,
    gpus,
    images,
    job_pages,
    jobs,
    ray,
    ray_pages,
    usage,
)

ROOMS = (capacity, gpus, job_pages, jobs, usage, dataset_pages, datasets, images, ray, ray_pages)


def default_handlers():
    """Every room's URL specs, in room order (JupyterHub matches routes in order)."""
    return [spec for room in ROOMS for spec in room.default_handlers]


def custom_scopes():
    """Every room's custom scope definitions, for ``c.JupyterHub.custom_scopes``."""
    scopes = {}
    for room in ROOMS:
        scopes.update(getattr(room, "custom_scopes", {}))
    return scopes


def user_scopes():
    """The custom scopes granted to every user (the built-in ``user`` role), in room order."""
    return list(dict.fromkeys(scope for room in ROOMS for scope in getattr(room, "user_scopes", ())))


def server_scopes():
    """The custom scopes single-user servers' tokens ask for (a room's ``server_scopes``)."""
    return list(dict.fromkeys(scope for room in ROOMS for scope in getattr(room, "server_scopes", ())))


def admin_scopes():
    """The custom scopes the hub's administrators get (a room's ``admin_scopes``)."""
    return list(dict.fromkeys(scope for room in ROOMS for scope in getattr(room, "admin_scopes", ())))
