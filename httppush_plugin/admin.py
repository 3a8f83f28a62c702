"""The server's own paths: health (``httpServerHealthPath``) and metrics (``httpServerMetricsPath``), answered for
``GET`` and ``HEAD`` without authentication, and the admin actions under ``httpServerAdminPath``: ``POST …/drain`` and
``POST …/undrain`` (``drain.py``), with ``Authorization: Bearer <httpServerAdminToken>``.

Health's body says which state the node is in, for a load balancer to act on: 200 ``"ok"`` while every configured
source is attached to eKuiper's channel; 503 ``"draining"`` while the node drains or is drained; 503 ``"partial"``
while some are attached and some not (yet); 503 ``"unavailable"`` while none is (no endpoint at all, during
``httpServerRestartGrace``, included). Metrics are the Prometheus text (or OpenMetrics) of :mod:`.metrics`, rendered
at most once per :data:`METRICS_MAX_AGE_S` for each of the two formats: a scraper polls every few seconds, and a client
asking more often gets the same bytes, at no cost.

Example: ``Admin(table, config, drain).answer(head)`` → an :class:`~.answers.Answer`, an
:class:`AdminAction` (an admin action, once its head is admitted), or ``None`` when ``head`` is not for these paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import __version__
from .answers import Answer, BadRequest, Conflict, Forbidden, HttpError, Later, TooLarge, Unavailable, error_answer
from .auth import BearerAuth
from .backoff import AuthBackoff
from .drain import Drain
from .metrics import encoder_for, render, warm
from .request import RequestHead
from .routing import EndpointTable
from .settings import ServerConfig

#: The methods health and metrics answer; the admin actions answer POST.
ADMIN_METHODS = ("GET", "HEAD")
_NO_STORE = {"Cache-Control": "no-store"}
#: How long one rendering of ``/metrics`` is answered again.
METRICS_MAX_AGE_S = 1.0
#: The query parameters of ``POST …/drain``.
DRAIN_PARAMETERS = ("grace", "wait", "persist")


class Admin:
    def __init__(self, table: EndpointTable, config: ServerConfig, drain: Drain | None = None,
                 gauges: Callable[[], dict[str, tuple[str, float]]] = dict) -> None:
        self.table = table
        self.drain = drain if drain is not None else Drain()
        self.grace = config.drain_grace
        #: path → method → the function answering it, for the paths switched on
        self.paths: dict[str, dict[str, Callable[[RequestHead], Answer]]] = {}
        for path, answer in ((config.health_path, self.health), (config.metrics_path, self.metrics)):
            if path:
                self.paths[path] = dict.fromkeys(ADMIN_METHODS, answer)
        self._token = BearerAuth.from_props({"tokens": {"admin": config.admin_token}}) if config.admin_token else None
        #: refused admin tokens back off on their own: a device's bad credentials from a shared address (a proxy on
        #: the node) never lock out the operator's drain
        self.backoff = AuthBackoff()
        for path, action in config.admin_actions.items():
            self.paths[path] = {"POST": self._drain if action == "drain" else self._undrain}
        #: name → (help, value) of the server-wide gauges in ``/metrics``, read at scrape time
        self.gauges = gauges
        #: Content-Type → (when rendered, the answer): the last rendering of each format
        self._rendered: dict[str, tuple[float, Answer]] = {}
        if config.metrics_path:
            warm()

    def methods(self, path: str) -> list[str]:
        return list(self.paths.get(path, ()))

    def answer(self, head: RequestHead, count: Callable[[int], None] = lambda status: None
               ) -> Answer | AdminAction | None:
        """The answer to one of the server's paths; ``None`` for any other path, or a method they do not serve."""
        respond = self.paths.get(head.path, {}).get(head.method)
        if respond is None:
            return None
        if head.method != "POST":
            return respond(head)
        if self._token is None:
            return error_answer(Forbidden("admin actions are switched off: set httpServerAdminToken"))
        try:
            self.backoff.admit(self._token, head, head.remote)
            if head.has_body:
                raise TooLarge("admin actions take no body")
        except HttpError as exc:
            return error_answer(exc)
        return AdminAction(respond, head, count)

    def status(self) -> tuple[str, list[dict[str, Any]]]:
        """The node's state for health (``ok``, ``draining``, ``partial``, ``unavailable``) and its endpoints."""
        endpoints = []
        attached = configured = 0
        for route in self.table.routes():
            sources = []
            for sub in route.subscriptions:
                configured += 1
                attached += sub.sender is not None
                source: dict[str, Any] = {"source": sub.label, "attached": sub.sender is not None}
                if sub.instance is not None:
                    source.update(rule=sub.instance[0], stream=sub.instance[1], instance=sub.instance[2])
                if sub.sender is not None:
                    source["connected"] = sub.sender.connected
                sources.append(source)
            endpoints.append({"method": route.stats.method, "path": route.stats.path, "format": sorted(
                {group.decoder.format for group in route.groups}), "sources": sources})
        for (path, method), left in self.table.vacant().items():  # a rule restarting: its source is due back
            configured += 1
            endpoints.append({"method": method, "path": path, "format": [], "sources": [], "vacantS": round(left, 3)})
        status = ("draining" if self.drain.active else "ok" if attached == configured > 0
                  else "partial" if attached else "unavailable")
        return status, endpoints

    def health(self, head: RequestHead | None = None, action: bool = False) -> Answer:
        """200 while every source is attached; 503 while draining or a source is not (yet) attached. An admin
        action (``action``) is answered 200 with the same body, the state it left the node in."""
        status, endpoints = self.status()
        body: dict[str, Any] = {"status": status, "version": __version__}
        if self.drain.active:
            body.update(self.drain.state())
        body["endpoints"] = endpoints
        return Answer(200 if status == "ok" or action else 503, orjson.dumps(body), dict(_NO_STORE))

    def _done(self) -> Answer:
        return self.health(action=True)

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

    def _drain(self, head: RequestHead) -> Answer | Later:
        """``?grace=S`` (default httpServerDrainGrace), ``?wait=true`` (answered once the grace is over),
        ``?persist=true`` (kept across the plugin's restarts)."""
        query = {key: values[-1] for key, values in parse_qs(
            head.target.partition(b"?")[2].decode("latin-1"), keep_blank_values=True).items()}
        unknown = sorted(set(query) - set(DRAIN_PARAMETERS))
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}; a drain takes {', '.join(DRAIN_PARAMETERS)}")
        grace = self.grace
        if "grace" in query:
            try:
                grace = float(query["grace"])
            except ValueError:
                grace = -1.0
            if not 0 <= grace <= 3600:
                raise BadRequest(f"grace {query['grace']!r} is not a number of seconds from 0 to 3600")
        wait, persist = _flag(query, "wait"), _flag(query, "persist")
        self.drain.start(grace, persist)
        return self.drain.hold(self._waited) if wait else self._done()

    def _waited(self, ended: str) -> Answer:
        if ended == "undrained":
            return error_answer(Conflict("an undrain ended the drain before its grace was over"))
        if ended == "stopped":
            return error_answer(Unavailable("the server stopped before the drain's grace was over"))
        return self._done()

    def _undrain(self, head: RequestHead) -> Answer:
        self.drain.stop()
        return self._done()


def _flag(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{name} {query[name]!r} is not true or false")
    return value == "true"


class AdminAction:
    """An admitted admin action (``request.Exchange``): it needs no body, and runs once the one sent is read."""

    limit = 0

    def __init__(self, act: Callable[[RequestHead], Answer | Later], head: RequestHead,
                 count: Callable[[int], None]) -> None:
        self.act, self.head, self.count = act, head, count

    def body(self, data: bytes) -> Answer | Later:
        try:
            result = self.act(self.head)
        except HttpError as exc:
            return self.failed(exc)
        if isinstance(result, Answer):
            self.count(result.status)
        else:
            result.then(lambda answer: self.count(answer.status))
        return result

    def failed(self, exc: BaseException) -> Answer:
        answer = error_answer(exc)
        self.count(answer.status)
        return answer
