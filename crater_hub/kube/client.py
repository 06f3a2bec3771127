"""The one Kubernetes client factory: every crater_hub call to the API gets its client here.

The connection settings are loaded once per process (in-cluster service account first, then the
kubeconfig, as KubeSpawner does), and one ``ApiClient`` (one connection pool) is shared by every
API class on a given event loop: aiohttp sessions belong to the loop that made them.
"""

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from kubernetes_asyncio import client, config

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
DEFAULT_KUBECONFIG = Path("~/.kube/config")

_api_clients = {}


def cluster_configured():
    """Whether a real cluster is configured: running in a pod, or a kubeconfig to load.

    This is what ``load_configuration`` would succeed with, checked without loading anything, so
    that ``jupyterhub_config.py`` can choose between a real cluster and the embedded one.
    """
    in_cluster = SERVICE_ACCOUNT_TOKEN.exists() and "KUBERNETES_SERVICE_HOST" in os.environ
    return (
        in_cluster or bool(os.environ.get("KUBECONFIG")) or DEFAULT_KUBECONFIG.expanduser().exists()
    )


@lru_cache
def load_configuration():
    """The cluster's connection settings, loaded once: in-cluster config, else the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # KUBECONFIG is read now, not when kubernetes_asyncio was imported. load_kube_config is a
        # coroutine: run it on a private loop so that this stays callable from synchronous code
        # and from inside a running loop alike.
        load = config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, load).result()
    return configuration


def shared_client(api_class_name):
    """An API object (``"CoreV1Api"``, ``"BatchV1Api"``, ...) sharing this loop's connections."""
    loop = asyncio.get_running_loop()
    api_client = _api_clients.get(loop)
    if api_client is None:
        api_client = _api_clients[loop] = client.ApiClient(load_configuration())
    return getattr(client, api_class_name)(api_client)


async def close_shared_clients():
    """Close this loop's connections (when a loop that used ``shared_client`` finishes)."""
    api_client = _api_clients.pop(asyncio.get_running_loop(), None)
    if api_client is not None:
        await api_client.close()


class _Serializer:
    """kubernetes_asyncio's own model-to-JSON conversion, without a connection pool to close."""

    PRIMITIVE_TYPES = client.ApiClient.PRIMITIVE_TYPES
    sanitize_for_serialization = client.ApiClient.sanitize_for_serialization


def serialize(obj):
    """A client model (``V1PersistentVolumeClaim``...), or lists and dicts of them, as the JSON
    the API would receive (camelCase keys, unset fields left out)."""
    return _Serializer().sanitize_for_serialization(obj)


def api_message(error):
    """What the API server said in refusing a call (the ``message`` of its Status body), for a
    person to read, instead of the client's dump of the HTTP response; its reason if none."""
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError, AttributeError):
        return error.reason
