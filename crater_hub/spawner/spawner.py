"""CraterSpawner: KubeSpawner with crater_hub's profiles, live capacity and race-free quotas."""

from kubespawner import KubeSpawner
from traitlets import default

from ..config import Crater
from ..images.access import library_choices, prepare_image, usable_images
from ..images.service import ImageError
from ..kube.inventory import shared_inventory
from ..policy import workload
from ..policy.ledger import SERVER, Holding
from ..policy.offer import offer
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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

    @default("options_form")
    def _crater_options_form_default(self):
        if self.crater_enabled:
            return self._render_crater_form
        return super()._options_form_default()

    @default("apply_user_options")
    def _crater_apply_user_options_default(self):
        # JupyterHub ≥ 5.3 warns of "unhandled user_options" unless a hook takes them: crater's
        # are validated and applied in load_user_options, when the spawn starts
        if self.crater_enabled:
            return _applied_in_load_user_options
        return None

    @default("options_from_form")
    def _crater_options_from_form_default(self):
        if self.crater_enabled:
            return form.options_from_form
        return super()._options_from_form_default()

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
        return form.render(await self.offer(), self.user_options or {})

    async def load_user_options(self):
        if not self.crater_enabled:
            return await super().load_user_options()
        profiles, inventory, catalog = await self._context()
        groups = [g.name for g in self.user.groups]
        library = await usable_images(self.user.name, groups)
        try:
            configured = getattr(self, "_crater_baseline", {}).get("image", self.image)
            spec = workload.resolve(self.user_options, profiles, self.user.name, groups, catalog,
                                    default_image=configured, extra_images=library)
            # no await from here to the reservation: on the event loop, the check and the
            # record are one step for concurrent spawns and the queue's admissions
            self._check_capacity(spec, inventory)
            quota = self.crater.quota_policy().for_user(groups, self.user.admin)
            why = self.crater.ledger.reserve(self.user.name, server_key(self),
                                             Holding.of(SERVER, spec), quota)
            if why:
                raise workload.PolicyError(f"Over quota: {why}.", status=403, reason="quota")
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
        if not hasattr(self, "_crater_baseline"):
            keys = {k for p in profiles for k in p.kubespawner_override}
            self._crater_baseline = shaping.snapshot(self, keys)
        shaping.apply(self, spec, self._crater_baseline)

    @staticmethod
    def _check_capacity(spec, inventory):
        """Refuse what no node can ever hold (400) and what cannot be placed right now (409)."""
        if not spec.accelerator or not spec.gpus:
            return
        fit = inventory.fits(spec.accelerator.slug, spec.gpus)
        if not fit.fits_now:
            raise workload.PolicyError(fit.message, status=409 if fit.fits_when_empty else 400,
                                       reason="capacity")

    def start(self):
        """KubeSpawner's start (a future it keeps for ``progress``); a failed start gives back
        the quota it reserved, whether or not JupyterHub goes on to call ``stop``."""
        future = super().start()

        def release_on_failure(f):
            if f.cancelled() or f.exception() is not None:
                self._release()
            else:
                self.crater_created_for_spawn = False  # it started: no refusal removes it now

        future.add_done_callback(release_on_failure)
        return future

    async def stop(self, now=False):
        try:
            return await super().stop(now=now)
        finally:
            self._release()

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


def _applied_in_load_user_options(spawner, user_options):
    """crater's options need no hook: :meth:`CraterSpawner.load_user_options` applies them."""
