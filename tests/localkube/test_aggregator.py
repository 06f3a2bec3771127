"""How the aggregator finds an APIService's backend, and which Local APIServices it keeps."""

import pytest

from crater_hub.localkube.aggregator import (
    APIServiceController,
    Unavailable,
    resolve,
    service_subsets,
)
from crater_hub.localkube.gc import CRDController
from tests.localkube.helpers import wait_for


def service(cluster, name, **spec):
    return cluster.store.create(cluster.res("", "services"), {"metadata": {"name": name}, "spec": spec},
                                "default")


def running_pod(cluster, name, ip, labels, ready=True, ports=()):
    pod = cluster.create_pod(name, containers=[{"name": "main", "image": "busybox:1.36", "ports": list(ports)}],
                             nodeName="cpu-0")
    cluster.store.mutate(cluster.res("", "pods"), "default", name,
                         lambda p: p["metadata"].__setitem__("labels", labels))

    def status(p):
        p["status"].update({"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]})

    cluster.store.mutate(cluster.res("", "pods"), "default", name, status, subresource="status")
    return pod


def test_selector_service_resolves_to_ready_pods_and_named_target_ports(make_cluster):
    cluster = make_cluster()
    service(cluster, "vis", selector={"app": "vis"},
            ports=[{"name": "https", "port": 443, "targetPort": "api"}])
    running_pod(cluster, "vis-1", "127.1.0.7", {"app": "vis"}, ports=[{"name": "api", "containerPort": 8443}])
    running_pod(cluster, "vis-2", "127.1.0.8", {"app": "vis"}, ready=False,
                ports=[{"name": "api", "containerPort": 8443}])
    running_pod(cluster, "other", "127.1.0.9", {"app": "other"}, ports=[{"name": "api", "containerPort": 8443}])
    assert resolve(cluster.store, cluster.registry, "default", "vis", 443) == ("127.1.0.7", 8443)
    subsets = service_subsets(cluster.store, cluster.registry,
                              cluster.store.get(cluster.res("", "services"), "default", "vis"))
    assert [s["addresses"][0]["ip"] for s in subsets] == ["127.1.0.7"]
    assert subsets[0]["ports"] == [{"name": "https", "port": 8443, "protocol": "TCP"}]
    with pytest.raises(Unavailable, match="no service port 80 found"):
        resolve(cluster.store, cluster.registry, "default", "vis", 80)


def test_selector_less_service_uses_its_endpoints_by_port_name(make_cluster):
    cluster = make_cluster()
    service(cluster, "vis", ports=[{"name": "https", "port": 443, "targetPort": 9443}])
    with pytest.raises(Unavailable, match='endpoints "vis" not found'):
        resolve(cluster.store, cluster.registry, "default", "vis", 443)
    cluster.store.create(cluster.res("", "endpoints"), {
        "metadata": {"name": "vis"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "metrics", "port": 9090}]},
                    {"addresses": [{"ip": "127.0.0.2"}], "ports": [{"name": "https", "port": 9443}]}]}, "default")
    assert resolve(cluster.store, cluster.registry, "default", "vis", 443) == ("127.0.0.2", 9443)
    with pytest.raises(Unavailable, match='service "missing" not found'):
        resolve(cluster.store, cluster.registry, "default", "missing", 443)


def test_external_name_service_is_its_host(make_cluster):
    cluster = make_cluster()
    service(cluster, "ext", type="ExternalName", externalName="localhost")
    assert resolve(cluster.store, cluster.registry, "default", "ext", 8443) == ("localhost", 8443)


async def test_local_apiservices_follow_the_served_group_versions(make_cluster):
    cluster = make_cluster()
    cluster.start(CRDController, APIServiceController)
    apiservices = cluster.registry.lookup("apiregistration.k8s.io", "v1", "apiservices")

    def names():
        return {o["metadata"]["name"] for o in cluster.store.iter_raw(apiservices)}

    assert {"v1.", "v1.batch", "v1.apiregistration.k8s.io"} <= names()
    crds = cluster.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    cluster.store.create(crds, {
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True},
                              {"name": "v1alpha1", "served": True, "storage": False}]}})
    await wait_for(lambda: {"v1.example.com", "v1alpha1.example.com"} <= names(), message="CRD APIServices")
    local = cluster.store.get(apiservices, None, "v1.example.com")
    assert local["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "true"}

    def local_available():
        obj = cluster.store.get(apiservices, None, "v1.example.com")
        return [(c["status"], c["reason"]) for c in obj["status"].get("conditions", [])]

    await wait_for(lambda: local_available() == [("True", "Local")], message="Local condition")
    cluster.store.delete(crds, None, "widgets.example.com")
    await wait_for(lambda: not {"v1.example.com", "v1alpha1.example.com"} & names(), message="CRD APIServices gone")
    assert "v1.batch" in names()
