"""The containerd commit Job as the backend builds it: a valid Job, where and how it runs, and no
push credential anywhere in it (they are a Secret of the system namespace, mounted as a file)."""

import json

from crater_hub.images.backends.base import CommitRequest
from crater_hub.images.backends.containerd import ContainerdCommitBackend
from crater_hub.images.backends.containerd_job import commit_job, job_name
from crater_hub.images.settings import CraterImages
from tests.reference import k8s_validate

PASSWORD = "s3cret-push-password"


def built():
    settings = CraterImages(registry_url="https://harbor.example.org", push_username="robot$crater",
                            push_password=PASSWORD, commit_namespace="crater-system")
    backend = ContainerdCommitBackend(settings)
    pod = {"metadata": {"name": "jupyter-alice", "namespace": "jhub"},
           "spec": {"nodeName": "gpu-node-7", "containers": [{"name": "notebook", "image": "x"}]},
           "status": {"containerStatuses": [{"name": "notebook", "containerID": "containerd://abc123",
                                             "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]}}
    request = CommitRequest(pod=pod, container="notebook", repository="crater/alice/torch", tag="v1",
                            max_bytes=40 << 30, labels={"io.crater.owner": "Alice@Lab"})
    command = backend.command(request, "abc123")
    job = commit_job(name=job_name("abc123", request.repository, request.tag), namespace=backend.namespace,
                     node="gpu-node-7", image=settings.commit_job_image, command=command,
                     socket_path=backend.socket_path, secret_name=backend.push_secret_name,
                     owner="Alice@Lab", deadline_seconds=settings.commit_timeout)
    return job, command


def test_the_job_is_valid_pinned_privileged_with_the_socket_in_the_system_namespace():
    job, command = built()
    k8s_validate(job)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "crater-system" and pod["nodeName"] == "gpu-node-7"
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["containerd"]["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}
    assert volumes["push"]["secret"]["secretName"] == "crater-image-push"
    assert job["metadata"]["labels"]["crater.io/owner"].startswith("Alice-Lab--")
    # the container by the ID the API gave, never a name to match on the node
    assert command[command.index("--container-id") + 1] == "abc123"
    assert command[command.index("--max-bytes") + 1] == str(40 << 30)


def test_no_push_credential_in_the_job():
    job, _ = built()
    text = json.dumps(job)
    assert PASSWORD not in text and "robot$crater" not in text
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and "envFrom" not in container
    mount = next(m for m in container["volumeMounts"] if m["name"] == "push")
    assert mount["readOnly"] is True


def test_the_same_commit_gets_the_same_job_name():
    assert job_name("abc", "crater/a/b", "v1") == job_name("abc", "crater/a/b", "v1")
    assert job_name("abc", "crater/a/b", "v1") != job_name("abc", "crater/a/b", "v2")
    assert len(job_name("abc", "crater/a/b", "v1")) <= 63
