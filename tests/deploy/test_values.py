"""helm-values/: what `helm install` checks (the chart's schema) and what the hub then runs.

Each values file is merged over the chart's defaults as helm merges it and validated against the
chart's schema; the hub configuration is built from it as the chart's jupyterhub_config.py builds
it (``crater_hub.deploy.hub_config``), ``hub.extraConfig`` included, and handed to a real
JupyterHub app, whose spawner, routes, roles and scopes are what users get.
"""

import copy
from types import SimpleNamespace

import pytest
from jupyterhub import orm, roles, scopes
from jupyterhub.app import JupyterHub

from crater_hub import deploy, handlers
from crater_hub.config import Crater
from crater_hub.db import migrate
from crater_hub.policy import profiles, quotas
from crater_hub.queue.service import QueueService
from crater_hub.spawner import CraterSpawner

from .conftest import BASE, HELM_VALUES, MANIFEST_FILES, OVERLAYS, VALUES_FILES, rel, values_for

# What an operator installs: crater.yaml alone, or crater.yaml then one example.
DEPLOYMENTS = [(BASE,)] + [(BASE, overlay) for overlay in OVERLAYS]


def deployment_id(files):
    return " + ".join(p.name for p in files)


def test_every_yaml_file_in_helm_values_is_checked():
    checked = set(VALUES_FILES) | set(MANIFEST_FILES)
    assert sorted(map(rel, HELM_VALUES.rglob("*.yaml"))) == sorted(map(rel, checked))
    assert [p.name for p in OVERLAYS] == ["images.yaml", "kueue.yaml", "mixed-cluster.yaml", "ray.yaml",
                                         "small-lab.yaml"]
    assert sorted(p.name for p in MANIFEST_FILES) == ["jobs-namespace.yaml", "kueue-queues.yaml",
                                                      "networkpolicy.yaml", "rbac.yaml"]


# -- the chart's schema ---------------------------------------------------------------------------


def top_level_crater_key(values):
    values["crater"] = {"profiles": values["hub"]["config"]["Crater"].get("profiles", [])}


def profile_list_as_dict(values):
    values["singleuser"]["profileList"] = {"gpu": {"display_name": "GPU"}}


def profile_list_inside_singleuser_typo(values):
    values["singleuser"]["profilelist"] = []


BROKEN = {
    top_level_crater_key: "(top level): Additional properties are not allowed ('crater' was unexpected)",
    profile_list_as_dict: "singleuser.profileList: {'gpu': {'display_name': 'GPU'}} is not of type 'array'",
    profile_list_inside_singleuser_typo: "singleuser: Additional properties are not allowed ('profilelist' was unexpected)",
}


@pytest.mark.parametrize("files", [(p,) for p in VALUES_FILES] + DEPLOYMENTS[1:],
                         ids=lambda files: deployment_id(files))
@pytest.mark.parametrize("breakage", [None, *BROKEN], ids=lambda b: b.__name__ if b else "as-shipped")
def test_values_against_the_chart_schema(chart_defaults, chart_schema, files, breakage):
    """As shipped, every file (alone and over crater.yaml) passes; each broken copy fails."""
    values = values_for(chart_defaults, *files)
    if breakage is not None:
        values = copy.deepcopy(values)
        values.setdefault("hub", {}).setdefault("config", {}).setdefault("Crater", {})
        breakage(values)
    errors = deploy.schema_errors(values, chart_schema)
    assert errors == ([] if breakage is None else [BROKEN[breakage]])


def test_merge_follows_helm():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"d": 1}}
    assert deploy.merge(base, {"a": {"y": [3]}, "b": None, "c": {"e": 2}}) == \
        {"a": {"x": 1, "y": [3]}, "c": {"d": 1, "e": 2}}


def test_overlays_replace_lists_and_merge_quotas(chart_defaults):
    base = values_for(chart_defaults, BASE)["hub"]["config"]["Crater"]
    lab = values_for(chart_defaults, BASE, HELM_VALUES / "examples" / "small-lab.yaml")["hub"]["config"]["Crater"]
    assert [p["slug"] for p in base["profiles"]] == ["cpu", "gpu"]
    assert [a["slug"] for a in lab["accelerators"]] == ["l40s"]
    assert lab["quotas"] == {"default": {"servers": 2, "gpus": 2}, "admins_exempt": True,
                             "groups": {"staff": {"gpus": 4}}}


# -- the hub configuration the chart builds ---------------------------------------------------------


@pytest.mark.parametrize("files", DEPLOYMENTS, ids=deployment_id)
def test_every_crater_key_is_a_crater_setting_and_validates(chart_defaults, files):
    values = values_for(chart_defaults, *files)
    crater_values = values["hub"]["config"]["Crater"]
    assert set(crater_values) <= set(Crater.class_trait_names(config=True))
    c = deploy.hub_config(values)
    crater = Crater(config=c)  # raises TraitError, naming the key, on a bad value
    assert crater.profiles == crater_values["profiles"]
    assert crater.accelerators == crater_values["accelerators"]
    assert crater.quotas == crater_values["quotas"]
    assert deploy.crater_errors(c, values) == []


