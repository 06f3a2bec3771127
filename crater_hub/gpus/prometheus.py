"""A small asynchronous client of Prometheus's HTTP API (``/api/v1/query``, ``query_range``).

Why not a library: the hub needs two calls, answered as plain Python values, over tornado's
non-blocking HTTP client (the hub's event loop serves every user; a blocking ``requests`` call
would stall them all). Every failure — unreachable, timed out, a refused query, a non-JSON
answer — is one :class:`PrometheusError` whose message a user can read and act on.

Answers (see https://prometheus.io/docs/prometheus/latest/querying/api/):

- instant vector: ``{"resultType": "vector", "result": [{"metric": {...}, "value": [ts, "1.5"]}]}``
- range matrix:   ``{"resultType": "matrix", "result": [{"metric": {...}, "values": [[ts, "1"], ...]}]}``
"""

import asyncio
import json
import math
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

#: answers larger than this are decoded in a worker thread: a 40,000-GPU snapshot is ~50 MB of
#: JSON, seconds of parsing that must not stall the hub's event loop
THREAD_DECODE_BYTES = 256 * 1024


class PrometheusError(Exception):
    """Prometheus could not answer; the message says which Prometheus and why."""


def _number(raw):
    """A sample value: Prometheus sends numbers as strings ("NaN", "+Inf" included)."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _vector(result):
    return [
        {"metric": r.get("metric", {}), "value": _number(r["value"][1]), "ts": float(r["value"][0])}
        for r in result
    ]


class Prometheus:
    """One Prometheus server, queried over HTTP without blocking the event loop.

    ``headers`` go with every request (``{"Authorization": "Bearer ..."}`` for a Prometheus
    behind an authenticating proxy); ``timeout`` bounds each request, connect included.
    """

    def __init__(self, url, *, headers=None, timeout=5.0):
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = float(timeout)

    def __repr__(self):
        return f"Prometheus({self.url!r})"

    async def _call(self, path, params):
        # POST with a form body: long PromQL (many label matchers) fits no URL limit
        request = HTTPRequest(
            f"{self.url}{path}",
            method="POST",
            body=urlencode(params),
            headers={
                **self.headers,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as e:  # refused, DNS, TLS, timeout (599): raised even with raise_error=False
            raise PrometheusError(f"Prometheus at {self.url} unreachable: {e}") from None
        body = response.body or b"null"
        try:
            if len(body) > THREAD_DECODE_BYTES:
                answer = await asyncio.to_thread(json.loads, body)
            else:
                answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PrometheusError(
                f"Prometheus at {self.url} answered {response.code} without a JSON body"
                f" (is {self.url} a Prometheus?)"
            )
        if answer.get("status") != "success":
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query ({response.code}):"
                f" {answer.get('errorType', 'error')}: {answer.get('error', 'no reason given')}"
            )
        return answer.get("data") or {}

    async def query(self, promql, at=None):
        """The instant value of ``promql`` now (or at unix time ``at``).

        Returns ``[{"metric": {label: value}, "value": float, "ts": float}]``; a scalar or
        string answer is one entry with empty labels.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{float(at):.3f}"
        data = await self._call("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind in ("scalar", "string"):
            return [{"metric": {}, "value": _number(result[1]), "ts": float(result[0])}]
        if len(result or ()) > 5000:
            return await asyncio.to_thread(_vector, result)
        return _vector(result or [])

    async def query_range(self, promql, start, end, step):
        """``promql`` evaluated every ``step`` seconds from ``start`` to ``end`` (unix times).

        Returns ``[{"metric": {label: value}, "values": [(ts, float), ...]}]``.
        """
        params = {
            "query": promql,
            "start": f"{float(start):.3f}",
            "end": f"{float(end):.3f}",
            "step": f"{max(float(step), 0.001):g}",
        }
        data = await self._call("/api/v1/query_range", params)
        return [
            {
                "metric": r.get("metric", {}),
                "values": [(float(ts), _number(v)) for ts, v in r.get("values") or []],
            }
            for r in data.get("result") or []
        ]


def shared_prometheus(crater):
    """The hub's one :class:`Prometheus` (``Crater.prometheus_url``), or None when unset."""
    if not crater.prometheus_url:
        return None
    key = (crater.prometheus_url, tuple(sorted(crater.prometheus_headers.items())))
    cached = crater.__dict__.get("_crater_prometheus")
    if cached is None or cached[0] != key:
        prom = Prometheus(crater.prometheus_url, headers=crater.prometheus_headers)
        cached = crater.__dict__["_crater_prometheus"] = (key, prom)
    return cached[1]
