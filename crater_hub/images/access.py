"""What the spawner and the job queue ask of the image library, in one place.

``usable_images``: the library references a user may start from (added to the profile's own
image list by :func:`crater_hub.policy.workload.resolve`). ``prepare_image``: before a server or
a job starts from a library image, its manifest must still exist (else a 400 now, not a pod in
ImagePullBackOff later) and the read-only pull Secret must be in the pod's namespace.

Without a running hub (unit tests) or a library, nothing is added and nothing is checked.
"""

import logging

from .service import ImageError
from .starter import image_service

log = logging.getLogger("crater_hub.images")


async def _service():
    try:
        return await image_service()
    except Exception as e:  # no hub, or the library failed to start: servers still start
        log.debug("image library unavailable: %s", e)
        return None


async def usable_images(user, groups):
    service = await _service()
    return service.usable_references(user, groups) if service else set()


async def prepare_image(image, namespace):
    """Raise :class:`ImageError` (400) when ``image`` is a library image whose manifest is gone;
    put the pull Secret in ``namespace`` when it is one of ours."""
    service = await _service()
    if service is None or service.by_reference(image) is None:
        return
    await service.check_exists(image)
    try:
        await service.ensure_pull_secret(namespace)
    except Exception as e:
        raise ImageError(f"the image pull secret could not be created in {namespace}: {e}", 500) from None


async def library_choices(user, groups):
    """The library images ``user`` may start from, as image choices of the spawn and job forms."""
    service = await _service()
    if service is None:
        return []
    usable = service.usable_references(user, groups)
    labels = {"admin": "admin", "user": "library"}
    return [{"slug": m["image"], "image": m["image"], "library": True,
             "display_name": f"{m['name']}:{m['tag']} ({'mine' if m['owner'] == user else labels[m['kind']]})"}
            for m in service.library(user, groups) if m["image"] in usable]
