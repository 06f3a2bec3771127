"""Services on localkube as clients see them: Endpoints and EndpointSlices following pod readiness
(kubernetes_asyncio and kubectl), cluster IPs that carry traffic, and cluster DNS inside pods.

Traffic and DNS need the isolated pod network (each pod in its own namespaces on a bridge, the
default as root): those tests skip where localkube runs in the loopback fallback, except the one
that runs the fallback itself with a loopback service CIDR.
"""

import asyncio
import ipaddress
import json
import random
import socket

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.helpers import wait_for

# A pod's HTTP server: answers every GET with its hostname (which is the pod's name).
SERVER = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

# A client pod: GETs each URL until it answers (or 60 s pass), then prints one JSON line per URL.
CLIENT = """
import json, sys, time, urllib.request
for url in sys.argv[1:]:
    deadline, last = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                last = {"url": url, "status": r.status, "body": r.read().decode()}
                break
        except Exception as e:
            last = {"url": url, "error": repr(e)}
            time.sleep(0.2)
    print(json.dumps(last), flush=True)
print("DONE", flush=True)
"""

# A client pod: resolves each name with the system resolver (glibc, the pod's resolv.conf).
RESOLVER = """
import json, socket, sys
for name in sys.argv[1:]:
    try:
        ips = sorted({a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as e:
        ips = repr(e)
    print(json.dumps({"name": name, "ips": ips}), flush=True)
print("DONE", flush=True)
"""


def python_pod(name, script, *args, labels=None, ports=(), restart="Never", **spec):
    container = {"name": "main", "image": "python:3.11", "command": ["python3", "-c", script, *args]}
    if ports:
        container["ports"] = list(ports)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": restart, "containers": [container], **spec}}


def service(name, selector, ports, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": ports, **spec}}


@pytest.fixture
def isolated(kube):
    network = getattr(kube.lk, "network", None)
    if network is None or not network.isolated:
        pytest.skip("needs the isolated pod network (root): pods on a bridge, cluster DNS")
    return kube


async def pod_ip(kube, name, ready=True):
    """The pod's IP once it is Ready (``ready=False``: once it has one)."""
    async def ip():
        pod = await kube.core.read_namespaced_pod(name, "default")
        is_ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod.status.pod_ip if is_ready or not ready else None

    return await wait_for(ip, timeout=30, message=f"{name} ready" if ready else f"{name} has an IP")


async def json_lines(kube, name, timeout=90):
    """The JSON lines a client pod printed, once it printed DONE."""
    async def done():
        try:
            text = await kube.core.read_namespaced_pod_log(name, "default")
        except ApiException:
            return None
        return text if "DONE" in text else None

    text = await wait_for(done, timeout=timeout, message=f"{name} finished")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def endpoint_ips(kube, name):
    ep = await kube.core.read_namespaced_endpoints(name, "default")
    ready = sorted(a.ip for s in ep.subsets or [] for a in s.addresses or [])
    not_ready = sorted(a.ip for s in ep.subsets or [] for a in s.not_ready_addresses or [])
    return ready, not_ready


async def slice_ips(kube, name):
    slices = await client.DiscoveryV1Api(kube.api).list_namespaced_endpoint_slice(
        "default", label_selector=f"kubernetes.io/service-name={name}")
    return sorted((e.addresses[0], e.conditions.ready) for s in slices.items for e in s.endpoints or [])


async def test_endpoints_and_endpointslices_follow_pod_readiness(kube, kubectl):
    await kube.core.create_namespaced_service("default", service(
        "web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http"}]))
    ports = [{"name": "http", "containerPort": 8080}]
    for name in ("web-1", "web-2"):
        await kube.core.create_namespaced_pod("default", python_pod(
            name, "import time; time.sleep(600)", labels={"app": "web"}, ports=ports))
    ips = sorted([await pod_ip(kube, "web-1"), await pod_ip(kube, "web-2")])

    async def both_ready():
        return await endpoint_ips(kube, "web") == (ips, []) and \
            await slice_ips(kube, "web") == [(ip, True) for ip in ips]

    await wait_for(both_ready, timeout=10, message="both pods in Endpoints and EndpointSlices")
    ep = await kube.core.read_namespaced_endpoints("web", "default")
    assert [(p.name, p.port) for p in ep.subsets[0].ports] == [("http", 8080)]
    out = await kubectl("get", "endpoints", "web")
    assert all(f"{ip}:8080" in out for ip in ips), out
    out = await kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web")
    assert "IPv4" in out and "8080" in out and all(ip in out for ip in ips), out
    out = await kubectl("describe", "service", "web")
    assert all(f"{ip}:8080" in out for ip in ips), out

    # A pod whose container keeps crashing is not ready: listed as such, not as an address.
    await kube.core.create_namespaced_pod("default", python_pod(
        "crashy", "import time; time.sleep(1); raise SystemExit(1)", labels={"app": "web"}, ports=ports,
        restart="Always"))
    crashy = await pod_ip(kube, "crashy", ready=False)
    await wait_for(lambda: _equals(endpoint_ips(kube, "web"), (ips, [crashy])), timeout=20,
                   message="crashy among notReadyAddresses")
    assert (crashy, False) in await slice_ips(kube, "web")

    # A deleted pod leaves both.
    await kube.core.delete_namespaced_pod("web-2", "default", grace_period_seconds=0)
    await kube.core.delete_namespaced_pod("crashy", "default", grace_period_seconds=0)
    left = [await pod_ip(kube, "web-1")]
    await wait_for(lambda: _equals(endpoint_ips(kube, "web"), (left, [])), timeout=10,
                   message="web-2 and crashy left the Endpoints")
    await wait_for(lambda: _equals(slice_ips(kube, "web"), [(left[0], True)]), timeout=10,
                   message="web-2 and crashy left the slices")

    await kube.core.delete_namespaced_service("web", "default")

    async def cleaned():
        try:
            await kube.core.read_namespaced_endpoints("web", "default")
            return False
        except ApiException as e:
            return e.status == 404 and await slice_ips(kube, "web") == []

    await wait_for(cleaned, timeout=10, message="Endpoints and slices gone with the Service")


