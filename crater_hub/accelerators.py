"""The accelerator catalog: which GPU (or other device) types the cluster offers, and how to ask.

An :class:`Accelerator` is what a researcher picks ("A100 80GB") and everything the spawner and
the capacity code need to turn that pick into Kubernetes terms: the extended resource to request,
the node labels that select nodes of that model, the tolerations those nodes need, and the env var
through which the device plugin exposes the granted devices.

Operators list accelerators in configuration (JSON-shaped dicts, validated by :func:`parse`);
when they list none, :func:`discover` derives the catalog from node labels written by NVIDIA GPU
feature discovery (``nvidia.com/gpu.product``, ``nvidia.com/gpu.memory``) and AMD's labeller
(``amd.com/gpu.product-name``), and from the extended resources nodes advertise.
"""

import re
from dataclasses import dataclass, field

from .checks import ConfigError, check_mapping, check_slug

DEFAULT_ENV = {
    "nvidia.com/": "NVIDIA_VISIBLE_DEVICES",
    "amd.com/": "ROCR_VISIBLE_DEVICES",
    "huawei.com/": "ASCEND_VISIBLE_DEVICES",
}
#: variables through which a device plugin's choice of devices reaches a container, beyond
#: :data:`DEFAULT_ENV`: the CUDA, HIP and Ascend runtimes' own selectors, and NVIDIA's MIG controls
DEVICE_ENV = (
    "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_MIG_CONFIG_DEVICES",
    "NVIDIA_MIG_MONITOR_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL", "ASCEND_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES",
)
PRODUCT_LABELS = {"nvidia.com/gpu": "nvidia.com/gpu.product", "amd.com/gpu": "amd.com/gpu.product-name"}
KNOWN_KEYS = {"slug", "display_name", "resource", "node_selector", "tolerations", "memory", "env"}
NVIDIA_DEVICES = "NVIDIA_VISIBLE_DEVICES"
#: what a pod holding no NVIDIA GPU gets: CUDA images set NVIDIA_VISIBLE_DEVICES=all in their own
#: ENV, which with the NVIDIA runtime's environment strategy exposes every GPU of the node
NO_NVIDIA_ENV = {NVIDIA_DEVICES: "void"}


def holds_nvidia_gpu(device_env, count):
    """Whether a pod granted ``count`` devices exposed through ``device_env`` (an accelerator's
    ``env``) holds NVIDIA GPUs, which the device plugin then names in NVIDIA_VISIBLE_DEVICES."""
    return bool(count) and device_env == NVIDIA_DEVICES


def default_env(resource):
    for prefix, env in DEFAULT_ENV.items():
        if resource.startswith(prefix):
            return env
    return ""


def device_env_names(accelerators=()):
    """Every variable name that selects devices: the known runtimes' and each accelerator's own
    ``env`` (an operator may name another)."""
    return frozenset(DEVICE_ENV) | {a.env for a in accelerators if a.env}


def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


@dataclass(frozen=True)
class Accelerator:
    slug: str
    display_name: str
    resource: str
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    memory: str = ""
    env: str = ""

    def matches(self, labels, allocatable):
        """Whether a node with these labels and allocatable resources offers this accelerator."""
        return self.resource in allocatable and all(labels.get(k) == v for k, v in self.node_selector.items())

    def model(self):
        """The JSON shape used by the REST API and the spawn form."""
        return {"slug": self.slug, "display_name": self.display_name, "resource": self.resource,
                "memory": self.memory or None, "node_selector": dict(self.node_selector)}


def parse(entries, where="Crater.accelerators"):
    """Validate the operator's accelerator list into :class:`Accelerator` objects."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{where} must be a list of accelerator definitions, got {type(entries).__name__}")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        check_mapping(entry, KNOWN_KEYS, here, "at least 'slug' and 'resource'")
        slug = check_slug(entry.get("slug"), f"{here}.slug")
        if slug in seen or slug == "none":
            raise ConfigError(f"{here}.slug {slug!r} is used twice or reserved")
        seen.add(slug)
        resource = entry.get("resource")
        if not isinstance(resource, str) or "/" not in resource:
            raise ConfigError(f"{here}.resource must be an extended resource name such as "
                              f"'nvidia.com/gpu', got {resource!r}")
        selector = entry.get("node_selector", {})
        if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
            raise ConfigError(f"{here}.node_selector must map label names to string values")
        tolerations = entry.get("tolerations", [])
        if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
            raise ConfigError(f"{here}.tolerations must be a list of Kubernetes toleration mappings")
        out.append(Accelerator(
            slug=slug, display_name=str(entry.get("display_name") or slug), resource=resource,
            node_selector=dict(selector), tolerations=tuple(tolerations),
            memory=str(entry.get("memory") or ""), env=str(entry.get("env") or default_env(resource)),
        ))
    return out


MIG_PREFIX = "nvidia.com/mig-"


def product_label(resource):
    """The feature-discovery label naming the model behind ``resource``, or None: GFD labels
    each MIG profile of a mixed-strategy node ``nvidia.com/mig-<profile>.product``."""
    if resource.startswith(MIG_PREFIX):
        return f"{resource}.product"
    return PRODUCT_LABELS.get(resource)


def memory_label(resource):
    return f"{resource}.memory" if resource.startswith(MIG_PREFIX) else "nvidia.com/gpu.memory"


def discovery_labels(labels):
    """The labels of a node that :func:`discover` reads (products and memory, MIG's included)."""
    return tuple(sorted((k, v) for k, v in labels.items()
                        if k in PRODUCT_LABELS.values() or k == "nvidia.com/gpu.memory"
                        or (k.startswith(MIG_PREFIX) and k.endswith((".product", ".memory")))))


def _memory(mib):
    if not mib or not mib.isdigit():
        return ""
    return f"{int(mib) // 1024}Gi" if int(mib) % 1024 == 0 else f"{mib}Mi"


def discover(nodes):
    """An accelerator per GPU model (from feature-discovery labels) or per extended resource.

    ``nodes`` are Node dicts. A model becomes ``resource`` + a node selector on its product label.
    MIG profiles are models of their own (GFD's ``nvidia.com/mig-1g.10gb.product``:
    ``NVIDIA-A100-SXM4-80GB-MIG-1g.10gb``, one device = one instance); time-sliced GPUs too, as
    GFD renames their product ``...-SHARED`` (one device = one replica: ``nvidia.com/gpu`` on
    such a node is physical × replicas). Resources without a product label (Ascend, MIG without
    GFD) become an accelerator each, selected by the resource alone.
    """
    found = {}
    for node in nodes:
        labels = node["metadata"].get("labels") or {}
        allocatable = node.get("status", {}).get("allocatable") or {}
        for resource, amount in allocatable.items():
            if "/" not in resource or resource.startswith(("kubernetes.io/", "hugepages-")) or str(amount) in ("0", ""):
                continue
            label = product_label(resource)
            product = labels.get(label) if label else None
            if product:
                slug = slugify(product.removeprefix("NVIDIA-").removeprefix("Tesla-"))
                acc = Accelerator(slug, product.replace("-", " "), resource, {label: product},
                                  memory=_memory(labels.get(memory_label(resource))),
                                  env=default_env(resource))
            else:
                slug = slugify(resource.split("/", 1)[1])
                acc = Accelerator(slug, resource, resource, env=default_env(resource))
            found.setdefault(acc.slug, acc)
    return sorted(found.values(), key=lambda a: a.slug)
