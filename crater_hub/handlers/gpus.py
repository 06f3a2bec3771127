"""GPU pages and REST: ``/hub/crater/gpus`` (the heatmap), ``/hub/api/crater/gpus`` (its data),
``/hub/crater/nodes`` and ``/hub/api/crater/nodes`` (the node load view, admins only).

Thin: parse the filters (a bad value is a 400 naming the field), authorize (``custom:crater:use``
for the heatmap, ``custom:crater:admin`` for the node view and for seeing every owner's name when
``Crater.gpu_owner_visibility`` is ``self``), then read memoized joins of the shared caches
(:mod:`crater_hub.gpus.heatmap`, :mod:`crater_hub.gpus.nodeload`) and the shared utilization
snapshot (one Prometheus query per scrape interval for all viewers). No Kubernetes call and no
database query per request; queued demand comes from the queue's in-memory jobs.
"""

import asyncio
import json
import logging
import os
import time
from datetime import datetime, timezone

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.user import User
from tornado import web

from ..gpus import nodeload
from ..gpus.heatmap import FilterError, owner_label, parse_filters, shared_heatmap, visible_rows
from ..gpus.utilization import UtilizationCache
from ..kube.inventory import shared_inventory
from .capacity import ADMIN, USE, CraterAPIHandler, crater_settings
from .job_pages import page_scripts

log = logging.getLogger("crater_hub.gpus")
REFRESH_SECONDS = 10
PAGE_ROWS = 100  # node rows the page draws at once


def _iso(ts):
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def system_namespaces(crater):
    """The namespaces whose other pods are the platform's own: the hub's, the jobs'."""
    out = {"kube-system"}
    for ns in (os.environ.get("POD_NAMESPACE"), crater.jobs_namespace):
        if ns:
            out.add(ns)
    try:
        from ..hubstart import hub_app, spawner_namespace

        app = hub_app()
        ns = spawner_namespace(app) if app is not None else None
        if ns:
            out.add(ns)
    except Exception:  # not inside a hub (tests, benchmarks): the defaults above
        pass
    return tuple(sorted(out))


def queued_demand():
    """GPUs waiting in the job queue per accelerator slug, from the queue's in-memory jobs
    (no database query); empty while the queue has not started."""
    from ..queue.starter import ROOM

    service = ROOM.started()
    if service is None:
        return {}
    demand = {}
    for job in list(service.jobs.values()):
        if job.state == "queued" and job.gpus and job.accelerator:
            demand[job.accelerator] = demand.get(job.accelerator, 0) + job.gpus
    return demand


class GPUData:
    """What both the page and the REST handler need: the shared heatmap, inventory, snapshot."""

    def __init__(self, settings):
        self.crater = crater_settings(settings)
        self.inventory = shared_inventory(self.crater.accelerator_catalog())
        self.heatmap = shared_heatmap(self.crater, self.inventory.accelerators,
                                      system_namespaces(self.crater))
        self.utilization = UtilizationCache.shared(self.crater)

    async def load(self):
        await asyncio.gather(self.inventory.ready(), self.heatmap.index.ready())
        self.snapshot = await self.utilization.snapshot()
        self.heatmap.last_snapshot = self.snapshot
        return self

    def accelerator_models(self):
        return [a.model() for a in self.inventory.accelerators()]

    def answer(self, filters, viewer, admin, base_url):
        """The REST model (see :class:`GPUsAPIHandler`)."""
        crater, snapshot = self.crater, self.snapshot
        show_names = admin or crater.gpu_owner_visibility == "names"
        rows, total = self.heatmap.page(snapshot, filters)
        rows = visible_rows(rows, viewer, show_names=show_names)
        capacity = {a["slug"]: a for a in self.inventory.capacity(detail=False)["accelerators"]}
        demand = queued_demand()
        accelerators = []
        for s in self.heatmap.summary(snapshot):
            cap = capacity.get(s["slug"], {})
            accelerators.append({
                **{k: v for k, v in s.items() if k != "by_kind"},
                "allocated_gpus": round(s["allocated_gpus"], 3),
                "idle_gpus": round(s["idle_gpus"], 3),
                "allocated_by_kind": {k: round(v, 3) for k, v in sorted(s["by_kind"].items())},
                "free": cap.get("free"), "total": cap.get("total"),
                "queued_gpus": demand.get(s["slug"], 0),
            })
        prefix = base_url.rstrip("/")
        return {
            "updated": _iso(time.time()),
            "utilization": {
                "available": snapshot.error is None,
                "note": None if snapshot.error is None
                else f"utilization unavailable: {snapshot.error}",
                "taken_at": _iso(snapshot.taken_at) if snapshot.error is None else None,
            },
            "idle_rule": {"threshold": crater.gpu_idle_threshold, "window": crater.gpu_idle_window},
            "owner_visibility": "names" if show_names else "self",
            "accelerators": accelerators,
            "devices": [_device(r, viewer, prefix) for r in rows],
            "total_rows": total,
            "offset": filters.offset,
            "limit": filters.limit,
        }


