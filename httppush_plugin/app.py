"""The application: one request, straight through — route → admit → idempotency → decode → meta → frame → deliver →
answer.

The protocol calls :meth:`PushApp.head` when a request's head is complete: the route is found and header-only auth
is checked, and the answer is either given now (404, 401, health, a preflight, …) or is "read the body" — an
:class:`Exchange`. The protocol then calls :meth:`Exchange.body` with the whole body, and gets the answer, or the
exchange itself as a :class:`~.answers.Later` when records must wait for a channel.

Nothing is answered 2xx before every record is in the host channel of every subscribed source, and a body that any
subscribed source cannot decode is refused before anything is sent. Every answer of a routed request passes through
:meth:`Exchange._finish` (the route's ``responseHeaders``, CORS and ``X-Request-Id`` headers) and is counted once,
when it is final.

Example: ``app.head(head).body(b'{"t": 1}')`` → ``Answer(200, b'{"accepted":1,"sources":1}')``.
"""

from __future__ import annotations

import asyncio
import time

from .admin import Admin, AdminAction
from .answers import Answer, HttpError, Later, MethodNotAllowed, NotFound, RateLimitedLog, Unavailable, error_answer
from .backoff import AuthBackoff
from .budget import Budget
from .decoders import DecodeError, Limits, OverLimit, TooManyRecords, held_bound
from .delivery import Delivery, DeliveryError
from .fanout import SUCCESS, Framed, Outcome, send_when_attached, success, summarize
from .framing import frame_records
from .idempotency import Ticket, fingerprint
from .meta import build, request_id
from .offload import LARGE_BODY, Offload
from .request import RequestHead
from .routing import EndpointTable, Route
from .settings import ServerConfig

_now = time.monotonic


class PushApp:
    """Routes and answers every request of the shared server (``request.Application``)."""

    def __init__(self, table: EndpointTable, config: ServerConfig, admin: Admin | None = None,
                 budget: Budget | None = None) -> None:
        self.table = table
        #: the server's bytes held (``httpServerMaxBuffered``): a large body's decoding reserves its share here
        self.budget = budget if budget is not None else Budget(config.max_buffered)
        self._find = table.find
        self.metrics = table.metrics
        self.max_body_size = config.max_body_size
        self.limits = Limits(config.max_records, config.max_fields, config.max_values, config.max_record_values)
        self.admin = admin if admin is not None else Admin(table, config)
        self.offload, self.reject_log = Offload(), RateLimitedLog()
        self.backoff = AuthBackoff()

    def head(self, head: RequestHead) -> Answer | Exchange:
        route = self._find((head.path, head.method))
        if route is None:
            try:
                found = self._resolve(head)
            except HttpError as exc:
                return self.failed(exc, head)
            if isinstance(found, Answer):
                self.metrics.unrouted.answered(found.status)
            if not isinstance(found, Route):  # answered, or an admin action (which counts its answer)
                return found
            route = found
        exchange = Exchange(self, route, head)
        if route.cors is not None or route.auth is not None or route.limiter is not None:  # origin, limit, auth
            try:
                exchange.user = route.admit(head, self.backoff)
            except HttpError as exc:  # answered before the body: the protocol drops a small one, or closes
                return exchange.failed(exc)
        return exchange

    def _resolve(self, head: RequestHead) -> Route | Answer | AdminAction:
        """When no literal route matches: the server's own paths, then templates, then a CORS preflight; raises 405
        (another method is served on the path) or 404."""
        answer = self.admin.answer(head, self.metrics.unrouted.answered)
        if answer is not None:
            return answer
        route = self.table.match(head.path, head.method)
        if route is not None:
            return route
        path = head.path
        if head.method == "OPTIONS":
            answer = self.table.preflight(head)  # with the route's responseHeaders
            if answer is not None:
                return answer
        allowed = self.table.methods(path)
        if path in self.admin.paths:
            allowed = sorted({*allowed, *self.admin.methods(path)})
        if allowed:
            raise MethodNotAllowed(f"method {head.method} is not served on {path}; use {' or '.join(allowed)}", allowed)
        raise NotFound(f"no source listens on {path}")

    def failed(self, exc: BaseException, head: RequestHead | None = None, remote: str = "") -> Answer:
        """A request that reached no endpoint is refused: counted, logged (rate-limited), answered."""
        answer = self.refuse(exc, head, remote)
        self.metrics.unrouted.answered(answer.status)
        return answer

    def refuse(self, exc: BaseException, head: RequestHead | None, remote: str = "") -> Answer:
        if isinstance(exc, HttpError):
            what = f"{head.method} {head.path} from {head.remote}" if head is not None else f"request from {remote}"
            self.reject_log.warn(what, exc)
        return error_answer(exc)


