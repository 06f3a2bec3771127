"""REST of the job queue: ``/hub/api/crater/jobs`` (submit, list), ``/jobs/{id}`` (get, cancel),
``/jobs/{id}/logs`` (tail, follow), ``/jobs/{id}/events`` and ``/queue`` (admins).

Thin: parse, authorize (``custom:crater:use`` for one's own jobs, ``custom:crater:admin`` for
everyone's; another user's job is a 404), one call to :mod:`crater_hub.queue`, JSON out. Domain
errors (:class:`crater_hub.queue.spec.JobError`) become ``{"status", "message"}`` with their status.
"""

import asyncio
import dataclasses
import json

from jupyterhub.user import User
from tornado import web
from tornado.iostream import StreamClosedError

from ..images.access import prepare_image, usable_images
from ..images.service import ImageError
from ..kube.inventory import shared_inventory
from ..queue import spec as spec_mod
from ..queue.service import FINAL, STATES
from ..queue.starter import service_for
from ..spawner import job_pod
from .capacity import ADMIN, USE, CraterAPIHandler

MAX_TAIL_LINES = 100000


class JobsBase(CraterAPIHandler):
    async def queue(self):
        return await service_for(self.settings)

    def fail(self, error):
        raise web.HTTPError(error.status, error.message)

    def caller(self):
        user = self.current_user
        return user.name if isinstance(user, User) else None

    async def find(self, job_id):
        """The job's model if the caller may see it, else 404 (others' jobs do not exist)."""
        service = await self.queue()
        owner = None if self.has_scope(ADMIN) else self.caller()
        model = None
        if owner is not None or self.has_scope(ADMIN):
            model = await service.get(int(job_id), owner=owner)
        if model is None:
            raise web.HTTPError(404, f"No job {job_id}")
        return service, model


class JobListAPIHandler(JobsBase):
    async def get(self):
        self.require(USE)
        states = self.get_arguments("state")
        bad = sorted(set(states) - set(STATES))
        if bad:
            raise web.HTTPError(400, f"state {', '.join(bad)} is unknown; allowed: {', '.join(STATES)}")
        everyone = self.get_argument("all", "") in ("1", "true", "yes")
        if everyone and not self.has_scope(ADMIN):
            raise web.HTTPError(403, f"all=1 requires the {ADMIN} scope")
        owner = None if everyone else self.caller()
        if owner is None and not everyone:
            self.write({"jobs": []})  # a service token without all=1 owns no jobs
            return
        service = await self.queue()
        self.write({"jobs": await service.list(owner=owner, states=states or None)})

    async def post(self):
        self.require(USE)
        user = self.current_user
        if not isinstance(user, User):
            raise web.HTTPError(403, "only users can submit jobs; this token belongs to a service")
        body = self.get_json_body()
        service = await self.queue()
        crater = service.crater
        inventory = shared_inventory(crater.accelerator_catalog())
        await inventory.ready(timeout=30)
        groups = [g.name for g in user.groups]
        library = await usable_images(user.name, groups)
        try:
            spec = spec_mod.resolve(
                body, owner=user.name, groups=groups, profiles=crater.profile_list(),
                catalog={a.slug: a for a in inventory.accelerators()},
                priorities=crater.priority_classes(), default_image=self._default_image(crater),
                default_runtime=min(crater.job_default_runtime, crater.job_max_runtime),
                max_runtime=crater.job_max_runtime, extra_images=library)
            fit = inventory.fits(spec.accelerator.slug, spec.gpus) if spec.accelerator else None
            spec_mod.never_runs(spec, crater.quota_policy().for_user(groups, user.admin), fit)
        except spec_mod.JobError as e:
            self.fail(e)
        if spec.spawn.image in library:
            try:
                await prepare_image(spec.spawn.image, service.namespace)
            except ImageError as e:
                raise web.HTTPError(e.status, e.message) from None
        pod = await job_pod.for_user(user, spec.spawn, crater.profile_list(),
                                     namespace=service.namespace, job_home=crater.job_home,
                                     workdir=spec.workdir)
        model = await service.submit(dataclasses.replace(spec, pod=pod))
        self.set_status(201)
        self.write(model)

    def _default_image(self, crater):
        if crater.job_default_image:
            return crater.job_default_image
        config = self.settings.get("config") or {}
        for section in ("CraterSpawner", "KubeSpawner", "Spawner"):
            image = config.get(section, {}).get("image") if section in config else None
            if isinstance(image, str) and image:
                return image
        return "python:3"


class JobAPIHandler(JobsBase):
    async def get(self, job_id):
        self.require(USE)
        _, model = await self.find(job_id)
        self.write(model)

    async def delete(self, job_id):
        self.require(USE)
        service, model = await self.find(job_id)
        try:
            model = await service.cancel(model["id"], by=self.caller() or "an administrator")
        except spec_mod.JobError as e:
            self.fail(e)
        self.write(model)


class JobLogsAPIHandler(JobsBase):
    """text/plain: the pod's log while it exists, the stored tail after; ``follow=1`` streams
    until the job ends."""

    async def get(self, job_id):
        self.require(USE)
        service, model = await self.find(job_id)
        tail = self.get_argument("tail", None)
        if tail is not None:
            if not tail.isdigit() or not 0 < int(tail) <= MAX_TAIL_LINES:
                raise web.HTTPError(400, f"tail must be a number of lines from 1 to {MAX_TAIL_LINES}")
            tail = int(tail)
        follow = self.get_argument("follow", "") in ("1", "true", "yes")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        if not follow:
            self.write(await self._snapshot(service, model, tail))
            return
        await self._follow(service, model, tail)

    async def _snapshot(self, service, model, tail):
        job = service.jobs.get(model["id"])
        pods = service.pods_of(job) if job is not None else []
        if pods and (job.log_tail is None or job.state not in FINAL):
            text = await service.read_pod_log(pods[0]["metadata"]["name"], tail_lines=tail)
        else:
            text = await service.log_tail(model["id"]) or ""
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        return text

    async def _follow(self, service, model, tail):
        """Send what is new every half second until the job has ended and all is sent."""
        job_id = model["id"]
        sent = ""
        try:
            while True:
                current = await service.get(job_id)
                text = await self._snapshot(service, current, None)
                if text.startswith(sent):
                    chunk = text[len(sent):]
                else:  # a new attempt, or the tail moved past what we sent
                    chunk = text if not sent else ""
                if not sent and tail is not None:
                    chunk = "".join(chunk.splitlines(keepends=True)[-tail:])
                if chunk:
                    self.write(chunk)
                    await self.flush()
                sent = text
                if current["state"] in FINAL and service.jobs.get(job_id) is None:
                    return
                await service.next_cycle(timeout=0.5)
                await asyncio.sleep(0.2)
        except StreamClosedError:
            return


class JobEventsAPIHandler(JobsBase):
    async def get(self, job_id):
        self.require(USE)
        service, model = await self.find(job_id)
        self.write({"events": await service.events(model["id"], model)})


class QueueAPIHandler(JobsBase):
    async def get(self):
        self.require(ADMIN)
        service = await self.queue()
        models = await service.list(states=["queued", "admitted", "running"])
        self.write(json.dumps(service.queues(models)))


default_handlers = [
    (r"/api/crater/jobs/?", JobListAPIHandler),
    (r"/api/crater/jobs/(\d+)/?", JobAPIHandler),
    (r"/api/crater/jobs/(\d+)/logs/?", JobLogsAPIHandler),
    (r"/api/crater/jobs/(\d+)/events/?", JobEventsAPIHandler),
    (r"/api/crater/queue/?", QueueAPIHandler),
]