def _device(row, viewer, prefix):
    holders = [{
        "owner": owner_label(h, viewer),
        "user": h["user"],
        "kind": h["kind"],
        "workload": h["workload"],
        "link": prefix + h["link"] if h["link"] else None,
        "namespace": h["namespace"],
        "pod": h["pod"],
        "placement": h["placement"],
    } for h in row["holders"]]
    first = holders[0] if holders else None
    return {
        "node": row["node"], "accelerator": row["accelerator"], "resource": row["resource"],
        "slot": row["gpu"] if row["instance"] is None else f"{row['gpu']}:{row['instance']}",
        "gpu": row["gpu"], "instance": row["instance"], "profile": row["profile"],
        "replicas": row["replicas"], "share": round(row["share"], 4),
        "owner": first["owner"] if first else None,
        "workload": first and {"kind": first["kind"], "name": first["workload"], "link": first["link"]},
        "holders": holders,
        "utilization": row["utilization"],
        "memory_used": row["memory_used"], "memory_total": row["memory_total"],
        "idle": row["idle"], "idle_since": _iso(row["idle_since"]),
    }


def _viewer(handler):
    user = handler.current_user
    return user.name if isinstance(user, User) else None


def _args(handler, names):
    out = {}
    for name in names:
        values = handler.get_arguments(name)
        if len(values) > 1:
            raise web.HTTPError(400, f"{name} may be given once")
        if values:
            out[name] = values[0]
    return out


class GPUsAPIHandler(CraterAPIHandler):
    """``GET /hub/api/crater/gpus?accelerator=&node=&idle=&offset=&limit=``

    ``{"updated", "utilization": {"available", "note", "taken_at"}, "idle_rule": {"threshold",
    "window"}, "owner_visibility", "accelerators": [{"slug", "display_name", "devices",
    "allocated", "idle", "mean_utilization", "allocated_gpus", "idle_gpus", "allocated_by_kind",
    "free", "total", "queued_gpus", "nodes", ...}], "devices": [{"node", "accelerator", "slot",
    "owner", "workload": {"kind", "name", "link"}, "holders", "utilization", "memory_used",
    "memory_total", "idle", ...}], "total_rows", "offset", "limit"}``. Rows are node ×
    accelerator; a page holds ``limit`` rows' devices. Accelerator summaries cover the whole cluster.
    """

    async def get(self):
        self.require(USE)
        data = await GPUData(self.settings).load()
        try:
            filters = parse_filters(_args(self, ("accelerator", "node", "idle", "offset", "limit")),
                                    data.accelerator_models())
        except FilterError as e:
            raise web.HTTPError(400, str(e)) from None
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(data.answer(filters, _viewer(self), self.has_scope(ADMIN),
                                          self.base_url)))


class GPUsPage(BaseHandler):
    """The heatmap page: a shell whose script draws and refreshes it from the REST answer."""

    @web.authenticated
    async def get(self):
        if not self.has_scope(USE):
            raise web.HTTPError(403, f"Viewing GPUs requires the {USE} scope.")
        data = await GPUData(self.settings).load()
        models = data.accelerator_models()
        try:
            filters = parse_filters({**_args(self, ("accelerator", "node", "idle")),
                                     "limit": str(PAGE_ROWS)}, models)
        except FilterError as e:
            raise web.HTTPError(400, str(e)) from None
        admin = self.has_scope(ADMIN)
        initial = data.answer(filters, _viewer(self), admin, self.base_url)
        html = await self.render_template(
            "crater/gpus.html",
            crater={"api_url": f"{self.hub.base_url}api/crater/", "refresh_seconds": REFRESH_SECONDS,
                    "user": _viewer(self), "is_crater_admin": admin,
                    "accelerators": [{"slug": a["slug"], "display_name": a["display_name"]}
                                     for a in models],
                    "filters": {"accelerator": filters.accelerator or "", "node": filters.node or "",
                                "idle": filters.idle},
                    "initial": initial},
            **page_scripts(self.hub.base_url, "gpus.js"))
        self.finish(html)


