"""setup(c) lets the notebook client work from a server, and the hub's admins reach the admin
page: what it adds to the config, keeping what the operator set."""

from jupyterhub.roles import get_default_roles
from traitlets.config import Config

import crater_hub

USE, ADMIN = "custom:crater:use", "custom:crater:admin"
DEFAULT_SERVER_SCOPES = next(r for r in get_default_roles() if r["name"] == "server")["scopes"]


def roles(c):
    return {role["name"]: role for role in c.JupyterHub.load_roles}


def test_server_tokens_ask_for_the_crater_use_scope_besides_the_defaults():
    c = Config()
    crater_hub.setup(c)
    crater_hub.setup(c)
    assert roles(c)["server"] == {"name": "server", "scopes": [*DEFAULT_SERVER_SCOPES, USE]}


def test_the_operators_server_role_and_token_scopes_are_extended_not_replaced():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "server", "scopes": ["access:servers!server", "read:users"]}]
    c.KubeSpawner.server_token_scopes = ["users:activity!user"]
    c.Spawner.server_token_scopes = lambda spawner: ["users:activity!user"]  # theirs to extend
    crater_hub.setup(c)
    assert roles(c)["server"]["scopes"] == ["access:servers!server", "read:users", USE]
    assert c.KubeSpawner.server_token_scopes == ["users:activity!user", USE]
    assert callable(c.Spawner.server_token_scopes)


def test_the_hubs_admins_get_the_crater_admin_scope():
    c = Config()
    c.Authenticator.admin_users = {"root", "admin"}
    c.JupyterHub.load_roles = [{"name": "admin", "users": ["ops"]}]
    crater_hub.setup(c)
    crater_hub.setup(c)
    admin = roles(c)["crater-admin"]
    assert (admin["scopes"], admin["users"]) == ([ADMIN], ["admin", "ops", "root"])
    assert [r["name"] for r in c.JupyterHub.load_roles].count("crater-admin") == 1


def test_no_admins_no_role_and_an_operators_crater_admin_role_is_theirs():
    c = Config()
    crater_hub.setup(c)
    assert "crater-admin" not in roles(c)

    c = Config()
    c.Authenticator.admin_users = {"admin"}
    c.JupyterHub.load_roles = [{"name": "crater-admin", "scopes": [ADMIN], "groups": ["ops"]}]
    crater_hub.setup(c)
    assert roles(c)["crater-admin"] == {"name": "crater-admin", "scopes": [ADMIN], "groups": ["ops"]}
