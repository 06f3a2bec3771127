"""Service-link variables, as the kubelet writes them (z2jh's hub config reads them)."""

from crater_hub.localkube.servicelinks import service_links
from tests.localkube.test_endpoints import service


def test_service_links_name_every_service_with_a_cluster_ip_in_the_namespace(make_cluster):
    cluster = make_cluster(service_cidr="10.240.0.0/24")
    service(cluster, "proxy-api", selector={"a": "b"}, ports=[{"name": "http", "port": 8001}])
    service(cluster, "hub", selector={"a": "b"}, ports=[{"name": "hub", "port": 8081},
                                                         {"name": "metrics", "port": 9100, "protocol": "TCP"}])
    service(cluster, "headless", selector={"a": "b"}, clusterIP="None", ports=[{"port": 80}])
    pod = cluster.create_pod("p")
    env = service_links(cluster.store, cluster.registry, pod)
    assert env["PROXY_API_SERVICE_HOST"] == "10.240.0.11"
    assert env["PROXY_API_SERVICE_PORT"] == "8001" and env["PROXY_API_SERVICE_PORT_HTTP"] == "8001"
    assert env["HUB_SERVICE_HOST"] == "10.240.0.12" and env["HUB_SERVICE_PORT"] == "8081"
    assert env["HUB_PORT"] == "tcp://10.240.0.12:8081"
    assert env["HUB_PORT_9100_TCP"] == "tcp://10.240.0.12:9100"
    assert env["HUB_PORT_9100_TCP_ADDR"] == "10.240.0.12" and env["HUB_PORT_9100_TCP_PROTO"] == "tcp"
    assert not any(k.startswith("HEADLESS_") for k in env)
    off = cluster.create_pod("q", enableServiceLinks=False)
    assert service_links(cluster.store, cluster.registry, off) == {}
