"""GPU usage pages and REST: my usage, the admin report (+ CSV), per-workload utilization timelines.

- ``/hub/crater/usage?days=30|90``: my GPU-hours per day (stacked by accelerator, and servers vs
  jobs), my mean utilization, my heaviest workloads;
- ``/hub/crater/admin/usage?start=&end=&by=user|group``: every user's or group's GPU-hours over a
  date range, sortable, with a plot and a CSV link (``custom:crater:admin``);
- ``/hub/api/crater/usage?start=&end=&by=user|group&format=json|csv``: the report; others than
  admins get only their own numbers;
- ``/hub/api/crater/usage/timeline?kind=job|server|ray&name=&user=``: a workload's GPU utilization
  over its life, from Prometheus ``query_range`` (404 for others' workloads).

Plots are SVG drawn on the server (:mod:`crater_hub.gpus.plots`); the timelines are drawn by a
small script (``static/crater/usage.js``) from the timeline endpoint.
"""

import csv
import io
from datetime import date, timedelta

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from ..db.models import isotime, utcnow
from ..gpus import plots
from ..gpus.accounting import epoch
from ..gpus.starter import accounting_for
from ..gpus.usage_report import (
    BY,
    KINDS,
    heaviest_workloads,
    report,
    report_from_intervals,
    to_csv_rows,
    workload_intervals,
)
from .capacity import ADMIN, USE, CraterAPIHandler
from .job_pages import static_url

MAX_DAYS = 366
PAGE_DAYS = (30, 90)
TIMELINE_POINTS = 120
UNAVAILABLE = "utilization unavailable: Prometheus is not configured (Crater.prometheus_url)"


class BadQuery(ValueError):
    """A query argument is invalid; the message names it and what is allowed."""


def _date(text, field):
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise BadQuery(f"{field} must be a date as YYYY-MM-DD, got {text!r}") from None


def parse_report_query(args, today):
    """(start, end, by, format) from the query's arguments (``name -> str or None``)."""
    end = _date(args["end"], "end") if args.get("end") else today
    start = _date(args["start"], "start") if args.get("start") else end - timedelta(days=29)
    if start > end:
        raise BadQuery(f"start ({start}) must not be after end ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadQuery(f"start to end spans {(end - start).days + 1} days; at most {MAX_DAYS} are allowed")
    by = args.get("by") or "user"
    if by not in BY:
        raise BadQuery(f"by must be one of {', '.join(BY)}, got {by!r}")
    fmt = args.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise BadQuery(f"format must be json or csv, got {fmt!r}")
    return start, end, by, fmt


async def usage_report(handler, start, end, by):
    """The report as ``handler``'s user may see it: everything for admins, else their own."""
    accounting = await accounting_for(handler.settings)
    now = utcnow()
    if handler.has_scope(ADMIN):
        return await accounting.db.run(report, start, end, by, now)
    return await accounting.db.run(report_from_intervals, start, end, by, now,
                                   handler.current_user.name)


def _args(handler, *names):
    return {name: handler.get_argument(name, None) for name in names}


def csv_text(result):
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(to_csv_rows(result))
    return out.getvalue()


class UsageAPIHandler(CraterAPIHandler):
    async def get(self):
        self.require(USE)
        try:
            start, end, by, fmt = parse_report_query(
                _args(self, "start", "end", "by", "format"), utcnow().date())
        except BadQuery as e:
            raise web.HTTPError(400, str(e)) from None
        result = await usage_report(self, start, end, by)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition",
                            f'attachment; filename="gpu-usage-{by}-{start}-{end}.csv"')
            self.write(csv_text(result))
            return
        self.write(result)


