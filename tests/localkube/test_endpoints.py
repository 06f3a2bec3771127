"""Endpoints and EndpointSlices follow the pods a Service selects, as kube-controller-manager's."""

from crater_hub.localkube.endpoints import EndpointsController
from crater_hub.localkube.gc import GarbageCollector
from tests.localkube.helpers import wait_for

SLICES = ("discovery.k8s.io", "endpointslices")


def service(cluster, name, **spec):
    return cluster.store.create(cluster.res("", "services"), {"metadata": {"name": name, "labels": {"team": "a"}},
                                                              "spec": spec}, "default")


def pod(cluster, name, ip, labels, ready=True, ports=(), **spec):
    cluster.create_pod(name, containers=[{"name": "main", "image": "busybox:1.36", "ports": list(ports)}],
                       nodeName="cpu-0", **spec)
    cluster.store.mutate(cluster.res("", "pods"), "default", name,
                         lambda p: p["metadata"].__setitem__("labels", labels))
    set_ready(cluster, name, ready, ip)


def set_ready(cluster, name, ready, ip=None):
    def status(p):
        p["status"].update({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]})
        if ip:
            p["status"]["podIP"] = ip

    cluster.store.mutate(cluster.res("", "pods"), "default", name, status, subresource="status")


def endpoints(cluster, name):
    return cluster.store.find(cluster.res("", "endpoints"), "default", name)


def slices(cluster, name):
    res = cluster.registry.lookup(SLICES[0], "v1", SLICES[1])
    items, _ = cluster.store.list(res, "default")
    return [s for s in items if s["metadata"]["labels"].get("kubernetes.io/service-name") == name]


def slice_ips(cluster, name):
    return sorted((e["addresses"][0], e["conditions"]["ready"])
                  for s in slices(cluster, name) for e in s["endpoints"])


