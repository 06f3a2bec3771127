"""What the containerd backend adds to the commit Job (the Job itself: tests/deploy/test_commit_job.py):
still a valid Job, the registry URL and image labels for the program, no push credential."""

import json

from crater_hub.images.backends.base import CommitRequest
from crater_hub.images.backends.containerd import ContainerdCommitBackend
from crater_hub.images.containerd_commit import parse
from crater_hub.images.settings import CraterImages
from tests.reference import k8s_validate

PASSWORD = "s3cret-push-password"
POD = {"metadata": {"name": "jupyter-alice", "namespace": "jhub"},
       "spec": {"nodeName": "gpu-node-7", "containers": [{"name": "notebook", "image": "x"}]},
       "status": {"containerStatuses": [{"name": "notebook", "containerID": "containerd://abc123",
                                         "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]}}


def manifest(tag="v1", **backend):
    settings = CraterImages(registry_url="http://registry.local:5000", push_username="robot$crater",
                            push_password=PASSWORD, commit_namespace="crater-system")
    request = CommitRequest(pod=POD, container="notebook", repository="crater/alice/torch", tag=tag,
                            max_bytes=40 << 30, labels={"io.crater.owner": "alice", "io.crater.server": ""})
    return ContainerdCommitBackend(settings, **backend).manifest(request)


def env_of(job):
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_job_validates_and_tells_the_program_what_it_needs(monkeypatch):
    job = manifest(host_network=True)
    k8s_validate(job)
    assert job["spec"]["template"]["spec"]["hostNetwork"] is True
    env = env_of(job)
    assert env["CRATER_REGISTRY_URL"] == "http://registry.local:5000"
    # the program reads exactly this environment (and the Secret's file) into its options
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = parse([])
    assert (args.container_id, args.repository, args.tag) == ("abc123", "crater/alice/torch", "v1")
    assert args.registry_url == "http://registry.local:5000" and args.max_bytes == 40 << 30
    assert args.auth_file == "/crater/push/config.json"
    assert dict(args.label) == {"io.crater.owner": "alice", "io.crater.server": ""}


def test_no_push_credential_in_the_job():
    text = json.dumps(manifest())
    assert PASSWORD not in text and "robot$crater" not in text


def test_the_same_commit_gets_the_same_job_and_another_tag_another():
    assert manifest()["metadata"]["name"] == manifest()["metadata"]["name"]
    assert manifest()["metadata"]["name"] != manifest(tag="v2")["metadata"]["name"]
