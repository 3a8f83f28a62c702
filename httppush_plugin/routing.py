"""The endpoint table: (path or path template, method) → the source instances subscribed to it (fan-out).

A literal path is one dict lookup. A path template (``/devices/{id}/telemetry``, each ``{name}`` one whole, non-empty
segment) is tried only when no literal route matches; no two templates that can match the same path are admitted, so
at most one template matches any path and the order they were added in never matters.

An endpoint whose last serving source stops is *vacant* for :attr:`EndpointTable.grace` seconds (the server setting
``httpServerRestartGrace``): a request for it is answered 503 with ``Retry-After`` instead of 404, because eKuiper
restarts and updates a rule by stopping its source and starting it again a moment later. A new subscription on the
same path and method ends the vacancy.

Only the event-loop thread reads or changes the table, so it needs no lock. Each route keeps its subscriptions
grouped by what they receive — equal decoders (``Decoder.key``) and equal ``meta`` — so the application decodes
and frames a body once per group, however many sources subscribe.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from .answers import Answer, HttpError, Unavailable
from .auth import Authenticator, describe
from .backoff import AuthBackoff
from .channel import ChannelSender
from .cors import CorsConfig, preflight
from .decoders import Decoder
from .errors import ConfigError
from .idempotency import KeyStore, KeyStores
from .meta import MetaSpec, Network, client_address, meta_spec
from .metrics import EndpointStats, Metrics
from .properties import EndpointConfig
from .ratelimit import Buckets
from .request import RequestHead
from .templates import Template

_ids = itertools.count(1)


@dataclass(eq=False)
class Subscription:
    """One source instance on one endpoint. Registered at configure time; its sender is attached in ``open()``,
    a moment later (the SDK dials the host's channel and starts ``open()`` after ``configure()`` returns)."""

    endpoint: EndpointConfig
    decoder: Decoder
    label: str = ""
    #: (ruleId, opId, instanceId) from the start command, when known: a second start for it replaces this one
    instance: tuple[str, str, int] | None = None
    sender: ChannelSender | None = None
    id: int = field(default_factory=lambda: next(_ids))
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = (f"rule {self.instance[0]} stream {self.instance[1]} instance {self.instance[2]}"
                          if self.instance else f"source #{self.id}")

    def attach(self, sender: ChannelSender) -> None:
        """Call on the event loop."""
        self.sender = sender
        self.label = sender.label
        self.ready.set()

    def detach(self) -> None:
        """Call on the event loop: the source is gone; requests waiting for it stop waiting."""
        self.sender = None
        self.ready.set()


@dataclass
class Group:
    """Subscriptions of one route that get the same frames: equal decoders and equal meta."""

    decoder: Decoder
    meta: MetaSpec | None
    subscriptions: list[Subscription]


@dataclass
class Route:
    #: the endpoint's counters (kept by the table's :class:`Metrics` beyond the route's life)
    stats: EndpointStats
    subscriptions: list[Subscription] = field(default_factory=list)
    #: who may push here: every subscription agrees (checked by :meth:`EndpointTable.add`), so it never changes
    auth: Authenticator | None = None
    #: rebuilt on every change
    groups: list[Group] = field(default_factory=list)
    #: set when the route's path is a template
    template: Template | None = None
    #: how the route answers (``successStatus``, ``cors``): every subscription agrees, like on ``auth``
    success_status: int = 200
    cors: CorsConfig | None = None
    #: whether answers echo ``X-Request-Id`` (some subscription has ``requestId`` in ``meta``)
    request_id: bool = False
    #: whether answers need more than the default 200 (checked once per request)
    custom: bool = False
    #: remembered ``Idempotency-Key``s (property ``idempotency``; kept beyond the route's life, like ``stats``)
    idempotency: KeyStore | None = None
    #: ``Access-Control-Expose-Headers`` of answers to an allowed origin (with ``cors``): what a page may read
    exposed: str = ""
    #: every subscription's ``trustedProxies``, and the first one's ``proxyHeader``: who the client is (:meth:`client`)
    proxies: tuple[Network, ...] = ()
    proxy_header: bytes = b"x-forwarded-for"
    #: the clients' buckets (``rateLimit``; kept beyond the route's life) and ``responseHeaders``: all agree
    limiter: Buckets | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def admit(self, head: RequestHead, backoff: AuthBackoff) -> str | None:
        """From the head: a browser page's origin (``cors``), the rate limit by address, the auth backoff and a header
        auth, the rate limit by user. Returns the principal (``None`` without auth, or for ``hmac`` until the body is
        in); raises 403, 429, 401."""
        if self.cors is not None:  # a page of an origin not listed: 403, counted by neither the limit nor the backoff
            self.cors.admit(head)
        limiter, client = self.limiter, self.client(head)
        if limiter is not None and not limiter.by_user:
            limiter.take(client)  # before credentials: a flood costs no signature checks
        user = backoff.admit(self.auth, head, client) if self.auth is not None else None
        if limiter is not None and limiter.by_user and user is not None:
            limiter.take(user)
        return user

    def client(self, head: RequestHead) -> str:
        """The client's address, as ``meta(remoteAddr)`` gives it (the auth backoff counts failures by it)."""
        return client_address(head, self.proxies, self.proxy_header) if self.proxies else head.remote

    def regroup(self) -> None:
        grouped: dict[Hashable, Group] = {}
        variables = self.template.params if self.template is not None else None
        for sub in self.subscriptions:
            endpoint = sub.endpoint
            spec = meta_spec(endpoint.meta, endpoint.meta_headers, endpoint.meta_query, endpoint.trusted_proxies,
                             variables, endpoint.proxy_header, endpoint.path)
            key = (sub.decoder.key, spec)
            if key not in grouped:
                grouped[key] = Group(sub.decoder, spec, [])
            grouped[key].subscriptions.append(sub)
        self.groups = list(grouped.values())
        self.proxies = tuple(dict.fromkeys(net for sub in self.subscriptions for net in sub.endpoint.trusted_proxies))
        with_proxies = [sub.endpoint.proxy_header for sub in self.subscriptions if sub.endpoint.trusted_proxies]
        self.proxy_header = (with_proxies[0] if with_proxies else "x-forwarded-for").lower().encode("latin-1")
        self.request_id = any("requestId" in sub.endpoint.meta for sub in self.subscriptions)
        self.custom = self.success_status != 200 or self.cors is not None or self.request_id or bool(self.headers)
        self.exposed = ", ".join(["Retry-After"] + ["X-Request-Id"] * self.request_id
                                 + ["Idempotent-Replayed"] * (self.idempotency is not None))


class EndpointTable:
    """Routes by (path, method). A new route takes its counters from ``metrics`` and its idempotency keys from
    ``keys``: both registries outlive the route, so a rule restart keeps them."""

    def __init__(self, metrics: Metrics | None = None, keys: KeyStores | None = None) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        #: template path → its template, while some route uses it
        self._templates: dict[str, Template] = {}
        self.metrics = metrics if metrics is not None else Metrics()
        self.keys = keys if keys is not None else KeyStores()
        #: (path, method) → its rate limit's buckets, kept while the limit stays the same
        self.limiters: dict[tuple[str, str], Buckets] = {}
        #: seconds an endpoint stays vacant after its last serving source stopped (``httpServerRestartGrace``)
        self.grace = 0.0
        #: (path, method) → (when the vacancy ends, ``time.monotonic()``; the route's template, if any)
        self._vacant: dict[tuple[str, str], tuple[float, Template | None]] = {}
        #: ``find((path, method))``: the literal route, or None — the lookup every request makes, one dict get
        self.find = self._routes.get

    def __len__(self) -> int:
        return sum(len(route.subscriptions) for route in self._routes.values())

    def add(self, sub: Subscription) -> list[Subscription]:
        """Register ``sub``; returns the subscriptions it replaces (same source instance, started again).

        Raises :class:`ConfigError` (nothing changed) when the route's other subscriptions have another ``auth``:
        one request is either admitted for all of them or for none; or when its path template can match a path
        that another template matches too."""
        replaced = [old for route in self._routes.values() for old in route.subscriptions
                    if sub.instance is not None and old.instance == sub.instance]
        path = sub.endpoint.path
        template = self._template(sub, path, replaced) if "{" in path or "}" in path else None
        key = (path, sub.endpoint.method)
        route = self._routes.get(key)
        others = [old for old in route.subscriptions if old not in replaced] if route is not None else []
        if others and others[0].endpoint.auth != sub.endpoint.auth:
            raise ConfigError(
                f"{sub.label} and {others[0].label} both serve {sub.endpoint.method} {sub.endpoint.path}, with "
                f"different 'auth' ({describe(sub.endpoint.auth)} and {describe(others[0].endpoint.auth)}); "
                "sources on one path and method must use the same auth settings (e.g. one config group)")
        for name, attr in (("successStatus", "success_status"), ("cors", "cors"), ("idempotency", "idempotency"),
                           ("rateLimit", "rate_limit"), ("responseHeaders", "response_headers")):
            if others and getattr(others[0].endpoint, attr) != getattr(sub.endpoint, attr):
                raise ConfigError(
                    f"{sub.label} and {others[0].label} both serve {sub.endpoint.method} {sub.endpoint.path}, with "
                    f"different '{name}' ({_shown(getattr(sub.endpoint, attr))} and "
                    f"{_shown(getattr(others[0].endpoint, attr))})"
                    "; one request gets one answer: use one config group for them")
        for old in replaced:
            self.remove(old)
        self._vacant.pop(key, None)
        route = self._routes.get(key)
        if route is None:
            endpoint = sub.endpoint
            stats = self.metrics.endpoint(endpoint.method, path)
            keys = self.keys.store(endpoint.method, path, endpoint.idempotency, stats) \
                if endpoint.idempotency is not None else None
            route = self._routes[key] = Route(auth=endpoint.auth, template=template,
                                              success_status=endpoint.success_status, cors=endpoint.cors,
                                              stats=stats, idempotency=keys, headers=endpoint.response_headers,
                                              limiter=self._limiter(key, endpoint, stats))
            if template is not None:
                self._templates[path] = template
        route.subscriptions.append(sub)
        route.regroup()
        return replaced

    def _limiter(self, key: tuple[str, str], endpoint: EndpointConfig, stats: EndpointStats) -> Buckets | None:
        kept = self.limiters.get(key)
        if endpoint.rate_limit is None or kept is None or kept.limit != endpoint.rate_limit:
            self.limiters.pop(key, None)
            if endpoint.rate_limit is None:
                return None
            kept = self.limiters[key] = Buckets(endpoint.rate_limit, stats)
        return kept

    def preflight(self, head: RequestHead) -> Answer | None:
        """The answer to a CORS preflight (``OPTIONS``) on a path some method serves with ``cors``, with the
        ``responseHeaders`` of the route asked for; ``None`` when no method there has ``cors``."""
        corsed = {method: route for method, route in self.served(head.path).items() if route.cors}
        if not corsed:
            return None
        wanted = (head.header(b"access-control-request-method") or b"").decode("latin-1").strip()
        extra = (corsed.get(wanted) or next(iter(corsed.values()))).headers
        try:
            answer = preflight(head, {method: route.cors for method, route in corsed.items() if route.cors})
        except HttpError as exc:  # the refusal too carries them
            exc.headers.update(extra)
            raise
        if extra:
            answer.headers = {**dict(extra), **(answer.headers or {})}
        return answer

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def _template(self, sub: Subscription, path: str, replaced: list[Subscription]) -> Template:
        template = self._templates.get(path) or Template.parse(path)
        for other in self._templates.values():
            example = other.overlaps(template) if other.path != path else None
            if example is None:
                continue
            subs = [old for (p, _), route in self._routes.items() if p == other.path
                    for old in route.subscriptions if old not in replaced]
            if subs:
                raise ConfigError(
                    f"{sub.label} serves the path template {path} and {subs[0].label} serves {other.path}: both "
                    f"would match e.g. {example}; two templates may not match the same path (make one literal, or "
                    "change a literal segment)")
        return template

    def remove(self, sub: Subscription) -> None:
        key = (sub.endpoint.path, sub.endpoint.method)
        route = self._routes.get(key)
        if route is None or sub not in route.subscriptions:
            return
        route.subscriptions.remove(sub)
        route.regroup()  # an emptied route has no groups: a request already routed to it is refused, not answered
        if not route.subscriptions:
            del self._routes[key]
            if route.template is not None and not any(p == key[0] for p, _ in self._routes):
                self._templates.pop(key[0], None)
            if self.grace > 0 and sub.sender is not None:  # it was serving: a restart may bring it back
                self._vacant[key] = (time.monotonic() + self.grace, route.template)

    def vacancies(self) -> int:
        """Endpoints vacant now (their grace not over)."""
        return len(self.vacant())

    def vacant(self) -> dict[tuple[str, str], float]:
        """(path, method) → seconds left, of each endpoint vacant now."""
        now = time.monotonic()
        for key in [key for key, (until, _) in self._vacant.items() if until <= now]:
            del self._vacant[key]
        return {key: until - now for key, (until, _) in self._vacant.items()}

    def _check_vacant(self, path: str, method: str) -> None:
        """Raise 503 (``Retry-After``) when ``path`` and ``method`` name a vacant endpoint."""
        if not self.vacancies():
            return
        segments: list[str] | None = None
        for (vacant_path, vacant_method), (until, template) in self._vacant.items():
            if vacant_method != method:
                continue
            if template is not None:
                segments = segments if segments is not None else path.split("/")
                if not template.matches(segments):
                    continue
            elif vacant_path != path:
                continue
            ago = self.grace - (until - time.monotonic())
            raise Unavailable(f"no source serves {method} {vacant_path} right now: its last one stopped {ago:.1f} s "
                              "ago (a rule restarting or being updated?); retry")

    def lookup(self, path: str, method: str) -> Route | None:
        """The literal route: one dict lookup. :meth:`match` tries the templates."""
        return self._routes.get((path, method))

    def match(self, path: str, method: str) -> Route | None:
        """The route of the template ``path`` matches, for ``method``; call when :meth:`lookup` found none. Raises
        :class:`~.answers.Unavailable` (503) when none matches but the endpoint is vacant (see the module's text)."""
        template = self._matching(path)
        route = self._routes.get((template.path, method)) if template is not None else None
        if route is None and self._vacant:
            self._check_vacant(path, method)
        return route

    def _matching(self, path: str) -> Template | None:
        if not self._templates:
            return None
        segments = path.split("/")
        return next((t for t in self._templates.values() if t.matches(segments)), None)

    def served(self, path: str) -> dict[str, Route]:
        """method → route for every method served on ``path``, literally or (when not literally) by a template."""
        template = self._matching(path)
        routes = {method: route for (p, method), route in self._routes.items()
                  if template is not None and p == template.path}
        routes.update((method, route) for (p, method), route in self._routes.items() if p == path)
        return routes

    def methods(self, path: str) -> list[str]:
        """The methods served on ``path``, literally or by a template (for 405's ``Allow``); empty when none."""
        template = self._matching(path)
        paths = {path, template.path} if template is not None else {path}
        return sorted({method for (p, method) in self._routes if p in paths})


def _shown(setting: object) -> str:
    """A route-wide setting as a start error shows it: ``off`` for an unset one."""
    return "off" if setting is None else str(setting)
