"""Datasets in a workload: which ones a request names, whether its user may mount them, and how.

Pure code, like the rest of the policy: the records (catalog entries from configuration, users'
datasets from the database) are looked up by the caller and handed in as :class:`Dataset`
values, so a server spawn, a job submit and a queued job's dispatch decide the same way.

A request's ``datasets`` is a list of references: ``owner/name`` for a user's dataset,
``@group/name`` for a dataset of a JupyterHub group (the ``@`` keeps group references apart from
user names: a user name starting with ``@`` owns no datasets), the bare name for a catalog one. Each becomes a :class:`Mount`: a ``subPath`` into a claim, mounted at
``/datasets/<name>`` (``/datasets/<owner>/<name>`` when two chosen datasets share a name),
``readOnly`` unless the dataset is editable *and* this user may edit it. Mounts are added to a
pod as entries of their own (:func:`pod_volumes`), never replacing the home volume.
"""

import posixpath
import re
from dataclasses import dataclass, field

from ..checks import ConfigError, check_mapping
from .access import Access, parse_access

#: DNS-1123-like: a label value, a path component and a URL segment without escaping
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KINDS = ("dataset", "model")
MOUNT_ROOT = "/datasets"
#: the pod annotation that lists a pod's datasets ("where is it mounted" reads it from the cache)
ANNOTATION = "crater.io/datasets"
CATALOG_KEYS = {"name", "description", "kind", "claim", "sub_path", "editable", "size",
                "allowed_groups", "allowed_users"}


class DatasetRefused(Exception):
    """A dataset request refused: ``status`` 400 (invalid) or 403 (not yours to mount)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Dataset:
    """A dataset as the policy sees it: where it lives and who may use and edit it.

    ``owner``: None for a catalog dataset, ``@group`` for a group's (every member may use it,
    and edit it when editable); ``access``: who may mount it besides the owner (a catalog
    entry's allowed users/groups, a user's shares; ``public`` for everyone)."""

    name: str
    claim: str
    sub_path: str = ""
    owner: str | None = None
    kind: str = "dataset"
    description: str = ""
    editable: bool = False
    access: Access = Access()
    public: bool = False
    size: str | None = None

    @property
    def ref(self):
        return self.name if self.owner is None else f"{self.owner}/{self.name}"

    @property
    def group(self):
        """The owning group's name for a group dataset, else None."""
        return group_of(self.owner)

    def owned_by(self, user, groups):
        """Whether ``user`` owns it: theirs, or a dataset of a group they are a member of."""
        if self.owner is None:
            return False
        group = self.group
        return group in groups if group is not None else self.owner == user

    def may_use(self, user, groups, admin=False):
        if admin or self.public or self.owned_by(user, groups):
            return True
        if self.owner is None:  # catalog: an entry with no restriction is everyone's
            return self.access.allows(user, groups)
        return bool(self.access.users or self.access.groups) and self.access.allows(user, groups)

    def may_edit(self, user, groups, admin=False):
        if not self.editable:
            return False
        if self.owner is None:
            return self.may_use(user, groups, admin)
        return admin or self.owned_by(user, groups)


@dataclass(frozen=True)
class Mount:
    ref: str
    claim: str
    sub_path: str
    mount_path: str
    read_only: bool = True

    def model(self):
        return {"ref": self.ref, "claim": self.claim, "sub_path": self.sub_path,
                "mount_path": self.mount_path, "read_only": self.read_only}

    @classmethod
    def from_model(cls, model):
        return cls(model["ref"], model["claim"], model["sub_path"], model["mount_path"],
                   bool(model.get("read_only", True)))


@dataclass(frozen=True)
class Choices:
    """What a resolver needs to check a request's ``datasets``: the records of the references
    it names (ref -> :class:`Dataset`; missing: unknown), the most one request may name, and
    whether the user is an administrator."""

    available: dict = field(default_factory=dict)
    max_per_request: int = 8
    admin: bool = False


GROUP_PREFIX = "@"


def group_of(owner):
    """``@ml-staff`` -> ``ml-staff``; a user's name (or None) -> None."""
    if owner and owner.startswith(GROUP_PREFIX):
        return owner[len(GROUP_PREFIX):]
    return None


def group_owner(group):
    """The owner of a group's datasets as references show it: ``@<group>``."""
    return GROUP_PREFIX + group


def check_group(value, where="group"):
    """A JupyterHub group name usable in a reference ``@<group>/<name>`` and a URL segment."""
    if not isinstance(value, str) or not value or len(value) > 254 or value in (".", "..") or \
            any(c.isspace() or c in "/\0\\,@" for c in value):
        raise DatasetRefused(f"{where} must be the name of a JupyterHub group (no '/', ',', '@' "
                             f"or spaces, at most 254 characters), got {value!r}")
    return value


def check_name(value, where="name"):
    if not isinstance(value, str) or not NAME.match(value):
        raise DatasetRefused(f"{where} must be lowercase letters, digits and '-', starting and "
                             f"ending with a letter or digit (at most 63), got {value!r}")
    return value


