"""One HTTP/1.1 connection, on ``httptools`` (the llhttp parser): parse, limits, timeouts, keep-alive, pipelining,
``Expect: 100-continue``, answers.

The parser's callbacks fill in the request; ``on_message_complete`` hands it to the handler, which usually answers at
once — no task and no coroutine per request. A request that must wait becomes a task; while it runs the connection
stops reading, and pipelined requests already parsed wait in a queue, so answers always go out in request order.

Every answer is JSON. A request the parser cannot make sense of gets 400 and the connection is closed; so does one
over a size limit (413, 431) or too slow (408). After such an answer the connection "lingers": what the client still
sends is read and dropped for up to :data:`LINGER_S`, so that it reads the answer instead of a reset.

Timeouts are enforced by :class:`ConnectionSet`'s sweep, not a timer per connection: each connection keeps one
``deadline`` (a float), set as it moves between phases, and the sweep closes those past theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from .budget import Budget
from .config import ServerConfig
from .encoding import Inflater, inflater_for
from .handler import (
    Answer,
    BadRequest,
    HeadersTooLarge,
    HttpError,
    PendingAnswer,
    PushHandler,
    Request,
    RequestTimeout,
    TooLarge,
    Unauthorized,
    Unavailable,
    VersionNotSupported,
    error_answer,
)
from .routing import Route

log = logging.getLogger(__name__)

#: Request line plus headers, in bytes; more gets 431.
MAX_HEAD_SIZE = 16 * 1024
#: After an answer that closes the connection mid-request, how long what the client still sends is read and dropped.
LINGER_S = 2.0
_INF = float("inf")
_now = time.monotonic

# Phases of a connection (what its deadline means).
IDLE, HEAD, BODY, BUSY, LINGER, CLOSING = range(6)

_REASONS = {100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict",
            405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Content", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n" % (code, reason.encode())
                 for code, reason in _REASONS.items()}
_BARE_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason.encode()) for code, reason in _REASONS.items()}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"


class ConnectionSet:
    """What every connection of one server shares, and the sweep that enforces their deadlines."""

    def __init__(self, handler: PushHandler, config: ServerConfig, budget: Budget) -> None:
        self.handler = handler
        self.config = config
        self.budget = budget
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self.date = b""
        self._sweeper: asyncio.TimerHandle | None = None
        self._interval = min(1.0, max(0.05, min(config.read_header_timeout, config.read_body_timeout,
                                                config.idle_timeout) / 4))

    def start(self) -> None:
        self._sweep()

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The server-wide gauges of ``/metrics``, read now."""
        return {
            "httppush_open_connections": ("HTTP connections open now (limit: httpServerMaxConnections).",
                                          len(self.connections)),
            "httppush_buffered_bytes": ("Bytes held now for bodies being received or decoded and records waiting "
                                        "for eKuiper (limit: httpServerMaxBuffered).", self.budget.used),
        }

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now = _now()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()
        self._sweeper = asyncio.get_running_loop().call_later(self._interval, self._sweep)

    async def shutdown(self, timeout: float) -> None:
        """Ordered: close idle connections and ask busy ones to close after their answer; wait up to ``timeout``;
        then answer what is still in flight with 503 and close the rest."""
        self.stopping = True
        for conn in list(self.connections):
            conn.close_when_idle()
        deadline = _now() + timeout
        while self.connections and _now() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.force_close(Unavailable("the server is stopping"))
        deadline = _now() + 0.5
        while self.connections and _now() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        self.stop()