def test_the_check_names_an_unknown_crater_key_and_a_bad_value(chart_defaults):
    values = values_for(chart_defaults, BASE)
    values["hub"]["config"]["Crater"]["profile"] = []  # a typo of profiles
    values["hub"]["config"]["Crater"]["profiles"][1]["accelerators"][0]["accelerator"] = "h100"
    errors = deploy.crater_errors(deploy.hub_config(values), values)
    assert errors[0].startswith("hub.config.Crater has unknown keys ['profile']; crater_hub")
    assert errors[1] == ("hub.config.Crater.profiles[1].accelerators[0].accelerator 'h100' is not in "
                         "Crater.accelerators; known: gpu")


def test_the_check_notices_a_missing_setup_call_and_a_profile_list(chart_defaults):
    values = values_for(chart_defaults, BASE)
    values["hub"]["extraConfig"] = {}
    values["hub"]["config"]["JupyterHub"].pop("spawner_class")
    values["singleuser"]["profileList"] = [{"display_name": "old"}]
    errors = deploy.crater_errors(deploy.hub_config(values), values)
    assert [e.split(":")[0] for e in errors] == [
        "hub.extraConfig",  # setup(c) did not run
        "the hub's spawner is 'kubespawner.KubeSpawner', not CraterSpawner",
        "singleuser.profileList is set and so is hub.config.Crater.profiles",
        "hub.loadRoles.crater-admin",  # names custom:crater:admin, which setup(c) defines
    ]


@pytest.mark.parametrize("files", DEPLOYMENTS, ids=deployment_id)
def test_chart_shaped_config_keeps_singleuser_settings(chart_defaults, files):
    """CraterSpawner honours c.KubeSpawner.*: the chart's singleuser settings are all there."""
    values = values_for(chart_defaults, *files)
    c = deploy.hub_config(values)
    assert c.JupyterHub.spawner_class == "crater_hub.spawner.CraterSpawner"
    assert c.KubeSpawner.image == "quay.io/jupyter/pytorch-notebook:cuda12-latest"
    assert c.KubeSpawner.profile_list == []
    assert c.KubeSpawner.storage_capacity == "20Gi"
    assert set(c.KubeSpawner.volumes) == {"volume-{user_server}", "dshm"}
    assert c.KubeSpawner.volume_mounts["dshm"] == {"name": "dshm", "mountPath": "/dev/shm"}
    assert (c.KubeSpawner.cpu_guarantee, c.KubeSpawner.mem_limit) == (0.5, "4G")


# -- a real JupyterHub app with that configuration ------------------------------------------------


@pytest.fixture
async def hub_app(chart_defaults, request, tmp_path, monkeypatch):
    """A JupyterHub initialized (not started) with the chart-shaped config of ``request.param``."""
    monkeypatch.chdir(tmp_path)
    values = values_for(chart_defaults, *request.param)
    c = deploy.hub_config(values)
    c.JupyterHub.db_url = "sqlite://"  # what the chart sets from hub.db; in memory here
    c.JupyterHub.cookie_secret = b"\0" * 32  # the chart's from its Secret
    app = JupyterHub(config=c)
    await app.initialize([])
    app.crater_values = values
    yield app
    app.db.close()


def add_user(app, name, groups=()):
    user = orm.User(name=name)
    app.db.add(user)
    for group in groups:
        user.groups.append(orm.Group.find(app.db, group))
    app.db.commit()
    roles.assign_default_roles(app.db, user)
    return user


def crater_scopes(user):
    return sorted(s for s in scopes.get_scopes_for(user) if s.startswith("custom:crater:"))


@pytest.mark.parametrize("hub_app", DEPLOYMENTS, ids=deployment_id, indirect=True)
async def test_the_hub_runs_crater_spawner_with_crater_routes_roles_and_scopes(hub_app):
    app = hub_app
    assert app.spawner_class is CraterSpawner
    mounted = {pattern: handler for pattern, handler, *_ in app.handlers}
    for pattern, handler, *_ in handlers.default_handlers():
        assert mounted[app.base_url + "hub" + pattern] is handler
    assert crater_scopes(add_user(app, "ada")) == ["custom:crater:use"]
    assert crater_scopes(add_user(app, "grace", groups=["crater-admins"])) == \
        ["custom:crater:admin", "custom:crater:use"]
    assert orm.User.find(app.db, "admin").admin


@pytest.mark.parametrize("hub_app", DEPLOYMENTS, ids=deployment_id, indirect=True)
async def test_the_hub_has_the_profiles_and_quotas_of_the_values(hub_app):
    """What the capacity and profiles handlers build from the hub's settings."""
    crater = handlers.capacity.crater_settings(hub_app.tornado_settings)
    expected = hub_app.crater_values["hub"]["config"]["Crater"]
    assert crater.profile_list() == profiles.parse(expected["profiles"],
                                                   [a["slug"] for a in expected["accelerators"]])
    assert crater.quota_policy() == quotas.parse(expected["quotas"])
    assert [a.slug for a in crater.accelerator_catalog()] == [a["slug"] for a in expected["accelerators"]]