class TimelineAPIHandler(CraterAPIHandler):
    async def get(self):
        self.require(USE)
        kind = self.get_argument("kind", "")
        if kind not in KINDS:
            raise web.HTTPError(400, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        name = self.get_argument("name", "")
        owner = self.get_argument("user", None)
        admin = self.has_scope(ADMIN)
        me = self.current_user.name
        if owner is not None and owner != me and not admin:
            raise web.HTTPError(404, f"No GPU usage of {kind} {name!r} of {owner}")
        accounting = await accounting_for(self.settings)
        rows = await accounting.db.run(workload_intervals, kind, name, None if admin else me)
        if owner is not None:
            rows = [row for row in rows if row.user == owner]
        if not rows:
            raise web.HTTPError(404, f"No GPU usage recorded for {kind} {name!r}")
        if kind == "server":
            # a server's last life (a restarted server is a new pod, a new timeline)
            rows = [row for row in rows if row.pod_uid == rows[-1].pod_uid]
        self.write(await timeline(accounting.prometheus, rows))


async def timeline(prometheus, rows):
    """The intervals of one workload and its utilization series over them."""
    from ..gpus.prometheus import PrometheusError
    from ..gpus.utilization import pod_utilization

    now = utcnow()
    start = min(row.start for row in rows)
    end = max(row.end or now for row in rows)
    model = {
        "intervals": [{"pod": row.pod_name, "namespace": row.namespace, "node": row.node,
                       "accelerator": row.accelerator, "count": row.count,
                       "gpus": row.count * row.gpu_equivalent, "start": isotime(row.start),
                       "end": isotime(row.end), "end_estimated": row.end_estimated,
                       "utilization": row.utilization} for row in rows],
        "start": isotime(start), "end": isotime(end), "running": any(r.end is None for r in rows),
        "available": False, "note": None, "points": []}
    if prometheus is None:
        model["note"] = UNAVAILABLE
        return model
    step = max(5.0, (epoch(end) - epoch(start)) / TIMELINE_POINTS)
    points = []
    try:
        for pod in {(row.namespace, row.pod_name): row for row in rows}:
            points += await pod_utilization(prometheus, *pod, epoch(start), epoch(end) + step, step)
    except PrometheusError as e:
        model["note"] = f"utilization unavailable: {e}"
        return model
    model["available"] = True
    model["points"] = sorted([round(ts, 3), round(value, 4)] for ts, value in points)
    if not points:
        model["note"] = "no utilization samples in Prometheus for this workload yet"
    return model


class UsagePageBase(BaseHandler):
    scope = USE

    def check(self):
        if not self.has_scope(self.scope):
            raise web.HTTPError(403, f"This page requires the {self.scope} scope.")

    async def render(self, template, **ns):
        html = await self.render_template(
            template, crater_usage_script=static_url(self.hub.base_url, "crater/usage.js"),
            api_url=f"{self.hub.base_url}api/crater/", site_prefix=self.base_url.rstrip("/"), **ns)
        self.finish(html)


def _day_series(result, key):
    return [(day["day"], day[key]) for day in result["days"]]


class MyUsagePage(UsagePageBase):
    @web.authenticated
    async def get(self):
        self.check()
        try:
            days = int(self.get_argument("days", "30"))
        except ValueError:
            days = 0
        if days not in PAGE_DAYS:
            raise web.HTTPError(400, f"days must be one of {', '.join(map(str, PAGE_DAYS))}")
        me = self.current_user.name
        now = utcnow()
        end = now.date()
        start = end - timedelta(days=days - 1)
        accounting = await accounting_for(self.settings)
        result = await accounting.db.run(report_from_intervals, start, end, "user", now, me)
        heavy = await accounting.db.run(heaviest_workloads, me, start, end, now)
        kinds = [k for k in (*KINDS, "other") if any(d["kinds"][k] for d in result["days"])]
        await self.render(
            "crater/usage.html", days=days, page_days=PAGE_DAYS, result=result, heaviest=heavy,
            me=result["rows"][0] if result["rows"] else None,
            plot_accelerators=plots.stacked_bars(
                _day_series(result, "accelerators"), result["accelerators"],
                title=f"My GPU-hours per day, last {days} days, by accelerator",
                plot_id="crater-usage-plot"),
            plot_kinds=plots.stacked_bars(
                _day_series(result, "kinds"), kinds or ["server", "job"],
                title=f"My GPU-hours per day, last {days} days, servers and jobs",
                plot_id="crater-usage-plot-kinds"),
            prometheus=accounting.prometheus is not None)


class AdminUsagePage(UsagePageBase):
    scope = ADMIN

    @web.authenticated
    async def get(self):
        self.check()
        args = _args(self, "start", "end", "by")
        try:
            start, end, by, _ = parse_report_query(args, utcnow().date())
        except BadQuery as e:
            raise web.HTTPError(400, str(e)) from None
        result = await usage_report(self, start, end, by)
        query = f"start={start}&end={end}&by={by}"
        await self.render(
            "crater/admin_usage.html", result=result, by=by, by_choices=BY, query=query,
            plot=plots.stacked_bars(_day_series(result, "accelerators"), result["accelerators"],
                                    title=f"GPU-hours per day {start} to {end}, by accelerator",
                                    plot_id="crater-admin-usage-plot"))


default_handlers = [
    (r"/api/crater/usage", UsageAPIHandler),
    (r"/api/crater/usage/timeline", TimelineAPIHandler),
    (r"/crater/usage/?", MyUsagePage),
    (r"/crater/admin/usage/?", AdminUsagePage),
]
