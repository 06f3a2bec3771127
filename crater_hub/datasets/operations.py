"""What a user (or an administrator) does to datasets: create, describe, share, unshare, delete.

Domain code, no tornado: every refusal is a :class:`~.store.DatasetError` whose message names
the field and what is allowed; others' datasets that are not shared with the caller are 404,
as if they did not exist.

Creating a dataset makes its record; its folder (``users/<owner>/<name>`` of the data volume)
is made by the kubelet the first time it is mounted (a missing ``subPath`` directory is created
on the volume, on a real kubelet as on localkube), and the owner fills it from their server,
where their whole space is mounted writable (``Crater.datasets_own_path``). The hub itself never
touches the volume: on a real cluster it has no access to it, and starting a pod per create
would cost seconds and leave half-made folders when it fails.
"""

from ..policy import datasets as policy
from .store import SHARE_KINDS, DatasetError
from .usage import mounted

CREATE_FIELDS = {"name": str, "description": str, "kind": str, "editable": bool, "public": bool}
PATCH_FIELDS = {"description": str, "editable": bool}
MAX_DESCRIPTION = 2000


class Caller:
    """Who asks: name, groups, whether they hold ``custom:crater:admin``."""

    def __init__(self, name, groups=(), admin=False):
        self.name, self.groups, self.admin = name, list(groups), admin


def _check_body(body, fields, what):
    if not isinstance(body, dict):
        raise DatasetError(f"the body of {what} must be a JSON object with: {', '.join(fields)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise DatasetError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                           f"{', '.join(fields)}")
    for key, kind in fields.items():
        if key in body and not isinstance(body[key], kind):
            raise DatasetError(f"{key} must be a {'boolean' if kind is bool else 'string'}, "
                               f"got {body[key]!r}")
    if len(body.get("description", "")) > MAX_DESCRIPTION:
        raise DatasetError(f"description must be at most {MAX_DESCRIPTION} characters")


def _refused(e):
    return DatasetError(e.message, e.status)


async def create(store, crater, caller, body):
    if not crater.datasets_volume:
        raise DatasetError("datasets cannot be created here: no data volume is configured "
                           "(Crater.datasets_volume)", 409)
    _check_body(body, CREATE_FIELDS, "a new dataset")
    try:
        name = policy.check_name(body.get("name"), "name")
    except policy.DatasetRefused as e:
        raise _refused(e) from None
    kind = body.get("kind", "dataset")
    if kind not in policy.KINDS:
        raise DatasetError(f"kind must be one of {', '.join(policy.KINDS)}, got {kind!r}")
    if body.get("public") and not caller.admin:
        raise DatasetError("public: only administrators may publish datasets to public/", 403)
    if any(d.name == name for d in crater.dataset_catalog()):
        raise DatasetError(f"name {name!r} is taken by a catalog dataset; choose another", 409)
    return await store.create(caller.name, name, description=body.get("description", ""),
                              kind=kind, editable=bool(body.get("editable", False)),
                              public=bool(body.get("public", False)))


async def find(store, crater, caller, owner, name):
    """The record if ``caller`` may see it, else a 404."""
    record = await store.find(owner, name)
    if record is None or not (caller.admin or record.policy(crater.datasets_volume).may_use(
            caller.name, caller.groups)):
        raise DatasetError(f"No dataset {owner}/{name}", 404)
    return record


async def _own(store, crater, caller, owner, name):
    record = await find(store, crater, caller, owner, name)
    if record.owner != caller.name and not caller.admin:
        raise DatasetError(f"only {owner} (or an administrator) may change {owner}/{name}", 403)
    return record


async def update(store, crater, caller, owner, name, body):
    _check_body(body, PATCH_FIELDS, "a dataset change")
    await _own(store, crater, caller, owner, name)
    return await store.update(owner, name, **body)


def _grant(body):
    if not isinstance(body, dict) or set(body) != {"kind", "name"}:
        raise DatasetError("a share is {\"kind\": \"user\" or \"group\", \"name\": ...}")
    if body["kind"] not in SHARE_KINDS:
        raise DatasetError(f"kind must be one of {', '.join(SHARE_KINDS)}, got {body['kind']!r}")
    grantee = body["name"]
    if not isinstance(grantee, str) or not grantee.strip() or len(grantee) > 255 or "," in grantee:
        raise DatasetError(f"name must be a {body['kind']} name (at most 255 characters), "
                           f"got {grantee!r}")
    return body["kind"], grantee.strip()


async def share(store, crater, caller, owner, name, body, known):
    """Share with a user or group; ``known(kind, name)`` says whether the hub has it (400 if not,
    so a typo does not silently grant nothing)."""
    kind, grantee = _grant(body)
    await _own(store, crater, caller, owner, name)
    if not known(kind, grantee):
        raise DatasetError(f"name: no {kind} {grantee!r} on this hub")
    return await store.share(owner, name, kind, grantee)


async def unshare(store, crater, caller, owner, name, kind, grantee):
    if kind not in SHARE_KINDS:
        raise DatasetError(f"kind must be one of {', '.join(SHARE_KINDS)}, got {kind!r}")
    await _own(store, crater, caller, owner, name)
    record, removed = await store.unshare(owner, name, kind, grantee)
    if not removed:
        raise DatasetError(f"{owner}/{name} is not shared with {kind} {grantee}", 404)
    return record


async def delete(store, crater, caller, owner, name, pods):
    """Delete the record, refused (409) while any pod mounts it, saying where. The folder stays
    on the volume (the owner empties it from their server): nothing is lost by a mistake."""
    record = await _own(store, crater, caller, owner, name)
    where = mounted(pods).get(record.ref)
    if where:
        places = "; ".join(f"{w['what']} of {w['user']} (pod {w['pod']})" for w in where)
        raise DatasetError(f"{record.ref} is mounted in {places}: stop them first", 409, where)
    await store.delete(owner, name)
