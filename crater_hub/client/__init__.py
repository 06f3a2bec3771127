"""crater_hub from a notebook: batch jobs through the hub, as the user the server runs for.

    from crater_hub import client
    job = client.submit(["python", "train.py"], profile="gpu", accelerator="t4", gpus=1)
    job = client.wait(job.id, timeout=3600)
    print(job.state, job.exit_code)
    print(client.logs(job.id, tail=50))
    [d["ref"] for d in client.datasets()]  # e.g. ["demo-iris", "alice/corpus", "@ml-staff/shared"]
    client.submit("ls /datasets/corpus", datasets=["alice/corpus"])
    client.commit("my-env", "v1", wait=True)   # save this server as an image
    client.images()                            # the images you may start from

Inside a JupyterHub single-user server the functions authenticate with the server's own
``JUPYTERHUB_API_TOKEN`` at ``JUPYTERHUB_API_URL``; elsewhere, build a
``Client(api_url=..., token=...)``. Errors raise :class:`CraterError` with the HTTP ``status``
and the hub's ``message``.

Light on purpose: the standard library only (``urllib``), so any single-user image with
crater_hub on its path can use it (``pip install --no-deps crater-hub`` is enough; importing
``crater_hub`` itself imports nothing outside the standard library).
"""

from ._http import CraterError, CraterTimeout
from ._images import Commit, Image
from ._jobs import FINAL_STATES, STATES, Client, Job, Transition

__all__ = [
    "Client", "Commit", "CraterError", "CraterTimeout", "FINAL_STATES", "Image", "Job", "STATES",
    "Transition", "cancel", "commit", "datasets", "events", "get", "images", "list", "logs",
    "profiles", "submit", "wait",
]

_clients = {}


def _client():
    """A client for this server's hub and token, as the environment gives them now."""
    import os

    key = (os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN"))
    if key not in _clients:
        _clients.clear()
        _clients[key] = Client()
    return _clients[key]


def submit(command, *, profile=None, accelerator=None, gpus=0, image=None, env=None,
           priority=None, name=None, max_runtime=None, workdir=None, datasets=None) -> Job:
    """Queue ``command``; see :meth:`Client.submit`."""
    return _client().submit(command, profile=profile, accelerator=accelerator, gpus=gpus,
                            image=image, env=env, priority=priority, name=name,
                            max_runtime=max_runtime, workdir=workdir, datasets=datasets)


def datasets():
    """The datasets you may mount; see :meth:`Client.datasets`."""
    return _client().datasets()


def list(state=None, all=False):  # noqa: A001 (the API's own name)
    """Your jobs, newest first; see :meth:`Client.list`."""
    return _client().list(state=state, all=all)


def get(id) -> Job:  # noqa: A002
    return _client().get(id)


def wait(id, timeout=None, poll=2.0) -> Job:  # noqa: A002
    """The job once it has ended; see :meth:`Client.wait`."""
    return _client().wait(id, timeout=timeout, poll=poll)


def logs(id, tail=None, follow=False):  # noqa: A002
    """The job's output; see :meth:`Client.logs`."""
    return _client().logs(id, tail=tail, follow=follow)


def events(id):  # noqa: A002
    return _client().events(id)


def cancel(id) -> Job:  # noqa: A002
    """Cancel a queued or running job; see :meth:`Client.cancel`."""
    return _client().cancel(id)


def profiles():
    return _client().profiles()


def images(scope="all"):
    """The images you may start servers and jobs from; see :meth:`Client.images`."""
    return _client().images(scope)


def commit(name, tag="latest", *, server=None, description="", wait=False, timeout=None):
    """Save this server as an image; see :meth:`Client.commit`."""
    return _client().commit(name, tag, server=server, description=description, wait=wait, timeout=timeout)
