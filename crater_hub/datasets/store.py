"""The dataset records, read and written on the database worker thread (never on the loop).

One :class:`DatasetStore` per hub (:func:`shared_store`): the same database as the job queue
(``Crater.jobs_db_url``, else the hub's), migrated at first use (alembic, ``0002_datasets``).
"""

from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from ..db import migrate
from ..db.models import Dataset, DatasetShare, isotime, utcnow
from ..db.session import Database
from ..policy import datasets as policy
from ..policy.access import Access

SHARE_KINDS = ("user", "group")
PUBLIC = "public"


class DatasetError(Exception):
    """A dataset operation refused: ``status`` 400, 403, 404 or 409; ``message`` for the user."""

    def __init__(self, message, status=400, where=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.where = where  # for a refused delete: where it is mounted


@dataclass(frozen=True)
class Record:
    """A detached, plain copy of one dataset row and its shares."""

    id: int
    owner: str
    name: str
    description: str
    kind: str
    space: str
    path: str
    editable: bool
    size: str | None
    created: object
    updated: object
    users: tuple
    groups: tuple

    @property
    def ref(self):
        return f"{self.owner}/{self.name}"

    @property
    def public(self):
        return self.space == PUBLIC

    @property
    def group(self):
        """The owning group of a group dataset (owner ``@<group>``), else None."""
        return policy.group_of(self.owner)

    def policy(self, claim):
        return policy.Dataset(
            name=self.name, claim=claim, sub_path=f"{self.space}/{self.path}", owner=self.owner,
            kind=self.kind, description=self.description, editable=self.editable,
            access=Access(frozenset(self.groups), frozenset(self.users)), public=self.public,
            size=self.size)

    def model(self):
        return {"ref": self.ref, "owner": self.owner, "name": self.name, "catalog": False,
                "group": self.group,
                "description": self.description, "kind": self.kind, "space": self.space,
                "path": f"{self.space}/{self.path}", "editable": self.editable, "size": self.size,
                "public": self.public, "created": isotime(self.created),
                "updated": isotime(self.updated),
                "shares": {"users": list(self.users), "groups": list(self.groups)}}


def _record(row):
    return Record(row.id, row.owner, row.name, row.description or "", row.kind, row.space, row.path,
                  row.editable, row.size, row.created, row.updated,
                  tuple(sorted(s.name for s in row.shares if s.kind == "user")),
                  tuple(sorted(s.name for s in row.shares if s.kind == "group")))


class DatasetStore:
    def __init__(self, url):
        self.db = Database(url)
        self._migrated = False

    async def _ready(self):
        if not self._migrated:
            await self.db.call(migrate.upgrade, self.db.engine)
            self._migrated = True

    async def run(self, fn, *args):
        await self._ready()
        return await self.db.run(fn, *args)

    # -- reads ---------------------------------------------------------------------------------

    async def find(self, owner, name):
        def read(session):
            row = session.scalars(select(Dataset).where(
                Dataset.owner == owner, Dataset.name == name)).first()
            return None if row is None else _record(row)
        return await self.run(read)

    async def lookup(self, refs):
        """``owner/name`` -> :class:`Record` for the references that exist (one query)."""
        pairs = [tuple(ref.split("/", 1)) for ref in refs if "/" in ref]
        if not pairs:
            return {}

        def read(session):
            rows = session.scalars(select(Dataset).where(or_(
                *(and_(Dataset.owner == o, Dataset.name == n) for o, n in pairs))))
            return {f"{r.owner}/{r.name}": _record(r) for r in rows}
        return await self.run(read)

    async def visible(self, user, groups, admin=False):
        """The records ``user`` may see: their own, their groups' (owner ``@<group>``), shared
        with them or their groups, public; every record for an administrator."""
        def read(session):
            query = select(Dataset).order_by(Dataset.owner, Dataset.name)
            if not admin:
                shared = select(DatasetShare.dataset_id).where(or_(
                    and_(DatasetShare.kind == "user", DatasetShare.name == user),
                    and_(DatasetShare.kind == "group", DatasetShare.name.in_(list(groups) or [""]))))
                owners = [user, *(policy.group_owner(g) for g in groups)]
                query = query.where(or_(Dataset.owner.in_(owners), Dataset.space == PUBLIC,
                                        Dataset.id.in_(shared)))
            return [_record(r) for r in session.scalars(query)]
        return await self.run(read)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, owner, name, *, description="", kind="dataset", editable=False,
                     public=False):
        def write(session):
            now = utcnow()
            row = Dataset(owner=owner, name=name, description=description, kind=kind,
                          space=PUBLIC if public else policy.space_of(owner),
                          path=name, editable=editable, created=now, updated=now)
            session.add(row)
            session.flush()
            return _record(row)
        try:
            return await self.run(write)
        except IntegrityError:
            raise DatasetError(f"dataset {owner}/{name} already exists", 409) from None

    async def update(self, owner, name, **values):
        def write(session):
            row = session.scalars(select(Dataset).where(
                Dataset.owner == owner, Dataset.name == name)).first()
            if row is None:
                return None
            for key, value in values.items():
                setattr(row, key, value)
            row.updated = utcnow()
            session.flush()
            return _record(row)
        return await self.run(write)

    async def share(self, owner, name, kind, grantee):
        def write(session):
            row = session.scalars(select(Dataset).where(
                Dataset.owner == owner, Dataset.name == name)).first()
            if row is None:
                return None
            if not any(s.kind == kind and s.name == grantee for s in row.shares):
                row.shares.append(DatasetShare(kind=kind, name=grantee, created=utcnow()))
                row.updated = utcnow()
            session.flush()
            return _record(row)
        return await self.run(write)

    async def unshare(self, owner, name, kind, grantee):
        def write(session):
            row = session.scalars(select(Dataset).where(
                Dataset.owner == owner, Dataset.name == name)).first()
            if row is None:
                return None, False
            match = [s for s in row.shares if s.kind == kind and s.name == grantee]
            for share in match:
                row.shares.remove(share)
            if match:
                row.updated = utcnow()
            session.flush()
            return _record(row), bool(match)
        return await self.run(write)

    async def delete(self, owner, name):
        def write(session):
            row = session.scalars(select(Dataset).where(
                Dataset.owner == owner, Dataset.name == name)).first()
            if row is None:
                return False
            session.delete(row)
            return True
        return await self.run(write)

    def close(self):
        self.db.close()


_stores = {}  # database URL -> DatasetStore


def database_url(crater):
    """The records' database: ``Crater.jobs_db_url``, else the running hub's ``db_url``."""
    if crater.jobs_db_url:
        return crater.jobs_db_url
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        raise RuntimeError("crater datasets need Crater.jobs_db_url outside a running hub")
    return JupyterHub.instance().db_url


def shared_store(crater, url=None):
    """The one store of this process for ``crater``'s database."""
    url = url or database_url(crater)
    if url not in _stores:
        _stores[url] = DatasetStore(url)
    return _stores[url]
