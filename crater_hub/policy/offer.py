"""What one user is offered right now: their profiles, live availability, remaining quota.

The spawn form, ``GET /hub/api/crater/profiles`` and the form's live refresh all render this one
model, so a choice the form disables is exactly one a spawn would refuse for the same reason.
"""

from .profiles import visible_to
from .quotas import remaining


def _count_choice(count, acc_caps, left_total, left_type):
    reason = None
    if acc_caps is None:
        reason = "not present in the cluster"
    elif count > acc_caps["largest_free_block"]:
        reason = f"only {acc_caps['largest_free_block']} free on one node now"
    elif left_total is not None and count > left_total:
        reason = f"exceeds your remaining GPU quota ({left_total})"
    elif left_type is not None and count > left_type:
        reason = f"exceeds your remaining quota for this type ({left_type})"
    return {"count": count, "available": reason is None, "reason": reason}


def offer(profiles, capacity, user_name, user_groups, quota, usage):
    """The JSON model of what ``user_name`` may start now.

    ``capacity``: ``Inventory.capacity()``; ``quota``/``usage``: from :mod:`.quotas`.
    """
    caps = {a["slug"]: a for a in capacity["accelerators"]}
    left = remaining(quota, usage)
    out = []
    for p in visible_to(profiles, user_name, user_groups):
        accelerators = []
        for choice in p.accelerators:
            acc_caps = caps.get(choice.accelerator)
            left_type = left["accelerators"].get(choice.accelerator)
            accelerators.append({
                "slug": choice.accelerator,
                "display_name": acc_caps["display_name"] if acc_caps else choice.accelerator,
                "memory": acc_caps.get("memory") if acc_caps else None,
                "free": acc_caps["free"] if acc_caps else 0,
                "total": acc_caps["total"] if acc_caps else 0,
                "largest_free_block": acc_caps["largest_free_block"] if acc_caps else 0,
                "remaining_quota": left_type,
                "counts": [_count_choice(n, acc_caps, left["gpus"], left_type) for n in choice.counts],
            })
        out.append({
            "slug": p.slug, "display_name": p.display_name, "description": p.description,
            "default": p.default,
            "images": [{"slug": i.slug, "display_name": i.display_name, "image": i.image} for i in p.images],
            "image_patterns": [pattern.pattern for pattern in p.image_patterns],
            "cpu": {"guarantee": p.cpu.guarantee, "limit": p.cpu.limit},
            "memory": {"guarantee": p.memory.guarantee, "limit": p.memory.limit},
            "allow_cpu_only": p.allow_cpu_only,
            "accelerators": accelerators,
            "kind": p.kind, "workers": list(p.ray_workers),
        })
    return {"profiles": out, "quota": left, "servers_running": usage.servers,
            "updated": capacity.get("updated")}
