"""``GET pods/<name>/log``: container logs with ``tailLines``, ``limitBytes`` and ``follow``.

Logs are the files the kubelet writes; following one reads new bytes as they arrive until the
container stops or the client goes away.
"""

import asyncio
import os

from tornado.iostream import StreamClosedError

from .errors import bad_request

FOLLOW_POLL = 0.1


def pick_container(pod, requested):
    """The container a request names, or the only one; 400 as the API server words it."""
    names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
    if requested:
        if requested not in names:
            raise bad_request(f"container {requested} is not valid for pod {pod['metadata']['name']}")
        return requested
    if len(pod["spec"]["containers"]) == 1:
        return pod["spec"]["containers"][0]["name"]
    main = [c["name"] for c in pod["spec"]["containers"]]
    raise bad_request(f"a container name must be specified for pod {pod['metadata']['name']}, "
                      f"choose one of: [{' '.join(main)}]")


def _state(pod, container):
    status = pod.get("status", {})
    for cs in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        if cs["name"] == container:
            return cs.get("state", {})
    return {}


def _tail(data, lines):
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def stream_log(handler, res, namespace, name):
    from .kubelet import log_path

    store = handler.store
    pod = store.get(res, namespace, name)
    container = pick_container(pod, handler.get_argument("container", None))
    previous = handler.get_argument("previous", "false").lower() == "true"
    state = _state(pod, container)
    path = log_path(handler.cluster, pod, container, previous=previous)
    if not os.path.exists(path):
        reason = state.get("waiting", {}).get("reason", "ContainerCreating")
        if previous:
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    tail = handler.get_argument("tailLines", None)
    limit = handler.get_argument("limitBytes", None)
    try:
        tail = None if tail is None else int(tail)
        limit = None if limit is None else int(limit)
    except ValueError:
        raise bad_request("tailLines and limitBytes must be integers") from None
    follow = handler.get_argument("follow", "false").lower() == "true" and not previous
    handler.set_header("Content-Type", "text/plain")
    with open(path, "rb") as f:
        data = _tail(f.read(), tail)
        sent = 0

        def send(chunk):
            nonlocal sent
            if limit is not None:
                chunk = chunk[: max(limit - sent, 0)]
            sent += len(chunk)
            handler.write(chunk)

        send(data)
        try:
            await handler.flush()
            uid = pod["metadata"]["uid"]
            while follow and (limit is None or sent < limit):
                chunk = f.read()
                if chunk:
                    send(chunk)
                    await handler.flush()
                    continue
                current = store.find(res, namespace, name)
                if current is None or current["metadata"]["uid"] != uid or not _state(current, container).get("running"):
                    rest = f.read()
                    if rest:
                        send(rest)
                    break
                if handler.request.connection.stream.closed():
                    return
                await asyncio.sleep(FOLLOW_POLL)
        except StreamClosedError:
            return
    handler.finish()
