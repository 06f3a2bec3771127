"""Group datasets (``@group/name`` in ``groups/<group>/<name>``): the references, who may use,
edit and manage them, their records on a real SQLite file, and the group spaces mounted writable
in members' servers next to their own."""

from types import SimpleNamespace

import pytest

from crater_hub.datasets import operations
from crater_hub.datasets.choices import own_space
from crater_hub.datasets.store import DatasetError, DatasetStore
from crater_hub.policy import datasets as ds
from crater_hub.policy import workload
from crater_hub.policy.profiles import parse
from tests.unit.server_stub import plain_server

PROFILES = parse([{"slug": "cpu", "display_name": "CPU"}])
STAFF_DATA = ds.Dataset("corpus", "crater-data", "groups/ml-staff/corpus", owner="@ml-staff",
                        editable=True)
STAFF_FROZEN = ds.Dataset("frozen", "crater-data", "groups/ml-staff/frozen", owner="@ml-staff")
ADA_CORPUS = ds.Dataset("corpus", "crater-data", "users/ada/corpus", owner="ada")
AVAILABLE = {d.ref: d for d in (STAFF_DATA, STAFF_FROZEN, ADA_CORPUS)}


def resolve(datasets, user="ada", groups=(), admin=False):
    choices = ds.Choices(AVAILABLE, 4, admin)
    return workload.resolve({"datasets": datasets}, PROFILES, user, list(groups), {},
                            datasets=choices)


def test_group_references_parse_and_stay_apart_from_user_names():
    assert ds.requested(["@ml-staff/corpus", "ada/corpus"], 4) == ("@ml-staff/corpus", "ada/corpus")
    assert STAFF_DATA.ref == "@ml-staff/corpus" and STAFF_DATA.group == "ml-staff"
    assert ADA_CORPUS.group is None and ds.group_of("ada") is None
    assert ds.space_of("@ml-staff") == "groups/ml-staff" and ds.space_of("ada") == "users/ada"
    # a group named like a user owns another space: no collision with users/<name>
    assert ds.space_of("@ada") == "groups/ada" != ds.space_of("ada")
    odd = ds.group_space("ML Staff/..")
    assert odd.startswith("groups/ML-Staff--") and ".." not in odd.split("/")


@pytest.mark.parametrize("ref", ["@/corpus", "@a@b/corpus", "@ml staff/corpus", "@ml-staff/Bad"])
def test_malformed_group_references_are_400(ref):
    with pytest.raises(workload.PolicyError) as e:
        resolve([ref], groups=["ml-staff"])
    assert e.value.status == 400 and "'@group/name'" in e.value.message


def test_members_use_and_edit_group_datasets_others_get_403():
    spec = resolve(["@ml-staff/corpus", "@ml-staff/frozen", "ada/corpus"], groups=["ml-staff"])
    assert [(m.mount_path, m.read_only, m.sub_path) for m in spec.datasets] == [
        ("/datasets/@ml-staff/corpus", False, "groups/ml-staff/corpus"),  # editable: writable
        ("/datasets/frozen", True, "groups/ml-staff/frozen"),  # not editable: read-only
        ("/datasets/ada/corpus", True, "users/ada/corpus"),
    ]
    with pytest.raises(workload.PolicyError) as e:
        resolve(["@ml-staff/corpus"], user="ml-staff", groups=["nlp"])  # the user, not the group
    assert e.value.status == 403 and "'@ml-staff/corpus' does not exist or is not shared" in e.value.message
    assert not resolve(["@ml-staff/corpus"], user="bob", admin=True).datasets[0].read_only


def test_group_spaces_are_mounted_writable_next_to_the_own_space():
    crater = SimpleNamespace(datasets_volume="crater-data", datasets_own_path="/my-datasets")
    spaces = own_space(crater, "ada", ["nlp", "ml-staff"])
    assert spaces == [("crater-data", "users/ada", "/my-datasets"),
                      ("crater-data", "groups/ml-staff", "/my-datasets-groups/ml-staff"),
                      ("crater-data", "groups/nlp", "/my-datasets-groups/nlp")]
    volumes, mounts = ds.pod_volumes([], spaces)
    assert list(volumes) == ["crater-data-crater-data"]
    assert [(m["mountPath"], m["subPath"], m["readOnly"]) for m in mounts.values()] == [
        ("/my-datasets", "users/ada", False),
        ("/my-datasets-groups/ml-staff", "groups/ml-staff", False),
        ("/my-datasets-groups/nlp", "groups/nlp", False)]
    assert own_space(SimpleNamespace(datasets_volume="crater-data", datasets_own_path=""),
                     "ada", ["nlp"]) == []


@pytest.fixture
async def store(tmp_path):
    store = DatasetStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    yield store
    store.close()


CRATER = SimpleNamespace(datasets_volume="crater-data", dataset_catalog=lambda: [])
GROUPS = {"ml-staff", "nlp"}


def known(kind, name):
    return kind == "group" and name in GROUPS


async def create(store, caller, body):
    return await operations.create(store, CRATER, caller, body, known)


