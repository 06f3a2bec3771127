"""CraterSpawner: KubeSpawner with crater_hub's profiles, live capacity and race-free quotas."""

from kubespawner import KubeSpawner
from traitlets import default

from ..config import Crater
from ..datasets.choices import choices_for, own_space, usable
from ..images.access import library_choices, prepare_image, usable_images
from ..images.service import ImageError
from ..kube.inventory import shared_inventory
from ..policy import workload
from ..policy.ledger import SERVER, Holding
from ..policy.offer import offer
from ..policy.profiles import default_profile, visible_to
from ..ray import profile as ray_profile
from ..ray.clusters import ledger_key as ray_key
from ..ray.clusters import service_for as ray_service
from . import form, shaping
from .refusal import forget_if_created_for, keep_refusals_one_line, never_started, refusal
from .usage import holding_of, server_key


class CraterSpawner(KubeSpawner):
    """KubeSpawner whose choices come from ``Crater.profiles``.

    With no crater profiles configured it is plain KubeSpawner (``profile_list`` and all). With
    them: the form shows only what the user may use, with free/total devices now and the user's
    remaining quota; every spawn (form or REST) is validated by the policy's one resolver (the
    job queue's too), checked against live capacity, reserved in the hub's quota ledger (which
    counts servers and jobs together), and the pod is shaped explicitly.
    """

    crater_spec = None  # the WorkloadSpec this server was started with
    crater_ray = None  # a Ray profile's spawn: the ray_profile.Plan of its cluster
    #: the cluster a Ray profile started with this server (kept in the server's state, so the
    #: home page shows it after a hub restart too)
    crater_ray_cluster = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The form through KubeSpawner's documented traits (options_form, options_from_form),
        # set when crater profiles exist and the operator has not set them; otherwise
        # KubeSpawner's own defaults stay (its profile_list form), without calling them.
        if self.crater_enabled:
            if not self._configured("options_form"):
                self.options_form = self._render_crater_form
            if not self._configured("options_from_form"):
                self.options_from_form = form.options_from_form
        # a record made for the spawn about to run (a new named server): removed if refused.
        # JupyterHub keeps this object across stops and starts: once a spawn succeeds, the
        # server (and its home) is the user's, never forgotten (see start and poll)
        self.crater_created_for_spawn = never_started(self)
        keep_refusals_one_line(self.log)

    @property
    def crater(self):
        """The hub's one :class:`~crater_hub.config.Crater` (settings and quota ledger)."""
        return Crater.shared(self.config)

    @property
    def crater_enabled(self):
        return bool(self.crater.profiles)

    def _configured(self, name):
        """Whether the operator's config sets trait ``name`` (for this class or a base)."""
        return any(klass.__name__ in self.config and name in self.config[klass.__name__]
                   for klass in type(self).mro())

    @default("apply_user_options")
    def _crater_apply_user_options_default(self):
        # JupyterHub ≥ 5.3 warns of "unhandled user_options" unless a hook takes them: crater's
        # are validated and applied in load_user_options, when the spawn starts
        if self.crater_enabled:
            return _applied_in_load_user_options
        return None

    async def _context(self):
        """Profiles, inventory, catalog and quota inputs for this user, after the caches loaded."""
        inventory = shared_inventory(self.crater.accelerator_catalog())
        await inventory.ready()
        catalog = {a.slug: a for a in inventory.accelerators()}
        return self.crater.profile_list(), inventory, catalog

    async def offer(self):
        """What this user may start now, next to all their running or starting servers.

        The form's and the REST API's model. Nothing is excluded: a spawner shows its form
        only while it is not active, so it never counts itself.
        """
        profiles, inventory, _ = await self._context()
        groups = [g.name for g in self.user.groups]
        usage = self.crater.ledger.usage(self.user.name)
        quota = self.crater.quota_policy().for_user(groups, self.user.admin)
        model = offer(profiles, inventory.capacity(), self.user.name, groups, quota, usage)
        library = await library_choices(self.user.name, groups)
        if library:  # every profile offers them, after its own images (or its default image)
            configured = getattr(self, "_crater_baseline", {}).get("image", self.image)
            for profile in model["profiles"]:
                own = profile["images"] or [{"slug": "default", "display_name": "Default image", "image": configured}]
                profile["images"] = [*own, *library]
        return model

    async def _render_crater_form(self, spawner):
        groups = [g.name for g in self.user.groups]
        datasets = await usable(self.crater, self.user.name, groups, self.user.admin)
        return form.render(await self.offer(), self.user_options or {}, datasets,
                           self.crater.datasets_max_per_request)

    async def load_user_options(self):
        if not self.crater_enabled:
            return await super().load_user_options()
        profiles, inventory, catalog = await self._context()
        groups = [g.name for g in self.user.groups]
        options = self.user_options if isinstance(self.user_options, dict) else {}
        datasets = await choices_for(self.crater, options.get("datasets"), self.user.admin)
        library = await usable_images(self.user.name, groups)
        request, workers = ray_profile.split(self.user_options)
        service = None
        chosen = options.get("profile")
        if chosen is None:  # the user's default profile, as resolve() will pick it
            default = default_profile(visible_to(profiles, self.user.name, groups))
            chosen = default.slug if default else None
        if ray_profile.is_ray(profiles, chosen) or workers is not None:
            service = await self._ray_service()
        try:
            configured = getattr(self, "_crater_baseline", {}).get("image", self.image)
            spec = workload.resolve(request, profiles, self.user.name, groups, catalog,
                                    default_image=configured, datasets=datasets,
                                    extra_images=library)
            chosen = ray_profile.profile_of(profiles, spec.profile)
            workers = ray_profile.workers_for(chosen, workers)
            plan = None
            if chosen.kind == "ray":
                if service is None:  # not seen above: the profiles changed under us
                    service = ray_service(self.crater, self.namespace)
                plan = ray_profile.plan(self.crater, owner=self.user.name, namespace=self.namespace,
                                        server=self.name or "", spec=spec, workers=workers)
                spec = ray_profile.server_spec(spec)
            # no await from here to the reservation: on the event loop, the check and the
            # record are one step for concurrent spawns and the queue's admissions
            self._check_capacity(plan.spec if plan else spec, inventory)
            quota = self.crater.quota_policy().for_user(groups, self.user.admin)
            why = self.crater.ledger.reserve(self.user.name, server_key(self),
                                             Holding.of(SERVER, spec), quota)
            if why:
                raise workload.PolicyError(f"Over quota: {why}.", status=403, reason="quota")
            if plan is not None:
                service.reserve(self.user.name, plan.manifest, quota)  # 403 over quota
                self.crater_ray = plan
            if spec.image in library:
                try:
                    await prepare_image(spec.image, self.namespace)
                except ImageError as e:
                    raise workload.PolicyError(e.message, status=e.status) from None
            self.crater_spec = spec
        except workload.PolicyError as e:
            self._release()
            forget_if_created_for(self)
            raise refusal(e) from None
        except BaseException:
            self._release()
            raise
        if not hasattr(self, "_crater_baseline"):
            keys = {k for p in profiles for k in p.kubespawner_override}
            self._crater_baseline = shaping.snapshot(self, keys)
        shaping.apply(self, spec, self._crater_baseline)
        shaping.add_datasets(self, spec.datasets, own_space(self.crater, self.user.name, groups))

    @staticmethod
    def _check_capacity(spec, inventory):
        """Refuse what no node can ever hold (400) and what cannot be placed right now (409)."""
        if not spec.accelerator or not spec.gpus:
            return
        fit = inventory.fits(spec.accelerator.slug, spec.gpus)
        if not fit.fits_now:
            raise workload.PolicyError(fit.message, status=409 if fit.fits_when_empty else 400,
                                       reason="capacity")

    async def _ray_service(self):
        """The hub's RayClusters of the servers' namespace (503-style refusal without KubeRay)."""
        try:
            return await ray_service(self.crater, self.namespace).ready()
        except TimeoutError:
            raise refusal(workload.PolicyError(
                "Ray clusters are not available now: the cluster does not answer for RayClusters "
                "(is KubeRay installed?)", status=503, reason="ray")) from None

    def get_env(self):
        env = super().get_env()
        if self.crater_ray is not None:  # a Ray profile's server: Ray's tools find its cluster
            env.update(ray_profile.server_env(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"],
                                              self.crater_ray.name))
        return env

    async def start(self):
        """KubeSpawner's start, then a Ray profile's cluster (owned by the pod, which exists
        now); a failed start gives back the quota it reserved, whether or not JupyterHub goes
        on to call ``stop``, and a failed cluster stops the server it was made for."""
        try:
            result = await super().start()
            if self.crater_ray is not None:
                await self._start_ray_cluster()
        except BaseException:  # refused, failed, timed out or cancelled
            self._release()
            raise
        self.crater_created_for_spawn = False  # it started: no refusal removes it now
        return result

    async def _start_ray_cluster(self):
        plan = self.crater_ray
        rc = ray_profile.bind(plan.manifest, {"name": self.pod_name, "uid": self.pod_id})
        service = ray_service(self.crater, self.namespace)
        try:
            await service.create(self.user.name, rc, quota=None)  # reserved at load_user_options
        except BaseException as e:
            self.log.error("Ray cluster %s of %s failed: %s; stopping the server", plan.name,
                           self._log_name, e)
            try:
                await super().stop(now=True)
            finally:
                self.crater.ledger.release(self.user.name, ray_key(plan.name))
            if isinstance(e, workload.PolicyError):
                raise refusal(e) from None
            raise
        self.crater_ray_cluster = plan.name
        self.log.info("Ray cluster %s of %s created with %d worker(s)", plan.name, self._log_name,
                      plan.workers)

    def get_state(self):
        state = super().get_state()
        if self.crater_ray_cluster:
            state["crater_ray_cluster"] = self.crater_ray_cluster
        return state

    def load_state(self, state):
        super().load_state(state)
        self.crater_ray_cluster = state.get("crater_ray_cluster")

    def clear_state(self):
        super().clear_state()
        self.crater_ray_cluster = None

    async def stop(self, now=False):
        try:
            return await super().stop(now=now)
        finally:
            self._release()
            await self._stop_ray_clusters()

    async def _stop_ray_clusters(self):
        """Delete the ``lifetime: server`` clusters bound to this server now (their
        ownerReference is the backstop: the garbage collector deletes them with the pod)."""
        if not self.crater_enabled or not ray_profile.is_ray(
                self.crater.profile_list(), (self.user_options or {}).get("profile")):
            return
        try:
            service = await ray_service(self.crater, self.namespace).ready(timeout=10)
        except TimeoutError:
            return  # no RayClusters to be seen: the garbage collector's job
        for name in ray_profile.bound_to(service.of(self.user.name), self.user.name, self.name or ""):
            try:
                await service.delete(name)
            except Exception as e:  # the ownerReference still deletes it with the pod
                self.log.warning("deleting Ray cluster %s of %s: %s", name, self._log_name, e)

    async def poll(self):
        """KubeSpawner's poll, keeping the ledger true: a running server holds its spec (after
        a hub restart, JupyterHub polls every server it finds, which restores them), a stopped
        one holds nothing. A starting server keeps its reservation."""
        status = await super().poll()
        if not self.crater_enabled:
            return status
        key = server_key(self)
        if status is None:
            self.crater_created_for_spawn = False
            if self._unaccounted_running(key):
                profiles, _, catalog = await self._context()
                if self._unaccounted_running(key):  # checked again after the await
                    self.crater.ledger.hold(self.user.name, key,
                                            holding_of(self, profiles, catalog))
        elif not self.pending:
            self._release()
        return status

    def _unaccounted_running(self, key):
        """Whether the hub counts this server as running (or checks it after a restart) and the
        ledger does not: a stop that began or finished while a poll was in flight released it,
        and a stopped server must never come back into the ledger."""
        return (self.pending in (None, "check") and self.server is not None
                and not self.crater.ledger.holds(self.user.name, key))

    def _release(self):
        self.crater_spec = None
        self.crater.ledger.release(self.user.name, server_key(self))
        plan, self.crater_ray = self.crater_ray, None
        if plan is not None:  # the cache's watch holds it again while the cluster exists
            service = ray_service(self.crater, self.namespace)
            if service.get(plan.name) is None:
                self.crater.ledger.release(self.user.name, ray_key(plan.name))


def _applied_in_load_user_options(spawner, user_options):
    """crater's options need no hook: :meth:`CraterSpawner.load_user_options` applies them."""
