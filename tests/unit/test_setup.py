"""crater_hub.setup(c) adds to an operator's config without taking anything away."""

import pytest
from kubespawner import KubeSpawner
from traitlets.config import Config

import crater_hub
from crater_hub import handlers
from crater_hub.kube import client as kube_client
from crater_hub.spawner import CraterSpawner


class ScopedRoom:
    default_handlers = [(r"/crater/example", object)]
    custom_scopes = {"custom:crater:example": {"description": "ours"}}


@pytest.mark.parametrize("configured", [None, KubeSpawner, "kubespawner.KubeSpawner"])
def test_plain_or_unset_spawner_becomes_crater_spawner(configured):
    c = Config()
    if configured is not None:
        c.JupyterHub.spawner_class = configured
    crater_hub.setup(c)
    assert c.JupyterHub.spawner_class is CraterSpawner


def test_another_spawner_chosen_by_the_operator_is_kept():
    c = Config()
    c.JupyterHub.spawner_class = "simple"
    crater_hub.setup(c)
    assert c.JupyterHub.spawner_class == "simple"


def test_template_paths_are_added_after_the_operators_once():
    c = Config()
    c.JupyterHub.template_paths = ["/operator/templates"]
    crater_hub.setup(c)
    crater_hub.setup(c)
    assert c.JupyterHub.template_paths == ["/operator/templates", crater_hub.TEMPLATE_PATH]


def test_lazy_appends_by_the_operator_are_kept():
    c = Config()
    c.JupyterHub.template_paths.append("/operator/templates")
    crater_hub.setup(c)
    assert c.JupyterHub.template_paths == ["/operator/templates", crater_hub.TEMPLATE_PATH]


def test_no_rooms_leave_handlers_and_scopes_unset(monkeypatch):
    """An empty extra_handlers would still be fine, but a set one logs a deprecation warning."""
    monkeypatch.setattr(handlers, "ROOMS", ())
    c = Config()
    crater_hub.setup(c)
    assert "extra_handlers" not in c.JupyterHub and "custom_scopes" not in c.JupyterHub


def test_rooms_add_handlers_and_scopes_keeping_the_operators(monkeypatch):
    monkeypatch.setattr(handlers, "ROOMS", (ScopedRoom,))
    c = Config()
    c.JupyterHub.extra_handlers = [(r"/operator", object)]
    c.JupyterHub.custom_scopes = {"custom:crater:example": {"description": "the operator's"}}
    crater_hub.setup(c)
    crater_hub.setup(c)
    assert c.JupyterHub.extra_handlers == [(r"/operator", object), (r"/crater/example", object)]
    assert c.JupyterHub.custom_scopes == {
        "custom:crater:example": {"description": "the operator's"}
    }


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_client, "SERVICE_ACCOUNT_TOKEN", tmp_path / "token")
    monkeypatch.setattr(kube_client, "DEFAULT_KUBECONFIG", tmp_path / "kube" / "config")
    return tmp_path


def test_no_cluster_configured(no_cluster):
    assert not kube_client.cluster_configured()


def test_kubeconfig_in_environment_is_a_cluster(no_cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(no_cluster / "kc"))
    assert kube_client.cluster_configured()


def test_default_kubeconfig_is_a_cluster(no_cluster):
    (no_cluster / "kube").mkdir()
    (no_cluster / "kube" / "config").write_text("{}")
    assert kube_client.cluster_configured()


def test_service_account_in_a_pod_is_a_cluster(no_cluster, monkeypatch):
    (no_cluster / "token").write_text("t")
    assert not kube_client.cluster_configured()  # a token file alone is not a pod
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert kube_client.cluster_configured()


def test_setup_outside_a_starting_hub_starts_no_job_queue():
    """The queue starts with a hub that is loading its config in its running loop; setup(c)
    called anywhere else (here: no event loop, no hub) schedules nothing."""
    from crater_hub import hubstart
    from crater_hub.queue.starter import ROOM

    before = dict(ROOM._futures)
    crater_hub.setup(Config())
    assert ROOM._futures == before and not hubstart._pending


async def test_setup_in_a_loop_without_a_hub_app_starts_no_job_queue():
    from crater_hub import hubstart

    crater_hub.setup(Config())
    assert not hubstart._pending
