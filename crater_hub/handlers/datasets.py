"""REST of datasets: ``/hub/api/crater/datasets`` (list, create), ``/datasets/{owner}/{name}``
(get, change, delete; ``{owner}`` is ``@<group>`` for a group's dataset) and ``.../shares``
(share, and ``/shares/{kind}/{name}`` to unshare).

Thin: parse, authorize (``custom:crater:use``; ``custom:crater:admin`` sees and manages all and
may publish), one call to :mod:`crater_hub.datasets.operations`, JSON out. Where each dataset is
mounted comes from the shared pod watch cache.
"""

from jupyterhub import orm
from jupyterhub.user import User
from tornado import web

from ..datasets import operations
from ..datasets.choices import usable
from ..datasets.store import DatasetError, shared_store
from ..datasets.usage import mounted
from .capacity import ADMIN, USE, CraterAPIHandler, loaded_inventory


class DatasetsBase(CraterAPIHandler):
    def caller(self):
        user = self.current_user
        if not isinstance(user, User):
            if self.has_scope(ADMIN):
                return operations.Caller("", (), True)
            raise web.HTTPError(403, "datasets belong to users; this token belongs to a service")
        return operations.Caller(user.name, [g.name for g in user.groups],
                                 self.has_scope(ADMIN))

    @property
    def store(self):
        return shared_store(self.crater)

    async def pods(self):
        inventory = await loaded_inventory(self.crater)
        return list(inventory.pod_cache.objects.values())

    async def call(self, fn, *args):
        try:
            return await fn(self.store, self.crater, *args)
        except DatasetError as e:
            self.set_status(e.status)
            self.write({"status": e.status, "message": e.message,
                        **({"mounted": e.where} if e.where else {})})
            raise web.Finish() from None

    def known(self, kind, name):
        """Whether the hub has this user or group (a share or a group dataset naming none is a 400)."""
        cls = orm.User if kind == "user" else orm.Group
        return cls.find(self.db, name) is not None

    async def with_usage(self, models):
        where = mounted(await self.pods())
        for model in models:
            model["mounted"] = where.get(model["ref"], [])
        return models


class DatasetListAPIHandler(DatasetsBase):
    async def get(self):
        self.require(USE)
        caller = self.caller()
        everyone = self.get_argument("all", "") in ("1", "true", "yes")
        if everyone and not caller.admin:
            raise web.HTTPError(403, f"all=1 requires the {ADMIN} scope")
        models = await usable(self.crater, caller.name, caller.groups, caller.admin,
                              everything=everyone)
        self.write({"datasets": await self.with_usage(models),
                    "own_path": self.crater.datasets_own_path if self.crater.datasets_volume else None,
                    "max_per_request": self.crater.datasets_max_per_request})

    async def post(self):
        self.require(USE)
        record = await self.call(operations.create, self.caller(), self.get_json_body(),
                                 self.known)
        self.set_status(201)
        self.write(record.model())


class DatasetAPIHandler(DatasetsBase):
    async def get(self, owner, name):
        self.require(USE)
        record = await self.call(operations.find, self.caller(), owner, name)
        self.write((await self.with_usage([record.model()]))[0])

    async def patch(self, owner, name):
        self.require(USE)
        record = await self.call(operations.update, self.caller(), owner, name,
                                 self.get_json_body())
        self.write(record.model())

    async def delete(self, owner, name):
        self.require(USE)
        await self.call(operations.delete, self.caller(), owner, name, await self.pods())
        self.set_status(204)


class DatasetSharesAPIHandler(DatasetsBase):
    async def get(self, owner, name):
        self.require(USE)
        record = await self.call(operations.find, self.caller(), owner, name)
        self.write(record.model()["shares"])

    async def post(self, owner, name):
        self.require(USE)
        record = await self.call(operations.share, self.caller(), owner, name,
                                 self.get_json_body(), self.known)
        self.set_status(201)
        self.write(record.model())


class DatasetShareAPIHandler(DatasetsBase):
    async def delete(self, owner, name, kind, grantee):
        self.require(USE)
        record = await self.call(operations.unshare, self.caller(), owner, name, kind, grantee)
        self.write(record.model())


OWNER_NAME = r"([^/]+)/([a-z0-9][-a-z0-9]*)"
default_handlers = [
    (r"/api/crater/datasets/?", DatasetListAPIHandler),
    (rf"/api/crater/datasets/{OWNER_NAME}/?", DatasetAPIHandler),
    (rf"/api/crater/datasets/{OWNER_NAME}/shares/?", DatasetSharesAPIHandler),
    (rf"/api/crater/datasets/{OWNER_NAME}/shares/(user|group)/([^/]+)/?", DatasetShareAPIHandler),
]
