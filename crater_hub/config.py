"""crater_hub's operator configuration: accelerators, profiles and quotas, validated at load.

Everything is JSON/YAML-shaped so it can be set from ``jupyterhub_config.py``
(``c.Crater.profiles = [...]``) and from z2jh (``hub.config.Crater.profiles``). A mistake fails
the hub's start with a message naming the key, instead of surfacing as a broken spawn later.

A hub process has one :class:`Crater`, :meth:`Crater.shared` on the hub's config: the spawner,
the handlers and the queue read the same parsed settings and share its quota ledger.
"""

from traitlets import Bool, Dict, Float, Integer, List, TraitError, Type, Unicode, observe, validate
from traitlets.config import LoggingConfigurable

from . import accelerators as accelerators_mod
from .checks import (
    NAMESPACE,
    ConfigError,
    check_mapping,
    check_namespace,
    check_one_of,
    check_seconds,
)
from .policy import datasets as datasets_mod
from .policy import priorities as priorities_mod
from .policy import profiles as profiles_mod
from .policy import quotas as quotas_mod
from .policy.ledger import Ledger

JOB_QUEUE_BACKENDS = ("embedded", "kueue")
JOB_QUEUEING_STRATEGIES = ("best_effort_fifo", "strict_fifo")  # queue.engine.STRATEGIES


#: For each thing crater_hub.gpus reads off a DCGM exporter series, the label names that may
#: carry it, the first present wins (here, below crater_hub.gpus, so that config can check
#: ``Crater.dcgm_labels``). ``exported_*`` first: behind a ServiceMonitor without honorLabels,
#: ``pod`` names the exporter's own pod and the workload's is ``exported_pod``.
DCGM_LABEL_DEFAULTS = {
    "node": ("Hostname", "hostname", "kubernetes_node", "node"),
    "gpu": ("gpu",),
    "uuid": ("UUID", "uuid"),
    "model": ("modelName",),
    "instance": ("GPU_I_ID",),
    "profile": ("GPU_I_PROFILE",),
    # pod_name, pod_namespace, container_name: dcgm-exporter's --use-old-namespace names
    "pod": ("exported_pod", "pod", "pod_name"),
    "namespace": ("exported_namespace", "namespace", "pod_namespace"),
    "container": ("exported_container", "container", "container_name"),
}


def dcgm_label_names(overrides=None):
    """:data:`DCGM_LABEL_DEFAULTS` with ``Crater.dcgm_labels`` applied (a name or a list of
    names per key); ConfigError naming the key when it is unknown or its value is not names."""
    out = dict(DCGM_LABEL_DEFAULTS)
    if not isinstance(overrides or {}, dict):
        raise ConfigError(f"Crater.dcgm_labels must be a mapping, got {overrides!r}")
    for key, names in (overrides or {}).items():
        if key not in DCGM_LABEL_DEFAULTS:
            raise ConfigError(
                f"Crater.dcgm_labels has unknown key {key!r}; allowed: {', '.join(DCGM_LABEL_DEFAULTS)}"
            )
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, (list, tuple)) or not names or not all(
            isinstance(n, str) and n for n in names
        ):
            raise ConfigError(
                f"Crater.dcgm_labels.{key} must be a label name or a list of label names, got {names!r}"
            )
        out[key] = tuple(names)
    return out

