"""LocalKube: one object that owns the store, the controllers and the HTTP API server.

Used in three ways: ``python -m crater_hub.localkube`` (the CLI), :mod:`.launcher` (a subprocess
the hub and the tests start and stop), and directly in-process for unit tests of controllers.
"""

import asyncio
import json
import logging
import os
import socket
import tempfile
from pathlib import Path

import yaml

from .resources import Registry
from .store import Store

log = logging.getLogger("localkube")

DEMO_CLUSTER = Path(__file__).with_name("demo-cluster.yaml")


class LocalKube:
    """An embedded Kubernetes API with a scheduler, a process kubelet, the Job and RayCluster controllers.

    ``cluster_file``: YAML with the nodes (defaults to the demo cluster).
    ``state_dir``: where pod sandboxes, logs and PVC data live (a temporary directory if None).
    ``history_size``: watch history kept for resuming; older resourceVersions get 410 Gone.
    ``isolation``: ``"isolated"`` (pods in namespaces of their own; the default as root) or
    ``"loopback"`` (see :mod:`.network`); ``pod_cidr``/``service_cidr``: ranges (chosen if None);
    ``masked_paths``: more host directories hidden from isolated pods (the state dir always is);
    ``shared_paths``: host directories every isolated pod sees as they are, read-write, as if
    each pod had them as hostPath volumes (for tests that hand files to and from pods).
    ``kuberay_crd``: serve ``ray.io/v1`` RayClusters from the start with a schema-less CRD, as if
    KubeRay were installed (the RayCluster controller always runs, once the kind exists).
    """

    def __init__(self, cluster_file=None, state_dir=None, host="127.0.0.1", port=0,
                 history_size=10000, image_table=None, isolation=None, pod_cidr=None,
                 service_cidr=None, masked_paths=(), shared_paths=(), kuberay_crd=False):
        self.cluster_file = Path(cluster_file) if cluster_file else DEMO_CLUSTER
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="localkube-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.image_table_file = image_table
        self.masked_paths = [Path(p).absolute() for p in masked_paths]
        self.shared_paths = [Path(p).absolute() for p in shared_paths]
        self.kuberay_crd = kuberay_crd
        from .network import PodNetwork

        self.network = PodNetwork(self.state_dir, isolation, pod_cidr, service_cidr)
        self.registry = Registry()
        self.store = Store(self.registry, history_size=history_size)
        self.dns = None
        self.controllers = []
        self.server = None
        from .aggregator import Aggregator

        self.aggregator = Aggregator(self)
        from .dcgm import DcgmExporter

        self.dcgm = DcgmExporter(self)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def _bootstrap(self):
        """Objects every cluster starts with: namespaces, default service accounts, nodes."""
        from . import nodes

        ns = self.registry.lookup("", "v1", "namespaces")
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(ns, {"metadata": {"name": name}})
        with open(self.cluster_file) as f:
            spec = yaml.safe_load(f) or {}
        node_res = self.registry.lookup("", "v1", "nodes")
        for node in nodes.nodes_from_cluster_spec(spec):
            self.store.create(node_res, node)
        if self.kuberay_crd:
            from .raycluster import minimal_crd

            self.store.create(self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                              minimal_crd())

    def _make_controllers(self):
        from .aggregator import APIServiceController
        from .endpoints import EndpointsController
        from .gc import (
            CRDController,
            GarbageCollector,
            NamespaceController,
            ServiceAccountController,
        )
        from .jobs import JobController
        from .kubelet import Kubelet
        from .raycluster import RayClusterController
        from .scheduler import Scheduler

        return [
            CRDController(self),
            APIServiceController(self),
            ServiceAccountController(self),
            GarbageCollector(self),
            NamespaceController(self),
            Scheduler(self),
            JobController(self),
            RayClusterController(self),
            EndpointsController(self),
            *self._service_controllers(),
            Kubelet(self),
        ]

    def _service_controllers(self):
        """The service proxy, where cluster IPs can be served (an isolated pod network, or a
        service CIDR on loopback)."""
        from .proxy import ServiceProxy, bridge_of

        if bridge_of(self) is None and not self.store.service_ips.network.is_loopback:
            return []
        return [ServiceProxy(self)]

    async def _start_dns(self):
        """Cluster DNS on the host's bridge address, where pods' resolv.conf points."""
        if not self.network.isolated:
            return
        from .dns import DNSServer

        dns = DNSServer(self.store, self.registry, self.network.gateway_ip, 53)
        try:
            self.dns = await dns.start()
        except OSError as e:  # pods still run, but resolve no cluster names: say so loudly
            await dns.stop()
            log.error("cluster DNS cannot listen on %s:53 (%s): pods will not resolve Service names",
                      self.network.gateway_ip, e)

    async def start(self):
        """Start controllers and the HTTP server; returns when the API answers."""
        from .server import make_app

        await self.network.start()
        sockets = []
        try:
            self.store.service_ips.configure(self.network.service_cidr)  # chosen by the network
            sockets = self._listen()
            self.controllers = self._make_controllers()
            self._bootstrap()
            for c in self.controllers:
                c.start()
            await self._start_dns()
            app = make_app(self)
            from tornado.httpserver import HTTPServer

            self.server = HTTPServer(app, idle_connection_timeout=3600)
            self.server.add_sockets(sockets)
        except BaseException:
            # Nothing of a failed start may stay: the bridge, routes and /run/localkube record
            # outlive this object while its process lives (in-process fixtures), and no sweep
            # removes a live process's.
            for sock in sockets:
                sock.close()
            if self.dns is not None:
                await self.dns.stop()
            for c in reversed(self.controllers):
                await c.stop()
            await self.network.stop()
            raise
        log.info("localkube API at %s (state in %s)", self.url, self.state_dir)
        return self

    def _listen(self):
        """Sockets for the API: ``host`` and, when pods live on a bridge, the gateway (same port)."""
        hosts = [self.host]
        if self.network.isolated and self.host not in (self.network.gateway_ip, "0.0.0.0", ""):
            hosts.append(self.network.gateway_ip)
        for attempt in range(20):
            port, sockets = self.port, []
            try:
                for host in hosts:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
                    sock.listen(128)
                    sock.setblocking(False)
                    port = sock.getsockname()[1]  # the first host's free port, for the others too
            except OSError:
                for sock in sockets:
                    sock.close()
                if self.port or attempt == 19:
                    raise
                continue  # a port free on 127.0.0.1 was taken on the gateway: try another
            self.port = port
            return sockets

    async def stop(self):
        """Stop everything; every pod process is terminated before this returns."""
        if self.server:
            self.server.stop()
        if self.dns is not None:
            await self.dns.stop()
        for c in reversed(self.controllers):
            await c.stop()
        await self.network.stop()
        await self.aggregator.close()
        if self.server:
            await asyncio.wait_for(self.server.close_all_connections(), 5)
        if self._tmp:
            self._tmp.cleanup()

    def kubeconfig(self, context="localkube"):
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "localkube"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(self, path):
        """Write a kubeconfig for this cluster atomically (readers never see a partial file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        from .network import network_file

        info = network_file(path)
        info_tmp = info.with_name(info.name + f".{os.getpid()}.tmp")
        info_tmp.write_text(json.dumps(self.network.info()))
        info_tmp.replace(info)  # before the kubeconfig: whoever sees the kubeconfig sees this too
        tmp.write_text(yaml.safe_dump(self.kubeconfig()))
        tmp.replace(path)
        return path