async def _equals(awaitable, expected):
    return (await awaitable) == expected


async def test_pod_reaches_another_through_the_service_names_and_cluster_ip(isolated):
    kube = isolated
    await kube.core.create_namespaced_pod("default", python_pod(
        "web-0", SERVER, labels={"app": "web"}, ports=[{"name": "http", "containerPort": 8080}]))
    svc = await kube.core.create_namespaced_service("default", service(
        "web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http"}]))
    cluster_ip = svc.spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in kube.lk.network.service_cidr
    await pod_ip(kube, "web-0")
    urls = [f"http://{host}/" for host in
            ("web.default.svc.cluster.local", "web", "web.default", "web.default.svc", cluster_ip)]
    await kube.core.create_namespaced_pod("default", python_pod("client", CLIENT, *urls))
    answers = await json_lines(kube, "client")
    assert answers == [{"url": url, "status": 200, "body": "web-0"} for url in urls], answers

    # The host (where the hub runs) reaches the cluster IP too.
    reader, writer = await asyncio.wait_for(asyncio.open_connection(cluster_ip, 80), 5)
    writer.write(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"web-0"), reply

    # The cluster IP is an address of the bridge while the Service exists, and only then.
    assert cluster_ip in await bridge_addresses(kube)
    await kube.core.delete_namespaced_service("web", "default")
    await wait_for(lambda: _not_in(cluster_ip, bridge_addresses(kube)), timeout=10, message="address removed")


