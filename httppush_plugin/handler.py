"""One request, straight through: route → decode → frame → deliver → answer.

Nothing is answered 2xx before every record is in the host channel of every subscribed source, and a body that any
subscribed source cannot decode is refused before anything is sent. The common request — sources attached, channels
writable — is handled synchronously inside the connection's parser callback. A request whose records must wait for a
channel returns a :class:`PendingAnswer`, completed by the channel's callbacks; only a body of at least
:data:`LARGE_BODY` returns a coroutine (decoded in a worker thread), which the connection runs as a task.

Example: ``handler.handle(request)`` → ``Answer(200, b'{"accepted":3,"sources":1}')``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .auth import Authenticator, AuthError
from .channel import Delivery, DeliveryError
from .config import ServerConfig
from .decoders import CustomDecoderFault, DecodeError, TooManyRecords
from .framing import MAX_META_BYTES, Frames, clip, frame_records
from .idempotency import BadKey, Entry, KeyStore, fingerprint, parse_key
from .metrics import render
from .routing import EndpointTable, MetaSpec, Route, Subscription

log = logging.getLogger(__name__)

#: How long a request waits for a source that was configured but whose ``open()`` has not attached its channel yet.
ATTACH_TIMEOUT_S = 5.0
#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER_S = 1
#: Bodies at least this large are decoded and framed in a worker thread, one at a time, so that the event loop keeps
#: serving other clients and at most one large body's records are in memory at once.
LARGE_BODY = 1024 * 1024


class HttpError(Exception):
    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra
        self.headers = headers or {}


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    """401: the route's ``auth`` refused the request; ``challenge`` is the ``WWW-Authenticate`` value."""

    status = 401

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message, {"WWW-Authenticate": challenge})


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message, {"Allow": ", ".join(allowed)})


class Forbidden(HttpError):
    status = 403


class Conflict(HttpError):
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)})


class Unprocessable(HttpError):
    status = 422


class Direct(HttpError):
    """Not an error: an answer decided by the path and method alone — a CORS preflight, health, metrics — raised
    where 404 and 405 are, because like them it is known as soon as the request's head is."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                 content_type: str | None = None) -> None:
        super().__init__("")
        self.answer = Answer(status, body, headers, content_type)


class Preflight(Direct):
    """The answer to an allowed CORS preflight: ``204`` with ``Access-Control-Allow-*`` headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(204, b"", headers)


class RequestTimeout(HttpError):
    status = 408


class TooLarge(HttpError):
    status = 413


class HeadersTooLarge(HttpError):
    status = 431


class Unavailable(HttpError):
    status = 503

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)}, **extra)


class VersionNotSupported(HttpError):
    status = 505


class Answer:
    """What the connection writes: status, body (JSON unless ``content_type`` says otherwise), extra headers."""

    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                 content_type: str | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type


class Request:
    """One parsed request, as the connection hands it over (``route`` is set when the path and method are served).

    ``headers`` are as received, ``(name, value)`` bytes in order; :meth:`header` looks one up by name. ``user`` is
    the principal the route's ``auth`` admitted (``None``: no auth, or not checked yet).
    """

    __slots__ = ("method", "path", "route", "content_type", "remote", "body", "target", "headers", "peercert",
                 "user", "request_id", "idempotency")

    def __init__(self, method: str, path: str, route: Route | None, content_type: str, remote: str, body: bytes,
                 target: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
                 peercert: dict[str, Any] | None = None, user: str | None = None) -> None:
        self.method = method
        self.path = path
        self.route = route
        self.content_type = content_type
        self.remote = remote
        self.body = body
        self.target = target
        self.headers = headers if headers is not None else []
        self.peercert = peercert
        self.user = user
        self.request_id: str | None = None  # see request_id(): set the first time meta or the answer needs it
        #: (store, key, entry) while the request's ``Idempotency-Key`` is remembered as in flight
        self.idempotency: tuple[KeyStore, bytes, Entry] | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes, e.g. ``b"authorization"``), or ``None``."""
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None


def error_answer(exc: BaseException) -> Answer:
    """The one place that turns an exception into an HTTP answer: status + ``{"error": "..."}``."""
    if isinstance(exc, Direct):
        return exc.answer
    if isinstance(exc, HttpError):
        return Answer(exc.status, orjson.dumps({"error": str(exc), **exc.extra}), exc.headers)
    if isinstance(exc, DecodeError):
        return Answer(413 if isinstance(exc, TooManyRecords) else 400, orjson.dumps({"error": str(exc)}))
    if isinstance(exc, CustomDecoderFault):
        return Answer(500, orjson.dumps({"error": str(exc)}))
    log.exception("unexpected error while handling a request")
    return Answer(500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}))


class RateLimitedLog:
    """Warn about rejected requests at most once per ``interval`` seconds, with a count of what was skipped."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = -interval
        self._skipped = 0

    def warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        skipped, self._skipped, self._last = self._skipped, 0, now
        log.warning("%s rejected: %s%s", what, exc,
                    f" ({skipped} more rejected since the last warning)" if skipped else "")


