"""Operator settings of image commits and the image library (``c.CraterImages.*``).

Kept apart from :class:`crater_hub.config.Crater` (profiles, quotas): this room alone reads them.
On z2jh they come from ``hub.config.CraterImages`` and a Secret (see docs/deploy.md); on the
embedded default ``jupyterhub_config.py`` points them at the registry it starts.
"""

import os
import re

from traitlets import Dict, Integer, List, Type, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..quantity import parse_quantity

NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")  # one OCI path component
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class CraterImages(LoggingConfigurable):
    """Where images go, who may make how many, and which engine commits them."""

    registry_url = Unicode(
        "", config=True,
        help="""The registry's API URL (``https://harbor.example.org``). Empty: commits are off.""")
    registry_host = Unicode(
        "", config=True,
        help="""The registry as image references name it (``harbor.example.org``); default: the
        host (and port) of registry_url.""")
    push_username = Unicode("", config=True, help="Account the commit engine pushes with.")
    push_password = Unicode("", config=True, help="Its password or robot token (a Secret on z2jh).")
    pull_username = Unicode("", config=True, help="Read-only account of the servers' pull secret.")
    pull_password = Unicode("", config=True, help="Its password or robot token.")
    pull_secret_name = Unicode(
        "crater-image-pull", config=True,
        help="""The read-only pull Secret (kubernetes.io/dockerconfigjson) the hub keeps in the
        servers' namespace; servers and jobs name it in imagePullSecrets (on z2jh:
        singleuser.image.pullSecrets).""")
    prefix = Unicode(
        "crater", config=True,
        help="""Repository prefix: a user's images are ``<registry>/<prefix>/<user>/<name>:<tag>``.""")
    disabled_reason = Unicode(
        "", config=True,
        help="""When set, commits are off and this is what the UI and API say (the embedded
        default sets it when docker-registry is missing).""")
    commit_backend_class = Type(
        "crater_hub.images.backends.localkube.LocalkubeCommitBackend",
        klass="crater_hub.images.backends.base.CommitBackend", config=True,
        help="""The commit engine: ``...backends.localkube.LocalkubeCommitBackend`` (embedded
        default) or ``...backends.containerd.ContainerdCommitBackend`` (a Job on the pod's node).""")
    commit_namespace = Unicode(
        "crater-system", config=True,
        help="""System namespace of commit Jobs and the push Secret; never a user's namespace.""")
    commit_job_image = Unicode(
        "ghcr.io/crater-hub/commit:latest", config=True,
        help="""Image of the containerd commit Job (containerd's ctr, or nerdctl >= 2.0).""")
    commit_timeout = Integer(1800, min=60, config=True, help="Seconds before a commit fails as timed out.")
    max_commit_size = Unicode(
        "40Gi", config=True, help="Largest layer a non-admin commit may produce (quantity).")
    max_images_per_user = Integer(20, min=0, config=True, help="Library images a user may own.")
    max_bytes_per_user = Unicode("200Gi", config=True, help="Total size of a user's images (quantity).")
    admin_images = List(
        Dict(), config=True,
        help="""Images every user may start from, listed in the library:
        ``{"name": "PyTorch 2.4", "image": "registry/...:tag", "description": ""}``.""")

    # On z2jh the credentials come from a Secret through hub.extraEnv (docs/deploy.md): the hub
    # holds the read-only account; the push account only where the hub itself pushes (localkube).
    @default("push_username")
    def _push_username(self):
        return os.environ.get("CRATER_REGISTRY_PUSH_USERNAME", "")

    @default("push_password")
    def _push_password(self):
        return os.environ.get("CRATER_REGISTRY_PUSH_PASSWORD", "")

    @default("pull_username")
    def _pull_username(self):
        return os.environ.get("CRATER_REGISTRY_PULL_USERNAME", "")

    @default("pull_password")
    def _pull_password(self):
        return os.environ.get("CRATER_REGISTRY_PULL_PASSWORD", "")

    @validate("max_commit_size", "max_bytes_per_user")
    def _quantity(self, proposal):
        try:
            parse_quantity(proposal.value)
        except (ValueError, TypeError):
            raise ValueError(f"CraterImages.{proposal.trait.name} must be a quantity such as '40Gi', "
                             f"got {proposal.value!r}") from None
        return proposal.value

    @property
    def host(self):
        return self.registry_host or self.registry_url.split("://", 1)[-1].rstrip("/")

    @property
    def enabled(self):
        return bool(self.registry_url) and not self.disabled_reason

    @property
    def why_disabled(self):
        return self.disabled_reason or "image commits are off: no registry is configured (CraterImages.registry_url)"

    def repository(self, user, name):
        """The repository of ``user``'s image ``name`` (path only, without the host)."""
        return f"{self.prefix}/{user}/{name}"
