"""The shared reference CRDs (KubeRay, Kueue): from the team's folder, else the vendored copies;
and the validators our tests check objects with, as the API server would.

Built-in kinds are validated with the ``kubernetes-validate`` package in strict mode (unknown
fields rejected, as ``kubectl apply`` does by default); custom resources with the openAPIV3Schema
of their CRD, made strict the same way.
"""

import gzip
import os
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - a broken install, not a skip
    kubernetes_validate = None

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HERE = Path(__file__).parent
CANDIDATES = [
    Path(os.environ["CRATER_REFERENCE_DIR"]) if os.environ.get("CRATER_REFERENCE_DIR") else None,
    HERE.parent.parent / "shared" / "reference",
    HERE / "data" / "reference",
]


def load_reference(name):
    """Parse reference file ``name`` (e.g. ``kueue-workloads.yaml``)."""
    for folder in filter(None, CANDIDATES):
        if (folder / name).exists():
            return yaml.load((folder / name).read_text(), Loader=LOADER)
        if (folder / f"{name}.gz").exists():
            return yaml.load(gzip.decompress((folder / f"{name}.gz").read_bytes()), Loader=LOADER)
    raise FileNotFoundError(f"reference file {name} not found in {[str(c) for c in CANDIDATES if c]}")


KUBERNETES_VERSION = "1.30"  # the oldest Kubernetes Kueue 0.19 and KubeRay 1.x support
CRDS = {
    "ResourceFlavor": "kueue-resourceflavors.yaml",
    "ClusterQueue": "kueue-clusterqueues.yaml",
    "LocalQueue": "kueue-localqueues.yaml",
    "Workload": "kueue-workloads.yaml",
    "RayCluster": "kuberay-ray.io_rayclusters.yaml",
}


def k8s_validate(obj):
    """Raise on an object Kubernetes would refuse (unknown fields included)."""
    assert kubernetes_validate is not None, \
        "kubernetes-validate is not installed: pip install -e '.[test]' (it is in the test extra)"
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def strict(schema):
    """A CRD's structural schema, with unknown fields refused where the CRD does not keep them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k != "properties" else {n: strict(s) for n, s in v.items()}
           for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_errors(obj):
    """Where ``obj`` breaks the schema of its CRD, at the apiVersion it names."""
    crd = load_reference(CRDS[obj["kind"]])
    group, version = obj["apiVersion"].split("/")
    assert crd["spec"]["group"] == group
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{obj['kind']} {version} is not served; served: {sorted(served)}"
    schema = strict(served[version]["schema"]["openAPIV3Schema"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(obj)]
