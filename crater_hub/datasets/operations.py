"""What a user (or an administrator) does to datasets: create, describe, share, unshare, delete.

Domain code, no tornado: every refusal is a :class:`~.store.DatasetError` whose message names
the field and what is allowed; others' datasets that are not shared with the caller are 404,
as if they did not exist.

A dataset belongs to a user (``users/<owner>/<name>``, reference ``owner/name``) or to a
JupyterHub group (``groups/<group>/<name>``, reference ``@group/name``, created with
``"space": "group", "group": ...``): every member of the group, and administrators, manage it
as its owner does hers; others get 404 unless it is shared with them.

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

CREATE_FIELDS = {"name": str, "description": str, "kind": str, "editable": bool, "public": bool,
                 "space": str, "group": str}
SPACES = ("user", "group", "public")
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


def _owner(caller, body, known):
    """Who a new dataset belongs to and whether it is public, from ``space`` (``user``, the
    default; ``group`` with ``group``; ``public``, administrators only; ``public: true`` is the
    same as ``"space": "public"``)."""
    space = body.get("space", "public" if body.get("public") else "user")
    if space not in SPACES:
        raise DatasetError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if body.get("public") and space != "public":
        raise DatasetError(f"public: true goes with space 'public', not {space!r}")
    if space == "group":
        try:
            group = policy.check_group(body.get("group"), "group")
        except policy.DatasetRefused as e:
            raise _refused(e) from None
        if group not in caller.groups and not caller.admin:
            raise DatasetError(f"group: you are not a member of {group!r}; only its members "
                               "(and administrators) create its datasets", 403)
        if known is not None and not known("group", group):
            raise DatasetError(f"group: no group {group!r} on this hub")
        return policy.group_owner(group), False
    if "group" in body:
        raise DatasetError(f"group goes with space 'group', not {space!r}")
    if space == "public" and not caller.admin:
        raise DatasetError("public: only administrators may publish datasets to public/", 403)
    if policy.group_of(caller.name) is not None:
        raise DatasetError(f"space: a user name starting with {policy.GROUP_PREFIX!r} cannot own "
                           "datasets (references '@name/...' are groups'); use space 'group'")
    return caller.name, space == "public"


async def create(store, crater, caller, body, known=None):
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
    owner, public = _owner(caller, body, known)
    if any(d.name == name for d in crater.dataset_catalog()):
        raise DatasetError(f"name {name!r} is taken by a catalog dataset; choose another", 409)
    return await store.create(owner, name, description=body.get("description", ""),
                              kind=kind, editable=bool(body.get("editable", False)),
                              public=public)


async def find(store, crater, caller, owner, name):
    """The record if ``caller`` may see it, else a 404."""
    record = await store.find(owner, name)
    if record is None or not (caller.admin or record.policy(crater.datasets_volume).may_use(
            caller.name, caller.groups)):
        raise DatasetError(f"No dataset {owner}/{name}", 404)
    return record


async def _own(store, crater, caller, owner, name):
    record = await find(store, crater, caller, owner, name)
    if not caller.admin and not record.policy(crater.datasets_volume).owned_by(
            caller.name, caller.groups):
        who = f"members of {record.group}" if record.group is not None else owner
        raise DatasetError(f"only {who} (or an administrator) may change {owner}/{name}", 403)
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