class PushHandler:
    """Routes and handles every request of the shared server."""

    def __init__(self, table: EndpointTable, config: ServerConfig) -> None:
        self.table = table
        self.metrics = table.metrics
        self.max_records = config.max_records
        self.reject_log = RateLimitedLog()
        self._large = asyncio.Lock()
        #: the paths answered for GET and HEAD by the server itself (health, metrics), those switched on
        self._admin = {path: answer for path, answer in ((config.health_path, "health"),
                                                          (config.metrics_path, "metrics")) if path}
        #: name → (help, value) of the server-wide gauges in ``/metrics``; set by the server
        self.gauges: Callable[[], dict[str, tuple[str, float]]] = dict

    def route(self, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Route:
        """The route for ``method path``; raises :class:`NotFound` or :class:`MethodNotAllowed`. A literal path
        wins over a template; templates are tried only when no literal route matches. An ``OPTIONS`` on a path
        served with ``cors`` raises :class:`Preflight` (allowed: 204) or :class:`Forbidden` (not allowed: 403)."""
        route = self.table.lookup(path, method)
        if route is None:
            admin = self._admin.get(path)
            if admin is not None and method in ("GET", "HEAD"):
                raise self._health() if admin == "health" else self._metrics(headers or [])
            route = self.table.match(path, method)
            if route is not None:
                return route
            if method == "OPTIONS":
                self._preflight(path, headers or [])
            allowed = self.table.methods(path)
            if admin is not None:
                allowed = sorted({*allowed, "GET", "HEAD"})
            if allowed:
                raise MethodNotAllowed(f"method {method} is not served on {path}; use {' or '.join(allowed)}",
                                       allowed)
            raise NotFound(f"no source listens on {path}")
        return route

    def _preflight(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        """Raise the answer to a CORS preflight when some method on ``path`` has ``cors``; return otherwise."""
        corsed = {method: route.cors for method, route in self.table.served(path).items() if route.cors is not None}
        if not corsed:
            return  # no CORS here: 405 as for any other method
        probe = Request("OPTIONS", path, None, "", "", b"", headers=headers)
        origin = (probe.header(b"origin") or b"").decode("latin-1")
        wanted = (probe.header(b"access-control-request-method") or b"").decode("latin-1").strip()
        cors = corsed.get(wanted) or next(iter(corsed.values()))
        if not origin or not cors.allows(origin):
            raise Forbidden(f"origin {origin!r} may not push to {path} (cors.origins)" if origin else
                            "a CORS preflight needs an 'Origin' header")
        if wanted and wanted not in corsed:
            raise Forbidden(f"method {wanted} is not served to browsers on {path}; use {' or '.join(sorted(corsed))}")
        allow = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                 "Access-Control-Allow-Methods": ", ".join(sorted(corsed))}
        if cors.headers:
            allow["Access-Control-Allow-Headers"] = ", ".join(cors.headers)
        if cors.max_age:
            allow["Access-Control-Max-Age"] = str(cors.max_age)
        raise Preflight(allow)

    def _health(self) -> Direct:
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
        return Direct(200 if ready else 503, body, {"Cache-Control": "no-store"})

    def _metrics(self, headers: list[tuple[bytes, bytes]]) -> Direct:
        accept = next((value.decode("latin-1") for name, value in headers if name.lower() == b"accept"), "")
        endpoints = [(route.stats.method, route.stats.path, sum(sub.sender is not None for sub in route.subscriptions),
                      len(route.subscriptions), len(route.idempotency) if route.idempotency is not None else 0)
                     for route in self.table.routes()]
        body, content_type = render(self.metrics, self.gauges(), endpoints, accept)
        return Direct(200, body, {"Cache-Control": "no-store"}, content_type)

    def decorate(self, req: Request, answer: Answer) -> Answer:
        """Headers of a route with ``cors`` (``Access-Control-Allow-Origin`` for an allowed ``Origin``, and the
        headers a page may read) or ``requestId`` (``X-Request-Id``)."""
        route = req.route
        headers = dict(answer.headers) if answer.headers else {}
        cors = route.cors if route is not None else None
        if cors is not None:
            origin = req.header(b"origin")
            if origin is not None and cors.allows(origin.decode("latin-1")):
                headers["Access-Control-Allow-Origin"] = origin.decode("latin-1")
                headers["Vary"] = "Origin"
                headers["Access-Control-Expose-Headers"] = ", ".join(
                    ["Retry-After"] + ["X-Request-Id"] * route.request_id
                    + ["Idempotent-Replayed"] * (route.idempotency is not None))
        if route is not None and route.request_id:
            headers["X-Request-Id"] = request_id(req)
        answer.headers = headers or None
        return answer

    def authenticate(self, auth: Authenticator, headers: list[tuple[bytes, bytes]], peercert: dict[str, Any] | None,
                     body: bytes = b"") -> str:
        """The principal ``auth`` admits; raises :class:`Unauthorized`. The connection calls it for the header-only
        kinds as soon as the headers are in; :meth:`_handle` for ``hmac``, with the body."""
        try:
            return auth.authenticate(headers, peercert, body)
        except AuthError as exc:
            raise Unauthorized(str(exc), auth.challenge) from None

    def reject(self, request_line: str, exc: BaseException) -> Answer:
        if isinstance(exc, HttpError | DecodeError) and not isinstance(exc, Direct):
            self.reject_log.warn(request_line, exc)
        return error_answer(exc)

    def settle(self, req: Request, answer: Answer, body_bytes: int, started: float) -> None:
        """The connection has ``req``'s final answer, ``started`` (monotonic) being when its body ended: count it, and
        remember it for the request's ``Idempotency-Key``."""
        route = req.route
        stats = route.stats if route is not None else self.metrics.unrouted
        stats.handled(answer.status, body_bytes, time.monotonic() - started)
        if req.idempotency is not None:
            store, key, entry = req.idempotency
            req.idempotency = None
            store.settle(key, req.user or "", entry, answer.status, answer.body)

    def handle(self, req: Request) -> Answer | PendingAnswer | Coroutine[Any, Any, Answer]:
        try:
            return self._handle(req)
        except Exception as exc:  # every failure becomes an answer: never a dropped connection
            return self._refused(req, exc)

    def _refused(self, req: Request, exc: Exception) -> Answer:
        answer = self.reject(f"{req.method} {req.path} from {req.remote}", exc)
        return self.decorate(req, answer) if req.route is not None and req.route.custom else answer

    def _handle(self, req: Request) -> Answer | PendingAnswer | Coroutine[Any, Any, Answer]:
        route = req.route
        rerouted = route is None or not route.groups
        if rerouted:  # its sources went away while the body was arriving: the new route's auth was not checked
            req.route = route = self.route(req.method, req.path)
        check = route.auth is not None and (rerouted or route.auth.needs_body)
        if len(req.body) >= LARGE_BODY:
            return self._handle_large(req, route, check)
        if check:
            self._admit(req, route)
        if route.idempotency is not None:
            known = self._remember(req, route.idempotency, None)
            if known is not None:
                return known
        return self._deliver(req, self._frame(req, route))

    def _remember(self, req: Request, store: KeyStore, digest: bytes | None) -> Answer | None:
        """``Idempotency-Key``: the stored answer (replayed), 409 or 422 when the key is known; else ``None``, the
        key now remembered as in flight. ``digest``: the request's fingerprint, when already computed."""
        raw = req.header(b"idempotency-key")
        if raw is None:
            return None
        try:
            key = parse_key(raw)
        except BadKey as exc:
            raise BadRequest(str(exc)) from None
        if digest is None:
            digest = fingerprint(req.method, req.target, req.content_type, req.body)
        user = req.user or ""
        known = store.begin(key, user, digest)
        if isinstance(known, Entry):
            req.idempotency = (store, key, known)
            return None
        kind, entry = known
        shown = key.decode("ascii")
        if kind == "replay":
            store.stats.replays += 1
            answer = Answer(entry.status, entry.body, {"Idempotent-Replayed": "true"})
            return self.decorate(req, answer) if req.route.custom else answer
        store.stats.key_conflicts += 1
        if kind == "in flight":
            raise Conflict(f"a request with Idempotency-Key {shown!r} is still being handled; retry when it has "
                           "been answered")
        raise Unprocessable(f"Idempotency-Key {shown!r} was used for a different request in the last "
                            f"{store.config.window:g} s (the method, path and query, Content-Type and body must be "
                            "the same); use a new key for a new request")

    def _admit(self, req: Request, route: Route) -> None:
        """Check ``route``'s auth with the whole request (hmac signs the body): before anything is decoded."""
        if route.auth is not None:
            req.user = self.authenticate(route.auth, req.headers, req.peercert, req.body)

    async def _handle_large(self, req: Request, route: Route, check: bool = False) -> Answer:
        loop = asyncio.get_running_loop()
        try:
            async with self._large:  # a large body's signature is computed in the worker thread too
                if check:
                    await loop.run_in_executor(None, self._admit, req, route)
                if route.idempotency is not None and req.header(b"idempotency-key") is not None:
                    digest = await loop.run_in_executor(None, fingerprint, req.method, req.target, req.content_type,
                                                        req.body)
                    known = self._remember(req, route.idempotency, digest)
                    if known is not None:
                        return known
                framed = await loop.run_in_executor(None, self._frame, req, route)
            result = self._deliver(req, framed)
            del framed
            return result if isinstance(result, Answer) else await result.wait()
        except Exception as exc:  # answered as a small body's would be: logged, with the endpoint's headers
            return self._refused(req, exc)
        finally:
            req.body = b""
            await loop.run_in_executor(None, _trim_heap)

    def _frame(self, req: Request, route: Route) -> list[tuple[Frames, list[Subscription]]]:
        """Decode and frame for every group before anything is sent: one bad decoding refuses the whole body."""
        framed: list[tuple[Frames, list[Subscription]]] = []
        meta_cache: dict[MetaSpec | None, bytes | None] = {}
        for group in route.groups:
            try:
                records = group.decoder.decode_request(req.body, req.content_type, self.max_records)
            except TooManyRecords:
                raise
            except DecodeError:
                route.stats.decode_failed(group.decoder.format)
                raise
            if len(records) > self.max_records:  # decoders that build all records at once (a JSON array)
                raise TooManyRecords(self.max_records)
            meta = meta_cache.get(group.meta, b"")
            if meta == b"":
                meta = meta_cache[group.meta] = _meta(group.meta, req)
            framed.append((frame_records(records, meta, group.decoder.format == "custom"), group.subscriptions))
        return framed

    def _deliver(self, req: Request, framed: list[tuple[Frames, list[Subscription]]]) -> Answer | PendingAnswer:
        outcomes: list[tuple[Subscription, Frames, Delivery | DeliveryError | None]] = []
        pending = 0
        for frames, subs in framed:
            for sub in subs:
                outcome: Delivery | DeliveryError | None = None
                if frames.ends:
                    sender = sub.sender
                    try:
                        outcome = sender.send(frames) if sender is not None else _send_when_attached(sub, frames)
                    except DeliveryError as exc:
                        outcome = exc
                pending += isinstance(outcome, Delivery)
                outcomes.append((sub, frames, outcome))
        accepted = max((len(frames) for frames, _ in framed), default=0)
        if pending:
            return PendingAnswer(self, req, outcomes, accepted, pending)
        if all(outcome is None for _, _, outcome in outcomes):
            return self._success(req, accepted, len(outcomes))
        return self.conclude(req, outcomes, accepted)

    def conclude(self, req: Request, outcomes: list[tuple[Subscription, Frames, Delivery | DeliveryError | None]],
                 accepted: int) -> Answer:
        """The answer once every delivery has an outcome: 200, or 503 with what each source got."""
        delivered: dict[str, int] = {}
        reasons: list[str] = []
        for sub, frames, outcome in outcomes:
            error = outcome.error if isinstance(outcome, Delivery) else outcome
            if error is None:
                delivered[sub.label] = len(frames)
            else:
                delivered[sub.label] = error.delivered
                reasons.append(str(error))
        if reasons:
            req.route.stats.delivery_failures += 1
            answer = self.reject(f"{req.method} {req.path} from {req.remote}",
                                 Unavailable(f"records were not all delivered: {'; '.join(reasons)}",
                                             delivered=delivered))
            return self.decorate(req, answer) if req.route.custom else answer
        return self._success(req, accepted, len(outcomes))

    def _success(self, req: Request, accepted: int, sources: int) -> Answer:
        """200 ``{"accepted", "sources"}``; on a route with ``successStatus``, ``cors`` or ``requestId``, its
        status and headers."""
        answer = Answer(200, b'{"accepted":%d,"sources":%d}' % (accepted, sources))
        req.route.stats.records += accepted
        if not req.route.custom:
            return answer
        answer.status = req.route.success_status
        if answer.status == 204:
            answer.body = b""
        return self.decorate(req, answer)


class PendingAnswer:
    """The answer to a request whose records are still on their way to the host; :meth:`then` runs a function
    with it as soon as the last delivery settles — on the loop, without a task."""

    __slots__ = ("answer", "_handler", "_req", "_outcomes", "_accepted", "_pending", "_then")

    def __init__(self, handler: PushHandler, req: Request,
                 outcomes: list[tuple[Subscription, Frames, Delivery | DeliveryError | None]], accepted: int,
                 pending: int) -> None:
        self.answer: Answer | None = None
        self._handler, self._req, self._outcomes, self._accepted = handler, req, outcomes, accepted
        self._pending = pending
        self._then: Callable[[Answer], None] | None = None
        for _, _, outcome in outcomes:
            if isinstance(outcome, Delivery):
                outcome.add_callback(self._settled)

    def then(self, fn: Callable[[Answer], None]) -> None:
        if self.answer is not None:
            fn(self.answer)
        else:
            self._then = fn

    async def wait(self) -> Answer:
        if self.answer is None:
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self.then(future.set_result)
            return await future
        return self.answer

    def _settled(self, _delivery: Delivery) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._conclude()

    def _conclude(self) -> None:
        self.answer = self._handler.conclude(self._req, self._outcomes, self._accepted)
        self._outcomes = []
        if self._then is not None:
            fn, self._then = self._then, None
            fn(self.answer)


def _send_when_attached(sub: Subscription, frames: Frames) -> Delivery:
    """The source was configured, but its ``open()`` has not attached the host channel yet: wait for it."""
    delivery = Delivery(frames, 0, 0)

    async def send() -> None:
        try:
            try:
                await asyncio.wait_for(sub.ready.wait(), ATTACH_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise DeliveryError(0, f"{sub.label} is not ready: the host has not opened it") from None
            if sub.sender is None:
                raise DeliveryError(0, f"{sub.label} stopped before it was ready")
            outcome = sub.sender.send(frames)
            if outcome is not None:
                await outcome.wait()
        except DeliveryError as exc:
            delivery.fail_with(exc)
        else:
            delivery.complete()

    asyncio.ensure_future(send())
    return delivery


def request_id(req: Request) -> str:
    """The request's id: its ``X-Request-Id`` when that is visible ASCII (clipped), else a new random one."""
    if req.request_id is None:
        given = req.header(b"x-request-id")
        text = given.decode("latin-1") if given else ""
        req.request_id = clip(text) if text and text.isascii() and text.isprintable() else uuid.uuid4().hex
    return req.request_id


def _query(req: Request, wanted: bool | tuple[str, ...]) -> dict[str, Any]:
    """``metaQuery``: parameters of the request target's query, clipped; a repeated one becomes a list."""
    target = req.target
    start = target.find(b"?")
    if start < 0:
        return {}
    params: dict[str, Any] = {}
    for name, value in parse_qsl(target[start + 1:].decode("latin-1"), keep_blank_values=True):
        if wanted is not True and name not in wanted:
            continue
        name, value = clip(name), clip(value)
        if name not in params:
            params[name] = value
        elif isinstance(params[name], list):
            params[name].append(value)
        else:
            params[name] = [params[name], value]
    return params


def _client_address(req: Request, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The client's address: the peer, or — when the peer is a trusted proxy — the last address in ``Forwarded``
    (else ``X-Forwarded-For``) that is not a trusted proxy, walking from the nearest hop back."""
    address = req.remote
    if not proxies or not _trusted(address, proxies):
        return address
    forwarded = req.header(b"forwarded")
    if forwarded is not None:
        hops = [_forwarded_for(element) for element in forwarded.decode("latin-1").split(",")]
    else:
        xff = req.header(b"x-forwarded-for")
        hops = [hop.strip() for hop in xff.decode("latin-1").split(",")] if xff is not None else []
    for hop in reversed(hops):
        try:
            hop = str(ipaddress.ip_address(hop or ""))
        except ValueError:
            break  # "unknown", an obfuscated name, garbage: the last trusted hop is all we know
        address = hop
        if not _trusted(hop, proxies):
            break
    return address


def _forwarded_for(element: str) -> str:
    """The address of one ``Forwarded`` element's ``for=`` (RFC 7239): quotes, brackets and port removed."""
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for":
            value = value.strip().strip('"')
            if value.startswith("["):
                return value[1:value.find("]")] if "]" in value else ""
            return value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return ""


def _trusted(address: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def _meta(spec: MetaSpec | None, req: Request) -> bytes | None:
    if spec is None:
        return None
    meta: dict[str, Any] = {}
    if spec.query:  # lowest precedence: headers, template variables and request facts win over a parameter's name
        meta.update(_query(req, spec.query))
    if spec.headers is not None:
        copied: set[str] = set()
        for raw_name, raw_value in req.headers:
            name = raw_name.decode("latin-1").lower()
            if spec.headers.match(name):
                value = raw_value.decode("latin-1")
                meta[name] = clip(f"{meta[name]}, {value}" if name in copied else value)  # repeated: joined
                copied.add(name)
    if spec.template is not None:  # the template's variables: client text, clipped like the rest
        meta.update((name, clip(value)) for name, value in spec.template.params(req.path).items())
    if spec.fields:
        values = {"method": req.method, "path": req.path, "remoteAddr": req.remote,
                  "contentType": clip(req.content_type)}
        if req.user is not None:  # absent without auth
            values["user"] = clip(req.user)
        if spec.proxies:
            values["remoteAddr"] = _client_address(req, spec.proxies)
        if "requestId" in spec.fields:
            values["requestId"] = request_id(req)
        meta.update((name, values[name]) for name in spec.fields if name in values)
    data = orjson.dumps(meta)
    if len(data) > MAX_META_BYTES:
        raise HeadersTooLarge(f"the request's metadata for each record is {len(data)} bytes of JSON; the limit is "
                              f"{MAX_META_BYTES} (metaHeaders, metaQuery): send fewer or shorter headers or parameters")
    return data


_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def _trim_heap() -> None:
    """Give freed memory back to the system after a large body (glibc keeps it otherwise)."""
    if _malloc_trim is not None:
        _malloc_trim(0)

