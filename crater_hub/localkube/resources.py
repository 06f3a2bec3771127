"""The kinds localkube serves: built-in ones and those defined by CustomResourceDefinitions.

A :class:`Resource` is what the REST layer needs to route a URL and what discovery documents
advertise. The :class:`Registry` is the single lookup table; CRDs add entries at runtime.
"""

from dataclasses import dataclass, field

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# Subresources that are not the object itself: their kind and verbs in discovery, as the API
# server lists them (status and scale are the object's own kind, read and written).
SUBRESOURCE_KINDS = {
    "log": ("Pod", ["get"]),
    "binding": ("Binding", ["create"]),
    "exec": ("PodExecOptions", ["create", "get"]),
    "portforward": ("PodPortForwardOptions", ["create", "get"]),
}


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple = ()
    categories: tuple = ()
    subresources: tuple = ()  # e.g. ("status", "log")
    printer_columns: tuple = ()  # CRD additionalPrinterColumns, as given
    list_kind: str = ""

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self):
        """Identity of the kind across versions: (group, plural)."""
        return (self.group, self.plural)

    @property
    def has_status(self):
        return "status" in self.subresources

    def discovery_entries(self):
        name = self.singular or self.kind.lower()
        entries = [
            {
                "name": self.plural,
                "singularName": name,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": VERBS,
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
                **({"categories": list(self.categories)} if self.categories else {}),
            }
        ]
        for sub in self.subresources:
            kind, verbs = SUBRESOURCE_KINDS.get(sub, (self.kind, ["get", "patch", "update"]))
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
        return entries


def _core(kind, plural, namespaced=True, short=(), subresources=(), categories=("all",)):
    return Resource("", "v1", kind, plural, namespaced, kind.lower(), tuple(short), tuple(categories), tuple(subresources))


BUILTINS = [
    _core("Namespace", "namespaces", False, ("ns",), ("status",), ()),
    _core("Node", "nodes", False, ("no",), ("status",), ()),
    _core("Pod", "pods", True, ("po",), ("status", "log", "binding", "exec", "portforward")),
    _core("Event", "events", True, ("ev",), (), ()),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), ("status",), ()),
    _core("Service", "services", True, ("svc",), ("status",)),
    _core("Secret", "secrets", True, (), (), ()),
    _core("ConfigMap", "configmaps", True, ("cm",), (), ()),
    _core("ServiceAccount", "serviceaccounts", True, ("sa",), (), ()),
    _core("Endpoints", "endpoints", True, ("ep",), (), ()),
    Resource("batch", "v1", "Job", "jobs", True, "job", (), ("all",), ("status",)),
    Resource(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        False, "customresourcedefinition", ("crd", "crds"), (), ("status",),
    ),
    Resource(
        "apiregistration.k8s.io", "v1", "APIService", "apiservices", False, "apiservice", (), (),
        ("status",),
    ),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, "endpointslice"),
    Resource("events.k8s.io", "v1", "Event", "events", True, "event", ("ev",)),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True, "lease"),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True, "role"),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, "rolebinding"),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, "clusterrole"),
    Resource(
        "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False,
        "clusterrolebinding",
    ),
    Resource("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, "priorityclass", ("pc",)),
    Resource("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, "storageclass", ("sc",)),
]

# Kinds that share storage with another group's kind (events.k8s.io/v1 Event is core/v1 Event).
STORAGE_ALIASES = {("events.k8s.io", "events"): ("", "events")}


@dataclass
class Registry:
    """All served resources, indexed by (group, version, plural)."""

    resources: dict = field(default_factory=dict)

    def __post_init__(self):
        for res in BUILTINS:
            self.add(res)

    def add(self, res):
        self.resources[(res.group, res.version, res.plural)] = res

    def remove_group_kind(self, group, plural):
        for key in [k for k in self.resources if k[0] == group and k[2] == plural]:
            del self.resources[key]

    def lookup(self, group, version, plural):
        return self.resources.get((group, version, plural))

    def by_kind(self, api_version, kind):
        group, _, version = api_version.rpartition("/")
        for res in self.resources.values():
            if res.group == group and res.version == version and res.kind == kind:
                return res
        return None

    def storage_key(self, res):
        """The key objects of ``res`` are stored under (shared across versions and aliases)."""
        return STORAGE_ALIASES.get(res.key, res.key)

    def groups(self):
        """{group: [versions]} for the named groups (the core group is served at /api)."""
        out = {}
        for group, version, _ in self.resources:
            if group:
                versions = out.setdefault(group, [])
                if version not in versions:
                    versions.append(version)
        return out

    def in_group_version(self, group, version):
        return [r for (g, v, _), r in self.resources.items() if g == group and v == version]

    def all(self):
        return list(self.resources.values())


def resources_from_crd(crd):
    """The :class:`Resource` entries a CustomResourceDefinition serves (one per served version)."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subs = tuple(k for k in ("status", "scale") if k in (ver.get("subresources") or {}))
        out.append(
            Resource(
                group=spec["group"],
                version=ver["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                subresources=subs,
                printer_columns=tuple(
                    tuple(sorted(c.items())) for c in ver.get("additionalPrinterColumns", ())
                ),
                list_kind=names.get("listKind", names["kind"] + "List"),
            )
        )
    return out
