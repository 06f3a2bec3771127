"""localkube: an embedded Kubernetes API on the real wire protocol, for local runs and tests.

``LocalKube`` (in-process) and ``LocalKubeProcess`` (a child process) are the entry points; see
``README.md`` in this folder for what differs from a real cluster.
"""

from .app import LocalKube
from .launcher import LocalKubeProcess

__all__ = ["LocalKube", "LocalKubeProcess"]
