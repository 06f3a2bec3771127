"""The Kueue engine end to end: a hub with ``job_queue_backend = kueue`` on localkube with Kueue's
CRDs loaded, and this test playing Kueue — it makes each Job's Workload, sets its conditions,
unsuspends or suspends the Job, and answers Kueue's visibility API behind an APIService, as
Kueue's controller and visibility server do. What the hub creates, and what the test creates in
Kueue's name, is validated against Kubernetes' and Kueue's schemas.
"""

import copy
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crater_hub.queue import kueue
from tests.reference import crd_errors, k8s_validate, load_reference

from ..e2e.hub import api_request
from ..helpers import wait_for
from .conftest import queue_hub
from .helpers import logs, release_command, submit, wait_state

NAMESPACE = "kueue-jobs"
LOCAL_QUEUE = "research"
CLUSTER_QUEUE = "cluster-queue"
CRDS = ("kueue-resourceflavors.yaml", "kueue-clusterqueues.yaml", "kueue-localqueues.yaml",
        "kueue-workloads.yaml")


class Kube:
    """JSON over HTTP to localkube, for what the test does in Kueue's name."""

    def __init__(self, url):
        self.url = url

    def __call__(self, method, path, body=None, content_type="application/json"):
        """(status, decoded body) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def create(self, path, body):
        code, obj = self("POST", path, body)
        assert code in (201, 409), (code, obj)
        return obj

    def merge(self, path, patch):
        code, obj = self("PATCH", path, patch, "application/merge-patch+json")
        assert code == 200, (code, obj)
        return obj

    def get(self, path):
        code, obj = self("GET", path)
        return obj if code == 200 else None


class Visibility(BaseHTTPRequestHandler):
    """Kueue's visibility server, as far as the hub uses it: pending workloads of a LocalQueue."""

    pending = []  # [(Job name, 0-based position)], set by the test
    requests = []  # the paths asked, for assertions

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == kueue.VISIBILITY:  # discovery: the aggregator checks the APIService with it
            self.answer({"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": kueue.VISIBILITY.removeprefix("/apis/"),
                         "resources": [{"name": "localqueues/pendingworkloads", "namespaced": True,
                                        "kind": "PendingWorkloadsSummary", "verbs": ["get"]}]})
            return
        type(self).requests.append(self.path)
        if path != kueue.pending_workloads_path(NAMESPACE, LOCAL_QUEUE):
            self.send_error(404)
            return
        items = [{"metadata": {"name": f"job-{name}-abcde", "namespace": NAMESPACE,
                               "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                    "name": name, "uid": "x"}]},
                  "priority": 0, "localQueueName": LOCAL_QUEUE,
                  "positionInClusterQueue": position, "positionInLocalQueue": position}
                 for name, position in type(self).pending]
        self.answer({"kind": "PendingWorkloadsSummary",
                     "apiVersion": "visibility.kueue.x-k8s.io/v1beta2", "metadata": {},
                     "items": items})

    def answer(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def kube(queue_cluster):
    kube = Kube(queue_cluster.url)
    for name in CRDS:
        kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", load_reference(name))
    kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    for obj in queues():
        assert crd_errors(obj) == []
        group_version, plural = obj["apiVersion"], obj["kind"].lower() + "s"
        where = f"/namespaces/{NAMESPACE}" if obj["kind"] == "LocalQueue" else ""
        listing = f"/apis/{group_version}/{plural}"
        wait_until(lambda path=listing: kube("GET", path)[0] == 200)
        kube.create(f"/apis/{group_version}{where}/{plural}", obj)
    return kube


def wait_until(predicate, timeout=10):
    """For the synchronous fixtures: poll ``predicate`` until true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def visibility(kube):
    """Kueue's visibility server on 127.0.0.1, registered as Kueue registers it: an APIService
    for visibility.kueue.x-k8s.io/v1beta2 backed by a Service (here with hand-made Endpoints)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Visibility)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    kube.create("/api/v1/namespaces", {"metadata": {"name": "kueue-system"}})
    kube.create("/api/v1/namespaces/kueue-system/services", {
        "metadata": {"name": "kueue-visibility-server"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}})
    kube.create("/api/v1/namespaces/kueue-system/endpoints", {
        "metadata": {"name": "kueue-visibility-server"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}]})
    kube.create("/apis/apiregistration.k8s.io/v1/apiservices", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta2.visibility.kueue.x-k8s.io"},
        "spec": {"group": "visibility.kueue.x-k8s.io", "version": "v1beta2",
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "insecureSkipTLSVerify": True,
                 "service": {"namespace": "kueue-system", "name": "kueue-visibility-server",
                             "port": 443}}})
    yield Visibility
    server.shutdown()


