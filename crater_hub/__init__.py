"""crater_hub: GPU cluster features inside JupyterHub. ``setup(c)`` is the one call to enable it.

Importing this package (and calling ``setup``) needs no cluster: the Kubernetes client is only
built when a spawner or a room first talks to the API.
"""

from pathlib import Path

# Nothing outside the standard library is imported here: ``crater_hub.client`` runs in
# single-user images, which need not have the hub's dependencies.

TEMPLATE_PATH = str(Path(__file__).with_name("templates"))

# The names of plain KubeSpawner, which z2jh's own jupyterhub_config.py sets before
# ``hub.extraConfig`` runs: setup() replaces it (or an unset spawner_class) with CraterSpawner.
KUBESPAWNER_NAMES = {"kubespawner.KubeSpawner", "kubespawner.spawner.KubeSpawner"}


def setup(c):
    """Wire crater_hub into the JupyterHub config ``c`` (call it last, e.g. from hub.extraConfig).

    - ``spawner_class`` becomes CraterSpawner when unset or plain KubeSpawner; any other class
      the operator chose (their own CraterSpawner subclass, say) is kept.
    - our template directory is added after the operator's ``template_paths``, so their
      templates still win.
    - every room's handlers and custom scopes (``crater_hub.handlers``) are added to what the
      operator configured; an operator's definition of a scope of the same name is kept.
    - every user is granted the rooms' ``user_scopes`` (``custom:crater:use``) through the
      built-in ``user`` role; see :func:`_grant_to_users`.
    - single-user servers' ``$JUPYTERHUB_API_TOKEN`` gets the rooms' ``server_scopes``, so the
      notebook client (``crater_hub.client``) works from a server; see :func:`_grant_to_servers`.
    - the hub's administrators (``Authenticator.admin_users``) get the rooms' ``admin_scopes``
      (``custom:crater:admin``) through a ``crater-admin`` role; see :func:`_grant_to_admins`.

    Calling it twice changes nothing the second time.
    """
    from .handlers import admin_scopes, custom_scopes, default_handlers, server_scopes, user_scopes
    from .spawner import CraterSpawner

    hub = c.JupyterHub
    if _is_plain_kubespawner(hub.get("spawner_class")):
        hub.spawner_class = CraterSpawner
    _extend_list(hub, "template_paths", [TEMPLATE_PATH])
    _extend_list(hub, "extra_handlers", default_handlers())
    _update_dict(hub, "custom_scopes", custom_scopes())
    _grant_to_users(hub, user_scopes())
    _grant_to_servers(c, server_scopes())
    _grant_to_admins(c, admin_scopes())
    _start_queue_with_hub(c)
    _seed_datasets_with_hub(c)
    _start_accounting_with_hub(c)
    _start_ray_with_hub(c)


def _seed_datasets_with_hub(c):
    """Create the data volume's claim and the demo dataset once the hub has started (when ``c``
    is being loaded by a starting hub); see :mod:`crater_hub.datasets.starter`."""
    from .datasets.starter import schedule

    schedule(c)


def _start_accounting_with_hub(c):
    """Start GPU accounting once the hub has started, as the queue starts
    (:mod:`crater_hub.gpus.starter`)."""
    from .gpus.starter import schedule_start

    schedule_start(c)


def _start_ray_with_hub(c):
    """Start the Ray clusters' watch cache and idle reaper once the hub has started
    (:mod:`crater_hub.ray.starter`)."""
    from .ray.starter import schedule_start

    schedule_start(c)


def _start_queue_with_hub(c):
    """Start the job queue once the hub has started, when ``c`` is being loaded by a starting
    hub (see :mod:`crater_hub.hubstart` for why this is the hook); otherwise nothing."""
    from .queue.starter import schedule_start

    schedule_start(c)


def _is_plain_kubespawner(spawner_class):
    """True when nothing is configured or exactly KubeSpawner is, as a class or by name."""
    from kubespawner import KubeSpawner

    return spawner_class in (None, KubeSpawner) or spawner_class in KUBESPAWNER_NAMES


def _current(section, key, empty):
    """The value the operator configured for ``key``, resolving ``.append()``-style lazy values."""
    from traitlets.config import LazyConfigValue

    value = section.get(key, empty)
    return value.get_value(empty) if isinstance(value, LazyConfigValue) else value


def _extend_list(section, key, items):
    """Append ``items`` missing from the operator's list; leave the key unset when none are."""
    current = list(_current(section, key, []))
    missing = [item for item in items if item not in current]
    if missing:
        section[key] = current + missing


