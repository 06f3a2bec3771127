"""What a pod is, for the people looking at a GPU: whose server, whose job, which Ray cluster.

The heatmap, the node load view and GPU accounting all need to turn a pod holding devices into
"ann's server *gpu*" or "job 12 of bob" with a link. They only have the pod (from the shared pod
cache), so :func:`classify` reads what the creators already write on it:

- **server**: KubeSpawner's single-user pods carry ``component: singleuser-server`` (and
  ``app.kubernetes.io/component``), the label ``hub.jupyter.org/username`` (escaped with
  ``safe_slug``, so not the user's name), and the *annotations* ``hub.jupyter.org/username`` (the
  real name) and ``hub.jupyter.org/servername`` (only for named servers).
- **job**: crater's job pods (``crater_hub.queue.manifest``) carry ``crater.io/kind: job``,
  ``crater.io/job-id`` and the annotation ``crater.io/owner-name`` (the label ``crater.io/owner``
  is escaped).
- **ray**: KubeRay's pods carry ``ray.io/cluster`` (and ``ray.io/node-type``); crater's
  RayClusters add ``crater.io/owner`` (and the ``crater.io/owner-name`` annotation) to their pod
  templates. A Ray cluster nobody in the hub launched is still Ray, with no user.
- **system**: the platform's own pods (z2jh's hub, proxy, schedulers, image pullers; crater's
  commit pods) and everything in a system namespace (``kube-system``, ``kube-*``, and the
  ``system_namespaces`` the caller names, typically the hub's own namespace).
- **external**: anything else (another team's pods on a shared cluster).

Pure functions over the pod's JSON dict (as the API server sends it); no I/O.
"""

from dataclasses import dataclass
from urllib.parse import quote

from ..kube.inventory import pod_requests

SERVER, JOB, RAY, SYSTEM, EXTERNAL = "server", "job", "ray", "system", "external"
KINDS = (SERVER, JOB, RAY, SYSTEM, EXTERNAL)

#: KubeSpawner's component label values of the pods it spawns for users
SERVER_COMPONENTS = ("singleuser-server",)
#: z2jh's own components (the hub's namespace), always platform pods
Z2JH_COMPONENTS = ("hub", "proxy", "autohttps", "user-scheduler", "continuous-image-puller",
                   "hook-image-puller", "image-puller", "singleuser-storage")


@dataclass(frozen=True)
class Workload:
    """Who and what a pod belongs to.

    ``kind``: one of :data:`KINDS`. ``user``: the hub user's real name, or None (system, external,
    a Ray cluster not launched through the hub). ``name``: the server name ("" = the default
    server), the job id (as a string), the Ray cluster name, or the pod name (system, external).
    ``link``: the workload's page, relative to the hub's base URL (``/hub/crater/jobs/12``,
    ``/user/ann/``), or None; the full URL is ``base_url.rstrip("/") + link``.
    """

    kind: str
    user: str | None
    name: str
    link: str | None


def _meta(pod):
    meta = pod.get("metadata") or {}
    return meta.get("labels") or {}, meta.get("annotations") or {}, meta


def _is_system_namespace(namespace, system_namespaces):
    return bool(namespace) and (
        namespace in system_namespaces or namespace == "kube-system" or namespace.startswith("kube-")
    )


def _owner(labels, annotations):
    """The real user name of a crater object: the annotation, else the (escaped) label."""
    return annotations.get("crater.io/owner-name") or labels.get("crater.io/owner") or None


def server_link(user, server_name=""):
    """The single-user server's URL, relative to the base URL (``/user/ann/`` or ``/user/ann/gpu/``)."""
    path = f"/user/{quote(user, safe='')}/"
    return path + (f"{quote(server_name, safe='')}/" if server_name else "")


def classify(pod, *, system_namespaces=()):
    """The :class:`Workload` ``pod`` belongs to (see the module's docstring for the rules).

    ``system_namespaces``: namespaces whose pods are the platform's own unless they are a user's
    server, job or Ray cluster (the hub's namespace holds both).
    """
    labels, annotations, meta = _meta(pod)
    pod_name = meta.get("name", "")
    component = labels.get("component") or labels.get("app.kubernetes.io/component")

    if component in SERVER_COMPONENTS and (
        "hub.jupyter.org/username" in annotations or "hub.jupyter.org/username" in labels
    ):
        user = annotations.get("hub.jupyter.org/username") or labels["hub.jupyter.org/username"]
        server = annotations.get("hub.jupyter.org/servername", "")
        return Workload(SERVER, user, server, server_link(user, server))

    kind = labels.get("crater.io/kind")
    if kind == "job" and labels.get("crater.io/job-id"):
        job_id = labels["crater.io/job-id"]
        return Workload(JOB, _owner(labels, annotations), job_id, f"/hub/crater/jobs/{job_id}")

    if labels.get("ray.io/cluster"):
        return Workload(RAY, _owner(labels, annotations), labels["ray.io/cluster"], None)

    managed_by_crater = labels.get("app.kubernetes.io/managed-by") == "crater-hub"
    z2jh = (labels.get("app") == "jupyterhub" or labels.get("app.kubernetes.io/name") == "jupyterhub")
    if (managed_by_crater or (z2jh and component in Z2JH_COMPONENTS)
            or _is_system_namespace(meta.get("namespace"), system_namespaces)):
        return Workload(SYSTEM, _owner(labels, annotations) if managed_by_crater else None,
                        pod_name, None)
    return Workload(EXTERNAL, None, pod_name, None)


def is_device_resource(name):
    """Whether ``name`` is an extended resource handed out as devices (``vendor.com/thing``).

    Kubernetes-native names (``cpu``, ``hugepages-2Mi``, ``*.kubernetes.io/...``) are not.
    """
    domain, slash, _ = name.partition("/")
    if not slash or name.startswith("requests."):
        return False
    return domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


def device_requests(pod):
    """The extended device resources ``pod`` holds: ``{"nvidia.com/gpu": 2}`` (whole units),
    summed as kube-scheduler and the device manager do (:func:`~crater_hub.kube.inventory.pod_requests`:
    containers, sidecars, the largest init container; a limit without a request counts)."""
    return {k: int(v) for k, v in sorted(pod_requests(pod).items()) if is_device_resource(k) and v > 0}
