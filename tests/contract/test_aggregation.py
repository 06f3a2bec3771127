"""API aggregation: an APIService sends its group-version to an extension API server.

The test plays Kueue's visibility server — a small HTTP server on 127.0.0.1 — registered as Kueue
registers it: a selector-less Service, its Endpoints and the APIService
``v1beta2.visibility.kueue.x-k8s.io``. Requests under ``/apis/visibility.kueue.x-k8s.io/v1beta2``
then reach it through localkube, from kubernetes_asyncio and from kubectl.
"""

import asyncio
import json
import socket

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web
from tornado.httpserver import HTTPServer

from tests.helpers import wait_for

GROUP, VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
NAME = f"{VERSION}.{GROUP}"
PENDING = f"/apis/{GROUP}/{VERSION}/namespaces/default/localqueues/q/pendingworkloads"
SUMMARY = {
    "kind": "PendingWorkloadsSummary", "apiVersion": f"{GROUP}/{VERSION}", "metadata": {},
    "items": [{"metadata": {"name": "job-x-abcde", "namespace": "default", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "x", "uid": "5f8a1c9e-0000-4000-8000-000000000001"}]},
        "priority": 0, "localQueueName": "q", "positionInClusterQueue": 0, "positionInLocalQueue": 0}],
}
RESOURCES = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
    "resources": [{"name": "localqueues", "singularName": "localqueue", "namespaced": True,
                   "kind": "LocalQueue", "verbs": ["get"]},
                  {"name": "localqueues/pendingworkloads", "singularName": "", "namespaced": True,
                   "kind": "PendingWorkloadsSummary", "verbs": ["get"]}],
}


class Backend:
    """Kueue's visibility server, as far as these tests need it; records every request."""

    def __init__(self):
        self.requests = []
        self.release = asyncio.Event()  # lets the streaming answer finish
        self.server = None
        self.port = None

    def start(self):
        backend = self

        class Handler(web.RequestHandler):
            def compute_etag(self):
                return None

            def prepare(self):
                r = self.request
                backend.requests.append({"method": r.method, "path": r.path, "query": r.query,
                                         "headers": r.headers, "body": r.body})

            def answer(self, code, body, ctype="application/json"):
                self.set_status(code)
                self.set_header("Content-Type", ctype)
                self.finish(body if isinstance(body, bytes) else json.dumps(body))

            async def get(self, path):
                if path == f"/apis/{GROUP}/{VERSION}":
                    return self.answer(200, RESOURCES)
                if path == PENDING:
                    return self.answer(200, SUMMARY)
                if path == f"/apis/{GROUP}/{VERSION}/stream":
                    self.set_header("Content-Type", "application/json")
                    self.write(b'{"type":"ADDED"}\n')
                    await self.flush()
                    await backend.release.wait()
                    self.write(b'{"type":"MODIFIED"}\n')
                    return self.finish()
                self.answer(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": "the server could not find the requested resource",
                                  "reason": "NotFound", "code": 404})

            def post(self, path):
                self.set_header("X-Echo-Content-Type", self.request.headers.get("Content-Type", ""))
                self.answer(201, self.request.body, "application/json")

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = HTTPServer(web.Application([(r"(/.*)", Handler)]))
        self.server.add_sockets([sock])
        return self

    async def stop(self):
        if self.server is not None:
            self.server.stop()
            self.release.set()
            await self.server.close_all_connections()
            self.server = None

    def asked(self, path):
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
async def backend():
    b = Backend().start()
    yield b
    await b.stop()


def apiservice(namespace="kueue-system", name="kueue-visibility-server", port=443):
    return {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": NAME},
        "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100, "versionPriority": 100,
                 "insecureSkipTLSVerify": True,
                 "service": {"namespace": namespace, "name": name, "port": port}},
    }