async def test_endpoints_list_ready_pods_and_follow_readiness(make_cluster):
    cluster = make_cluster()
    cluster.start(EndpointsController)
    service(cluster, "web", selector={"app": "web"}, ports=[{"name": "http", "port": 80, "targetPort": "http"}])
    pod(cluster, "web-1", "127.1.0.7", {"app": "web"}, ports=[{"name": "http", "containerPort": 8080}])
    pod(cluster, "web-2", "127.1.0.8", {"app": "web"}, ready=False, ports=[{"name": "http", "containerPort": 8081}])
    pod(cluster, "other", "127.1.0.9", {"app": "other"}, ports=[{"name": "http", "containerPort": 8080}])

    def subsets():
        ep = endpoints(cluster, "web")
        return ep and ep.get("subsets")

    await wait_for(lambda: subsets() and len(subsets()) == 2, message="two port sets")
    by_port = {s["ports"][0]["port"]: s for s in subsets()}
    assert [a["ip"] for a in by_port[8080]["addresses"]] == ["127.1.0.7"]
    assert by_port[8080]["addresses"][0]["targetRef"]["name"] == "web-1"
    assert [a["ip"] for a in by_port[8081]["notReadyAddresses"]] == ["127.1.0.8"]
    assert "addresses" not in by_port[8081]
    assert endpoints(cluster, "web")["metadata"]["labels"]["team"] == "a"
    await wait_for(lambda: slice_ips(cluster, "web") == [("127.1.0.7", True), ("127.1.0.8", False)],
                   message="slices list both pods")
    assert {tuple(p["port"] for p in s["ports"]) for s in slices(cluster, "web")} == {(8080,), (8081,)}
    one = slices(cluster, "web")[0]
    assert one["addressType"] == "IPv4"
    assert one["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert one["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"

    set_ready(cluster, "web-2", True)
    set_ready(cluster, "web-1", False)
    await wait_for(lambda: slice_ips(cluster, "web") == [("127.1.0.7", False), ("127.1.0.8", True)],
                   message="readiness swapped in slices")
    ready = sorted(a["ip"] for s in subsets() for a in s.get("addresses", []))
    assert ready == ["127.1.0.8"]

    cluster.store.delete(cluster.res("", "pods"), "default", "web-2")  # graceful: terminating
    await wait_for(lambda: ("127.1.0.8", False) in slice_ips(cluster, "web"), message="terminating")
    term = [e for s in slices(cluster, "web") for e in s["endpoints"] if e["addresses"] == ["127.1.0.8"]][0]
    assert term["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert all(a["ip"] != "127.1.0.8" for s in subsets() for a in s.get("addresses", []))


async def test_headless_service_endpoints_carry_pod_hostnames(make_cluster):
    cluster = make_cluster()
    cluster.start(EndpointsController)
    svc = service(cluster, "workers", selector={"app": "ray"}, clusterIP="None")
    assert svc["spec"]["clusterIP"] == "None"
    pod(cluster, "w-0", "127.1.0.20", {"app": "ray"}, hostname="w0", subdomain="workers")
    pod(cluster, "w-1", "127.1.0.21", {"app": "ray"}, hostname="w1", subdomain="elsewhere")
    ep = await wait_for(lambda: (endpoints(cluster, "workers") or {}).get("subsets"), message="endpoints")
    assert ep == [{"addresses": [
        {"ip": "127.1.0.20", "hostname": "w0", "nodeName": "cpu-0",
         "targetRef": {"kind": "Pod", "namespace": "default", "name": "w-0", "uid": cluster.pod("w-0")["metadata"]["uid"]}},
        {"ip": "127.1.0.21", "nodeName": "cpu-0",
         "targetRef": {"kind": "Pod", "namespace": "default", "name": "w-1", "uid": cluster.pod("w-1")["metadata"]["uid"]}},
    ]}]
    assert endpoints(cluster, "workers")["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


async def test_selectorless_endpoints_are_mirrored_and_service_deletion_cleans_up(make_cluster):
    cluster = make_cluster()
    cluster.start(EndpointsController, GarbageCollector)
    service(cluster, "ext", ports=[{"name": "db", "port": 5432}])
    cluster.store.create(cluster.res("", "endpoints"), {"metadata": {"name": "ext"}, "subsets": [
        {"addresses": [{"ip": "127.0.0.5"}], "ports": [{"name": "db", "port": 5432}]}]}, "default")
    await wait_for(lambda: slice_ips(cluster, "ext") == [("127.0.0.5", True)], message="mirrored slice")
    assert slices(cluster, "ext")[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] \
        == "endpointslicemirroring-controller.k8s.io"
    service(cluster, "empty", selector={"app": "none"}, ports=[{"port": 80}])
    await wait_for(lambda: slices(cluster, "empty") and endpoints(cluster, "empty"), message="placeholder")
    assert slices(cluster, "empty")[0]["endpoints"] == []
    assert "subsets" not in endpoints(cluster, "empty")
    cluster.store.delete(cluster.res("", "services"), "default", "empty")
    await wait_for(lambda: not slices(cluster, "empty") and endpoints(cluster, "empty") is None,
                   message="endpoints and slices gone with the service")


def test_cluster_ips_come_from_the_service_cidr_and_are_released(make_cluster):
    cluster = make_cluster(service_cidr="10.240.0.0/28")
    first = service(cluster, "a", ports=[{"port": 80}])["spec"]
    assert first["clusterIP"] == "10.240.0.11" and first["clusterIPs"] == ["10.240.0.11"]
    asked = service(cluster, "b", clusterIP="10.240.0.1", ports=[{"port": 80}])["spec"]["clusterIP"]
    assert asked == "10.240.0.1"
    from crater_hub.localkube.errors import ApiError

    for ip, why in (("10.240.0.1", "already allocated"), ("10.96.0.5", "not in the valid range")):
        try:
            service(cluster, f"x{ip[-1]}", clusterIP=ip, ports=[{"port": 80}])
        except ApiError as e:
            assert e.code == 422 and why in str(e.status()), e.status()
        else:
            raise AssertionError(f"{ip} was accepted")
    assert service(cluster, "ext", type="ExternalName", externalName="db.example")["spec"].get("clusterIP") is None
    names = ["c", "d", "e"]
    ips = [service(cluster, n, ports=[{"port": 80}])["spec"]["clusterIP"] for n in names]
    assert ips == ["10.240.0.12", "10.240.0.13", "10.240.0.14"]
    cluster.store.delete(cluster.res("", "services"), "default", "c")
    assert service(cluster, "f", clusterIP="10.240.0.12", ports=[{"port": 80}])["spec"]["clusterIP"] == "10.240.0.12"


async def test_publish_not_ready_addresses_lists_unready_pods_as_addresses(make_cluster):
    cluster = make_cluster()
    cluster.start(EndpointsController)
    service(cluster, "peers", selector={"app": "p"}, clusterIP="None", publishNotReadyAddresses=True)
    pod(cluster, "p-0", "127.1.0.30", {"app": "p"}, ready=False)
    subsets = await wait_for(lambda: (endpoints(cluster, "peers") or {}).get("subsets"), message="endpoints")
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["127.1.0.30"] and "notReadyAddresses" not in subsets[0]