class Exchange(Later):
    """One request routed to an endpoint: what the protocol hands its body to (``request.Exchange``)."""

    __slots__ = ("app", "route", "head", "user", "limit", "started", "size", "ticket", "rid", "rerouted",
                 "accepted", "outcomes", "pending", "task")

    def __init__(self, app: PushApp, route: Route, head: RequestHead) -> None:
        self.answer: Answer | None = None  # Later's, set here: this runs once per request
        self._then = None
        self.app, self.route, self.head = app, route, head
        self.user: str | None = None  # the principal the route's auth admitted
        self.limit = app.max_body_size
        self.started, self.size = 0.0, 0
        self.ticket: Ticket | None = None
        self.rid, self.rerouted = "", False
        self.accepted = 0
        self.outcomes: list[Outcome] = []
        self.pending = 0
        self.task: asyncio.Task[None] | None = None

    def body(self, data: bytes) -> Answer | Later:
        """The whole request, top to bottom. A large body takes the same steps with the CPU-heavy ones in a worker
        thread (:meth:`_large`)."""
        self.started = _now()
        self.size = len(data)
        route = self.route
        try:
            if not route.groups:  # its sources went away while the body was arriving
                found = self._reroute()
                if isinstance(found, Answer):
                    return self._done(found)
                route = found
            if len(data) >= LARGE_BODY:
                self.task = self.app.offload.start(self._large(route, data))
                return self
            if route.auth is not None and (self.rerouted or route.auth.needs_body):  # admit (hmac signs the body)
                self.user = self.app.backoff.admit(route.auth, self.head, route.client(self.head), data)
            if route.idempotency is not None:  # idempotency: a replay, 409 or 422 ends here
                known = route.idempotency.admit(self.head, self.user, data)
                if isinstance(known, Answer):
                    return self._done(known)
                self.ticket = known
            framed = self._frame(route, data)  # decode → meta → frame, for every group, before anything is sent
        except Exception as exc:  # every failure becomes an answer: never a dropped connection
            return self._done(self.app.refuse(exc, self.head))
        return self._deliver(framed)  # deliver → answer

    def _reroute(self) -> Route | Answer:
        self.rerouted = True
        found = self.app.table.lookup(self.head.path, self.head.method) or self.app._resolve(self.head)
        if isinstance(found, Route):
            self.route = found
        return found

    def _frame(self, route: Route, data: bytes) -> Framed:
        """Decode → meta → frame for every group: one bad decoding refuses the whole body."""
        framed: Framed = []
        metas: dict[object, bytes | None] | None = None  # meta JSON by spec: once per distinct spec
        limits = self.app.limits
        head = self.head
        accepted = 0
        for group in route.groups:
            decoder = group.decoder
            try:
                records = decoder.decode_request(data, head.content_type, limits)
            except OverLimit:
                raise
            except DecodeError:
                route.stats.decode_failed(decoder.format)
                raise
            if len(records) > limits.records:  # a custom decoder's list
                raise TooManyRecords(limits.records)
            spec = group.meta
            meta = None
            if spec is not None:
                metas = metas if metas is not None else {}
                meta = metas.get(spec)
                if meta is None:
                    meta = metas[spec] = build(spec, head, self.user,
                                               self.request_id() if "requestId" in spec.fields else "")
            framed.append((frame_records(records, meta, decoder.format == "custom"), group.subscriptions))
            if len(records) > accepted:
                accepted = len(records)
        self.accepted = accepted
        return framed

    def _deliver(self, framed: Framed) -> Answer | Later:
        """Hand every group's frames to each of its sources, then answer: now, or once the last delivery that had to
        wait (a :class:`~.delivery.Delivery`) has settled."""
        outcomes: list[Outcome] = []
        pending = failed = 0
        settled = self._settled  # what a delivery that has to wait calls when it has
        for frames, subs in framed:
            for sub in subs:
                outcome: Delivery | DeliveryError | None = None
                if frames.ends:
                    sender = sub.sender
                    try:
                        outcome = sender.send(frames, settled) if sender is not None else send_when_attached(
                            sub, frames, settled)
                    except DeliveryError as exc:
                        outcome = exc
                    if outcome is not None:
                        if isinstance(outcome, Delivery):
                            pending += 1
                        else:
                            failed += 1
                outcomes.append((sub, frames, outcome))
        if not pending:
            return self._done(self._conclude(outcomes) if failed else self._delivered(len(outcomes)))
        self.outcomes, self.pending = outcomes, pending  # before any delivery can settle: they settle later
        return self

    def _settled(self, delivery: Delivery) -> None:
        self.pending -= 1
        if self.pending == 0:
            outcomes, self.outcomes = self.outcomes, []
            # one source, delivered: the common case, without looking through the outcomes
            answer = self._delivered(1) if len(outcomes) == 1 and delivery.error is None else self._conclude(outcomes)
            self.resolve(self._done(answer))

    def _conclude(self, outcomes: list[Outcome]) -> Answer:
        """Every delivery has an outcome: 2xx, or 503 with what each source got."""
        for _, _, outcome in outcomes:
            if outcome is not None and (type(outcome) is not Delivery or outcome.error is not None):
                break
        else:
            return self._delivered(len(outcomes))
        delivered, reasons = summarize(outcomes)
        if reasons:
            self.route.stats.delivery_failures += 1
            return self.app.refuse(Unavailable(f"records were not all delivered: {'; '.join(reasons)}",
                                               delivered=delivered), self.head)
        return self._delivered(len(outcomes))

    def _delivered(self, sources: int) -> Answer:
        """Every record reached every source: the route's success status, ``{"accepted": n, "sources": m}``."""
        route, accepted = self.route, self.accepted
        route.stats.records += accepted
        key = (route.success_status, accepted, sources)
        return SUCCESS.get(key) or success(*key)

    def _done(self, answer: Answer) -> Answer:
        """The final answer to the body: with the route's headers, counted, remembered for its Idempotency-Key."""
        route = self.route
        if route.custom:
            answer = self._finish(answer)
        route.stats.handled(answer.status, self.size, _now() - self.started)
        if self.ticket is not None:
            ticket, self.ticket = self.ticket, None
            ticket.settle(answer)
        return answer

    def failed(self, exc: BaseException) -> Answer:
        """Refused before the body was whole (401 from the head, 413, 408, a malformed body): counted and with the
        route's headers, like any other answer of the endpoint."""
        answer = self._finish(self.app.refuse(exc, self.head))
        self.route.stats.answered(answer.status)
        return answer

    def _finish(self, answer: Answer) -> Answer:
        """The one place an answer gets the route's headers: ``responseHeaders``, CORS (an allowed ``Origin``) and
        ``X-Request-Id``. A new answer: answers may be shared (:func:`success`)."""
        route = self.route
        if not route.custom:
            return answer
        headers = dict(answer.headers) if answer.headers else {}
        if route.headers:  # responseHeaders: never a name the protocol owns (headers.PROTOCOL_OWNED)
            headers.update(route.headers)
        if route.cors is not None:
            route.cors.decorate(headers, self.head, route.exposed)
        if route.request_id:
            headers["X-Request-Id"] = self.request_id()
        return Answer(answer.status, answer.body, headers or None, answer.content_type, answer.close)

    def request_id(self) -> str:
        """The request's id (``X-Request-Id``), the same for its records' meta and its answer."""
        if not self.rid:
            self.rid = request_id(self.head)
        return self.rid

    async def _large(self, route: Route, data: bytes) -> None:
        """:meth:`body`'s steps for a large body: signature, fingerprint, decoding and framing in a worker thread,
        bodies of 1 MiB or more one at a time (``offload.lane``); the key store and the channels on the loop."""
        offload, head = self.app.offload, self.head
        held = 0
        try:
            async with offload.lane(len(data)):
                need = await offload.run(held_bound, [group.decoder for group in route.groups], data, self.app.limits)
                self.app.budget.reserve(need, "decoding and framing this body")
                held = need
                if route.auth is not None and (self.rerouted or route.auth.needs_body):
                    self.user = await self.app.backoff.admit_off(route.auth, head, route.client(head), data,
                                                                 offload.run)
                if route.idempotency is not None and head.header(b"idempotency-key") is not None:
                    digest = await offload.run(fingerprint, head.method, head.target, head.content_type, data)
                    known = route.idempotency.admit(head, self.user, data, digest)
                    if isinstance(known, Answer):
                        self.resolve(self._done(known))
                        return
                    self.ticket = known
                framed = await offload.decode(self._frame, route, data)
            del data
            answer = self._deliver(framed)
            del framed
            if answer is not self:
                self.resolve(answer)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            self._stopping()
        except Exception as exc:  # answered as a small body's would be: logged, with the endpoint's headers
            self.resolve(self._done(self.app.refuse(exc, head)))
        finally:
            self.app.budget.give(held)  # the frames still waiting for a channel are counted there from now on
            await offload.trim(self.size)

    def cancel(self) -> None:
        if self.task is not None and self.task.cancel():
            # cancelled before its first step, the coroutine never enters its ``try``: answered when the task ends
            self.task.add_done_callback(lambda _: self._stopping())

    def _stopping(self) -> None:
        if self.answer is None:
            answer = self._done(error_answer(Unavailable("the server is stopping")))
            answer.close = True
            self.resolve(answer)
