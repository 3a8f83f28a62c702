"""The bytes of one request as the parser reads them: what the connection needs of its head, and its body, held under
the limits on bytes — the head's size and header count (431), the endpoint's body size after any ``Content-Encoding``
is undone and as sent (413), and the server's budget, ``httpServerMaxBuffered`` (503).

Every byte received counts, not only those the parser hands over: chunk sizes, chunk extensions and trailers are
read by llhttp without a callback, so :attr:`RequestReader.received` counts what arrives on the connection while a
request is read, and the connection refuses a request once that passes :attr:`RequestReader.allowed` (the head's
limit, plus the body's limit once the head is known, plus one read's worth of slack: a read may carry the start of
the next pipelined request too).

A :class:`RequestReader` serves one connection for its whole life and reads one request at a time: llhttp calls it for
the request line, each header and each piece of the body, and calls the connection itself for the milestones (message
begins, head complete, message complete). :meth:`RequestReader.take` hands the finished request over and makes the
reader ready for the next one. By the time the body comes, the application has decided: either the request is answered
already (``early``: the body is read and dropped) or an :class:`~.request.Exchange` takes it (``exchange``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools

from .answers import Answer, BadRequest, HeadersTooLarge, HttpError, TooLarge, VersionNotSupported
from .budget import Budget
from .encoding import Inflater, ZstdInflater, inflater_for
from .request import Exchange, RequestHead, target_path

#: Request line plus headers, in bytes; more gets 431.
MAX_HEAD_SIZE = 16 * 1024
#: Header lines in a head (trailers included); more gets 431. Each costs Python objects, whatever its size.
MAX_HEADERS = 100
#: What one read from a connection can carry beyond the request it is counted for (the event loops read at most
#: 256 KiB at a time): slack on :attr:`RequestReader.allowed`, so that no request is refused for its neighbour's bytes.
READ_SLACK = 256 * 1024
#: A body answered from its head (404, 401, 415, …) is read and dropped, keeping the connection, when its
#: ``Content-Length`` is at most this; a larger or chunked one is not read: the connection closes after the answer.
DRAIN_BYTES = 64 * 1024
#: After an answer that closes the connection mid-request, the most of what the client still sends that is read and
#: dropped (so that it reads the answer, not a reset) before the connection is closed regardless.
LINGER_BYTES = 8 * 1024 * 1024
#: Requests parsed ahead of their answers on one connection (pipelined while one is owed, or while the client does not
#: read); one more is refused with 503 and the connection closes after the answers owed.
MAX_QUEUED = 1024

_METHODS = {method.encode(): method for method in ("POST", "PUT", "GET", "HEAD", "OPTIONS")}
_new_head = tuple.__new__  # a RequestHead without the generated __new__'s Python frame: this is once per request


class RequestReader:
    __slots__ = ("budget", "url", "head_size", "headers", "content_type", "content_length", "expect", "encoding",
                 "chunked", "upgrade", "http10", "chunks", "size", "wire_size", "received", "allowed", "inflater",
                 "exchange", "early",
                 # the connection's milestones, called by the parser directly
                 "on_message_begin", "on_headers_complete", "on_message_complete")

    def __init__(self, budget: Budget, on_message_begin: Callable[[], None], on_headers_complete: Callable[[], None],
                 on_message_complete: Callable[[], None]) -> None:
        self.budget = budget
        self.on_message_begin = on_message_begin
        self.on_headers_complete = on_headers_complete
        self.on_message_complete = on_message_complete
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.head_size = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_type = ""
        self.content_length = -1
        self.expect = False  # Expect: 100-continue
        self.encoding = ""  # Content-Encoding
        self.chunked = False  # Transfer-Encoding
        self.upgrade = False  # an Upgrade header: refused at the head
        self.http10 = False  # the request is HTTP/1.0 (set by head())
        self.chunks: list[bytes] = []
        self.size = 0  # body bytes held (inflated), counted in the budget
        self.wire_size = 0  # bytes of a compressed body as received
        self.received = 0  # bytes received on the connection while this request is read (counted by the connection)
        self.allowed = MAX_HEAD_SIZE + READ_SLACK  # the most ``received`` may reach: the head's, then the body's too
        self.inflater: Inflater | ZstdInflater | None = None
        self.exchange: Exchange | None = None  # the application reads this body
        self.early: Answer | None = None  # the answer, decided from the head: the body is dropped

    # -- the parser's callbacks ------------------------------------------------------------------------------

    def on_url(self, part: bytes) -> None:
        self.url += part
        self.head_size += len(part)
        if self.head_size > MAX_HEAD_SIZE:
            raise HeadersTooLarge(f"request line and headers are over {MAX_HEAD_SIZE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_SIZE:
            raise HeadersTooLarge(f"request line and headers are over {MAX_HEAD_SIZE} bytes")
        headers = self.headers
        if len(headers) >= MAX_HEADERS:
            raise HeadersTooLarge(f"the request has over {MAX_HEADERS} header lines")
        headers.append((name, value))
        size = len(name)  # the few names the connection itself needs
        if size == 12 and name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")
        elif size == 14 and name.lower() == b"content-length":
            self.content_length = int(value)  # llhttp has checked the digits
        elif size == 6 and name.lower() == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif size == 16 and name.lower() == b"content-encoding":
            coding = value.decode("latin-1")
            self.encoding = f"{self.encoding}, {coding}" if self.encoding else coding
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.chunked = True
        elif size == 7 and name.lower() == b"upgrade":
            self.upgrade = True

    def on_body(self, chunk: bytes) -> None:
        """Hold a piece of the body (inflated) and count it in the budget. Raises 413, 503, or 400 for a corrupt
        compressed stream."""
        if self.early is not None:
            return  # read and dropped: the answer is already decided
        limit = self.exchange.limit  # type: ignore[union-attr]
        if self.inflater is not None:
            self.wire_size += len(chunk)  # the compressed bytes count too
            if self.wire_size > limit:
                raise TooLarge(f"body is over {limit} bytes compressed, the limit (httpServerMaxBodySize)")
            chunk = self.inflater.feed(chunk, self.size)
            if not chunk:
                return
        size = len(chunk)
        if self.size + size > limit:
            raise TooLarge(f"body is over {limit} bytes, the limit (httpServerMaxBodySize)")
        if not self.budget.take(size):
            raise self.budget.full()
        self.size += size
        self.chunks.append(chunk)

    # -- the connection's side -------------------------------------------------------------------------------

    def head(self, parser: httptools.HttpRequestParser, remote: str, peercert: dict[str, Any] | None) -> RequestHead:
        """The complete head, as the application gets it. Raises 400 (no HTTP version; an upgrade, whose body llhttp
        would not hand over as a body) or 505 (a version other than 1.0 and 1.1)."""
        version = parser.get_http_version()
        self.http10 = version == "1.0"
        if version != "1.1" and not self.http10:
            if version == "0.9":
                raise BadRequest("the request line has no HTTP version; send e.g. 'POST /path HTTP/1.1'")
            raise VersionNotSupported(f"HTTP/{version} is not supported; use HTTP/1.1")
        if self.upgrade or parser.should_upgrade():
            raise BadRequest("protocol upgrades (the 'Upgrade' header) are not supported; send plain HTTP/1.1 "
                             "without 'Upgrade'")
        raw = parser.get_method()
        return _new_head(RequestHead, (_METHODS.get(raw) or raw.decode("ascii"), target_path(self.url), self.url,
                                       self.headers, self.content_type, remote, self.has_body, peercert))

    def malformed(self, exc: httptools.HttpParserError) -> BadRequest:
        """The 400 for what llhttp could not parse."""
        if self.url == b"*" and "PRI" in str(exc):  # PRI * HTTP/2.0: the HTTP/2 connection preface
            return BadRequest("HTTP/2 is not supported (the connection began with HTTP/2's preface); use HTTP/1.1")
        return BadRequest(f"malformed HTTP request: {exc}")

    @property
    def has_body(self) -> bool:
        return self.content_length > 0 or (self.content_length < 0 and self.chunked)

    def expect_body(self, exchange: Exchange) -> None:
        """The application takes the body: refuse at once a body its ``Content-Length`` shows to be over the limit
        (413) or the budget (503) — before a ``100 Continue``, not partway through the body — then set up its inflater
        (an unsupported encoding is answered 415, and the body is not read)."""
        self.exchange = exchange
        limit = exchange.limit
        if self.content_length > limit:
            raise TooLarge(f"body is {self.content_length} bytes; the limit is {limit} bytes (httpServerMaxBodySize)")
        if self.content_length > 0 and not self.budget.fits(self.content_length):
            raise self.budget.full()
        self.allowed = MAX_HEAD_SIZE + limit + READ_SLACK
        if self.encoding:
            try:  # inflated as it arrives, in on_body(): bounded by the limit after inflation
                self.inflater = inflater_for(self.encoding, limit, self.budget)
            except HttpError as exc:
                self.early = exchange.failed(exc)

    def drop_body(self) -> bool:
        """A body answered from its head: whether it is small enough to read and drop, keeping the connection (its
        ``Content-Length`` is at most :data:`DRAIN_BYTES`; then no more may be received). If not, it is not read."""
        if self.chunked or self.content_length > DRAIN_BYTES:
            return False
        self.allowed = MAX_HEAD_SIZE + DRAIN_BYTES + READ_SLACK
        return True

    def refusal(self, exc: BaseException) -> Answer | None:
        """The answer to this request when it cannot go on (``exc``): the one decided from its head already, or its
        exchange's; ``None`` before it has either."""
        if self.early is not None:
            return self.early
        return self.exchange.failed(exc) if self.exchange is not None else None

    def over(self) -> HttpError:
        """The refusal for a request whose bytes received passed :attr:`allowed`."""
        if self.exchange is None and self.early is None:
            return HeadersTooLarge(f"request line and headers are over {MAX_HEAD_SIZE} bytes")
        return TooLarge(f"the request is over {self.allowed - READ_SLACK} bytes as sent (head, chunk sizes, chunk "
                        "extensions and trailers included); the body's limit is httpServerMaxBodySize")

    def take(self) -> tuple[Answer | tuple[Exchange, bytes], int]:
        """The finished request — its early answer, or its exchange and whole body — and the body bytes it holds in
        the budget; the reader is ready for the next request. A truncated compressed stream is 400."""
        if self.inflater is not None and self.early is None:
            self.inflater.finish()
        item: Answer | tuple[Exchange, bytes]
        if self.early is not None:
            item = self.early
        else:
            chunks = self.chunks
            item = (self.exchange, chunks[0] if len(chunks) == 1 else b"".join(chunks))  # type: ignore[assignment]
        held = self.size + (self.inflater.release() if self.inflater is not None else 0)
        # ready for the next request (as _reset(), inline: this runs once per request)
        self.url, self.head_size, self.headers, self.content_type, self.content_length = b"", 0, [], "", -1
        self.expect, self.encoding, self.chunked, self.chunks, self.size, self.wire_size = False, "", False, [], 0, 0
        self.upgrade, self.received, self.allowed = False, 0, MAX_HEAD_SIZE + READ_SLACK
        self.inflater = self.exchange = self.early = None
        return item, held

    def drop(self) -> int:
        """The request is given up mid-way: its partial body is let go; returns the bytes it held in the budget."""
        held, self.size, self.chunks = self.size, 0, []
        return held + (self.inflater.release() if self.inflater is not None else 0)  # a zstd decoder's window

