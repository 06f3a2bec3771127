"""An asynchronous client of an OCI distribution registry's HTTP API (``/v2/``).

The hub talks to its registry (Debian's ``docker-registry``, CNCF distribution, Harbor) only
through this module: ping, catalog, tags, manifests (get, head, put, delete by digest) and blobs
(head, get into a file, mount from another repository, upload monolithic or chunked). Every call
goes through tornado's ``AsyncHTTPClient``, so the hub's event loop never waits on the network;
bodies are streamed from and to files, never held whole in memory.

Authentication: HTTP basic, or the bearer-token dance a registry asks for with
``Www-Authenticate: Bearer realm=...,service=...,scope=...`` (Harbor, Docker Hub): a token is
fetched from the realm with the basic credentials and cached per scope until it expires.
"""

import base64
import hashlib
import json
import re
import time
from urllib.parse import quote, urlencode, urljoin

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)

#: blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size
CHUNK = 16 * 1024 * 1024
TIMEOUT = 600.0


class RegistryError(Exception):
    """The registry refused or could not be reached; ``message`` is its own reason."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _reason(response, what):
    """The registry's own words: ``errors[].message`` of its JSON body, else the HTTP reason."""
    body = getattr(response, "body", b"") or b""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    if errors:
        code = errors[0].get("code")
        detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
        return RegistryError(f"{what}: {detail}", response.code, code)
    if response.code == 401:  # a HEAD has no body to say more
        return RegistryError(f"{what}: the registry refused the credentials (HTTP 401 Unauthorized)", 401,
                             "UNAUTHORIZED")
    return RegistryError(f"{what}: HTTP {response.code} {response.reason or ''}".rstrip(), response.code)


def _challenge(header):
    """``(scheme, params)`` of a ``Www-Authenticate`` header."""
    scheme, _, rest = (header or "").partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def split_image(reference):
    """``(registry host, repository, tag or digest)`` of a full reference such as
    ``127.0.0.1:5000/crater/alice/torch:v1`` or ``host/repo@sha256:...``."""
    host, _, rest = reference.partition("/")
    if not rest:
        raise ValueError(f"{reference!r} names no registry host")
    if "@" in rest:
        repository, _, ref = rest.partition("@")
    else:
        slash, colon = rest.rfind("/"), rest.rfind(":")
        repository, ref = (rest[:colon], rest[colon + 1:]) if colon > slash else (rest, "latest")
    return host, repository, ref