@pytest.fixture(scope="module")
def kueue_hub(queue_dir, queue_cluster, postgres, kube):
    state = queue_dir / "kueue-hub"
    state.mkdir(exist_ok=True)
    database = postgres.createdb("crater_kueue") if postgres is not None else \
        f"sqlite:///{state / 'jupyterhub.sqlite'}"
    process = queue_hub(state, queue_cluster, database)
    process.extra_args += ["--Crater.job_queue_backend=kueue",
                           f"--Crater.job_kueue_local_queue={LOCAL_QUEUE}",
                           f"--Crater.jobs_namespace={NAMESPACE}",
                           "--Crater.job_requeue_preempted=True",
                           "--Crater.job_kueue_priority_classes=True"]
    process.start()
    yield process
    process.stop()


_numbers = itertools.count()


@pytest.fixture
async def user(kueue_hub):
    name = f"kueue-user-{next(_numbers)}"
    r = await api_request(kueue_hub, f"users/{name}", "POST")
    assert r.code == 201, r
    r = await api_request(kueue_hub, f"users/{name}/tokens", "POST", {"note": "kueue tests"})
    assert r.code == 201, r
    yield r.data["token"]
    r = await api_request(kueue_hub, "crater/jobs?all=1&state=queued&state=admitted&state=running")
    for job in r.data["jobs"] if r.code == 200 else ():
        if job["owner"] == name:
            await api_request(kueue_hub, f"crater/jobs/{job['id']}", "DELETE")


def queues():
    """A ResourceFlavor, a ClusterQueue with GPU and CPU quota, and our LocalQueue."""
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
         "metadata": {"name": "default-flavor"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
         "metadata": {"name": CLUSTER_QUEUE},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
             "flavors": [{"name": "default-flavor", "resources": [
                 {"name": "cpu", "nominalQuota": 8}, {"name": "memory", "nominalQuota": "16Gi"},
                 {"name": "nvidia.com/gpu", "nominalQuota": 4}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": LOCAL_QUEUE, "namespace": NAMESPACE},
         "spec": {"clusterQueue": CLUSTER_QUEUE}},
    ]


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind, status, reason, message):
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now(), "observedGeneration": 1}


