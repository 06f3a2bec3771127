"""Pulling images from a real registry, for pods that name one with credentials.

localkube runs host programs, so most images are image-table entries and never pulled. An image
committed by the hub is different: its layers (a pod's changes) live in a registry, over a base
that is an image-table entry, recorded in the image config's ``io.crater.base-image`` label. A pod
whose ``imagePullSecrets`` hold credentials for an image's registry host gets that image pulled:
the manifest and layers are fetched (basic auth, or the bearer token a registry asks for), each
layer unpacked once into ``<state>/images/layers/<digest>`` (in a worker thread) and laid over the
pod's root as overlay lower directories; its programs come from the base's table entry.

A pull that fails is the pod's ``ErrImagePull`` (a Warning event with the registry's words),
retried with back-off, as a kubelet does.
"""

import asyncio
import base64
import json
import os
import re
import shutil
from dataclasses import dataclass

import aiohttp

from . import layers as layers_mod

BASE_LABEL = "io.crater.base-image"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


class PullError(Exception):
    pass


@dataclass(frozen=True)
class PulledImage:
    reference: str
    digest: str
    base: str  # the image-table reference programs come from
    lowers: tuple  # overlay lower directories, topmost first


def registry_host(reference):
    host, _, rest = reference.partition("/")
    if rest and ("." in host or ":" in host or host == "localhost"):
        return host
    return None


def credentials_for(pod, host, find_secret):
    """``(username, password)`` for ``host`` from the pod's ``imagePullSecrets``, or None."""
    ns = pod["metadata"]["namespace"]
    for ref in pod["spec"].get("imagePullSecrets") or []:
        secret = find_secret(ns, ref.get("name"))
        raw = ((secret or {}).get("data") or {}).get(".dockerconfigjson")
        if not raw:
            continue
        try:
            auths = json.loads(base64.b64decode(raw)).get("auths") or {}
        except ValueError:
            continue
        for key, entry in auths.items():
            if key.split("://", 1)[-1].rstrip("/") != host:
                continue
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
            return entry.get("username", ""), entry.get("password", "")
    return None


def _split(reference):
    host, _, rest = reference.partition("/")
    if "@" in rest:
        repository, _, ref = rest.partition("@")
    else:
        slash, colon = rest.rfind("/"), rest.rfind(":")
        repository, ref = (rest[:colon], rest[colon + 1:]) if colon > slash else (rest, "latest")
    return host, repository, ref


class Puller:
    """Pulls and unpacks images under ``state_dir/images``; one pull per layer at a time."""

    def __init__(self, state_dir):
        self.dir = state_dir / "images"
        self._locks = {}

    async def pull(self, reference, credentials):
        host, repository, ref = _split(reference)
        auth = aiohttp.BasicAuth(*credentials) if credentials else None
        scheme = "http" if host.startswith(("127.", "localhost")) else "https"
        base_url = f"{scheme}://{host}/v2/{repository}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
                token = None

                async def get(url, accept=None):
                    nonlocal token
                    headers = {"Accept": accept} if accept else {}
                    for attempt in (1, 2):
                        kwargs = {"headers": {**headers, "Authorization": f"Bearer {token}"}} if token else {
                            "headers": headers, "auth": auth}
                        response = await session.get(url, **kwargs)
                        challenge = response.headers.get("Www-Authenticate", "")
                        if response.status == 401 and attempt == 1 and challenge.lower().startswith("bearer"):
                            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
                            query = {k: params[k] for k in ("service", "scope") if k in params}
                            async with session.get(params["realm"], params=query, auth=auth) as t:
                                body = await t.json(content_type=None)
                            token = body.get("token") or body.get("access_token")
                            response.release()
                            continue
                        break
                    if response.status != 200:
                        text = await response.text()
                        response.release()
                        try:
                            errors = json.loads(text).get("errors") or []
                            text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or text
                        except ValueError:
                            pass
                        raise PullError(f"{url.split('/v2/', 1)[-1]}: HTTP {response.status}: {text.strip()[:300]}")
                    return response

                async with await get(f"{base_url}/manifests/{ref}", MANIFEST_TYPES) as r:
                    digest = r.headers.get("Docker-Content-Digest", "")
                    manifest = json.loads(await r.read())
                if "layers" not in manifest:
                    raise PullError(f"{reference}: an index or an old manifest format; localkube pulls single images")
                async with await get(f"{base_url}/blobs/{manifest['config']['digest']}") as r:
                    config = json.loads(await r.read())
                lowers = []
                for layer in manifest["layers"]:
                    lowers.append(await self._layer(get, base_url, layer["digest"]))
        except aiohttp.ClientError as e:
            raise PullError(f"{reference}: registry {host} unreachable: {e}") from None
        labels = (config.get("config") or {}).get("Labels") or {}
        base = labels.get(BASE_LABEL)
        if not base:
            raise PullError(f"{reference}: its config records no base image ({BASE_LABEL}); "
                            "localkube runs only images committed from its own pods")
        return PulledImage(reference, digest, base, tuple(reversed(lowers)))

    async def _layer(self, get, base_url, digest):
        hexdigest = digest.split(":", 1)[1]
        dest = self.dir / "layers" / hexdigest
        lock = self._locks.setdefault(hexdigest, asyncio.Lock())
        async with lock:
            if dest.is_dir():
                return str(dest)
            tmp = self.dir / "tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            blob = tmp / f"{hexdigest}.tar.gz"
            async with await get(f"{base_url}/blobs/{digest}") as r:
                with open(blob, "wb") as f:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        f.write(chunk)
            partial = tmp / hexdigest
            shutil.rmtree(partial, ignore_errors=True)
            try:
                await asyncio.to_thread(layers_mod.unpack, blob, partial)
            finally:
                blob.unlink(missing_ok=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(partial, dest)
            return str(dest)