class HttpConnection(asyncio.Protocol):
    def __init__(self, shared: ConnectionSet) -> None:
        self.shared = shared
        self.handler = shared.handler
        self.config = shared.config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.remote = ""
        self.phase = IDLE
        self.deadline = _INF
        self._busy: asyncio.Task[None] | PendingAnswer | None = None  # an answer we owe and are waiting for
        #: requests (or their early answers) parsed while an answer was owed: (item, keep_alive, head_only, body
        #: bytes held, when the body ended)
        self._queue: deque[tuple[Request | Answer, bool, bool, int, float]] = deque()
        self._held = 0  # bytes of this connection's bodies counted in the server's budget
        self._closing = False  # answer what is in flight, then close
        self._discarding = False  # input is no longer parsed (after a fatal error, while lingering)
        self._shut = False  # our side is closed or closing: nothing more may be written
        self._paused = False
        self._write_paused = False
        # the request being parsed
        self._url = b""
        self._head_size = 0
        self._content_type = ""
        self._content_length = -1
        self._expect = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._encoding = ""  # Content-Encoding
        self._inflater: Inflater | None = None
        self._wire_size = 0  # bytes of a compressed body as received
        self._error: HttpError | None = None
        self._route: Route | None = None
        self._user: str | None = None
        self._method = ""
        self._path = ""
        self._http10 = False

    # -- asyncio callbacks ------------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.peercert: dict[str, Any] | None = transport.get_extra_info("peercert")  # TLS with client certificates
        connections = self.shared.connections
        connections.add(self)
        self.deadline = _now() + min(self.config.read_header_timeout, self.config.idle_timeout)
        if self.shared.stopping:
            self._close()
        elif len(connections) > self.config.max_connections:
            self._fatal(Unavailable(f"the server has {len(connections) - 1} connections open, its limit "
                                    "(httpServerMaxConnections)"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.connections.discard(self)
        self._release(self._held)
        self._queue.clear()
        self.phase = CLOSING
        self.deadline = _INF

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fatal(cause if isinstance(cause, HttpError) else cause or exc)
        except httptools.HttpParserUpgrade:
            self._fatal(BadRequest("protocol upgrades (the 'Upgrade' header) are not supported; send plain HTTP/1.1"))
        except httptools.HttpParserError as exc:
            self._fatal(BadRequest(f"malformed HTTP request: {exc}"))

    def eof_received(self) -> bool | None:
        # The client is done sending. Answers still owed go out, then the connection closes.
        if self.phase == LINGER:  # it read our answer and closed: lingering is over
            self.transport.close()
            self.phase = CLOSING
            self.deadline = _now() + LINGER_S
        elif self._busy is None and not self._queue:
            self._close()
        else:
            self._closing = True
        return True

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does, and give up on it if
        # it still has not after the idle timeout.
        self._write_paused = True
        self._pause()
        self.deadline = _now() + self.config.idle_timeout

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._busy is None and not self._queue:
            self._resume()

    # -- parser callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.phase = HEAD
        self.deadline = _now() + self.config.read_header_timeout
        self._url = b""
        self._head_size = 0
        self._content_type = ""
        self._content_length = -1
        self._expect = False
        self._headers = []
        self._body = []
        self._body_size = 0
        self._encoding = ""
        self._inflater = None
        self._wire_size = 0
        self._error = None
        self._route = None
        self._user = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_SIZE:
            raise HeadersTooLarge(f"request line and headers are over {MAX_HEAD_SIZE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_SIZE:
            raise HeadersTooLarge(f"request line and headers are over {MAX_HEAD_SIZE} bytes")
        self._headers.append((name, value))
        size = len(name)  # the few names the connection itself needs
        if size == 12 and name.lower() == b"content-type":
            self._content_type = value.decode("latin-1")
        elif size == 14 and name.lower() == b"content-length":
            self._content_length = int(value)  # llhttp has checked the digits
        elif size == 6 and name.lower() == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif size == 16 and name.lower() == b"content-encoding":
            coding = value.decode("latin-1")
            self._encoding = f"{self._encoding}, {coding}" if self._encoding else coding

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1":
            if version == "0.9":
                raise BadRequest("the request line has no HTTP version; send e.g. 'POST /path HTTP/1.1'")
            if version != "1.0":
                raise VersionNotSupported(f"HTTP/{version} is not supported; use HTTP/1.1")
        self._http10 = version == "1.0"
        self._method = method = parser.get_method().decode("ascii")
        self._path = path = _path(self._url)
        try:
            self._route = route = self.handler.route(method, path, self._headers)
            if route.auth is not None and not route.auth.needs_body:  # basic, bearer, clientcert: before the body
                self._user = self.handler.authenticate(route.auth, self._headers, self.peercert)
        except HttpError as exc:
            self._error = exc
        limit = self.config.max_body_size
        if self._encoding and self._error is None:
            try:  # inflated as it arrives, in on_body: bounded by the limit after inflation
                self._inflater = inflater_for(self._encoding, limit)
            except HttpError as exc:
                self._error = exc
        if self._content_length > limit and self._error is None:
            raise TooLarge(f"body is {self._content_length} bytes; the limit is {limit} bytes (httpServerMaxBodySize)")
        if self._content_length > 0 and self._error is None and not self.shared.budget.fits(self._content_length):
            # decided before the body is sent (an Expect: 100-continue client gets no 100), not partway through it
            raise self._over_budget()
        if isinstance(self._error, Unauthorized) and self._busy is None and not self._queue and self._has_body():
            # Answered now and closed, as 413: a client without credentials gets its 401 before sending the body,
            # and the body it may send anyway costs at most LINGER_S of reading, not a whole body's.
            raise self._error
        self.phase = BODY
        self.deadline = _now() + self.config.read_body_timeout
        if self._expect and not self._http10 and self._busy is None and not self._queue:
            if self._error is not None:
                raise self._error  # answered now: the client has not sent the body and need not
            self.transport.write(_CONTINUE)

    def _has_body(self) -> bool:
        return self._content_length > 0 or (self._content_length < 0 and any(
            len(name) == 17 and name.lower() == b"transfer-encoding" for name, _ in self._headers))

    def on_body(self, chunk: bytes) -> None:
        if self._error is not None:
            return  # read and dropped: the answer is already decided
        if self._inflater is not None:
            self._wire_size += len(chunk)  # the compressed bytes count too
            if self._wire_size > self.config.max_body_size:
                raise TooLarge(f"body is over {self.config.max_body_size} bytes compressed, the limit "
                               "(httpServerMaxBodySize)")
            chunk = self._inflater.feed(chunk, self._body_size)
            if not chunk:
                return
        size = len(chunk)
        self._body_size += size
        if self._body_size > self.config.max_body_size:
            raise TooLarge(f"body is over {self.config.max_body_size} bytes, the limit (httpServerMaxBodySize)")
        if not self.shared.budget.take(size):
            raise self._over_budget()
        self._held += size
        self._body.append(chunk)

    def _over_budget(self) -> Unavailable:
        return Unavailable(f"the server holds {self.shared.budget.used} bytes for requests already, its limit "
                           "(httpServerMaxBuffered); retry later")

    def on_message_complete(self) -> None:
        if self._inflater is not None and self._error is None:
            self._inflater.finish()  # a truncated stream: 400
        self.phase = BUSY
        self.deadline = _INF
        started = _now()
        keep_alive = self.parser.should_keep_alive()
        head_only = self._method == "HEAD"
        held = 0
        if self._error is not None:
            item: Request | Answer = self._early(self.handler.reject(
                f"{self._method} {self._path} from {self.remote}", self._error), self._route)
        else:
            body = self._body
            item = Request(self._method, self._path, self._route, self._content_type, self.remote,
                           body[0] if len(body) == 1 else b"".join(body), self._url, self._headers, self.peercert,
                           self._user)
            self._body = []
            held = self._body_size
        if self._busy is not None or self._queue:
            self._queue.append((item, keep_alive, head_only, held, started))
            self._pause()
        else:
            self._process(item, keep_alive, head_only, held, started)

    def _early(self, answer: Answer, route: Route | None) -> Answer:
        """An answer given before the handler saw the request (401, 413, 408, …): counted for the request's endpoint
        (if it has one), with the endpoint's CORS and X-Request-Id headers, so that a browser can read it."""
        if route is None:
            self.handler.metrics.unrouted.answered(answer.status)
            return answer
        route.stats.answered(answer.status)
        if not route.custom:
            return answer
        return self.handler.decorate(Request(self._method, self._path, route, self._content_type, self.remote, b"",
                                             self._url, self._headers), answer)

    # -- answering --------------------------------------------------------------------------------------------

    def _process(self, item: Request | Answer, keep_alive: bool, head_only: bool, held: int, started: float) -> None:
        if isinstance(item, Answer):
            self._write(item, keep_alive, head_only)
            return
        result = self.handler.handle(item)
        if isinstance(result, Answer):
            self._release(held)
            self.handler.settle(item, result, held, started)
            self._write(result, keep_alive, head_only)
            return
        self._pause()
        if isinstance(result, PendingAnswer):  # records on their way to the host: answered when they are there
            self._busy = result
            result.then(lambda answer: self._answered(item, answer, keep_alive, head_only, held, started))
        else:
            self._busy = asyncio.get_running_loop().create_task(
                self._await(item, result, keep_alive, head_only, held, started))

    async def _await(self, req: Request, pending: Coroutine[Any, Any, Answer], keep_alive: bool, head_only: bool,
                     held: int, started: float) -> None:
        try:
            answer = await pending
        except asyncio.CancelledError:
            answer, keep_alive = error_answer(Unavailable("the server is stopping")), False
        except Exception as exc:
            answer = error_answer(exc)
        self._answered(req, answer, keep_alive, head_only, held, started)

    def _answered(self, req: Request, answer: Answer, keep_alive: bool, head_only: bool, held: int,
                  started: float) -> None:
        """The answer we were waiting for: write it, then go on with what was queued behind it."""
        self._busy = None
        self._release(held)
        self.handler.settle(req, answer, held, started)
        self._write(answer, keep_alive, head_only)
        while self._queue and self._busy is None and not self._shut:
            self._process(*self._queue.popleft())
        if self._busy is None and not self._queue and not self._write_paused:
            self._resume()

    def _write(self, answer: Answer, keep_alive: bool, head_only: bool) -> None:
        transport = self.transport
        if self._shut or transport.is_closing():  # answers owed after a "Connection: close" are dropped
            return
        close = not keep_alive or self.shared.stopping or (self._closing and not self._queue)
        body = answer.body
        extra = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1"))
                         for k, v in answer.headers.items()) if answer.headers else b""
        if close:
            extra += _CLOSE
        elif self._http10:
            extra += _KEEP_ALIVE
        if answer.status == 204:  # successStatus 204 or a CORS preflight: no body, no Content-Length (RFC 9110 8.6)
            transport.write(b"%s%s%s\r\n" % (_NO_CONTENT, self.shared.date, extra))
        elif answer.content_type is not None:  # not JSON: /metrics
            transport.write(b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
                _BARE_STATUS_LINES.get(answer.status) or _BARE_STATUS_LINES[500], answer.content_type.encode(),
                len(body), self.shared.date, extra, b"" if head_only else body))
        else:
            transport.write(b"%sContent-Length: %d\r\n%s%s\r\n%s" % (
                _STATUS_LINES.get(answer.status) or _STATUS_LINES[500], len(body), self.shared.date, extra,
                b"" if head_only else body))
        if close:
            self._close(linger=self._discarding)
        elif self.phase == BUSY and self._busy is None and not self._queue:
            self.phase = IDLE
            self.deadline = _now() + self.config.idle_timeout

    def _release(self, nbytes: int) -> None:
        nbytes = min(nbytes, self._held)
        self._held -= nbytes
        self.shared.budget.give(nbytes)

    def _fatal(self, exc: BaseException) -> None:
        """A request that cannot go on: answer it (after what is owed before it), then close, lingering."""
        self._discarding = True
        if self.phase == BODY:  # the partial body is dropped
            self._body = []
            self._release(self._body_size)
        if self._shut or self.transport.is_closing():
            return
        answer = self._early(self.handler.reject(f"request from {self.remote}", exc),
                             self._route if self.phase in (HEAD, BODY) else None)
        self._closing = True
        if self._busy is not None or self._queue:
            self._queue.append((answer, False, False, 0, 0.0))
            return
        self._write(answer, False, False)

    def _close(self, linger: bool = False) -> None:
        """Close once what was written has gone out. With ``linger`` (an answer given mid-request), first shut
        our side and keep reading and dropping for :data:`LINGER_S`: closing a socket with unread input makes the
        kernel send a reset, and the client would see that instead of the answer."""
        self._discarding = True
        self._closing = True
        transport = self.transport
        if self._shut or transport.is_closing():
            return
        self._shut = True  # nothing more is written
        if linger and transport.can_write_eof():
            self._resume()
            transport.write_eof()
            self.phase = LINGER
            self.deadline = _now() + LINGER_S
        else:
            transport.close()
            self.phase = CLOSING
            self.deadline = _now() + self.config.idle_timeout  # aborted if the client never reads the rest

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()
            if self.phase == HEAD:
                self.deadline = _now() + self.config.read_header_timeout
            elif self.phase == BODY:
                self.deadline = _now() + self.config.read_body_timeout

    # -- deadlines and shutdown --------------------------------------------------------------------------------

    def on_deadline(self) -> None:
        phase = self.phase
        if self._busy is not None:  # we owe an answer: the slow one is us, not the client
            self.deadline = _now() + self.config.read_header_timeout
        elif self._write_paused or phase == CLOSING:  # the client does not read what we wrote
            self.abort()
        elif phase == LINGER:
            self.transport.close()
            self.phase = CLOSING
            self.deadline = _now() + LINGER_S
        elif phase == HEAD:
            self._fatal(RequestTimeout(f"the request's headers did not arrive within "
                                       f"{self.config.read_header_timeout:g} s (httpServerReadHeaderTimeout)"))
            self.deadline = _now() + LINGER_S
        elif phase == BODY:
            self._fatal(RequestTimeout(f"the request's body did not arrive within "
                                       f"{self.config.read_body_timeout:g} s (httpServerReadBodyTimeout)"))
            self.deadline = _now() + LINGER_S
        elif phase == IDLE:
            self._close()
        else:
            self.abort()

    def close_when_idle(self) -> None:
        if self.phase == IDLE and self._busy is None and not self._queue:
            self._close()
        else:
            self._closing = True

    def force_close(self, exc: HttpError) -> None:
        if self._busy is not None:
            if isinstance(self._busy, asyncio.Task):
                self._busy.cancel()  # its _await answers 503 and closes
            # a PendingAnswer settles within its channel's send timeout, or when its source's channel closes
        elif self.phase in (HEAD, BODY):
            self._fatal(exc)
        elif not self.transport.is_closing():
            self._close()

    def abort(self) -> None:
        self.shared.connections.discard(self)
        self.transport.abort()


def _path(target: bytes) -> str:
    """The request target's path, percent-decoded segment by segment (``%2F`` never becomes a separator)."""
    if target[:1] != b"/":
        try:
            target = httptools.parse_url(target).path or b"/"  # absolute form, as proxies send it
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(f"request target {target[:100]!r} is not a path") from None
    query = target.find(b"?")
    if query >= 0:
        target = target[:query]
    if b"%" in target:
        segments = [unquote_to_bytes(segment) for segment in target.split(b"/")]
        if any(b"/" in segment for segment in segments):
            return "\x00"  # matches no endpoint: an encoded '/' is not a path separator
        target = b"/".join(segments)
    try:
        return target.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request path is not UTF-8") from None
