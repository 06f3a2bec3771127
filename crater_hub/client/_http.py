"""The hub's REST API over the standard library (``urllib``): requests, errors, streamed lines.

Nothing here imports JupyterHub, tornado or Kubernetes: this runs in single-user images.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

USER_AGENT = "crater-hub-client"
_DEFAULT = object()


class CraterError(Exception):
    """The hub refused a request, or could not be reached.

    ``status`` is the HTTP status (``None`` when the hub could not be reached) and ``message``
    the hub's own explanation (its JSON ``message``), which names the field or the limit.
    """

    def __init__(self, message, status=None, *, url=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self):
        return f"{self.status}: {self.message}" if self.status else self.message


class CraterTimeout(CraterError, TimeoutError):
    """:func:`wait` gave up before the job finished; ``job`` is the job as last seen."""

    def __init__(self, message, job=None):
        super().__init__(message)
        self.job = job


def _env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        raise CraterError(
            f"{name} is not set: run this inside a JupyterHub single-user server, "
            "or pass api_url= and token= (a token from the hub's Token page)")
    return value


class Connection:
    """A base URL (``.../hub/api``) and a token; ``request`` returns decoded JSON or text."""

    def __init__(self, api_url=None, token=None, timeout=30.0):
        self.api_url = (api_url or _env("JUPYTERHUB_API_URL")).rstrip("/") + "/"
        self.token = token or _env("JUPYTERHUB_API_TOKEN")
        self.timeout = timeout

    def url(self, path, query=None):
        url = self.api_url + path.lstrip("/")
        if query:
            pairs = [(k, v) for k, v in query if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def open(self, method, path, query=None, body=None, timeout=_DEFAULT):
        """The open HTTP response of a successful request; :class:`CraterError` otherwise.

        ``timeout``: seconds for connecting and for each read; ``None`` waits for ever.
        """
        url = self.url(path, query)
        headers = {"Authorization": f"token {self.token}", "User-Agent": USER_AGENT,
                   "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(
                req, timeout=self.timeout if timeout is _DEFAULT else timeout)
        except urllib.error.HTTPError as e:
            with e:
                raise CraterError(_message(e), e.code, url=url) from None
        except urllib.error.URLError as e:
            raise CraterError(f"cannot reach the hub at {self.api_url}: {e.reason}", url=url) from e

    def request(self, method, path, query=None, body=None):
        """JSON (or text, when the hub answers text) of a request; ``None`` when empty."""
        with self.open(method, path, query, body) as r:
            raw = r.read()
            content_type = r.headers.get("Content-Type", "")
        if not raw:
            return None
        if content_type.startswith("application/json"):
            return json.loads(raw)
        return raw.decode("utf-8", errors="replace")

    def lines(self, path, query=None):
        """The lines of a streamed text response (without line ends), as they arrive."""
        # no read timeout: a quiet job may print nothing for a long while
        with self.open("GET", path, query, timeout=None) as r:
            for line in r:
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def _message(error):
    """The hub's JSON ``message``, else the body's start, else the HTTP reason."""
    try:
        body = error.read()
    except OSError:
        body = b""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if message:
        return str(message)
    text = body.decode("utf-8", errors="replace").strip()
    return text[:500] or str(error.reason or f"HTTP {error.code}")
