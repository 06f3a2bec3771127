"""A request's ``datasets`` → the :class:`~crater_hub.policy.datasets.Choices` the resolver
checks: the catalog's entries and the records of the references it names (one query).

The one call the spawner (every spawn, form or REST), the job submit and a queued job's dispatch
make, so the three decide alike; and the re-check at dispatch (:func:`refusal`), where a dataset
unshared since the submit is refused."""

from ..policy import datasets as policy
from .store import shared_store


def configured(crater):
    return bool(crater.datasets_volume or crater.datasets_catalog)


async def choices_for(crater, value, admin=False, store=None):
    """The choices for the references ``value`` names; None when no dataset is configured.

    A malformed ``value`` gets empty choices: the resolver parses it again and says why."""
    if not configured(crater):
        return None
    max_n = crater.datasets_max_per_request
    try:
        refs = policy.requested(value, max_n)
    except policy.DatasetRefused:
        return policy.Choices({}, max_n, admin)
    available = {d.name: d for d in crater.dataset_catalog() if d.name in refs}
    if crater.datasets_volume and any("/" in ref for ref in refs):
        records = await (store or shared_store(crater)).lookup(refs)
        available.update({ref: r.policy(crater.datasets_volume) for ref, r in records.items()})
    return policy.Choices(available, max_n, admin)


async def refusal(crater, refs, owner, groups, admin=False, store=None):
    """Why ``owner`` may no longer mount ``refs`` (a queued job's, at dispatch), or None."""
    if not refs:
        return None
    choices = await choices_for(crater, list(refs), admin, store)
    if choices is None:
        return "datasets are no longer configured on this hub"
    try:
        policy.mounts(policy.requested(list(refs), 1 << 16), choices, owner, groups)
    except policy.DatasetRefused as e:
        return f"refused at start: {e.message}"
    return None


def own_space(crater, user, groups=()):
    """``[(claim, sub_path, mount_path)]`` of the spaces mounted writable in ``user``'s servers:
    their own at ``Crater.datasets_own_path``, and each of their groups' at
    ``<datasets_own_path>-groups/<group>``; empty when not configured."""
    if not crater.datasets_volume or not crater.datasets_own_path:
        return []
    root = crater.datasets_own_path
    out = [(crater.datasets_volume, policy.user_space(user), root)]
    for group in sorted(groups):
        space = policy.group_space(group)
        out.append((crater.datasets_volume, space, f"{root}-groups/{space.split('/', 1)[1]}"))
    return out


def catalog_model(dataset, user, groups, admin):
    return {"ref": dataset.ref, "owner": None, "group": None, "name": dataset.name, "catalog": True,
            "description": dataset.description, "kind": dataset.kind, "editable": dataset.editable,
            "writable": dataset.may_edit(user, groups, admin), "size": dataset.size,
            "public": not (dataset.access.users or dataset.access.groups),
            "path": f"{dataset.claim}:{dataset.sub_path or '/'}",
            "shares": {"users": sorted(dataset.access.users), "groups": sorted(dataset.access.groups)}}


async def usable(crater, user, groups, admin=False, store=None, everything=False):
    """Models of the datasets ``user`` may mount (catalog first, then records by owner/name);
    ``everything``: an administrator's listing, every catalog entry and record."""
    if not configured(crater):
        return []
    out = [catalog_model(d, user, groups, admin) for d in crater.dataset_catalog()
           if everything or d.may_use(user, groups, admin)]
    if crater.datasets_volume:
        records = await (store or shared_store(crater)).visible(user, groups, admin and everything)
        for r in records:
            model = r.model()
            model["writable"] = r.policy(crater.datasets_volume).may_edit(user, groups, admin)
            out.append(model)
    return out


async def dispatch_refusal(crater, job, users):
    """Why a queued job (a :class:`crater_hub.db.models.Job`) may not mount its datasets now,
    with its owner's groups of now (``users``: the queue's hub users, None without a hub)."""
    refs = [m["ref"] for m in (job.shape or {}).get("datasets") or ()]
    if not refs:
        return None
    groups, admin = (users.info([job.owner]).get(job.owner) if users else None) or ([], False)
    return await refusal(crater, refs, job.owner, groups, admin)