async def register(kube, backend):
    """Service + Endpoints + APIService, all through kubernetes_asyncio, as Kueue's manifests do."""
    await kube.core.create_namespace({"metadata": {"name": "kueue-system"}})
    await kube.core.create_namespaced_service("kueue-system", {
        "metadata": {"name": "kueue-visibility-server"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": backend.port}]}})
    await kube.core.create_namespaced_endpoints("kueue-system", {
        "metadata": {"name": "kueue-visibility-server"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": backend.port}]}]})
    return await client.ApiregistrationV1Api(kube.api).create_api_service(apiservice())


async def available(kube, name=NAME):
    """The Available condition of an APIService as (status, reason), or None before the first check."""
    obj = await client.ApiregistrationV1Api(kube.api).read_api_service(name)
    cond = next((c for c in (obj.status.conditions or []) if c.type == "Available"), None)
    return None if cond is None else (cond.status, cond.reason)


async def raw_get(kube, path, query=()):
    """GET ``path`` with kubernetes_asyncio's raw ``call_api``, as the job-queue code does."""
    return await kube.api.call_api(path, "GET", query_params=list(query), header_params={"Accept": "application/json"},
                                   response_types_map={200: "object"}, auth_settings=["BearerToken"],
                                   _return_http_data_only=True)


async def test_pending_workloads_through_the_aggregator(kube, kubectl, backend):
    created = await register(kube, backend)
    assert created.spec.service.port == 443 and created.metadata.uid
    await wait_for(lambda: available(kube), message="Available checked")
    assert await available(kube) == ("True", "Passed")
    # the availability check asked the backend's discovery document, as the system:kube-aggregator
    check = backend.asked(f"/apis/{GROUP}/{VERSION}")[0]
    assert check["headers"]["X-Remote-User"] == "system:kube-aggregator"

    got = await raw_get(kube, PENDING, [("limit", 10), ("offset", 0)])
    assert got == SUMMARY
    sent = backend.asked(PENDING)[-1]
    assert sent["method"] == "GET" and sent["query"] == "limit=10&offset=0"
    assert sent["headers"]["X-Remote-User"] == "kubernetes-admin"
    assert "system:masters" in sent["headers"].get_list("X-Remote-Group")
    assert "Authorization" not in sent["headers"]  # the apiserver consumes the token

    out, _ = await kubectl("get", "--raw", PENDING + "?limit=3", split=True)
    assert json.loads(out) == SUMMARY
    assert backend.asked(PENDING)[-1]["query"] == "limit=3"

    # discovery: /apis lists the group, /apis/<group> is served here, /apis/<group>/<version> by the backend
    groups = await client.ApisApi(kube.api).get_api_versions()
    group = next(g for g in groups.groups if g.name == GROUP)
    assert group.preferred_version.group_version == f"{GROUP}/{VERSION}"
    out, _ = await kubectl("get", "--raw", f"/apis/{GROUP}", split=True)
    assert json.loads(out)["versions"] == [{"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}]
    assert json.loads((await kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}", split=True))[0]) == RESOURCES
    out = await kubectl("api-resources", f"--api-group={GROUP}")
    assert "localqueues" in out

    # the APIService is a resource like any other: kubectl's table, with the Local ones built in
    table = await kubectl("get", "apiservices")
    rows = {line.split()[0]: line.split()[1:3] for line in table.strip().splitlines()[1:]}
    assert rows[NAME] == ["kueue-system/kueue-visibility-server", "True"]
    assert rows["v1."] == ["Local", "True"] and rows["v1.batch"] == ["Local", "True"]


async def test_methods_bodies_and_errors_are_forwarded(kube, backend):
    await register(kube, backend)
    async with aiohttp.ClientSession() as http:
        url = f"{kube.lk.url}/apis/{GROUP}/{VERSION}/namespaces/default/echoes"
        body = json.dumps({"kind": "Echo", "spec": {"x": 1}})
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 201
            assert r.headers["X-Echo-Content-Type"] == "application/json"
            assert await r.text() == body
        assert backend.asked("/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/default/echoes")[-1]["body"] \
            == body.encode()
        # the backend's own errors come back as they are
        async with http.get(f"{kube.lk.url}/apis/{GROUP}/{VERSION}/nothing") as r:
            assert r.status == 404 and (await r.json())["reason"] == "NotFound"


async def test_responses_stream(kube, backend):
    await register(kube, backend)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kube.lk.url}/apis/{GROUP}/{VERSION}/stream") as r:
            assert r.status == 200
            # the first line arrives while the backend still holds the response open
            assert await asyncio.wait_for(r.content.readline(), 10) == b'{"type":"ADDED"}\n'
            backend.release.set()
            assert await asyncio.wait_for(r.content.readline(), 10) == b'{"type":"MODIFIED"}\n'


async def test_deleted_apiservice_is_not_found(kube, kubectl, backend):
    await register(kube, backend)
    assert await raw_get(kube, PENDING) == SUMMARY
    await client.ApiregistrationV1Api(kube.api).delete_api_service(NAME)
    with pytest.raises(ApiException) as e:
        await raw_get(kube, PENDING)
    assert e.value.status == 404
    out = await kubectl("get", "--raw", PENDING, check=False)
    assert "NotFound" in out
    groups = await client.ApisApi(kube.api).get_api_versions()
    assert GROUP not in {g.name for g in groups.groups}


async def test_stopped_backend_is_service_unavailable(kube, kubectl, backend):
    await register(kube, backend)
    await wait_for(lambda: available(kube), message="Available checked")
    assert await available(kube) == ("True", "Passed")
    await backend.stop()
    with pytest.raises(ApiException) as e:
        await raw_get(kube, PENDING)
    assert e.value.status == 503 and e.value.body.strip() == "service unavailable"
    out = await kubectl("get", "--raw", PENDING, check=False)
    assert "ServiceUnavailable" in out
    # the failed connection makes the availability controller look again
    await wait_for(lambda: available(kube), message="Available re-checked")

    async def failed():
        return await available(kube) == ("False", "FailedDiscoveryCheck")

    await wait_for(failed, message="FailedDiscoveryCheck")
    obj = await client.ApiregistrationV1Api(kube.api).read_api_service(NAME)
    assert obj.status.conditions[0].message == (
        f"failing or missing response from http://127.0.0.1:{backend.port}/apis/{GROUP}/{VERSION}: "
        f"dial tcp 127.0.0.1:{backend.port}: connect: connection refused")
    table = await kubectl("get", "apiservice", NAME)
    assert "False (FailedDiscoveryCheck)" in table


async def test_availability_reasons(kube, backend):
    reg = client.ApiregistrationV1Api(kube.api)
    await kube.core.create_namespace({"metadata": {"name": "kueue-system"}})
    await reg.create_api_service(apiservice())

    async def reason(expected):
        async def check():
            return await available(kube) == expected
        await wait_for(check, message=f"Available {expected}")

    await reason(("False", "ServiceNotFound"))
    with pytest.raises(ApiException) as e:
        await raw_get(kube, PENDING)
    assert e.value.status == 503

    await kube.core.create_namespaced_service("kueue-system", {
        "metadata": {"name": "kueue-visibility-server"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": backend.port}]}})
    await reason(("False", "EndpointsNotFound"))
    await kube.core.create_namespaced_endpoints("kueue-system", {
        "metadata": {"name": "kueue-visibility-server"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "other", "port": backend.port}]}]})
    await reason(("False", "MissingEndpoints"))
    await kube.core.patch_namespaced_endpoints("kueue-visibility-server", "kueue-system", {
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": backend.port}]}]})
    await reason(("True", "Passed"))
    assert await raw_get(kube, PENDING) == SUMMARY

    await reg.patch_api_service(NAME, {"spec": {"service": {"port": 8443}}})
    await reason(("False", "ServicePortError"))


async def test_apiservice_validation(kube):
    reg = client.ApiregistrationV1Api(kube.api)
    bad = apiservice()
    bad["metadata"]["name"] = "v1.visibility.kueue.x-k8s.io"
    bad["spec"]["groupPriorityMinimum"] = 0
    with pytest.raises(ApiException) as e:
        await reg.create_api_service(bad)
    assert e.value.status == 422
    causes = {c["field"] for c in json.loads(e.value.body)["details"]["causes"]}
    assert causes == {"metadata.name", "spec.groupPriorityMinimum"}


async def test_kubectl_applies_apiservices(kube, kubectl, backend, tmp_path):
    await kube.core.create_namespace({"metadata": {"name": "kueue-system"}})
    path = tmp_path / "apiservice.yaml"
    path.write_text(json.dumps(apiservice()))
    assert "created" in await kubectl("apply", "-f", str(path))
    changed = apiservice()
    changed["spec"]["versionPriority"] = 50
    path.write_text(json.dumps(changed))
    assert "configured" in await kubectl("apply", "-f", str(path))
    obj = await client.ApiregistrationV1Api(kube.api).read_api_service(NAME)
    assert obj.spec.version_priority == 50 and obj.spec.service.port == 443
    assert "deleted" in await kubectl("delete", "-f", str(path))