class NodesAPIHandler(CraterAPIHandler):
    """``GET /hub/api/crater/nodes?node=&kind=&offset=&limit=`` (admins): each node's pods,
    classified server/job/ray/system/external, with what each holds."""

    async def get(self):
        self.require(ADMIN)
        crater = crater_settings(self.settings)
        view = nodeload.shared_node_load(system_namespaces(crater))
        await view.ready()
        try:
            filters = nodeload.parse_filters(_args(self, ("node", "kind", "offset", "limit")))
        except FilterError as e:
            raise web.HTTPError(400, str(e)) from None
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(view.page(filters, self.base_url.rstrip("/"))))


class NodesPage(BaseHandler):
    @web.authenticated
    async def get(self):
        if not self.has_scope(ADMIN):
            raise web.HTTPError(403, f"The node load view requires the {ADMIN} scope.")
        html = await self.render_template(
            "crater/nodes.html",
            crater={"api_url": f"{self.hub.base_url}api/crater/", "refresh_seconds": REFRESH_SECONDS,
                    "kinds": list(nodeload.KINDS)},
            **page_scripts(self.hub.base_url, "nodes.js"))
        self.finish(html)


default_handlers = [
    (r"/api/crater/gpus", GPUsAPIHandler),
    (r"/crater/gpus/?", GPUsPage),
    (r"/api/crater/nodes", NodesAPIHandler),
    (r"/crater/nodes/?", NodesPage),
]


class GPUCollector:
    """``crater_gpus_allocated{accelerator,kind}`` and ``crater_gpus_idle_allocated{accelerator}``
    on JupyterHub's ``/hub/metrics`` (prometheus_client's default registry).

    Values are GPU equivalents (a time-sliced replica counts 1/replicas, a MIG instance its
    share), from the same memoized join as the heatmap: a scrape reads the shared caches and the
    last utilization snapshot, and asks the shared cache for a newer one in the background (so
    idle marks are at most one scrape interval behind; no Prometheus query inside a scrape).
    """

    def __init__(self):
        self._refreshing = None

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        allocated = GaugeMetricFamily("crater_gpus_allocated",
                                      "GPUs held by pods, in GPU equivalents, by accelerator and workload kind",
                                      labels=["accelerator", "kind"])
        idle = GaugeMetricFamily("crater_gpus_idle_allocated",
                                 "GPUs held but below the idle threshold for the idle window",
                                 labels=["accelerator"])
        try:
            summary = self._summary()
        except Exception:
            log.exception("GPU metrics failed")
            summary = []
        for s in summary:
            for kind, value in sorted(s["by_kind"].items()):
                allocated.add_metric([s["slug"], kind], value)
            idle.add_metric([s["slug"]], s["idle_gpus"])
        yield allocated
        yield idle

    def _summary(self):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return []  # not on the hub's loop (a scrape from elsewhere): nothing to read
        from ..hubstart import hub_app

        app = hub_app()
        if app is None or not getattr(app, "tornado_settings", None):
            return []
        data = GPUData(app.tornado_settings)
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(data.load())
            self._refreshing.add_done_callback(_log_failure)
        snapshot = getattr(data.heatmap, "last_snapshot", None)
        return data.heatmap.summary(snapshot)


def _log_failure(task):
    if not task.cancelled() and task.exception() is not None:
        log.warning("GPU metrics could not refresh: %r", task.exception())


def register_metrics():
    """Register :class:`GPUCollector` in the default registry, once per process."""
    from prometheus_client import REGISTRY

    global _collector
    if _collector is None:
        _collector = GPUCollector()
        REGISTRY.register(_collector)
    return _collector


_collector = None
register_metrics()
