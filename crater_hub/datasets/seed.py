"""At the hub's start: the data volume's claim (when the operator asked for it to be created)
and the demo catalog dataset's files (``Crater.datasets_demo``, the embedded default's).

Both go through the Kubernetes API, never the hub's filesystem (on a real cluster the hub has no
access to the volume): the claim is created under its configured name (409: it exists), and the
demo files are written by a short-lived pod under a deterministic name (409: made at an earlier
start), which mounts the dataset's ``subPath`` writable and writes a few small files unless a
README is already there.
"""

import logging

from kubernetes_asyncio.client.exceptions import ApiException

from ..kube.client import shared_client

log = logging.getLogger("crater_hub.datasets")

MANAGED_BY = {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "dataset-seed"}
DEMO_POD = "crater-demo-dataset"
DEMO_SCRIPT = r"""set -e
cd /data
if [ -e README.md ]; then echo "demo dataset already filled"; exit 0; fi
cat > README.md <<'END'
# Demo dataset (crater_hub)

A few small generated files, to try dataset mounts: iris.csv (the first rows of Fisher's iris
data) and labels.txt. Mounted read-only at /datasets/<name> in servers and jobs that pick it.
END
printf 'sepal_length,sepal_width,petal_length,petal_width,species\n' > iris.csv
printf '5.1,3.5,1.4,0.2,setosa\n4.9,3.0,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n' >> iris.csv
printf '6.4,3.2,4.5,1.5,versicolor\n6.3,3.3,6.0,2.5,virginica\n5.8,2.7,5.1,1.9,virginica\n' >> iris.csv
printf 'setosa\nversicolor\nvirginica\n' > labels.txt
echo "demo dataset filled"
"""


def claim_manifest(name, namespace, settings):
    spec = {"accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": settings.get("storage", "10Gi")}}}
    if settings.get("storage_class"):
        spec["storageClassName"] = settings["storage_class"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "spec": spec}


def demo_pod_manifest(dataset, namespace, image):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": DEMO_POD, "namespace": namespace, "labels": dict(MANAGED_BY),
                     "annotations": {"crater.io/dataset": dataset.name}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 100,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "seed", "image": image, "command": ["sh", "-c", DEMO_SCRIPT],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data",
                                  **({"subPath": dataset.sub_path} if dataset.sub_path else {})}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": dataset.claim}}],
        },
    }


async def _create(create, namespace, body, what):
    try:
        await create(namespace, body)
        log.info("created %s", what)
    except ApiException as e:
        if e.status != 409:
            raise


async def seed(crater, namespace, image):
    """Create the data volume's claim and fill the demo dataset, as configured (idempotent)."""
    core = shared_client("CoreV1Api")
    if crater.datasets_volume and crater.datasets_volume_create:
        await _create(core.create_namespaced_persistent_volume_claim, namespace,
                      claim_manifest(crater.datasets_volume, namespace,
                                     crater.datasets_volume_create),
                      f"the data volume's claim {namespace}/{crater.datasets_volume}")
    if crater.datasets_demo:
        dataset = next((d for d in crater.dataset_catalog() if d.name == crater.datasets_demo), None)
        if dataset is None:
            log.error("Crater.datasets_demo %r is not a dataset of Crater.datasets_catalog",
                      crater.datasets_demo)
            return
        await _create(core.create_namespaced_pod, namespace,
                      demo_pod_manifest(dataset, namespace, image),
                      f"the pod that fills the demo dataset {dataset.name}")
