"""The server's own paths: health (``httpServerHealthPath``) and metrics (``httpServerMetricsPath``), answered for
``GET`` and ``HEAD`` without authentication.

Health is 200 ``{"status": "ok", "endpoints": [...]}`` while every configured source is attached to eKuiper's
channel, else 503 ``"unavailable"`` with the same list, so a load balancer can act on it. Metrics are the Prometheus
text (or OpenMetrics) of :mod:`.metrics`, rendered at most once per :data:`METRICS_MAX_AGE_S` for each of the two
formats: a scraper polls every few seconds, and a client asking more often gets the same bytes, at no cost.

Example: ``Admin(table, "/healthz", "/metrics", gauges).answer(head)`` → an :class:`~.answers.Answer`, or ``None``
when ``head`` is not for one of these paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .answers import Answer
from .metrics import encoder_for, render, warm
from .request import RequestHead
from .routing import EndpointTable

#: The methods the server's own paths answer.
ADMIN_METHODS = ("GET", "HEAD")
_NO_STORE = {"Cache-Control": "no-store"}
#: How long one rendering of ``/metrics`` is answered again.
METRICS_MAX_AGE_S = 1.0


class Admin:
    def __init__(self, table: EndpointTable, health_path: str, metrics_path: str,
                 gauges: Callable[[], dict[str, tuple[str, float]]] = dict) -> None:
        self.table = table
        #: path → the function answering it, for the paths switched on
        self.paths: dict[str, Callable[[RequestHead], Answer]] = {
            path: answer for path, answer in ((health_path, self.health), (metrics_path, self.metrics)) if path}
        #: name → (help, value) of the server-wide gauges in ``/metrics``, read at scrape time
        self.gauges = gauges
        #: Content-Type → (when rendered, the answer): the last rendering of each format
        self._rendered: dict[str, tuple[float, Answer]] = {}
        if metrics_path:
            warm()

    def answer(self, head: RequestHead) -> Answer | None:
        """The answer to ``GET``/``HEAD`` on one of the server's paths; ``None`` for any other request."""
        respond = self.paths.get(head.path)
        if respond is None or head.method not in ADMIN_METHODS:
            return None
        return respond(head)

    def health(self, head: RequestHead) -> Answer:
        """200 with every endpoint and whether its sources are attached; 503 when one is not (yet)."""
        endpoints = []
        ready = True
        for route in self.table.routes():
            sources = []
            for sub in route.subscriptions:
                attached = sub.sender is not None
                ready = ready and attached
                source: dict[str, Any] = {"source": sub.label, "attached": attached}
                if sub.instance is not None:
                    source.update(rule=sub.instance[0], stream=sub.instance[1], instance=sub.instance[2])
                if sub.sender is not None:
                    source["connected"] = sub.sender.connected
                sources.append(source)
            endpoints.append({"method": route.stats.method, "path": route.stats.path, "format": sorted(
                {group.decoder.format for group in route.groups}), "sources": sources})
        body = orjson.dumps({"status": "ok" if ready else "unavailable", "endpoints": endpoints})
        return Answer(200 if ready else 503, body, dict(_NO_STORE))

    def metrics(self, head: RequestHead) -> Answer:
        encoder, content_type = encoder_for((head.header(b"accept") or b"").decode("latin-1"))
        now = time.monotonic()
        last = self._rendered.get(content_type)
        if last is not None and now - last[0] < METRICS_MAX_AGE_S:
            return last[1]
        endpoints = [(route.stats.method, route.stats.path, sum(sub.sender is not None for sub in route.subscriptions),
                      len(route.subscriptions), len(route.idempotency) if route.idempotency is not None else 0)
                     for route in self.table.routes()]
        answer = Answer(200, render(self.table.metrics, self.gauges(), endpoints, encoder), dict(_NO_STORE),
                        content_type)
        self._rendered[content_type] = (now, answer)
        return answer
