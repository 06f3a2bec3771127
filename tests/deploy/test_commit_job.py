"""The containerd backend's commit Job: valid for Kubernetes (strict schema), in the system
namespace, on the server pod's node, naming the container by its containerID, with the socket as
a hostPath Socket and the push Secret of the system namespace only."""

import copy
import json

import pytest

from crater_hub.images.backends.base import CommitRequest
from crater_hub.images.backends.containerd import (
    ContainerdCommitBackend,
    commit_job,
    commit_job_name,
)
from crater_hub.images.settings import CraterImages
from tests.reference import k8s_validate, kubernetes_validate

SERVER_POD = {
    "metadata": {"name": "jupyter-alice", "namespace": "jhub", "uid": "u-1"},
    "spec": {"nodeName": "gpu-node-7", "containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook"}]},
    "status": {"phase": "Running", "containerStatuses": [
        {"name": "other", "containerID": "containerd://ffff", "state": {"running": {}}},
        {"name": "notebook", "containerID": "containerd://3f2a9c", "state": {"running": {}}},
    ]},
}


def job():
    settings = CraterImages(registry_url="https://harbor.example.org", commit_namespace="crater-system",
                            commit_job_image="registry.example.org/crater/commit:1.0")
    backend = ContainerdCommitBackend(settings)
    request = CommitRequest(pod=SERVER_POD, container="notebook", repository="crater/alice/torch", tag="v1",
                            max_bytes=40 * 2**30)
    return backend.job(request, commit_id=12, owner="alice")


def test_the_commit_job_validates_and_is_where_and_what_it_must_be():
    manifest = job()
    k8s_validate(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert manifest["metadata"]["namespace"] == "crater-system"
    assert manifest["metadata"]["name"] == commit_job_name("alice", 12)
    assert pod["nodeName"] == "gpu-node-7"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["CRATER_CONTAINER_ID"] == "3f2a9c"  # the notebook's, from containerStatuses
    assert env["CRATER_TARGET"] == "harbor.example.org/crater/alice/torch:v1"
    assert env["CRATER_MAX_BYTES"] == str(40 * 2**30)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["containerd"]["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}
    assert volumes["push"]["secret"]["secretName"] == "crater-registry-push"
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    assert pod["automountServiceAccountToken"] is False


def test_a_broken_commit_job_is_refused_and_a_stopped_container_has_no_job():
    manifest = job()
    manifest["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["kind"] = "Socket"
    with pytest.raises(kubernetes_validate.ValidationError, match="kind"):
        k8s_validate(manifest)
    stopped = copy.deepcopy(SERVER_POD)
    stopped["status"]["containerStatuses"][1]["state"] = {"terminated": {"exitCode": 0}}
    with pytest.raises(ValueError, match="not running"):
        commit_job(pod=stopped, container="notebook", target="h/r:t", commit_id=1, owner="a",
                   namespace="crater-system", image="i", push_secret="s")


def test_no_push_credential_in_the_job():
    """The Job names the Secret; the credential itself is nowhere in it."""
    text = json.dumps(job())
    assert "password" not in text.lower() and "auth" not in json.dumps(job()["spec"]).lower()
