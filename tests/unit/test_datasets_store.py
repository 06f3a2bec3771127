"""The dataset records on a real SQLite file (PostgreSQL: tests/queue/test_datasets.py under
QUEUE_DB=postgresql): migration to 0002_datasets, uniqueness per owner, what each user sees."""

import pytest

from crater_hub.datasets.store import DatasetError, DatasetStore
from crater_hub.db import migrate


@pytest.fixture
async def store(tmp_path):
    store = DatasetStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    yield store
    store.close()


async def test_records_shares_and_who_sees_what(store):
    ada = await store.create("ada", "corpus", description="text")
    assert migrate.current(store.db.engine) == migrate.head()
    assert (ada.ref, ada.space, ada.path, ada.editable) == ("ada/corpus", "users/ada", "corpus", False)
    with pytest.raises(DatasetError) as e:
        await store.create("ada", "corpus")
    assert e.value.status == 409 and "already exists" in e.value.message
    assert (await store.create("bob", "corpus")).ref == "bob/corpus"  # unique per owner only
    await store.create("root", "shared-models", kind="model", public=True)

    def refs(records):
        return [r.ref for r in records]

    assert refs(await store.visible("cy", ["nlp"])) == ["root/shared-models"]
    shared = await store.share("ada", "corpus", "group", "nlp")
    assert shared.groups == ("nlp",)
    await store.share("ada", "corpus", "group", "nlp")  # twice: one grant
    await store.share("bob", "corpus", "user", "cy")
    assert refs(await store.visible("cy", ["nlp"])) == ["ada/corpus", "bob/corpus", "root/shared-models"]
    assert refs(await store.visible("dan", [])) == ["root/shared-models"]
    assert len(await store.visible("admin", [], admin=True)) == 3

    found = await store.lookup(["ada/corpus", "zed/none", "demo"])
    assert list(found) == ["ada/corpus"]
    policy = found["ada/corpus"].policy("crater-data")
    assert policy.sub_path == "users/ada/corpus" and policy.may_use("cy", ["nlp"])
    assert not policy.may_use("dan", [])

    record, removed = await store.unshare("ada", "corpus", "group", "nlp")
    assert removed and record.groups == ()
    assert refs(await store.visible("cy", ["nlp"])) == ["bob/corpus", "root/shared-models"]
    assert await store.delete("ada", "corpus")
    assert await store.find("ada", "corpus") is None
    assert await store.create("ada", "corpus")  # the name is free again
