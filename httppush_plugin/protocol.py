"""HTTP/1.1 on ``httptools`` (llhttp): one connection's parsing, time limits, keep-alive, pipelining order, flow
control and ``Expect: 100-continue``. The application is called twice per request (``request.py``): ``app.head(head)``
when the head is complete, ``exchange.body(data)`` when the body is. The limits on bytes are :mod:`.incoming`'s.

Most requests are answered inside the parser's callback. An answer that must wait is a :class:`~.answers.Later`;
requests parsed behind it are queued and reading pauses, so answers go out in request order. A client that does not
read its answers is neither answered nor read from.

A request that cannot go on — malformed (400), over a limit (413, 431, 503), too slow (408), or answered from its head
with a body not worth reading — is answered and the connection closed, its body unread. First the connection
"lingers": what the client still sends is dropped for a while, so that it reads the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httptools

from .answers import Answer, HttpError, Later, RequestTimeout, Unavailable
from .connections import ConnectionSet
from .incoming import LINGER_BYTES, MAX_QUEUED, RequestReader
from .request import Exchange
from .wire import CONTINUE, encode

#: After an answer that closes the connection mid-request, how long what the client still sends is read and dropped
#: (and :data:`~.incoming.LINGER_BYTES` at most) before the connection is closed regardless.
LINGER_S = 2.0
_INF = float("inf")
_now = time.monotonic

# Phases of a connection (what its deadline means).
IDLE, HEAD, BODY, BUSY, LINGER, CLOSING = range(6)

#: A request waiting for its turn to be answered: (answer or (exchange, body), keep-alive, HEAD, body bytes held)
Queued = tuple[Answer | tuple[Exchange, bytes], bool, bool, int]


class _Stop(Exception):
    """Raised from a parser callback once the request is answered: stops parsing what follows."""


class HttpConnection(asyncio.Protocol):
    def __init__(self, shared: ConnectionSet) -> None:
        self.shared = shared
        self.app = shared.app
        self.config = config = shared.config
        self._timeouts = ((config.read_header_timeout, "headers", "httpServerReadHeaderTimeout"),
                          (config.read_body_timeout, "body", "httpServerReadBodyTimeout"))
        #: the request being read; the parser calls it for the bytes and this connection for the milestones
        self.reader = RequestReader(shared.budget, self.on_message_begin, self.on_headers_complete,
                                    self.on_message_complete)
        self.parser = httptools.HttpRequestParser(self.reader)
        self.transport: Any = None
        self.remote = ""
        self.peercert: dict[str, Any] | None = None
        self.phase, self.deadline = IDLE, _INF
        self.born, self.requests = _now(), 0  # when accepted; requests begun on it (httpServerMaxConnection…)
        self._busy: Later | None = None  # an answer we owe and are waiting for
        self._owed = (True, False, 0)  # how it is written: keep-alive, HEAD, body bytes held in the budget
        self._queue: deque[Queued] = deque()  # requests parsed while an answer was owed
        self._http10 = False  # the last request was HTTP/1.0: a kept-alive answer says so
        self._head_only = False  # the last request was HEAD: its answer has no body
        self._closing = False  # answer what is in flight, then close
        self._discarding = False  # input is no longer parsed (after a fatal error, while lingering)
        self._dropped = 0  # bytes received and dropped since then
        self._shut = False  # our side is closed or closing: nothing more may be written
        self._paused = self._write_paused = False
        self._continue = False  # a head that asked for 100 Continue waits until the answers owed before it are out

    # -- asyncio callbacks ------------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""
        self.peercert = transport.get_extra_info("peercert")  # TLS with client certificates
        self.deadline = _now() + min(self.config.read_header_timeout, self.config.idle_timeout)
        if not self.shared.add(self):
            self._fatal(Unavailable(f"the server has {len(self.shared.connections) - 1} connections open, its "
                                    "limit (httpServerMaxConnections)"))
        elif self.shared.stopping:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.discard(self)
        held = self.reader.drop() + sum(queued[3] for queued in self._queue)
        if self._busy is not None:  # its answer, when it comes, has nowhere to go
            held += self._owed[2]
            self._owed = (False, False, 0)
        self.shared.budget.give(held)
        self._queue.clear()
        self.phase, self.deadline = CLOSING, _INF

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:  # enough for the client to see the answer; if it is still owed, wait
                self._end_linger() if self.phase == LINGER else self._pause()
            return
        reader = self.reader
        reader.received += len(data)  # every byte, those llhttp reads without a callback too
        if reader.received > reader.allowed:
            self._fatal(reader.over())
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Stop):
                self._fatal(cause if isinstance(cause, Exception) else exc)
        except httptools.HttpParserError as exc:
            self._fatal(reader.malformed(exc))

    def eof_received(self) -> bool | None:
        # The client is done sending. Answers still owed go out, then the connection closes.
        if self.phase == LINGER:  # it read our answer and closed: lingering is over
            self._end_linger()
        elif self._idle():
            self._close()
        else:
            self._closing = True
        return True

    # -- flow control: a client that does not read its answers is not read from --------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()
        self._not_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._go_on()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()
            if self.phase in (HEAD, BODY):
                self.deadline = _now() + self._timeouts[self.phase == BODY][0]

    # -- parser callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._discarding:  # what follows a request that closed the connection is never handled
            raise _Stop
        self.phase = HEAD
        self.requests += 1
        self.deadline = _now() + self.config.read_header_timeout
        if self._busy is not None or self._queue:  # behind an owed answer: its unread bytes wait in the kernel
            self._pause()

    def on_headers_complete(self) -> None:
        reader = self.reader
        head = reader.head(self.parser, self.remote, self.peercert)
        self._http10 = http10 = reader.http10
        self._head_only = head.method == "HEAD"
        has_body = head.has_body
        decided = self.app.head(head)  # the application's first call: answer now, or read the body
        if isinstance(decided, Answer):
            reader.early = decided
        else:
            reader.expect_body(decided)
        expect = reader.expect and not http10
        if expect and not self._idle():  # its 100 (or early answer) follows those owed (reading paused at its begin)
            self._continue = True
            expect = False
        early = reader.early
        if early is not None and has_body and (early.close or expect or not reader.drop_body()):
            # Answered now and closed: the client need not send the body, and what it sends anyway costs at most
            # LINGER_S and LINGER_BYTES of reading, not a whole body's.
            self._fatal(early)
            raise _Stop
        self.phase, self.deadline = BODY, _now() + self.config.read_body_timeout
        if expect and early is None:
            self.transport.write(CONTINUE)

    def on_message_complete(self) -> None:
        item, held = self.reader.take()
        self._continue = False  # its body came whole without the 100: none is owed
        self.phase, self.deadline = BUSY, _INF
        keep_alive = self.parser.should_keep_alive()
        queue = self._queue
        if self._busy is None and not queue and not self._write_paused:
            self._process(item, keep_alive, self._head_only, held)
        else:  # behind an owed answer, or the client is not reading its answers
            queue.append((item, keep_alive, self._head_only, held))
            self._pause()
            self._not_reading()
            if len(queue) >= MAX_QUEUED:
                self._fatal(Unavailable(f"over {MAX_QUEUED} requests were sent ahead of their answers; read them"))
                raise _Stop

    # -- answering --------------------------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No answer is owed ahead of the request being parsed."""
        return self._busy is None and not self._queue

    def _process(self, item: Answer | tuple[Exchange, bytes], keep_alive: bool, head_only: bool, held: int) -> None:
        if isinstance(item, Answer):
            self._write(item, keep_alive, head_only)
            return
        exchange, data = item
        del item
        try:
            result = exchange.body(data)  # the application's second call
        except Exception as exc:  # a fault below it: answered by the exchange, and its bytes given back
            result = exchange.failed(exc)
        del data
        if isinstance(result, Answer):
            self.shared.budget.give(held)
            self._write(result, keep_alive, head_only)
            return
        # Reading goes on while one answer is owed: a client waiting for it sends nothing more, and pausing and
        # resuming would cost two system calls per request. A request that begins behind it pauses reading.
        self._busy = result
        self._owed = (keep_alive, head_only, held)
        result.then(self._answered)

    def _answered(self, answer: Answer) -> None:
        """The answer we were waiting for: write it, then go on with what was queued behind it."""
        keep_alive, head_only, held = self._owed
        self._busy = None
        self.shared.budget.give(held)
        self._write(answer, keep_alive, head_only)
        self._go_on()

    def _go_on(self) -> None:
        """Answer what was queued, as long as nothing is owed and the client reads; then the 100 Continue a head may
        be waiting for; then read again."""
        queue = self._queue
        while queue and self._busy is None and not self._shut and not self._write_paused:
            self._process(*queue.popleft())
        if self._continue and self._idle():  # the head that asked for 100 Continue while answers were owed is next
            self._continue = False
            if self.phase == BODY and not self._shut and not self.transport.is_closing():
                if self.reader.early is not None:  # answered from its head and closed: it need not send the body
                    self._fatal(self.reader.early)
                else:
                    self.transport.write(CONTINUE)
        self._not_reading()
        if self._idle() and not self._write_paused:
            self._resume()

    def _not_reading(self) -> None:
        """A client that does not read its answers is given up on if it still has not read within the idle timeout
        (while an answer is owed, the slow one is us)."""
        if self._write_paused and self._busy is None:
            self.deadline = _now() + self.config.idle_timeout

    def _write(self, answer: Answer, keep_alive: bool, head_only: bool) -> None:
        transport = self.transport
        if self._shut or transport.is_closing():  # answers owed after a "Connection: close" are dropped
            return
        close = answer.close or not keep_alive or self.shared.stopping or (self._closing and not self._queue)
        if not close and self.shared.retire(self):  # draining, or past its age or requests: what was sent first
            self._closing = True
            close = not self._queue and self.phase not in (HEAD, BODY)
        transport.write(encode(answer, self.shared.date, close, self._http10, head_only))
        if close:
            self._close(linger=self._discarding)
        elif self.phase == BUSY and self._busy is None and not self._queue:
            self.phase, self.deadline = IDLE, _now() + self.config.idle_timeout

    def _fatal(self, what: BaseException | Answer) -> None:
        """A request that cannot go on: answer it (after what is owed before it), then close, lingering. ``what``:
        the answer decided already, or what went wrong (the application turns it into the answer)."""
        self._discarding = True
        reader = self.reader if self.phase in (HEAD, BODY) else None
        if reader is not None:  # the partial body is dropped
            self.shared.budget.give(reader.drop())
        if self._shut or self.transport.is_closing():
            return
        if not isinstance(what, Answer):
            what = (reader.refusal(what) if reader is not None else None) or self.app.failed(what, None, self.remote)
        self._closing = True
        if not self._idle():
            self._queue.append((what, False, False, 0))
            return
        self._write(what, False, False)

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
        if linger and self._dropped <= LINGER_BYTES and transport.can_write_eof():
            self._resume()
            transport.write_eof()
            self.phase, self.deadline = LINGER, _now() + LINGER_S
        else:  # aborted if the client never reads the rest
            transport.close()
            self.phase, self.deadline = CLOSING, _now() + self.config.idle_timeout

    # -- deadlines and shutdown (called by the ConnectionSet) --------------------------------------------------

    def on_deadline(self) -> None:
        phase = self.phase
        if self._busy is not None:  # we owe an answer: the slow one is us, not the client
            self.deadline = _now() + self.config.read_header_timeout
        elif self._write_paused or phase == CLOSING:  # the client does not read what we wrote
            self.abort()
        elif phase == LINGER:
            self._end_linger()
        elif phase in (HEAD, BODY):
            limit, what, setting = self._timeouts[phase == BODY]
            self._fatal(RequestTimeout(f"the request's {what} did not arrive within {limit:g} s ({setting})"))
            self.deadline = _now() + LINGER_S
        elif phase == IDLE:
            self._close()
        else:
            self.abort()

    def _end_linger(self) -> None:
        self.transport.close()
        self.phase, self.deadline = CLOSING, _now() + LINGER_S

    def close_when_idle(self) -> None:
        if self.phase == IDLE and self._idle():
            self._close()
        else:
            self._closing = True

    def force_close(self, exc: HttpError) -> None:
        if self._busy is not None:  # a large body's task answers 503; deliveries settle within the send timeout
            self._busy.cancel()
        elif self.phase in (HEAD, BODY):
            self._fatal(exc)
        elif not self.transport.is_closing():
            self._close()

    def abort(self) -> None:
        self.shared.discard(self)
        self.transport.abort()