class PlayKueue:
    """What Kueue's controller does with one Job, done by the test."""

    def __init__(self, kube, job_name):
        self.kube = kube
        self.job_path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job_name}"
        self.job_name = job_name
        self.workload = f"job-{job_name}-3f2a1"
        self.path = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads/{self.workload}"

    def job(self):
        return self.kube.get(self.job_path)

    def create_workload(self, pending_message):
        """The Workload Kueue makes for a new Job: its pod set, owned by the Job, pending."""
        job = self.job()
        template = copy.deepcopy(job["spec"]["template"])
        workload = {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": self.workload, "namespace": NAMESPACE,
                         "labels": {"kueue.x-k8s.io/job-uid": job["metadata"]["uid"]},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": self.job_name,
                                              "uid": job["metadata"]["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"queueName": LOCAL_QUEUE, "active": True,
                     "podSets": [{"name": "main", "count": 1, "template": template}]},
        }
        assert crd_errors(workload) == []
        self.kube.create(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads", workload)
        self.set_status({"conditions": [condition("QuotaReserved", "False", "Pending",
                                                  pending_message)]})

    def set_status(self, status):
        current = self.kube.get(self.path)
        body = {**current, "status": status}
        assert crd_errors(body) == []
        code, obj = self.kube("PUT", self.path + "/status", body)
        assert code == 200, obj

    def admit(self):
        """Reserve quota, admit, and unsuspend the Job (Kueue's job reconciler)."""
        self.set_status({
            "admission": {"clusterQueue": CLUSTER_QUEUE, "podSetAssignments": [
                {"name": "main", "count": 1, "flavors": {"cpu": "default-flavor",
                                                         "memory": "default-flavor"},
                 "resourceUsage": {"cpu": "100m", "memory": "64Mi"}}]},
            "conditions": [
                condition("QuotaReserved", "True", "QuotaReserved",
                          f"Quota reserved in ClusterQueue {CLUSTER_QUEUE}"),
                condition("Admitted", "True", "Admitted",
                          "The workload is admitted"),
            ]})
        self.kube.merge(self.job_path, {"spec": {"suspend": False}})

    def evict(self):
        """Preempt it for a more important workload: Evicted + Preempted, the Job suspended."""
        self.set_status({"conditions": [
            condition("QuotaReserved", "False", "Pending", "Preempted to accommodate a workload "
                      "(UID: 7c1e, JobUID: 9d2f) due to prioritization in the ClusterQueue"),
            condition("Admitted", "False", "NoReservation", "The workload has no reservation"),
            condition("Evicted", "True", "Preempted", "Preempted to accommodate a workload "
                      "(UID: 7c1e, JobUID: 9d2f) due to prioritization in the ClusterQueue"),
            condition("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload "
                      "(UID: 7c1e, JobUID: 9d2f) due to prioritization in the ClusterQueue"),
        ]})
        self.kube.merge(self.job_path, {"spec": {"suspend": True}})

    def pods(self):
        code, listed = self.kube(
            "GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=job-name%3D{self.job_name}")
        assert code == 200
        return listed["items"]


async def job_of(hub, token, job_id):
    r = await api_request(hub, f"crater/jobs/{job_id}", token=token)
    assert r.code == 200, r
    return r.data


async def test_a_job_waits_suspended_in_kueue_then_runs_when_admitted(kueue_hub, kube, visibility,
                                                                      user):
    model = await submit(kueue_hub, user, profile="cpu", command="echo hello from kueue")
    assert model["state"] == "queued" and model["queue"] == LOCAL_QUEUE
    kueue_side = PlayKueue(kube, f"crater-job-{model['id']}")
    job = await wait_for(kueue_side.job, timeout=15, message="the hub to create the Job")
    # what the hub created: a valid batch/v1 Job, suspended, in our LocalQueue
    k8s_validate(job)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][kueue.QUEUE_LABEL] == LOCAL_QUEUE
    # Kueue orders it by the WorkloadPriorityClass named like the job's priority class
    assert job["metadata"]["labels"][kueue.PRIORITY_CLASS_LABEL] == "normal"

    message = ("couldn't assign flavors to pod set main: insufficient unused quota for cpu in "
               "flavor default-flavor, 1 more needed")
    kueue_side.create_workload(message)
    visibility.pending = [("someone-elses-job", 0), ("another", 1), (kueue_side.job_name, 2)]
    queued = await wait_for(
        lambda: _when(job_of(kueue_hub, user, model["id"]),
                      lambda m: m["position"] == 3 and m["waiting"] == message),
        timeout=15, message="the position from Kueue's visibility API")
    assert queued["state"] == "queued" and queued["estimated_start"] is None
    assert any(p.startswith(kueue.pending_workloads_path(NAMESPACE, LOCAL_QUEUE))
               for p in visibility.requests)
    # still Kueue's: suspended, no pod
    assert kueue_side.job()["spec"]["suspend"] is True and kueue_side.pods() == []

    visibility.pending = []
    kueue_side.admit()
    done = await wait_state(kueue_hub, user, model["id"], ("succeeded", "failed"), timeout=60)
    assert done["state"] == "succeeded", done
    states = [(t["state"], t["reason"]) for t in done["transitions"]]
    # an echo may end between two looks of the hub: then "running" is not seen, but its start is
    assert [s for s, _ in states] in (["queued", "admitted", "running", "succeeded"],
                                      ["queued", "admitted", "succeeded"]), states
    assert done["started"], done
    assert states[1][1].startswith(f"admitted by Kueue in ClusterQueue {CLUSTER_QUEUE}")
    assert (await logs(kueue_hub, user, model["id"]))[2] == "hello from kueue\n"