async def bridge_addresses(kube):
    proc = await asyncio.create_subprocess_exec("ip", "-j", "addr", "show", "dev", kube.lk.network.bridge,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


async def _not_in(item, awaitable):
    return item not in await awaitable


async def test_headless_service_resolves_to_the_ready_pods(isolated):
    kube = isolated
    await kube.core.create_namespaced_service("default", service("workers", {"app": "ray"}, [], clusterIP="None"))
    for i in range(2):
        await kube.core.create_namespaced_pod("default", python_pod(
            f"worker-{i}", "import time; time.sleep(600)", labels={"app": "ray"},
            hostname=f"w{i}", subdomain="workers"))
    ips = [await pod_ip(kube, f"worker-{i}") for i in range(2)]
    names = ["workers", "workers.default.svc.cluster.local", "w0.workers", "w1.workers.default.svc.cluster.local",
             "nobody.default.svc.cluster.local"]
    await kube.core.create_namespaced_pod("default", python_pod("resolver", RESOLVER, *names))
    got = {line["name"]: line["ips"] for line in await json_lines(kube, "resolver")}
    assert got["workers"] == sorted(ips) and got["workers.default.svc.cluster.local"] == sorted(ips), got
    assert got["w0.workers"] == [ips[0]] and got["w1.workers.default.svc.cluster.local"] == [ips[1]], got
    assert "Name or service not known" in got["nobody.default.svc.cluster.local"], got


async def test_hub_image_pod_runs_jupyterhub_and_answers_through_its_service(isolated):
    kube = isolated
    hub = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hub", "labels": {"component": "hub"}},
           "spec": {"containers": [{"name": "hub", "image": "quay.io/jupyterhub/jupyterhub:5.3",
                                    "ports": [{"name": "http", "containerPort": 8000}]}]}}
    await kube.core.create_namespaced_pod("default", hub)
    await kube.core.create_namespaced_service("default", service(
        "proxy-public", {"component": "hub"}, [{"name": "http", "port": 80, "targetPort": "http"}]))
    await pod_ip(kube, "hub")
    await kube.core.create_namespaced_pod("default", python_pod(
        "curl", CLIENT, "http://proxy-public/hub/api", "http://proxy-public.default.svc.cluster.local/hub/api"))
    answers = await json_lines(kube, "curl", timeout=120)
    for answer in answers:
        assert answer.get("status") == 200, answers
        assert "version" in json.loads(answer["body"]), answer
    # Port 8000 is the proxy's (the hub itself listens on 127.0.0.1:8081): the proxy routed it.
    log = await kube.core.read_namespaced_pod_log("hub", "default")
    assert "ConfigProxy" in log, log


async def test_pods_get_service_link_variables_for_services_that_exist_when_they_start(kube):
    svc = await kube.core.create_namespaced_service("default", service(
        "proxy-api", {"app": "proxy"}, [{"name": "http", "port": 8001}]))
    script = 'print(os.environ.get("PROXY_API_SERVICE_HOST"), os.environ.get("PROXY_API_SERVICE_PORT_HTTP"), "DONE")'
    await kube.core.create_namespaced_pod("default", python_pod("env", f"import os; {script}"))

    async def printed():
        try:
            return "DONE" in (text := await kube.core.read_namespaced_pod_log("env", "default")) and text
        except ApiException:
            return None

    assert (await wait_for(printed, timeout=30, message="env printed")).split() == [svc.spec.cluster_ip, "8001", "DONE"]


async def test_cluster_ips_come_from_the_service_cidr_and_cannot_change(kube):
    cidr = ipaddress.ip_network(str(kube.lk.network.service_cidr))
    web = await kube.core.create_namespaced_service("default", service("web", {"app": "web"}, [{"port": 80}]))
    assert ipaddress.ip_address(web.spec.cluster_ip) in cidr and web.spec.cluster_ips == [web.spec.cluster_ip]
    headless = await kube.core.create_namespaced_service("default", service("h", {"app": "h"}, [], clusterIP="None"))
    assert headless.spec.cluster_ip == "None"

    body = web.to_dict()
    body["spec"]["cluster_ip"] = body["spec"]["cluster_ips"] = None
    body["spec"]["ports"][0]["port"] = 8080
    kept = await kube.core.replace_namespaced_service("web", "default", body)
    assert kept.spec.cluster_ip == web.spec.cluster_ip and kept.spec.ports[0].port == 8080

    other = str(next(ip for ip in cidr.hosts() if str(ip) != web.spec.cluster_ip))
    with pytest.raises(ApiException) as moved:
        await kube.core.patch_namespaced_service("web", "default", {"spec": {"clusterIP": other,
                                                                            "clusterIPs": [other]}})
    assert moved.value.status == 422 and "may not change once set" in moved.value.body
    with pytest.raises(ApiException) as taken:
        await kube.core.create_namespaced_service("default", service(
            "again", {"app": "web"}, [{"port": 80}], clusterIP=web.spec.cluster_ip))
    assert taken.value.status == 422 and "provided IP is already allocated" in taken.value.body
    with pytest.raises(ApiException) as outside:
        await kube.core.create_namespaced_service("default", service(
            "far", {"app": "web"}, [{"port": 80}], clusterIP="192.0.2.10"))
    body = json.loads(outside.value.body)
    assert outside.value.status == 422 and body["details"]["causes"][0]["field"] == "spec.clusterIPs[0]"
    assert f"The range of valid IPs is {cidr}" in body["message"], body


