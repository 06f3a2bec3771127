"""crater_hub on one machine: a configured Kubernetes cluster if there is one, else localkube.

Local evaluation settings (SQLite, 127.0.0.1:8000, a shared demo password). Anything here can be
overridden on the command line, e.g. ``./dev run --JupyterHub.bind_url=http://127.0.0.1:9000``.
On z2jh, use the chart's own config and call ``crater_hub.setup(c)`` from ``hub.extraConfig``.
"""

import os
from pathlib import Path

import yaml
from traitlets.config import Config

import crater_hub
from crater_hub.embedded import (
    pod_reachable_ip, proxy_command, start_embedded_cluster, start_embedded_registry,
)
from crater_hub.kube.client import cluster_configured

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

state_dir = Path(os.environ.get("CRATER_STATE_DIR", Path(__file__).parent / ".state")).resolve()
state_dir.mkdir(parents=True, exist_ok=True)

embedded = not cluster_configured()
if embedded:
    start_embedded_cluster(state_dir / "localkube")
    # Image commits push to Debian's docker-registry on 127.0.0.1 (htpasswd auth), kept next to
    # the hub's state; without the program, commits are off and the UI says why.
    if start_embedded_registry(c, state_dir / "registry"):
        # servers and jobs name the read-only pull secret the hub keeps in their namespace
        c.KubeSpawner.image_pull_secrets = ["crater-image-pull"]

# Accelerators, profiles and quotas: a YAML (or JSON) file of config sections ("Crater: {...}")
# named by CRATER_CONFIG_FILE; on the embedded demo cluster, by default, the demo profiles that
# match its nodes (CPU, GPU with T4/A100, an ml-staff-only A100 × 4). CRATER_CONFIG_FILE="" : none.
demo_crater = Path(crater_hub.__file__).parent / "localkube" / "demo-crater.yaml"
if crater_file := os.environ.get("CRATER_CONFIG_FILE", str(demo_crater) if embedded else ""):
    c.merge(Config(yaml.safe_load(Path(crater_file).read_text()) or {}))

# The hub, its database and its proxy
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
# Pods reach the hub's API here: on localkube, the host's address on the pods' bridge (pods have
# network namespaces of their own), or 127.0.0.1 (its loopback fallback, where pods are on 127.1.x.y).
c.JupyterHub.hub_ip = pod_reachable_ip()
c.JupyterHub.hub_port = 8081
c.JupyterHub.hub_connect_ip = c.JupyterHub.hub_ip
c.JupyterHub.db_url = os.environ.get(
    "CRATER_DB_URL", f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
)
c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = proxy_command()
c.ConfigurableHTTPProxy.pid_file = str(state_dir / "jupyterhub-proxy.pid")

# Several servers per user (a GPU server next to a CPU one); crater quotas bound how many.
c.JupyterHub.allow_named_servers = True

# Login: any user name with the shared password; "admin" is an administrator.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("CRATER_DEMO_PASSWORD", "crater")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

# Single-user servers, as z2jh configures KubeSpawner (home volume entries are dicts by name,
# so that later additions, such as datasets, merge with them instead of replacing them).
c.KubeSpawner.namespace = "default"
c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.2.0"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.default_url = "/lab"
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 60
# z2jh's singleuser.uid and singleuser.fsGid: batch jobs run as the same user (localkube runs
# every process as this machine's user and enforces neither)
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.pvc_name_template = "claim-{user_server}"
c.KubeSpawner.storage_capacity = "10Gi"
c.KubeSpawner.volumes = {
    "home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}
}
c.KubeSpawner.volume_mounts = {"home": {"name": "home", "mountPath": "/home/jovyan"}}

# Tests and benchmarks drive the hub through its REST API with this admin token.
if admin_token := os.environ.get("CRATER_TEST_ADMIN_TOKEN"):
    c.JupyterHub.services = [{"name": "crater-test", "api_token": admin_token}]
    c.JupyterHub.load_roles = [
        {"name": "admin", "services": ["crater-test"]},
        {"name": "crater-test", "scopes": ["custom:crater:admin"], "services": ["crater-test"]},
    ]

crater_hub.setup(c)