def check_sub_path(value, where):
    """A relative path inside a volume: no ``..``, no absolute path, nothing odd."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 1024 or value.startswith("/") or \
            any(c in value for c in "\0\n\\") or ".." in value.split("/") or \
            posixpath.normpath(value) != value.rstrip("/"):
        raise ConfigError(f"{where} must be a relative path inside the volume, without '..' "
                          f"or a leading '/', got {value!r}")
    return value.rstrip("/")


def requested(value, max_per_request):
    """The references a request's ``datasets`` names, checked for form (400 otherwise)."""
    if value is None:
        return ()
    if isinstance(value, str):  # a form field with one choice
        value = [value] if value else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DatasetRefused("datasets must be a list of dataset references: 'owner/name' for a "
                             "user's dataset, '@group/name' for a group's, the bare name for a "
                             "catalog one")
    if len(value) > max_per_request:
        raise DatasetRefused(f"datasets names {len(value)} datasets; at most {max_per_request} "
                             "are allowed in one request")
    refs = []
    for ref in value:
        parts = ref.split("/")
        if len(parts) == 1:
            ok = bool(NAME.match(parts[0]))
        else:
            owner = parts[0]
            ok = len(parts) == 2 and 0 < len(owner) <= 255 and owner not in (".", "..") and \
                not any(c.isspace() or c in "\0\\" for c in owner) and bool(NAME.match(parts[1]))
            if ok and group_of(owner) is not None:
                try:
                    check_group(group_of(owner))
                except DatasetRefused:
                    ok = False
        if not ok:
            raise DatasetRefused(f"datasets entry {ref!r} is not a dataset reference: use "
                                 "'owner/name', '@group/name' or a catalog dataset's name")
        if ref not in refs:
            refs.append(ref)
    return tuple(refs)


def mounts(refs, choices, user, groups):
    """The :class:`Mount` of each reference, or :class:`DatasetRefused` (403) naming the first
    one this user may not mount (unknown and not shared read the same: nothing is revealed)."""
    chosen = []
    for ref in refs:
        dataset = choices.available.get(ref)
        if dataset is None or not dataset.may_use(user, groups, choices.admin):
            raise DatasetRefused(f"dataset {ref!r} does not exist or is not shared with you", 403)
        chosen.append(dataset)
    names = [d.name for d in chosen]
    out = []
    for d in chosen:
        clash = names.count(d.name) > 1
        where = f"{MOUNT_ROOT}/{d.owner or 'catalog'}/{d.name}" if clash else f"{MOUNT_ROOT}/{d.name}"
        out.append(Mount(d.ref, d.claim, d.sub_path, where,
                         read_only=not d.may_edit(user, groups, choices.admin)))
    return tuple(out)


def volume_name(claim):
    """One pod volume per claim, named after it (≤ 63 characters)."""
    return ("crater-data-" + claim)[:63].rstrip("-")


def pod_volumes(mounts_, own_space=None):
    """``(volumes, volume_mounts)``: dicts keyed by name, as z2jh builds KubeSpawner's, to merge
    next to the home volume. ``own_space``: ``(claim, sub_path, mount_path)`` of the user's own
    space, or a list of them (their own and their groups' spaces), mounted writable (servers
    only)."""
    volumes, volume_mounts = {}, {}
    entries = [(m.claim, m.sub_path, m.mount_path, m.read_only) for m in mounts_]
    if own_space and isinstance(own_space[0], str):
        own_space = [own_space]
    for space in own_space or ():
        entries.append((*space, False))
    for i, (claim, sub_path, mount_path, read_only) in enumerate(entries):
        name = volume_name(claim)
        volumes[name] = {"name": name, "persistentVolumeClaim": {"claimName": claim}}
        entry = {"name": name, "mountPath": mount_path, "readOnly": read_only}
        if sub_path:
            entry["subPath"] = sub_path
        volume_mounts[f"crater-dataset-{i}"] = entry
    return volumes, volume_mounts


def annotation(mounts_):
    return {ANNOTATION: ",".join(m.ref for m in mounts_)} if mounts_ else {}


def refs_of(pod):
    """The dataset references a pod's annotation lists."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION) or ""
    return [ref for ref in value.split(",") if ref]


def parse_catalog(entries, where="Crater.datasets_catalog", default_claim=""):
    """The operator's catalog: datasets on an existing claim (and subPath), with who may use them."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{where} must be a list of datasets")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        check_mapping(entry, CATALOG_KEYS, here)
        try:
            name = check_name(entry.get("name"), f"{here}.name")
        except DatasetRefused as e:
            raise ConfigError(e.message) from None
        if name in seen:
            raise ConfigError(f"{here}.name {name!r} is used twice")
        seen.add(name)
        claim = entry.get("claim") or default_claim
        if not isinstance(claim, str) or not NAME.match(claim or ""):
            raise ConfigError(f"{here}.claim must name an existing PersistentVolumeClaim "
                              f"(or set Crater.datasets_volume), got {claim!r}")
        kind = entry.get("kind", "dataset")
        if kind not in KINDS:
            raise ConfigError(f"{here}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        out.append(Dataset(
            name=name, claim=claim, sub_path=check_sub_path(entry.get("sub_path"), f"{here}.sub_path"),
            kind=kind, description=str(entry.get("description") or ""),
            editable=bool(entry.get("editable", False)), access=parse_access(entry, here),
            size=str(entry["size"]) if entry.get("size") is not None else None))
    return out


def _safe(name):
    """A safe path component for a user or group name: itself when plain, else a readable
    prefix and a hash, so two names never share one folder."""
    import hashlib

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or "") and ".." not in name:
        return name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name or "").strip("-.")[:60]
    return f"{safe or 'u'}--{hashlib.sha256((name or '').encode()).hexdigest()[:10]}"


def user_space(owner):
    """``users/<owner>``: the space of a user's datasets in the data volume."""
    return f"users/{_safe(owner)}"


def group_space(group):
    """``groups/<group>``: the space of a group's datasets in the data volume."""
    return f"groups/{_safe(group)}"


def space_of(owner):
    """The space of ``owner``'s datasets: ``@group`` -> ``groups/<group>``, a user's name ->
    ``users/<name>``."""
    group = group_of(owner)
    return group_space(group) if group is not None else user_space(owner)
