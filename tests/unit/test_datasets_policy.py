"""Datasets in the one policy, as data: references, access, mount paths, read-only, the pod
entries next to the home (servers and jobs), the catalog's configuration, the form's field."""

from types import SimpleNamespace

import pytest
from traitlets import TraitError

from crater_hub.config import Crater
from crater_hub.policy import datasets as ds
from crater_hub.policy import workload
from crater_hub.policy.access import Access
from crater_hub.policy.profiles import parse
from crater_hub.queue import manifest
from crater_hub.spawner import form, shaping
from tests.unit.server_stub import plain_server

PROFILES = parse([{"slug": "cpu", "display_name": "CPU"}])
DEMO = ds.Dataset("demo", "crater-data", "public/demo")
STAFF_ONLY = ds.Dataset("weights", "models", "llama", kind="model", access=Access(frozenset({"staff"})))
ADA_CORPUS = ds.Dataset("corpus", "crater-data", "users/ada/corpus", owner="ada", editable=True,
                        access=Access(frozenset({"nlp"})))
BOB_CORPUS = ds.Dataset("corpus", "crater-data", "users/bob/corpus", owner="bob")
AVAILABLE = {d.ref: d for d in (DEMO, STAFF_ONLY, ADA_CORPUS, BOB_CORPUS)}


def resolve(datasets, user="ada", groups=(), admin=False, max_n=4):
    choices = ds.Choices(AVAILABLE, max_n, admin)
    return workload.resolve({"datasets": datasets}, PROFILES, user, list(groups), {},
                            datasets=choices)


def test_mounts_are_read_only_subpaths_at_datasets_name_unless_editable_by_this_user():
    spec = resolve(["demo", "ada/corpus"])
    assert [m.model() for m in spec.datasets] == [
        {"ref": "demo", "claim": "crater-data", "sub_path": "public/demo",
         "mount_path": "/datasets/demo", "read_only": True},
        {"ref": "ada/corpus", "claim": "crater-data", "sub_path": "users/ada/corpus",
         "mount_path": "/datasets/corpus", "read_only": False},  # editable, and hers
    ]
    member = resolve(["ada/corpus"], user="cy", groups=["nlp"])
    assert member.datasets[0].read_only  # editable by its owner only
    assert spec.model()["datasets"] == ["demo", "ada/corpus"]


def test_two_datasets_of_one_name_mount_under_their_owners():
    spec = resolve(["ada/corpus", "bob/corpus"], user="ada", admin=True)
    assert [m.mount_path for m in spec.datasets] == ["/datasets/ada/corpus", "/datasets/bob/corpus"]


@pytest.mark.parametrize("datasets, user, groups, status, words", [
    (["bob/corpus"], "ada", [], 403, "'bob/corpus' does not exist or is not shared"),
    (["weights"], "ada", ["nlp"], 403, "'weights' does not exist or is not shared"),
    (["nope"], "ada", [], 403, "'nope' does not exist"),
    (["../etc"], "ada", [], 400, "not a dataset reference"),
    (["ada/../../x"], "ada", [], 400, "not a dataset reference"),
    (["/etc/passwd"], "ada", [], 400, "not a dataset reference"),
    (["a/b/c"], "ada", [], 400, "not a dataset reference"),
    ([1], "ada", [], 400, "must be a list of dataset references"),
    ({"demo": 1}, "ada", [], 400, "must be a list of dataset references"),
    (["demo"] * 5, "ada", [], 400, "at most 4"),
])
def test_refusals_name_the_dataset_and_what_is_allowed(datasets, user, groups, status, words):
    with pytest.raises(workload.PolicyError) as e:
        resolve(datasets, user, groups)
    assert e.value.status == status and words in e.value.message


def test_members_and_admins_may_use_what_others_may_not():
    assert resolve(["weights"], groups=["staff"]).datasets[0].ref == "weights"
    assert resolve(["bob/corpus"], admin=True).datasets[0].ref == "bob/corpus"
    assert ds.Dataset("x", "c", owner="bob", public=True).may_use("ada", [])
    assert not ds.Dataset("x", "c", owner="bob").may_use("ada", [])  # shared with nobody


def test_a_request_with_datasets_on_a_hub_without_them_is_refused():
    with pytest.raises(workload.PolicyError, match="not configured"):
        workload.resolve({"datasets": ["demo"]}, PROFILES, "ada", [], {})
    assert workload.resolve({"datasets": []}, PROFILES, "ada", [], {}).datasets == ()