def test_mixed_cluster_profiles_by_group(chart_defaults):
    """The example's promise: students get T4 and MIG, researchers A100, ml-staff whole servers."""
    values = values_for(chart_defaults, BASE, HELM_VALUES / "examples" / "mixed-cluster.yaml")
    crater = Crater(config=deploy.hub_config(values))

    def offered(groups):
        return {p.slug: sorted(a.accelerator for a in p.accelerators)
                for p in profiles.visible_to(crater.profile_list(), "someone", groups)}

    assert offered(["students"]) == {"cpu": [], "small-gpu": ["a100-1g", "t4"]}
    assert offered(["researchers"])["a100"] == ["a100"] and "a100-node" not in offered(["researchers"])
    assert offered(["ml-staff"])["a100-node"] == ["a100"]
    policy = crater.quota_policy()
    assert policy.for_user(["students"]).accelerators == {"a100": 1}
    assert policy.for_user(["researchers", "ml-staff"]).gpus == 8


# -- the job queue's settings -----------------------------------------------------------------------

QUEUE_DEPLOYMENTS = [(BASE,), (BASE, HELM_VALUES / "examples" / "kueue.yaml")]
JOBS_NS = "jhub"  # the servers' namespace (the release's), where rbac.yaml lets the hub run Jobs


@pytest.mark.parametrize("files", DEPLOYMENTS, ids=deployment_id)
def test_every_crater_value_reaches_the_crater_config(chart_defaults, files):
    """hub.config.Crater, then hub.extraConfig (crater_hub.setup): each key, as written."""
    values = values_for(chart_defaults, *files)
    crater = Crater(config=deploy.hub_config(values))
    for key, value in values["hub"]["config"]["Crater"].items():
        assert getattr(crater, key) == value, key


@pytest.mark.parametrize("files", QUEUE_DEPLOYMENTS, ids=deployment_id)
def test_the_queue_settings_of_the_values(chart_defaults, files):
    values = values_for(chart_defaults, *files)
    written = values["hub"]["config"]["Crater"]
    crater = Crater(config=deploy.hub_config(values))
    assert (crater.job_queue_backend, crater.jobs_namespace, crater.job_kueue_local_queue) == \
        (written["job_queue_backend"], written["jobs_namespace"],
         written.get("job_kueue_local_queue", "crater"))
    assert crater.jobs_namespace == ""  # the servers' namespace: jobs see their owner's home
    assert crater.job_home == "auto"
    assert crater.jobs_db_url == ""  # the hub's own database
    assert [p.name for p in crater.priority_classes()] == ["high", "normal", "best-effort"]
    assert crater.job_default_runtime <= crater.job_max_runtime


@pytest.mark.parametrize("files", QUEUE_DEPLOYMENTS, ids=deployment_id)
async def test_the_queue_runs_its_jobs_where_rbac_allows(chart_defaults, files, monkeypatch):
    """On z2jh $POD_NAMESPACE is the hub's and the servers' (jhub): Jobs run there, next to the
    homes they mount, and with Kueue carry the LocalQueue of kueue-queues.yaml."""
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    crater = Crater(config=deploy.hub_config(values_for(chart_defaults, *files)))
    service = QueueService(crater, "sqlite://")
    try:
        assert service.namespace == JOBS_NS
        assert service.backend == crater.job_queue_backend
        if service.backend == "kueue":
            job = SimpleNamespace(priority="normal")
            assert service.queue_backend.job_labels(job) == {"kueue.x-k8s.io/queue-name": "crater"}
            assert service.queue_name() == "crater"
        else:
            assert service.queue_backend.job_labels(SimpleNamespace(priority="normal")) == {}
    finally:
        service.db.close()


class ReachedMigrations(Exception):
    pass


@pytest.mark.parametrize("files", QUEUE_DEPLOYMENTS, ids=deployment_id)
async def test_the_queue_starts_with_the_backend_of_the_values(chart_defaults, files, monkeypatch):
    """The queue accepts the backend each file selects: its start gets to the migrations (its
    first step, stopped there) instead of refusing the backend."""
    def stop(engine, revision="head"):
        raise ReachedMigrations

    monkeypatch.setattr(migrate, "upgrade", stop)
    crater = Crater(config=deploy.hub_config(values_for(chart_defaults, *files)))
    assert crater.job_queue_backend == ("kueue" if files[-1].name == "kueue.yaml" else "embedded")
    service = QueueService(crater, "sqlite://")
    try:
        with pytest.raises(ReachedMigrations):
            await service.start()
        service.started.exception()  # retrieved: the start failed where we stopped it
    finally:
        service.db.close()