async def test_members_create_see_change_and_delete_group_datasets_others_get_404(store):
    ada = operations.Caller("ada", ["ml-staff"])
    cy = operations.Caller("cy", ["ml-staff"])
    bob = operations.Caller("bob", ["nlp"])
    record = await create(store, ada, {"name": "corpus", "space": "group", "group": "ml-staff",
                                       "editable": True})
    assert (record.ref, record.owner, record.space, record.path) == (
        "@ml-staff/corpus", "@ml-staff", "groups/ml-staff", "corpus")
    assert record.model()["group"] == "ml-staff" and record.model()["path"] == "groups/ml-staff/corpus"
    mine = await create(store, ada, {"name": "corpus"})  # the same name in her own space
    assert mine.ref == "ada/corpus"

    assert [r.ref for r in await store.visible("cy", ["ml-staff"])] == ["@ml-staff/corpus"]
    assert [r.ref for r in await store.visible("bob", ["nlp"])] == []
    assert (await operations.find(store, CRATER, cy, "@ml-staff", "corpus")).ref == "@ml-staff/corpus"
    with pytest.raises(DatasetError) as e:
        await operations.find(store, CRATER, bob, "@ml-staff", "corpus")
    assert e.value.status == 404
    changed = await operations.update(store, CRATER, cy, "@ml-staff", "corpus",
                                      {"description": "by cy"})
    assert changed.description == "by cy"
    with pytest.raises(DatasetError) as e:
        await operations.delete(store, CRATER, bob, "@ml-staff", "corpus", [])
    assert e.value.status == 404

    shared = await operations.share(store, CRATER, cy, "@ml-staff", "corpus",
                                    {"kind": "group", "name": "nlp"}, known)
    assert shared.groups == ("nlp",)
    assert (await operations.find(store, CRATER, bob, "@ml-staff", "corpus")).ref
    with pytest.raises(DatasetError) as e:  # shared with bob's group: he uses it, never manages
        await operations.delete(store, CRATER, bob, "@ml-staff", "corpus", [])
    assert e.value.status == 403 and "members of ml-staff" in e.value.message

    pod = {"metadata": {"name": "jupyter-cy", "annotations": {
        ds.ANNOTATION: "@ml-staff/corpus", "hub.jupyter.org/username": "cy"}},
        "status": {"phase": "Running"}}
    with pytest.raises(DatasetError) as e:
        await operations.delete(store, CRATER, ada, "@ml-staff", "corpus", [pod])
    assert e.value.status == 409 and "server (default) of cy" in e.value.message
    await operations.delete(store, CRATER, cy, "@ml-staff", "corpus", [])
    assert await store.find("@ml-staff", "corpus") is None


@pytest.mark.parametrize("caller, body, status, words", [
    (("ada", ["ml-staff"]), {"name": "x", "space": "group"}, 400, "group must be the name of"),
    (("ada", ["ml-staff"]), {"name": "x", "space": "group", "group": "a/b"}, 400, "group must be"),
    (("ada", ["ml-staff"]), {"name": "x", "space": "team"}, 400, "space must be one of user, group, public"),
    (("ada", ["ml-staff"]), {"name": "x", "group": "ml-staff"}, 400, "group goes with space 'group'"),
    (("ada", ["ml-staff"]), {"name": "x", "space": "group", "group": 7}, 400, "group must be a string"),
    (("bob", ["nlp"]), {"name": "x", "space": "group", "group": "ml-staff"}, 403, "not a member of 'ml-staff'"),
    (("root", [], True), {"name": "x", "space": "group", "group": "nope"}, 400, "group: no group 'nope'"),
    (("@ada", []), {"name": "x"}, 400, "user name starting with '@'"),
    (("ada", []), {"name": "x", "space": "public"}, 403, "only administrators"),
])
async def test_bad_group_bodies_are_refused_naming_the_field(store, caller, body, status, words):
    with pytest.raises(DatasetError) as e:
        await create(store, operations.Caller(*caller), body)
    assert e.value.status == status and words in e.value.message
    assert await store.visible("root", [], admin=True) == []  # nothing half-created


async def test_admins_create_group_datasets_for_any_group(store):
    root = operations.Caller("root", [], admin=True)
    record = await create(store, root, {"name": "weights", "space": "group", "group": "nlp",
                                        "kind": "model"})
    assert record.ref == "@nlp/weights" and record.space == "groups/nlp"


def test_a_job_shaped_from_a_members_server_gets_no_group_space():
    from crater_hub.spawner import shaping

    home = {"home": {"name": "home"}}
    spawner = plain_server(dict(home))
    baseline = shaping.snapshot(spawner)
    crater = SimpleNamespace(datasets_volume="crater-data", datasets_own_path="/my-datasets")
    shaping.add_datasets(spawner, resolve(["@ml-staff/corpus"], groups=["ml-staff"]).datasets,
                         own_space(crater, "ada", ["ml-staff"]))
    assert {m["mountPath"] for m in spawner.volume_mounts.values()} == {
        "/datasets/corpus", "/my-datasets", "/my-datasets-groups/ml-staff"}
    assert spawner.extra_annotations == {ds.ANNOTATION: "@ml-staff/corpus"}
    view = shaping.shaped(spawner, workload.WorkloadSpec("cpu"), baseline)
    assert view.volumes == home and view.volume_mounts == {} and view.extra_annotations == {}