def _update_dict(section, key, items):
    """Add ``items`` to the operator's dict without replacing their entries of the same name."""
    current = dict(_current(section, key, {}))
    missing = {name: value for name, value in items.items() if name not in current}
    if missing:
        section[key] = {**current, **missing}


def _grant_to_users(hub, scopes):
    """Add ``scopes`` to the built-in ``user`` role, keeping whatever the operator gave it.

    - the operator redefines the ``user`` role in ``load_roles``: our scopes are appended to its
      ``scopes`` (``["self"]``, the default, when the entry names none);
    - otherwise, on JupyterHub 6 (``extra_user_scopes`` exists): added to ``extra_user_scopes``,
      which JupyterHub would ignore if we redefined the role ourselves;
    - otherwise (JupyterHub 5): a ``user`` role entry ``["self", *scopes]`` is added to
      ``load_roles`` (a role entry replaces the default role's scopes, hence ``self``).
    """
    if not scopes:
        return
    from jupyterhub.app import JupyterHub

    roles = [dict(role) for role in _current(hub, "load_roles", [])]
    user_role = next((role for role in roles if role.get("name") == "user"), None)
    if user_role is None and JupyterHub.class_traits().get("extra_user_scopes") is not None:
        current = set(_current(hub, "extra_user_scopes", set()))
        if not set(scopes) <= current:
            hub.extra_user_scopes = current | set(scopes)
        return
    if user_role is None:
        user_role = {"name": "user", "scopes": ["self"]}
        roles.append(user_role)
    granted = list(user_role.get("scopes", ["self"]))
    missing = [scope for scope in scopes if scope not in granted]
    if missing or "scopes" not in user_role:
        user_role["scopes"] = granted + missing
        hub.load_roles = roles


SERVER_TOKEN_CLASSES = ("Spawner", "KubeSpawner", "CraterSpawner")
ADMIN_ROLE = "crater-admin"


def _grant_to_servers(c, scopes):
    """Add ``scopes`` to what single-user servers' API tokens ask for.

    A server's token gets the scopes of the built-in ``server`` role, or
    ``Spawner.server_token_scopes`` where the operator set it, always limited to what the user
    holds. Ours are appended to the operator's list (on ``Spawner``, ``KubeSpawner`` or
    ``CraterSpawner``; a callable is theirs to extend) and to the ``server`` role, redefined
    with JupyterHub's default scopes when the operator did not define it.
    """
    if not scopes:
        return
    from jupyterhub.roles import get_default_roles

    for name in SERVER_TOKEN_CLASSES:
        if name not in c:
            continue
        current = _current(c[name], "server_token_scopes", None)
        if isinstance(current, (list, tuple)):
            missing = [scope for scope in scopes if scope not in current]
            if missing:
                c[name].server_token_scopes = [*current, *missing]
    hub = c.JupyterHub
    roles = [dict(role) for role in _current(hub, "load_roles", [])]
    server_role = next((role for role in roles if role.get("name") == "server"), None)
    if server_role is None:
        default = next(role for role in get_default_roles() if role["name"] == "server")
        server_role = {"name": "server", "scopes": list(default["scopes"])}
        roles.append(server_role)
    granted = list(server_role.get("scopes", []))
    missing = [scope for scope in scopes if scope not in granted]
    if missing:
        server_role["scopes"] = granted + missing
        hub.load_roles = roles


def _grant_to_admins(c, scopes):
    """Give the administrators the operator configured a ``crater-admin`` role with ``scopes``.

    JupyterHub's ``admin`` role cannot be extended and holds no custom scopes; its members by
    configuration are ``Authenticator.admin_users`` and the ``users`` of an ``admin`` role entry.
    Administrators made later, in the admin page, are given the role the same way as anyone else
    (``load_roles``). An operator's own ``crater-admin`` role is kept as it is.
    """
    hub = c.JupyterHub
    roles = [dict(role) for role in _current(hub, "load_roles", [])]
    if not scopes or any(role.get("name") == ADMIN_ROLE for role in roles):
        return
    admins = set(_current(c.Authenticator, "admin_users", set()))
    for role in roles:
        if role.get("name") == "admin":
            admins.update(role.get("users", ()))
    if not admins:
        return
    roles.append({"name": ADMIN_ROLE, "description": "Administer crater_hub (granted to the hub's admins)",
                  "scopes": list(scopes), "users": sorted(admins)})
    hub.load_roles = roles