class Crater(LoggingConfigurable):
    """The settings every crater_hub room reads."""

    _shared = {}  # id(config) -> (config, Crater): the config is kept, so its id is not reused

    @classmethod
    def shared(cls, config):
        """The one Crater of the hub whose configuration is ``config`` (JupyterHub hands the
        same Config object to its spawners and its tornado settings)."""
        entry = cls._shared.get(id(config))
        if entry is None or entry[0] is not config:
            entry = cls._shared[id(config)] = (config, cls(config=config))
        return entry[1]

    @property
    def ledger(self):
        """What each user holds now, servers and jobs (:class:`~crater_hub.policy.ledger.Ledger`)."""
        ledger = self.__dict__.get("_crater_ledger")
        if ledger is None:
            ledger = self.__dict__["_crater_ledger"] = Ledger()
        return ledger

    accelerators = List(
        Dict(), config=True,
        help="""Accelerator types offered, e.g.
        ``{"slug": "a100", "display_name": "A100 80GB", "resource": "nvidia.com/gpu",
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "tolerations": [],
        "memory": "80Gi", "env": "NVIDIA_VISIBLE_DEVICES"}``. Empty: discovered from node labels
        (GPU feature discovery) and extended resources.""",
    )
    profiles = List(
        Dict(), config=True,
        help="""Spawn profiles: slug, display_name, description, default, image or images
        (choices), cpu/memory ``{guarantee, limit}``, accelerators
        (``[{"accelerator": slug, "counts": [1, 2]}]``), allow_cpu_only, allowed_groups,
        allowed_users (on the profile and on each choice) and kubespawner_override.
        Empty: CraterSpawner behaves as KubeSpawner (its profile_list, if any).""",
    )
    quotas = Dict(
        config=True,
        help="""``{"default": {"servers", "gpus", "accelerators": {slug: n}}, "groups": {name: {...}},
        "admins_exempt": true}``; among several groups the most generous limit wins.""",
    )

    # -- the GPU heatmap (crater_hub.gpus.heatmap) ----------------------------------------------
    gpu_idle_threshold = Float(
        0.05, config=True,
        help="""A held GPU whose utilization (0..1) stays below this for ``gpu_idle_window``
        seconds is marked allocated-but-idle on the GPU page and in
        ``crater_gpus_idle_allocated``.""",
    )
    gpu_idle_window = Float(
        300, config=True,
        help="""Seconds a held GPU must stay below ``gpu_idle_threshold`` to count as idle (0:
        idle from the first low sample). Measured from the hub's own samples, so a restarted hub
        waits a whole window again.""",
    )
    gpu_owner_visibility = Unicode(
        "names", config=True,
        help="""What users who are not admins see of who holds a GPU: ``names`` (user names,
        server names and job ids, linked) or ``self`` (only "you" or "other user"; others'
        workloads are not named). Admins always see names.""",
    )

    @validate("gpu_idle_threshold")
    def _check_idle_threshold(self, proposal):
        if not 0 <= proposal.value <= 1:
            raise TraitError(f"Crater.gpu_idle_threshold must be between 0 and 1 (a utilization "
                             f"ratio), got {proposal.value!r}")
        return proposal.value

    @validate("gpu_idle_window")
    def _check_idle_window(self, proposal):
        return self._parse(check_seconds, proposal.value, "Crater.gpu_idle_window", 0)

    @validate("gpu_owner_visibility")
    def _check_owner_visibility(self, proposal):
        return self._parse(check_one_of, proposal.value, ("names", "self"),
                           "Crater.gpu_owner_visibility")

    # -- the job queue (crater_hub.queue) -------------------------------------------------------
    job_priorities = List(
        Dict(), config=True,
        help="""Priority classes of batch jobs, highest ``value`` first, e.g.
        ``[{"name": "high", "value": 100, "allowed_groups": ["ml-staff"]},
        {"name": "normal", "value": 50, "default": true},
        {"name": "best-effort", "value": 0, "best_effort": true}]``. ``best_effort`` jobs may
        run beyond quota on idle capacity and are preempted for guaranteed jobs. Empty: one
        class, ``normal``, for everyone.""",
    )
    job_queue_backend = Unicode(
        "embedded", config=True,
        help="""``embedded`` (the hub admits jobs: priorities, fair share, quotas) or ``kueue``
        (Jobs are created suspended in ``job_kueue_local_queue`` and Kueue admits them).""",
    )
    job_queue_backend_class = Type(
        None, klass="crater_hub.queue.backends.base.QueueBackend", allow_none=True, config=True,
        help="""The admission engine's class, a subclass of
        ``crater_hub.queue.backends.base.QueueBackend`` (or its import path), for an engine of
        your own. None: the one ``job_queue_backend`` names.""",
    )
    job_log_streams_per_user = Integer(
        4, min=-1, config=True,
        help="""How many job logs one user may follow at once (``follow=1``: each holds a
        stream from the Kubernetes API); past it, 429. -1: no limit.""",
    )
    ray_version = Unicode(
        "2.60.0", config=True,
        help="""The Ray version of ``ray_image`` (a RayCluster's ``rayVersion``; KubeRay picks its
        probes and start flags by it). A cluster whose image names another version is refused.""",
    )
    ray_image = Unicode(
        "", config=True,
        help="""The image of Ray clusters' head and workers when a request names none. Empty:
        ``rayproject/ray:<ray_version>``. A request may also name an image its profile allows.""",
    )
    ray_head_cpu = Unicode("1", config=True, help="CPU of a Ray cluster's head (it runs no tasks).")
    ray_head_memory = Unicode("2Gi", config=True, help="Memory of a Ray cluster's head.")
    ray_max_workers = Integer(
        8, min=0, config=True,
        help="The most workers one Ray cluster may have (``workers`` on create and scale).",
    )
    ray_idle_timeout = Float(
        3600, config=True,
        help="""Seconds a Ray cluster created with ``lifetime: "idle"`` may stay idle before the
        hub deletes it: no running or pending Ray job (the hub asks the head's Jobs API) and no
        request through the hub's dashboard proxy.""",
    )
    ray_idle_warning = Float(
        600, config=True,
        help="""Seconds before an idle deletion from which the owner is warned (the Ray page and
        the REST model's ``idle_warning``); at most ``ray_idle_timeout``.""",
    )
    ray_max_lifetime = Float(
        7 * 86400, config=True,
        help="""The most seconds a ``lifetime: "idle"`` Ray cluster lives, busy or not (0: no
        limit). The owner is warned ``ray_idle_warning`` seconds before.""",
    )

    @validate("ray_idle_timeout")
    def _check_ray_idle_timeout(self, proposal):
        return self._parse(check_seconds, proposal.value, "Crater.ray_idle_timeout", 10)

    @validate("ray_idle_warning")
    def _check_ray_idle_warning(self, proposal):
        return self._parse(check_seconds, proposal.value, "Crater.ray_idle_warning", 0)

    @validate("ray_max_lifetime")
    def _check_ray_max_lifetime(self, proposal):
        return self._parse(check_seconds, proposal.value, "Crater.ray_max_lifetime", 0)

    jobs_namespace = Unicode(
        "", config=True,
        help="""Namespace of batch Jobs. Empty: the single-user servers' (``KubeSpawner.namespace``),
        where jobs can mount their owner's home; another namespace keeps jobs apart, without
        the home (a claim is mounted only in its own namespace).""",
    )
    job_home = Unicode(
        "auto", config=True,
        help="""``auto``: a job mounts its owner's home as their default server does (created if
        missing), works in it, and — for a ReadWriteOnce home — runs on the node of the owner's
        running server. ``never``: jobs get no home.""",
    )
    jobs_db_url = Unicode(
        "", config=True,
        help="SQLAlchemy URL of the jobs database. Empty: the hub's own ``JupyterHub.db_url``.",
    )
    job_preemption_after = Float(
        300, config=True,
        help="Seconds a guaranteed job waits for capacity before best-effort jobs are preempted.",
    )
    job_default_runtime = Integer(
        86400, config=True,
        help="Seconds a job may run when it declares no ``max_runtime`` (activeDeadlineSeconds).",
    )
    job_max_runtime = Integer(
        7 * 86400, config=True, help="The largest ``max_runtime`` a job may declare, in seconds.",
    )
    job_queueing_strategy = Unicode(
        "best_effort_fifo", config=True,
        help="""Within one user's jobs of one priority class: ``best_effort_fifo`` lets a later
        job that fits start before an earlier one that waits (for quota or capacity);
        ``strict_fifo`` starts them in submission order. Fair share between users is the same
        either way. With the kueue backend set the ClusterQueue's ``queueingStrategy`` instead.""",
    )

    @validate("job_queueing_strategy")
    def _check_strategy(self, proposal):
        return self._parse(check_one_of, proposal.value, JOB_QUEUEING_STRATEGIES,
                           "Crater.job_queueing_strategy")

    job_requeue_preempted = Bool(
        False, config=True,
        help="Queue preempted jobs again (as a new attempt) instead of leaving them preempted.",
    )
    job_kueue_local_queue = Unicode(
        "crater", config=True,
        help="""The Kueue LocalQueue jobs (and Ray clusters, in the servers' namespace) go to
        with the kueue backend.""",
    )
    job_kueue_priority_classes = Bool(
        False, config=True,
        help="""With the kueue backend, label each Job ``kueue.x-k8s.io/priority-class: <its
        priority class>`` (``high``, ``normal``, ... from ``job_priorities``), so that Kueue
        orders and preempts by them. Create a WorkloadPriorityClass of each name first: Kueue
        leaves a Job whose class does not exist suspended.""",
    )
    job_ttl_after_finished = Integer(
        7 * 86400, config=True,
        help="""ttlSecondsAfterFinished of Jobs: a backstop only, the hub deletes a finished Job
        itself once its outcome and log tail are stored.""",
    )
    job_default_image = Unicode(
        "", config=True,
        help="Image of jobs whose profile names none and that ask for none. Empty: "
             "``KubeSpawner.image`` as configured.",
    )

    # -- datasets (crater_hub.datasets) -----------------------------------------------------------
    datasets_volume = Unicode(
        "", config=True,
        help="""The shared data volume: the name of an existing ReadWriteMany
        PersistentVolumeClaim in the namespace where servers and jobs run (a claim is namespaced:
        create one of this name in each). Users' datasets live in it under ``users/<name>/``,
        published ones under ``public/``. Empty: users cannot create datasets (catalog datasets
        still work).""",
    )
    datasets_volume_create = Dict(
        {}, config=True,
        help="""Create ``datasets_volume`` when it is missing, with these settings:
        ``{"storage": "10Gi", "storage_class": "nfs-client"}`` (ReadWriteMany). Empty: the
        operator provides the claim (the production way: NFS or CephFS, see docs/deploy.md).
        The embedded default sets it, as localkube's claims are local directories.""",
    )
    datasets_own_path = Unicode(
        "/my-datasets", config=True,
        help="""Where a user's own space (``users/<name>/`` of ``datasets_volume``) is mounted,
        writable, in their servers: they fill a dataset ``d`` by writing to
        ``<datasets_own_path>/d/``; and the space of each of their groups (``groups/<group>/``) at
        ``<datasets_own_path>-groups/<group>``, where members fill the group's datasets
        ``@<group>/d``. Empty: neither is mounted.""",
    )
    datasets_catalog = List(
        Dict(), config=True,
        help="""Catalog datasets the operator provides: ``{"name": "imagenet", "description": ...,
        "kind": "dataset"|"model", "claim": "<existing PVC>" (default: datasets_volume),
        "sub_path": "imagenet/2012", "editable": false, "size": "150Gi", "allowed_groups": [...],
        "allowed_users": [...]}``; open to everyone when neither list is given. NFS or host
        paths: through a PersistentVolume + claim the operator creates (pods that meet
        PodSecurity ``restricted`` cannot use inline nfs/hostPath volumes).""",
    )
    datasets_max_per_request = Integer(
        8, config=True, help="The most datasets one server or job may mount.",
    )
    datasets_demo = Unicode(
        "", config=True,
        help="""The name of a catalog dataset to fill with a few small generated files at the
        hub's first start (when it is empty): the embedded default's demo dataset.""",
    )

    @validate("datasets_volume")
    def _check_datasets_volume(self, proposal):
        if proposal.value and not NAMESPACE.match(proposal.value):
            raise TraitError(f"Crater.datasets_volume must be a PersistentVolumeClaim name "
                             f"(DNS-1123), got {proposal.value!r}")
        return proposal.value

    @validate("datasets_volume_create")
    def _check_datasets_volume_create(self, proposal):
        self._parse(check_mapping, proposal.value, {"storage", "storage_class"},
                    "Crater.datasets_volume_create")
        return proposal.value

    @validate("datasets_own_path")
    def _check_own_path(self, proposal):
        value = proposal.value
        if value and (not value.startswith("/") or ".." in value.split("/")
                      or value.rstrip("/") in ("", "/datasets") or value.startswith("/datasets/")):
            raise TraitError(f"Crater.datasets_own_path must be an absolute path outside "
                             f"/datasets, without '..', got {value!r}")
        return value.rstrip("/") if value else value

    @validate("datasets_catalog")
    def _check_catalog(self, proposal):
        # datasets_volume may be loaded after this list: a claim left out is checked at use
        self._parse(datasets_mod.parse_catalog, proposal.value, "Crater.datasets_catalog",
                    self.datasets_volume or "datasets-volume")
        return proposal.value

    @validate("datasets_max_per_request")
    def _check_max_datasets(self, proposal):
        if not 0 <= proposal.value <= 64:
            raise TraitError(f"Crater.datasets_max_per_request must be from 0 to 64, "
                             f"got {proposal.value}")
        return proposal.value

    # -- GPU utilization (crater_hub.gpus) ---------------------------------------------------------
    prometheus_url = Unicode(
        "", config=True,
        help="""Prometheus that scrapes NVIDIA's DCGM exporter, e.g.
        ``http://prometheus-server.monitoring.svc:80`` (the hub queries ``/api/v1/query``).
        Empty: no utilization; GPU pages show allocation and say utilization is not configured.""",
    )
    prometheus_headers = Dict(
        config=True,
        help="""HTTP headers sent with every Prometheus query, e.g.
        ``{"Authorization": "Bearer <token>"}`` for a Prometheus behind an authenticating proxy.""",
    )
    prometheus_scrape_interval = Float(
        15, config=True,
        help="""Seconds between Prometheus's scrapes of the DCGM exporter: the hub asks
        Prometheus for utilization at most once per interval, for all viewers together.""",
    )
    dcgm_labels = Dict(
        config=True,
        help="""Label names of the DCGM exporter series where they differ from the exporter's,
        per key: node (default ``Hostname``, then ``hostname``), gpu, uuid, model, instance
        (``GPU_I_ID``), profile (``GPU_I_PROFILE``), pod (``exported_pod``, then ``pod``),
        namespace, container. A name or a list of names tried in order, e.g.
        ``{"node": ["kubernetes_node", "Hostname"]}``.""",
    )

    @validate("prometheus_url")
    def _check_prometheus_url(self, proposal):
        url = proposal.value
        if url and not url.startswith(("http://", "https://")):
            raise TraitError(f"Crater.prometheus_url must be an http:// or https:// URL, got {url!r}")
        return url

    @validate("prometheus_headers")
    def _check_prometheus_headers(self, proposal):
        for k, v in proposal.value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TraitError(
                    f"Crater.prometheus_headers must map header names to strings, got {k!r}: {type(v).__name__}"
                )
        return proposal.value

    @validate("prometheus_scrape_interval")
    def _check_scrape_interval(self, proposal):
        return self._parse(check_seconds, proposal.value, "Crater.prometheus_scrape_interval", 1, 3600)

    @validate("dcgm_labels")
    def _check_dcgm_labels(self, proposal):
        self._parse(dcgm_label_names, proposal.value)
        return proposal.value

    @validate("job_priorities")
    def _check_priorities(self, proposal):
        self._parse(priorities_mod.parse_priorities, proposal.value)
        return proposal.value

    @validate("job_queue_backend")
    def _check_backend(self, proposal):
        return self._parse(check_one_of, proposal.value, JOB_QUEUE_BACKENDS, "Crater.job_queue_backend")

    @validate("jobs_namespace")
    def _check_namespace(self, proposal):
        return self._parse(check_namespace, proposal.value, "Crater.jobs_namespace")

    @validate("job_home")
    def _check_job_home(self, proposal):
        if proposal.value not in ("auto", "never"):
            raise TraitError(f"Crater.job_home must be 'auto' or 'never', got {proposal.value!r}")
        return proposal.value

    @validate("job_preemption_after", "job_default_runtime", "job_max_runtime", "job_ttl_after_finished")
    def _check_seconds(self, proposal):
        name = proposal.trait.name
        return self._parse(check_seconds, proposal.value, f"Crater.{name}",
                           0 if name == "job_preemption_after" else 1)

    @validate("accelerators")
    def _check_accelerators(self, proposal):
        self._parse(accelerators_mod.parse, proposal.value)
        return proposal.value

    @validate("profiles")
    def _check_profiles(self, proposal):
        self._parse(profiles_mod.parse, proposal.value, self._known_slugs())
        return proposal.value

    @validate("quotas")
    def _check_quotas(self, proposal):
        self._parse(quotas_mod.parse, proposal.value)
        return proposal.value

    @observe("accelerators")
    def _recheck_profiles(self, change):
        self._parse(profiles_mod.parse, self.profiles, self._known_slugs())

    @staticmethod
    def _parse(parser, *args):
        try:
            return parser(*args)
        except ConfigError as e:
            raise TraitError(str(e)) from None

    def _known_slugs(self):
        return [a["slug"] for a in self.accelerators] if self.accelerators else None

    # -- parsed views ----------------------------------------------------------------------------
    # Parsed once per value and kept: they are read on every spawn, submit and admission cycle.
    # Assigning a setting anew forgets them; changing a list or dict in place after the first
    # read does not (configuration is loaded once, at the hub's start).

    @observe("accelerators", "profiles", "quotas", "job_priorities", "datasets_catalog",
             "datasets_volume")
    def _forget_parsed(self, change):
        self._parsed_views.clear()

    @property
    def _parsed_views(self):
        return self.__dict__.setdefault("_crater_parsed_views", {})

    def _view(self, name, parse):
        views = self._parsed_views
        if name not in views:
            views[name] = parse()
        return views[name]

    def accelerator_catalog(self):
        """The configured accelerators, or None to discover them from the cluster."""
        return self._view("accelerators",
                          lambda: accelerators_mod.parse(self.accelerators) or None)

    def profile_list(self):
        return self._view("profiles",
                          lambda: profiles_mod.parse(self.profiles, self._known_slugs()))

    def quota_policy(self):
        return self._view("quotas", lambda: quotas_mod.parse(self.quotas))

    def ray_local_queue(self):
        """The Kueue LocalQueue new RayClusters are labelled with (and created suspended for), or
        None: Kueue admits Ray clusters when it admits the jobs (``job_queue_backend`` kueue, or a
        ``job_queue_backend_class`` whose ``name`` is ``"kueue"``, such as a subclass of ours)."""
        backend = getattr(self.job_queue_backend_class, "name", None) or self.job_queue_backend
        return self.job_kueue_local_queue if backend == "kueue" else None

    def priority_classes(self):
        return self._view("priorities",
                          lambda: priorities_mod.parse_priorities(self.job_priorities))

    def dataset_catalog(self):
        """The catalog datasets (:class:`~crater_hub.policy.datasets.Dataset`), by name order."""
        return self._view("datasets", lambda: datasets_mod.parse_catalog(
            self.datasets_catalog, "Crater.datasets_catalog", self.datasets_volume))
