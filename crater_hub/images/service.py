"""The image library and the commits that fill it: one :class:`ImageService` per hub process.

What it keeps: library entries (``crater_images``) and commits (``crater_image_commits``) in the
hub's database, every entry also in memory (a library is small) so that the spawner and the job
queue ask "may this user run this reference?" without a query. What it decides: the repository
of a commit (``<registry>/<prefix>/<user>/<name>:<tag>``: a user never names it), whether the
request fits the user's quota (count and total size, refused at the request with the numbers),
and what a user sees (admin images from config, their own, shared with them or their groups,
public). The work of a commit is the backend's (:mod:`.backends`); a library entry is written
only when the push succeeded, in the same transaction that marks the commit succeeded.

Domain code: no tornado. Errors a user can act on are :class:`ImageError` with an HTTP status.
"""

import asyncio
import base64
import hashlib
import json
import logging
import re

from ..db import migrate
from ..db.models import Image, ImageCommit, isotime, utcnow
from ..db.session import Database
from ..policy.images import is_reference
from ..quantity import parse_quantity
from .backends.base import CommitFailed, CommitRequest, Reporter, human_size
from .registry import RegistryClient, RegistryError, split_image
from .settings import NAME, TAG

log = logging.getLogger("crater_hub.images")

STATES = ("pending", "committing", "pushing", "succeeded", "failed")
FINAL = ("succeeded", "failed")
MAX_NAME = 64
MAX_LOG = 64 * 1024