def sha256_file(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return f"sha256:{digest.hexdigest()}", size


class RegistryClient:
    """One registry (``url`` such as ``http://127.0.0.1:5000``) and one set of credentials."""

    def __init__(self, url, username="", password="", timeout=TIMEOUT, chunk=CHUNK):
        self.chunk = chunk
        self.url = url.rstrip("/")
        self.host = self.url.split("://", 1)[-1]
        self.username, self.password = username, password
        self.timeout = timeout
        self._tokens = {}  # scope -> (token, expires at)
        self._http = AsyncHTTPClient()

    def _basic(self):
        if not self.username:
            return {}
        raw = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def _token(self, params):
        scope = params.get("scope", "")
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        url = params["realm"] + ("?" + urlencode(query) if query else "")
        try:
            response = await self._http.fetch(url, headers=self._basic(), request_timeout=self.timeout)
        except HTTPClientError as e:
            raise _reason(e.response, "token request refused") from None
        body = json.loads(response.body)
        token = body.get("token") or body.get("access_token")
        self._tokens[scope] = (token, time.monotonic() + max(30, int(body.get("expires_in", 60)) - 10))
        return token

    async def request(self, method, path, *, headers=None, body=None, body_producer=None,
                      streaming_callback=None, ok=(200,), what=None, scope=None):
        """One API call, authenticated; returns the response (its status is one of ``ok``).

        ``path`` is relative to the registry's URL (``/v2/...``) or absolute (an upload location).
        """
        url = path if path.startswith("http") else self.url + path
        headers = dict(headers or {})
        auth = self._basic()
        if scope is not None and scope in self._tokens:
            auth = {"Authorization": f"Bearer {self._tokens[scope][0]}"}
        for attempt in (1, 2):
            request = HTTPRequest(
                url, method=method, headers={**headers, **auth}, body=body, body_producer=body_producer,
                streaming_callback=streaming_callback, request_timeout=self.timeout,
                allow_nonstandard_methods=True, follow_redirects=False,
            )
            try:
                response = await self._http.fetch(request, raise_error=False)
            except OSError as e:
                raise RegistryError(f"{what or method}: registry {self.host} unreachable: {e}") from None
            if response.code == 599:
                raise RegistryError(f"{what or method}: registry {self.host} unreachable: {response.error}")
            if response.code in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                # blobs may live elsewhere (S3, a CDN): follow without our credentials
                response = await self._http.fetch(
                    urljoin(url, response.headers["Location"]), method=method,
                    streaming_callback=streaming_callback, request_timeout=self.timeout, raise_error=False)
            if response.code == 401 and attempt == 1 and body_producer is None:
                scheme, params = _challenge(response.headers.get("Www-Authenticate"))
                if scheme == "bearer" and "realm" in params:
                    auth = {"Authorization": f"Bearer {await self._token(params)}"}
                    continue
            break
        if response.code not in ok:
            raise _reason(response, what or f"{method} {path}")
        return response

    # -- reads -----------------------------------------------------------------------------------

    async def ping(self):
        """Whether the registry answers ``/v2/`` with these credentials (raises otherwise)."""
        await self.request("GET", "/v2/", what="registry check")
        return True

    async def catalog(self, page=1000):
        repositories, path = [], f"/v2/_catalog?n={page}"
        while path:
            response = await self.request("GET", path, what="catalog")
            repositories += json.loads(response.body).get("repositories") or []
            path = _next_link(response)
        return repositories

    async def tags(self, repository):
        """The repository's tags; ``[]`` when it does not exist."""
        try:
            response = await self.request("GET", f"/v2/{repository}/tags/list", what=f"tags of {repository}")
        except RegistryError as e:
            if e.status == 404:
                return []
            raise
        return json.loads(response.body).get("tags") or []

    async def head_manifest(self, repository, reference):
        """``(digest, size)`` of a manifest, or None when it does not exist."""
        try:
            response = await self.request(
                "HEAD", f"/v2/{repository}/manifests/{reference}",
                headers={"Accept": ", ".join(MANIFEST_TYPES)}, what=f"manifest {repository}:{reference}")
        except RegistryError as e:
            if e.status == 404:
                return None
            raise
        return response.headers.get("Docker-Content-Digest"), int(response.headers.get("Content-Length") or 0)

    async def get_manifest(self, repository, reference):
        """``(manifest, digest, media type)``; raises RegistryError (status 404) when missing."""
        response = await self.request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)}, what=f"manifest {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.body).hexdigest())
        manifest = json.loads(response.body)
        return manifest, digest, manifest.get("mediaType") or response.headers.get("Content-Type")

    async def get_blob_bytes(self, repository, digest):
        response = await self.request("GET", f"/v2/{repository}/blobs/{digest}", what=f"blob {digest}")
        return response.body

    async def get_blob(self, repository, digest, path):
        """Download a blob into ``path``, checking its digest."""
        hasher = hashlib.sha256()
        with open(path, "wb") as f:
            def chunk(data):
                hasher.update(data)
                f.write(data)
            await self.request("GET", f"/v2/{repository}/blobs/{digest}", streaming_callback=chunk,
                               what=f"blob {digest}")
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise RegistryError(f"blob {digest}: content does not match its digest")

    async def has_blob(self, repository, digest):
        try:
            await self.request("HEAD", f"/v2/{repository}/blobs/{digest}", what=f"blob {digest}")
        except RegistryError as e:
            if e.status == 404:
                return False
            raise
        return True

    # -- writes ----------------------------------------------------------------------------------

    async def mount_blob(self, repository, digest, source):
        """Make ``digest`` of repository ``source`` part of ``repository`` without moving data.

        True when mounted; False when the registry started an upload instead (then push it).
        """
        response = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}",
            body=b"", ok=(201, 202), what=f"mount {digest} from {source}")
        if response.code == 202:  # not mounted: cancel the upload it opened
            location = urljoin(self.url + "/", response.headers.get("Location", ""))
            try:
                await self.request("DELETE", location, ok=(204, 404), what="cancel upload")
            except RegistryError:
                pass
            return False
        return True

    async def push_blob_bytes(self, repository, data, digest=None):
        """A small blob (an image config) in one monolithic upload; its digest."""
        digest = digest or f"sha256:{hashlib.sha256(data).hexdigest()}"
        if await self.has_blob(repository, digest):
            return digest
        location = await self._start_upload(repository)
        await self.request("PUT", _with_query(location, digest=digest), body=data,
                           headers={"Content-Type": "application/octet-stream"}, ok=(201,),
                           what=f"upload {digest}")
        return digest

    async def push_blob_file(self, repository, path, digest, size, progress=None):
        """Upload the file ``path`` (digest and size known): monolithic up to CHUNK, else PATCH
        chunks. ``progress(bytes sent)`` is called after each chunk."""
        if await self.has_blob(repository, digest):
            if progress:
                progress(size)
            return digest
        location = await self._start_upload(repository)
        if size <= self.chunk:
            with open(path, "rb") as f:
                data = f.read()
            await self.request("PUT", _with_query(location, digest=digest), body=data,
                               headers={"Content-Type": "application/octet-stream"}, ok=(201,),
                               what=f"upload {digest}")
            if progress:
                progress(size)
            return digest
        sent = 0
        with open(path, "rb") as f:
            while block := f.read(self.chunk):
                response = await self.request(
                    "PATCH", location, body=block, ok=(202,), what=f"upload {digest}",
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{sent}-{sent + len(block) - 1}",
                             "Content-Length": str(len(block))})
                sent += len(block)
                location = urljoin(self.url + "/", response.headers.get("Location", location))
                if progress:
                    progress(sent)
        await self.request("PUT", _with_query(location, digest=digest), body=b"", ok=(201,),
                           what=f"upload {digest}")
        return digest

    async def _start_upload(self, repository):
        response = await self.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"", ok=(202,),
                                      what=f"upload to {repository}")
        return urljoin(self.url + "/", response.headers["Location"])

    async def put_manifest(self, repository, reference, manifest, media_type=OCI_MANIFEST):
        """Store a manifest under a tag; its digest."""
        data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, separators=(",", ":")).encode()
        response = await self.request("PUT", f"/v2/{repository}/manifests/{reference}", body=data,
                                      headers={"Content-Type": media_type}, ok=(201,),
                                      what=f"manifest {repository}:{reference}")
        return response.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(data).hexdigest()}"

    async def delete_manifest(self, repository, digest):
        """Delete a manifest by digest; False when the registry does not allow deletes (405)
        or it is gone already."""
        try:
            await self.request("DELETE", f"/v2/{repository}/manifests/{digest}", ok=(202,),
                               what=f"delete {repository}@{digest}")
        except RegistryError as e:
            if e.status in (404, 405):
                return False
            raise
        return True


def _with_query(location, **params):
    return location + ("&" if "?" in location else "?") + urlencode(params)


def _next_link(response):
    link = response.headers.get("Link")
    match = re.match(r'<([^>]+)>;\s*rel="next"', link or "")
    return match.group(1) if match else None
