"""crater_hub.hubstart: a room starts once per loop and stops with the others; users' groups come
from the hub's database (JupyterHub's own ORM on SQLite), not from its in-memory users."""

import asyncio
import logging
from types import SimpleNamespace

from jupyterhub import orm

from crater_hub import hubstart


def hub_with_users(**groups):
    db = orm.new_session_factory("sqlite://")()
    made = {}
    for user, names in groups.items():
        row = orm.User(name=user)
        for name in names:
            made.setdefault(name, orm.Group(name=name))
            row.groups.append(made[name])
        db.add(row)
    db.commit()
    return SimpleNamespace(db=db, log=logging.getLogger("test-hub"))


def test_groups_are_read_from_the_hub_database():
    app = hub_with_users(ada=["ml", "staff"], bob=[])
    users = hubstart.HubUsers(app)
    assert sorted(users.groups_of("ada")) == ["ml", "staff"]
    assert users.groups_of("bob") == [] and users.groups_of("nobody") == []


async def test_a_room_starts_once_per_loop_and_stops_with_the_hub():
    app, started, stopped = hub_with_users(), [], []

    async def start(app, settings):
        started.append(settings)
        return f"service-{len(started)}"

    async def stop(service):
        stopped.append(service)

    room = hubstart.HubRoom("test room", start, stop)
    assert room.started() is None
    first, second = await asyncio.gather(room.get("s", app=app), room.get("s", app=app))
    assert first == second == "service-1" and started == ["s"] and room.started() == "service-1"
    await hubstart.stop_all()
    assert stopped == ["service-1"] and room.started() is None
    assert await room.get(app=app) == "service-2"  # a later use starts it again
    await hubstart.stop_all()
    assert stopped == ["service-1", "service-2"]