# The z2jh shape, cut down: the hub's config finds its Service and the proxy's API through the
# service-link variables and cluster DNS names, as z2jh's jupyterhub_config.py does.
Z2JH_HUB_CONFIG = """
import os
c.JupyterHub.hub_bind_url = "http://:8081"
c.JupyterHub.hub_connect_url = f"http://hub:{os.environ['HUB_SERVICE_PORT']}"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = f"http://proxy-api:{os.environ['PROXY_API_SERVICE_PORT']}"
c.ConfigurableHTTPProxy.auth_token = os.environ["CONFIGPROXY_AUTH_TOKEN"]
"""


async def test_z2jh_shaped_hub_and_proxy_pods_serve_the_hub_api_through_services(isolated):
    kube = isolated
    for name, component, port, target in (("hub", "hub", 8081, 8081), ("proxy-api", "proxy", 8001, 8001),
                                          ("proxy-public", "proxy", 80, 8000)):
        await kube.core.create_namespaced_service("default", service(
            name, {"component": component}, [{"name": "http", "port": port, "targetPort": target}]))
    await kube.core.create_namespaced_config_map("default", {
        "metadata": {"name": "hub"}, "data": {"jupyterhub_config.py": Z2JH_HUB_CONFIG}})
    token = {"name": "CONFIGPROXY_AUTH_TOKEN", "value": "a-shared-secret"}
    await kube.core.create_namespaced_pod("default", {
        "metadata": {"name": "hub", "labels": {"component": "hub"}},
        "spec": {"containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.2.0", "env": [token],
                                 "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/jupyterhub/"}]}],
                 "volumes": [{"name": "config", "configMap": {"name": "hub"}}]}})
    await kube.core.create_namespaced_pod("default", {
        "metadata": {"name": "proxy", "labels": {"component": "proxy"}},
        "spec": {"containers": [{"name": "chp", "image": "quay.io/jupyterhub/configurable-http-proxy:4.6.3",
                                 "env": [token],
                                 "command": ["configurable-http-proxy", "--ip=", "--api-ip=", "--api-port=8001",
                                             "--default-target=http://hub:$(HUB_SERVICE_PORT)",
                                             "--error-target=http://hub:$(HUB_SERVICE_PORT)/hub/error",
                                             "--port=8000"]}]}})
    await pod_ip(kube, "hub")
    await pod_ip(kube, "proxy")
    await kube.core.create_namespaced_pod("default", python_pod("browser", CLIENT, "http://proxy-public/hub/api"))
    answers = await json_lines(kube, "browser", timeout=120)
    assert answers[0].get("status") == 200 and "version" in json.loads(answers[0]["body"]), answers
    hub_log = await kube.core.read_namespaced_pod_log("hub", "default")
    assert "Adding route for Hub: / => http://hub:8081" in hub_log, hub_log  # reached proxy-api by name


async def test_loopback_fallback_serves_cluster_ips_from_a_loopback_service_cidr(make_kube):
    """Without a bridge (no root), a service CIDR inside 127.0.0.0/8 still carries Service traffic:
    every such address is local, so the proxy needs no `ip addr`. Pods find it by service links."""
    cidr = f"127.{random.randrange(2, 250)}.{random.randrange(0, 255)}.0/24"
    kube = await make_kube(isolation="loopback", service_cidr=cidr)
    svc = await kube.core.create_namespaced_service("default", service(
        "web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http"}]))
    assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(cidr)
    await kube.core.create_namespaced_pod("default", python_pod(
        "web-0", SERVER, labels={"app": "web"}, ports=[{"name": "http", "containerPort": 8080}]))
    await pod_ip(kube, "web-0")
    await kube.core.create_namespaced_pod("default", python_pod("client", CLIENT, "http://$(WEB_SERVICE_HOST)/"))
    answers = await json_lines(kube, "client")
    assert [(a.get("status"), a.get("body")) for a in answers] == [(200, socket.gethostname())], answers