class ImageError(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.message, self.status = message, status


def user_component(user):
    """A user name as one repository path component: kept when valid, else lowercased and
    cleaned, with a short hash so that two names never meet (``Alice@x`` → ``alice-x-1a2b3c``)."""
    if NAME.match(user) and len(user) <= 64:
        return user
    clean = re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-")[:40] or "user"
    return f"{clean}-{hashlib.sha256(user.encode()).hexdigest()[:6]}"


def check_name_and_tag(name, tag):
    if not isinstance(name, str) or not NAME.match(name) or len(name) > MAX_NAME:
        raise ImageError(f"name must be 1-{MAX_NAME} lowercase letters, digits and separators (. _ -) "
                         f"between them, such as 'torch-cuda', got {name!r}")
    if not isinstance(tag, str) or not TAG.match(tag):
        raise ImageError(f"tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or "
                         f"'-', such as 'v1', got {tag!r}")


def image_model(image):
    return {
        "id": str(image.id), "kind": "user", "owner": image.owner, "name": image.name, "tag": image.tag,
        "image": image.reference, "digest": image.digest, "size": image.size,
        "size_display": human_size(image.size), "description": image.description,
        "source": {"type": image.source, **(image.source_detail or {})}, "created": isotime(image.created),
        "shared_with": {"users": list(image.shared_users or []), "groups": list(image.shared_groups or [])},
        "public": image.public,
    }


def admin_image_model(index, entry):
    return {"id": f"admin-{index}", "kind": "admin", "owner": None, "name": entry.get("name", entry["image"]),
            "tag": entry["image"].rpartition(":")[2] if ":" in entry["image"].rpartition("/")[2] else "latest",
            "image": entry["image"], "digest": entry.get("digest"), "size": entry.get("size"),
            "description": entry.get("description", ""), "source": {"type": "admin"}, "created": None,
            "shared_with": {"users": [], "groups": []}, "public": True}


def commit_model(commit, live=None):
    model = {
        "id": str(commit.id), "owner": commit.owner, "requester": commit.requester, "server": commit.server,
        "name": commit.name, "tag": commit.tag, "description": commit.description, "image": commit.reference,
        "state": commit.state, "progress": round(commit.progress, 3), "reason": commit.reason,
        "message": commit.message, "digest": commit.digest, "size": commit.size,
        "image_id": None if commit.image_id is None else str(commit.image_id),
        "created": isotime(commit.created), "finished": isotime(commit.finished),
    }
    if live is not None:
        model.update(state=live.state, progress=round(live.fraction, 3))
    return model


class _Live(Reporter):
    """A running commit's progress and log, in memory; saved at each phase and at the end."""

    def __init__(self, service, commit_id):
        self.service, self.commit_id = service, commit_id
        self.state, self.fraction, self.lines = "pending", 0.0, []
        self.changed = asyncio.Event()

    async def phase(self, phase):
        self.state = phase
        self.fraction = 0.0 if phase == "committing" else 0.5
        self.log(f"{phase}")
        await self.service._save_commit(self.commit_id, state=phase, progress=self.fraction, log=self.text())

    def progress(self, fraction):
        base = 0.5 if self.state == "pushing" else 0.0
        self.fraction = base + 0.5 * max(0.0, min(1.0, fraction))
        self._notify()

    def log(self, line):
        self.lines.append(f"{isotime(utcnow())} {line}")
        self._notify()

    def text(self):
        return ("\n".join(self.lines) + "\n")[-MAX_LOG:]

    def _notify(self):
        self.changed.set()
        self.changed = asyncio.Event()


class ImageService:
    """The library and commits of one hub (see the module docstring).

    ``settings``: :class:`~crater_hub.images.settings.CraterImages`; ``backend``: a
    :class:`~crater_hub.images.backends.base.CommitBackend`.
    """

    def __init__(self, settings, db_url, backend):
        self.settings = settings
        self.db = Database(db_url)
        self.backend = backend
        self.images = {}  # id -> detached Image
        self.live = {}  # commit id -> _Live, while it runs
        self._tasks = set()
        self._pull_secrets = set()  # namespaces where the pull Secret is in place

    async def start(self):
        await self.db.call(migrate.upgrade, self.db.engine)
        self.images = {i.id: i for i in await self.db.run(lambda s: s.query(Image).all())}

        def fail_unfinished(session):
            for c in session.query(ImageCommit).filter(ImageCommit.state.notin_(FINAL)):
                c.state, c.reason, c.finished = "failed", "hub_restarted", utcnow()
                c.message = "the hub restarted during the commit; save the image again"
        await self.db.run(fail_unfinished)
        return self

    # -- who may use what ----------------------------------------------------------------------

    def visible(self, image, user, groups, admin=False):
        return (admin or image.owner == user or image.public or user in (image.shared_users or ())
                or bool(set(groups) & set(image.shared_groups or ())))

    def library(self, user, groups, admin=False, scope="all"):
        """What ``user`` sees, newest first: ``mine``, ``shared`` (with them), ``public``, ``admin``."""
        out = []
        if scope in ("all", "admin"):
            out += [admin_image_model(i, e) for i, e in enumerate(self.settings.admin_images)]
        for image in sorted(self.images.values(), key=lambda i: i.id, reverse=True):
            mine = image.owner == user
            if scope == "mine" and not mine:
                continue
            if scope == "shared" and (mine or image.public or not self.visible(image, user, groups)):
                continue
            if scope == "public" and not image.public:
                continue
            if scope in ("all", "mine", "shared", "public") and (mine or self.visible(image, user, groups, admin)):
                out.append(image_model(image))
        return out

    def usable_references(self, user, groups):
        """Library references ``user`` may start servers and jobs from (admins' config included)."""
        refs = {e["image"] for e in self.settings.admin_images}
        refs |= {i.reference for i in self.images.values() if self.visible(i, user, groups)}
        return refs

    def find_image(self, image_id, user, groups, admin=False):
        """The entry if ``user`` may see it, else None (others' images do not exist)."""
        if isinstance(image_id, str) and image_id.startswith("admin-"):
            index = image_id[len("admin-"):]
            entries = self.settings.admin_images
            return admin_image_model(int(index), entries[int(index)]) if index.isdigit() and int(index) < len(entries) else None
        try:
            image = self.images.get(int(image_id))
        except (TypeError, ValueError):
            return None
        return image_model(image) if image and self.visible(image, user, groups, admin) else None

    def by_reference(self, reference):
        return next((i for i in self.images.values() if i.reference == reference), None)

    async def check_exists(self, reference):
        """Raise ImageError(400) when a library image's manifest is gone from the registry
        (a pod would sit in ImagePullBackOff)."""
        image = self.by_reference(reference)
        if image is None or not self.settings.registry_url:
            return
        try:
            host, repository, ref = split_image(reference)
            found = await self._client(push=False).head_manifest(repository, ref)
        except (RegistryError, ValueError) as e:
            raise ImageError(f"image {reference} cannot be checked in the registry: {e}") from None
        if found is None:
            raise ImageError(f"image {reference} no longer exists in the registry (its manifest is gone); "
                             f"choose another image or delete this library entry")

    async def ensure_pull_secret(self, namespace):
        """The read-only pull Secret in ``namespace`` (created once per process and namespace;
        an existing one is replaced, so a rotated password reaches it)."""
        if not self.settings.registry_url or namespace in self._pull_secrets:
            return
        from kubernetes_asyncio.client.rest import ApiException

        from ..kube.client import shared_client

        s = self.settings
        user, password = s.pull_username or s.push_username, s.pull_password or s.push_password
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        config = {"auths": {s.host: {"username": user, "password": password, "auth": auth}}}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": s.pull_secret_name, "namespace": namespace,
                             "labels": {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "image-pull"}},
                "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}
        try:
            await shared_client("CoreV1Api").create_namespaced_secret(namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
            # replace = delete + create: the chart's hub Role grants those on secrets, not update
            await shared_client("CoreV1Api").delete_namespaced_secret(s.pull_secret_name, namespace)
            await shared_client("CoreV1Api").create_namespaced_secret(namespace, body)
        self._pull_secrets.add(namespace)

    # -- commits -------------------------------------------------------------------------------

    def _client(self, push=True):
        s = self.settings
        if push:
            return RegistryClient(s.registry_url, s.push_username, s.push_password)
        return RegistryClient(s.registry_url, s.pull_username or s.push_username,
                              s.pull_password or s.push_password)

    async def _usage(self, owner):
        def count(session):
            pending = session.query(ImageCommit).filter(
                ImageCommit.owner == owner, ImageCommit.state.notin_(FINAL)).count()
            return pending
        pending = await self.db.run(count)
        mine = [i for i in self.images.values() if i.owner == owner]
        return len(mine) + pending, sum(i.size for i in mine)

    async def commit(self, *, owner, requester, server, pod, container, name, tag, description="", admin=False):
        """Validate, check the quota, record a pending commit and start it; its model."""
        if not self.settings.enabled:
            raise ImageError(self.settings.why_disabled, 409)
        check_name_and_tag(name, tag)
        if not isinstance(description, str) or len(description) > 4000:
            raise ImageError("description must be text of at most 4000 characters")
        if not admin:
            count, total = await self._usage(owner)
            limit_count = self.settings.max_images_per_user
            limit_bytes = int(parse_quantity(self.settings.max_bytes_per_user))
            if count >= limit_count:
                raise ImageError(f"image quota reached: {owner} has {count} images (commits in progress "
                                 f"included) of {limit_count} allowed; delete one first", 403)
            if total >= limit_bytes:
                raise ImageError(f"image quota reached: {owner}'s images take {human_size(total)} "
                                 f"of {human_size(limit_bytes)} allowed; delete one first", 403)
        repository = self.settings.repository(user_component(owner), name)
        reference = f"{self.settings.host}/{repository}:{tag}"

        def insert(session):
            row = ImageCommit(owner=owner, requester=requester, server=server, name=name, tag=tag,
                              description=description, reference=reference, state="pending", progress=0.0, log="")
            session.add(row)
            session.flush()
            return row
        row = await self.db.run(insert)
        live = self.live[row.id] = _Live(self, row.id)
        live.log(f"commit of {owner}'s server {server or '(default)'} to {reference} requested by {requester}")
        request = CommitRequest(
            pod=pod, container=container, repository=repository, tag=tag,
            max_bytes=None if admin else int(parse_quantity(self.settings.max_commit_size)),
            labels={"io.crater.owner": owner, "io.crater.server": server,
                    "org.opencontainers.image.description": description[:200]})
        task = asyncio.create_task(self._run(row, request, live), name=f"crater-commit-{row.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return commit_model(row, live)

    async def _run(self, row, request, live):
        try:
            result = await asyncio.wait_for(self.backend.commit(request, live), self.settings.commit_timeout)
        except asyncio.TimeoutError:
            await self._fail(row, live, "timed_out", f"the commit did not finish within {self.settings.commit_timeout}s")
            return
        except CommitFailed as e:
            await self._fail(row, live, e.reason, e.message)
            return
        except Exception as e:  # a bug or the unexpected: the commit must still end
            log.exception("commit %s failed", row.id)
            await self._fail(row, live, "runtime_error", f"the commit failed unexpectedly: {e}")
            return
        live.progress(1.0)
        live.log(f"succeeded: {result.digest}, {result.size} bytes")

        def finish(session):
            image = Image(owner=row.owner, name=row.name, tag=row.tag, reference=row.reference,
                          digest=result.digest, size=result.size, description=row.description,
                          source="commit", source_detail={"server": row.server, "commit": str(row.id),
                                                          "base": result.base},
                          shared_users=[], shared_groups=[], public=False)
            old = session.query(Image).filter(Image.reference == row.reference).first()
            if old is not None:  # the same tag pushed again: the entry follows the tag
                session.delete(old)
            session.add(image)
            session.flush()
            commit = session.get(ImageCommit, row.id)
            commit.state, commit.progress, commit.finished = "succeeded", 1.0, utcnow()
            commit.digest, commit.size, commit.image_id = result.digest, result.size, image.id
            commit.log = live.text()
            return image, (old.id if old is not None else None)
        image, replaced = await self.db.run(finish)
        self.images.pop(replaced, None)
        self.images[image.id] = image
        live.state = "succeeded"
        live._notify()
        self.live.pop(row.id, None)

    async def _fail(self, row, live, reason, message):
        live.log(f"failed ({reason}): {message}")
        live.state = "failed"
        await self._save_commit(row.id, state="failed", reason=reason, message=message, finished=utcnow(),
                                log=live.text())
        live._notify()
        self.live.pop(row.id, None)

    async def _save_commit(self, commit_id, **values):
        def save(session):
            commit = session.get(ImageCommit, commit_id)
            for k, v in values.items():
                setattr(commit, k, v)
        await self.db.run(save)

    async def get_commit(self, commit_id, user, admin=False):
        try:
            commit_id = int(commit_id)
        except (TypeError, ValueError):
            return None
        row = await self.db.run(lambda s: s.get(ImageCommit, commit_id))
        if row is None or not (admin or row.owner == user or row.requester == user):
            return None
        return row

    async def commit_view(self, commit_id, user, admin=False):
        row = await self.get_commit(commit_id, user, admin)
        return None if row is None else commit_model(row, self.live.get(row.id))

    async def commit_log(self, commit_id, user, admin=False):
        row = await self.get_commit(commit_id, user, admin)
        if row is None:
            return None
        live = self.live.get(row.id)
        return live.text() if live else row.log

    async def commits(self, user, admin=False, everyone=False):
        def query(session):
            q = session.query(ImageCommit)
            if not (admin and everyone):
                q = q.filter((ImageCommit.owner == user) | (ImageCommit.requester == user))
            return q.order_by(ImageCommit.id.desc()).limit(200).all()
        return [commit_model(r, self.live.get(r.id)) for r in await self.db.run(query)]

    async def wait_commit(self, commit_id, timeout):
        """Until the commit changes (or ``timeout``): for followers of a running commit."""
        live = self.live.get(int(commit_id))
        if live is not None:
            try:
                await asyncio.wait_for(live.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # -- the library ---------------------------------------------------------------------------

    async def share(self, image_id, user, admin, users=None, groups=None, public=None):
        image = self._own(image_id, user, admin)
        if public is not None and not admin:
            raise ImageError("public: only an administrator makes an image public", 403)
        for field, value in (("users", users), ("groups", groups)):
            if value is not None and (not isinstance(value, list) or not all(
                    isinstance(v, str) and 0 < len(v) <= 255 for v in value)):
                raise ImageError(f"{field} must be a list of {field[:-1]} names")
        if public is not None and not isinstance(public, bool):
            raise ImageError("public must be true or false")

        def save(session):
            row = session.get(Image, image.id)
            if users is not None:
                row.shared_users = sorted(set(users))
            if groups is not None:
                row.shared_groups = sorted(set(groups))
            if public is not None:
                row.public = public
            return row
        row = await self.db.run(save)
        self.images[row.id] = row
        return image_model(row)

    def _own(self, image_id, user, admin):
        try:
            image = self.images.get(int(image_id))
        except (TypeError, ValueError):
            image = None
        if image is None or not (admin or image.owner == user):
            if image is not None and self.visible(image, user, ()):
                raise ImageError(f"image {image_id} is not yours to change", 403)
            raise ImageError(f"no image {image_id}", 404)
        return image

    async def delete(self, image_id, user, admin):
        """Remove the library entry and, when the registry allows it, its manifest."""
        image = self._own(image_id, user, admin)
        removed_manifest = False
        try:
            host, repository, _ = split_image(image.reference)
            if image.source == "commit" and host == self.settings.host:
                removed_manifest = await self._client().delete_manifest(repository, image.digest)
        except (RegistryError, ValueError) as e:
            log.warning("image %s: registry delete failed: %s", image.id, e)
        await self.db.run(lambda s: s.query(Image).filter(Image.id == image.id).delete())
        self.images.pop(image.id, None)
        return {"deleted": str(image.id), "manifest_deleted": removed_manifest}

    async def import_image(self, owner, reference, name=None, description=""):
        """Add an external reference after checking its manifest in its registry."""
        if not is_reference(reference) or "/" not in reference:
            raise ImageError(f"image must be a full reference such as 'registry.example.org/team/tool:v1', "
                             f"got {reference!r}")
        try:
            host, repository, ref = split_image(reference)
        except ValueError as e:
            raise ImageError(f"image: {e}") from None
        if host == self.settings.host:
            client = self._client(push=False)
        else:
            scheme = "http" if host.startswith(("127.", "localhost")) else "https"
            client = RegistryClient(f"{scheme}://{host}", timeout=30)
        try:
            manifest, digest, _ = await client.get_manifest(repository, ref)
        except RegistryError as e:
            raise ImageError(f"image {reference} could not be found in its registry: {e.message}") from None
        size = sum(layer.get("size", 0) for layer in manifest.get("layers") or ())
        tag = ref if not ref.startswith("sha256:") else "latest"
        name = name or repository.rsplit("/", 1)[-1]

        def insert(session):
            row = Image(owner=owner, name=name, tag=tag, reference=reference, digest=digest, size=size,
                        description=description or "", source="import", source_detail={"reference": reference},
                        shared_users=[], shared_groups=[], public=False)
            session.add(row)
            session.flush()
            return row
        row = await self.db.run(insert)
        self.images[row.id] = row
        return image_model(row)