def test_server_pods_get_dataset_entries_next_to_the_home_and_lose_them_on_the_next_spawn():
    home = {"home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    spawner = SimpleNamespace(volumes=dict(home), volume_mounts={"home": {"name": "home", "mountPath": "/home/jovyan"}},
                              extra_annotations={"team": "a"})
    mounts = resolve(["demo"]).datasets
    shaping.add_datasets(spawner, mounts, ("crater-data", "users/ada", "/my-datasets"))
    assert spawner.volumes["home"] == home["home"]
    assert spawner.volumes["crater-data-crater-data"] == {
        "name": "crater-data-crater-data", "persistentVolumeClaim": {"claimName": "crater-data"}}
    assert sorted(m["mountPath"] for m in spawner.volume_mounts.values()) == [
        "/datasets/demo", "/home/jovyan", "/my-datasets"]
    demo = next(m for m in spawner.volume_mounts.values() if m["mountPath"] == "/datasets/demo")
    assert demo == {"name": "crater-data-crater-data", "mountPath": "/datasets/demo",
                    "readOnly": True, "subPath": "public/demo"}
    own = next(m for m in spawner.volume_mounts.values() if m["mountPath"] == "/my-datasets")
    assert own["readOnly"] is False and own["subPath"] == "users/ada"
    assert spawner.extra_annotations == {"team": "a", ds.ANNOTATION: "demo"}

    shaping.add_datasets(spawner, (), None)  # the next spawn, without datasets
    assert spawner.volumes == home and list(spawner.volume_mounts) == ["home"]
    assert spawner.extra_annotations == {"team": "a"}


def test_a_list_of_volumes_is_appended_to_never_replaced():
    spawner = SimpleNamespace(volumes=[{"name": "home"}], volume_mounts=[{"name": "home", "mountPath": "/h"}],
                              extra_annotations={})
    shaping.add_datasets(spawner, resolve(["demo", "ada/corpus"]).datasets)
    assert [v["name"] for v in spawner.volumes] == ["home", "crater-data-crater-data"]
    assert [m["mountPath"] for m in spawner.volume_mounts] == ["/h", "/datasets/demo", "/datasets/corpus"]


def test_job_pods_mount_the_recorded_datasets_and_are_annotated():
    shape = {"datasets": [m.model() for m in resolve(["demo"]).datasets],
             "pod": {"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-ada"}}],
                     "volume_mounts": [{"name": "home", "mountPath": "/home/jovyan"}]}}
    job = SimpleNamespace(id=3, attempt=0, owner="ada", name="n", image="img", command=["true"],
                          env={}, cpu=None, cpu_limit=None, memory=None, memory_limit=None, gpus=0,
                          max_runtime=60, shape=shape)
    body = manifest.build(job, "jhub", 60)
    pod = body["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["home", "crater-data-crater-data"]
    assert pod["containers"][0]["volumeMounts"][1] == {
        "name": "crater-data-crater-data", "mountPath": "/datasets/demo", "readOnly": True,
        "subPath": "public/demo"}
    assert body["spec"]["template"]["metadata"]["annotations"][ds.ANNOTATION] == "demo"


def test_the_form_sends_the_multi_select_as_a_list():
    options = form.options_from_form({"profile": ["cpu"], "datasets": ["demo", "ada/corpus"]})
    assert options == {"profile": "cpu", "datasets": ["demo", "ada/corpus"]}
    assert "datasets" not in form.options_from_form({"profile": ["cpu"]})


@pytest.mark.parametrize("settings, words", [
    ({"datasets_catalog": [{"name": "x", "sub_path": "../up"}]}, "sub_path must be a relative path"),
    ({"datasets_catalog": [{"name": "x", "sub_path": "/abs"}]}, "sub_path must be a relative path"),
    ({"datasets_catalog": [{"name": "Bad"}]}, "name must be lowercase"),
    ({"datasets_catalog": [{"name": "x", "kind": "table"}]}, "kind must be one of dataset, model"),
    ({"datasets_catalog": [{"name": "x", "mount": "/y"}]}, "unknown keys ['mount']"),
    ({"datasets_catalog": [{"name": "x"}, {"name": "x"}]}, "used twice"),
    ({"datasets_volume": "Not_A_Claim"}, "PersistentVolumeClaim name"),
    ({"datasets_own_path": "relative"}, "absolute path outside /datasets"),
    ({"datasets_own_path": "/datasets/mine"}, "absolute path outside /datasets"),
    ({"datasets_max_per_request": 100}, "from 0 to 64"),
    ({"datasets_volume_create": {"size": "1Gi"}}, "unknown keys ['size']"),
])
def test_bad_dataset_settings_fail_naming_the_key(settings, words):
    with pytest.raises(TraitError) as e:
        Crater(**settings)
    assert words in str(e.value)


def test_the_catalog_defaults_to_the_data_volume_and_user_spaces_are_safe_paths():
    crater = Crater(datasets_volume="crater-data",
                    datasets_catalog=[{"name": "demo", "sub_path": "public/demo/"}])
    assert crater.dataset_catalog()[0] == ds.Dataset("demo", "crater-data", "public/demo")
    assert ds.user_space("ada") == "users/ada"
    odd = ds.user_space("../Ada Lovelace@x")
    assert odd.startswith("users/") and ".." not in odd and " " not in odd and odd.count("/") == 1


def test_a_job_shaped_from_a_server_with_datasets_gets_the_configured_volumes_only():
    home = {"home": {"name": "home"}}
    spawner = plain_server(dict(home))
    baseline = shaping.snapshot(spawner)
    shaping.add_datasets(spawner, resolve(["demo"]).datasets, ("crater-data", "users/ada", "/m"))
    assert "crater-data-crater-data" in spawner.volumes  # the running server's
    view = shaping.shaped(spawner, workload.WorkloadSpec("cpu"), baseline)
    assert view.volumes == home and view.volume_mounts == {} and view.extra_annotations == {}
