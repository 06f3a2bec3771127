"""Reading job logs from the cluster: one read of a pod's log (for the stored tail and the
snapshot a client asks for), and following it through Kubernetes' own ``follow=true`` stream, so
that a follower costs the hub what the new lines cost, not a re-read of the whole log.

Open follow streams are counted per user (:class:`StreamLimit`): each holds a connection to
the API server for as long as it is open, so one user cannot hold an unbounded number.
"""

import asyncio
import codecs
import logging
from collections import Counter

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from ..kube.client import shared_client
from . import manifest

log = logging.getLogger("crater_hub.queue")


class TooManyStreams(Exception):
    """The user already has as many open follow streams as allowed."""


class StreamLimit:
    """At most ``limit`` open streams per user (0: none allowed, negative: no limit)."""

    def __init__(self, limit):
        self.limit = limit
        self.open = Counter()

    def acquire(self, user):
        if 0 <= self.limit <= self.open[user]:
            raise TooManyStreams(f"{user} already follows {self.open[user]} job logs; at most "
                                 f"{self.limit} at a time (Crater.job_log_streams_per_user)")
        self.open[user] += 1

    def release(self, user):
        self.open[user] -= 1
        if self.open[user] <= 0:
            del self.open[user]


class PodLogs:
    """Logs of the job container of pods in ``namespace``."""

    def __init__(self, namespace):
        self.namespace = namespace

    async def read(self, pod_name, tail_lines=None, tail_bytes=None):
        """The job container's log (its last ``tail_lines`` lines, then at most its last
        ``tail_bytes`` characters); '' when the pod has none (yet, or any more)."""
        kwargs = {"container": manifest.CONTAINER}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            text = await shared_client("CoreV1Api").read_namespaced_pod_log(
                pod_name, self.namespace, **kwargs)
        except ApiException as e:
            if e.status in (400, 404):
                return ""
            raise
        if tail_bytes is not None and len(text) > tail_bytes:
            text = text[-tail_bytes:]
        return text

    async def follow(self, pod_name, tail_lines=None, since_bytes=0):
        """Yield the job container's log as it is written (text chunks), from Kubernetes'
        ``follow=true`` stream, until the container ends or the pod goes away. ``since_bytes``:
        skip that many bytes of the beginning (what the caller already sent from this pod)."""
        kwargs = {"container": manifest.CONTAINER, "follow": True, "_preload_content": False}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            response = await shared_client("CoreV1Api").read_namespaced_pod_log(
                pod_name, self.namespace, **kwargs)
        except ApiException as e:
            if e.status in (400, 404):
                return
            raise
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        skip = since_bytes
        try:
            while True:
                try:
                    data = await response.content.readany()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    return
                if not data:
                    text = decoder.decode(b"", final=True)
                    if text:
                        yield text
                    return
                if skip:
                    data, skip = data[skip:], max(0, skip - len(data))
                    if not data:
                        continue
                text = decoder.decode(data)
                if text:
                    yield text
        finally:
            response.release()