async def test_an_evicted_job_is_preempted_then_queued_again_in_kueue(kueue_hub, kube, user,
                                                                    tmp_path):
    model = await submit(kueue_hub, user, profile="cpu",
                         command=release_command(tmp_path, "never"))
    first = PlayKueue(kube, f"crater-job-{model['id']}")
    await wait_for(first.job, timeout=15, message="the hub to create the Job")
    first.create_workload("waiting for quota")
    first.admit()
    await wait_state(kueue_hub, user, model["id"], "running", timeout=60)

    first.evict()
    requeued = await wait_for(
        lambda: _when(job_of(kueue_hub, user, model["id"]),
                      lambda m: m["state"] == "queued" and m["attempt"] == 1),
        timeout=30, message="the evicted job to be queued again")
    preempted = [t for t in requeued["transitions"] if t["state"] == "preempted"]
    assert len(preempted) == 1
    assert preempted[0]["reason"].startswith("InClusterQueue: Preempted to accommodate a workload")
    # the first attempt's Job is gone (its pod stopped); the new attempt waits suspended in Kueue
    await wait_for(lambda: first.job() is None and first.pods() == [], timeout=30,
                   message="the first attempt's Job and pod to be deleted")
    second = PlayKueue(kube, f"crater-job-{model['id']}-r1")
    job = await wait_for(second.job, timeout=15, message="the second attempt's Job")
    assert job["spec"]["suspend"] is True and second.pods() == []

    r = await api_request(kueue_hub, f"crater/jobs/{model['id']}", "DELETE", token=user)
    assert r.code == 200 and r.data["state"] == "cancelled", r
    await wait_for(lambda: second.job() is None, timeout=30,
                   message="the cancelled job's suspended Job to be deleted")


async def _when(model, accept):
    model = await model
    return model if accept(model) else None


async def test_what_kueue_admitted_holds_its_owner_quota_against_servers(kueue_hub, kube, user,
                                                                      tmp_path):
    """Kueue decides the jobs; the hub's one ledger still counts them, so a GPU server of the
    same user is refused while a Kueue-admitted job holds the user's quota (2 GPUs)."""
    name = (await api_request(kueue_hub, "user", token=user)).data["name"]
    model = await submit(kueue_hub, user, profile="gpu", accelerator="t4", gpus=2,
                         command=release_command(tmp_path, "held"))
    kueue_side = PlayKueue(kube, f"crater-job-{model['id']}")
    await wait_for(kueue_side.job, timeout=15, message="the hub to create the Job")
    kueue_side.create_workload("waiting for quota")
    kueue_side.admit()
    await wait_state(kueue_hub, user, model["id"], "running", timeout=60)

    r = await api_request(kueue_hub, f"users/{name}/server", "POST",
                          {"profile": "gpu", "accelerator": "t4", "gpus": 1})
    assert r.code == 403 and "2 of 2 in use" in r.data["message"], r
    profiles = await api_request(kueue_hub, "crater/profiles", token=user)
    assert profiles.data["quota"]["gpus"] == 0

    (tmp_path / "held").touch()
    assert (await wait_state(kueue_hub, user, model["id"], ("succeeded", "failed")))["state"] == \
        "succeeded"
    profiles = await api_request(kueue_hub, "crater/profiles", token=user)
    assert profiles.data["quota"]["gpus"] == 2
