"""What the HTTP protocol and the application hand each other: the request's head, and the two calls.

The protocol (``protocol.py``) knows HTTP/1.1 and nothing of routes, auth, CORS, idempotency or metrics. For each
request it calls the application twice:

1. ``app.head(head)`` when the head is complete → an :class:`~.answers.Answer` (refused, or answered without a body:
   404, 401, health, …) or an :class:`Exchange`: "read the body, at most ``exchange.limit`` bytes";
2. ``exchange.body(data)`` when the body is complete → an ``Answer`` or a :class:`~.answers.Later`.

A request that fails while its body is being read (too large, too slow, malformed) gets ``exchange.failed(exc)``
instead of step 2; one that fails before it has a head (a malformed request line, a connection over the limit) gets
``app.failed(exc)``. Each returns the answer to write.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

import httptools

from .answers import Answer, BadRequest, Later

Headers = list[tuple[bytes, bytes]]


class RequestHead(NamedTuple):
    """One request's head, as received. ``path`` is percent-decoded (``%2F`` never becomes a separator); ``target``
    is the request target as sent (path and query); ``headers`` are ``(name, value)`` bytes in order; ``has_body``
    says whether a body follows (a ``Content-Length`` above 0, or chunked)."""

    method: str
    path: str
    target: bytes
    headers: Headers
    content_type: str
    remote: str
    has_body: bool = False
    #: the verified TLS client certificate (``ssl.SSLSocket.getpeercert()``), when the client sent one
    peercert: dict[str, Any] | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case bytes, e.g. ``b"authorization"``), or ``None``."""
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None


class Exchange(Protocol):
    """The application's side of one request whose body the protocol reads."""

    #: the most bytes the body may have, after any ``Content-Encoding`` is undone
    limit: int

    def body(self, data: bytes) -> Answer | Later:
        """The body is complete: its answer, now or later."""
        ...

    def failed(self, exc: BaseException) -> Answer:
        """The body could not be read (``exc``: 413, 408, 400, 503); the answer to send."""
        ...


class Application(Protocol):
    def head(self, head: RequestHead) -> Answer | Exchange:
        ...

    def failed(self, exc: BaseException, head: RequestHead | None = None, remote: str = "") -> Answer:
        """A request refused before it reached an endpoint: it has no head (malformed, too slow to send it; the peer
        is ``remote``), or its connection is over the limit."""
        ...


def target_path(target: bytes) -> str:
    """The request target's path, percent-decoded segment by segment (``%2F`` never becomes a separator: such a path
    is ``"\\x00"``, which matches no endpoint). Raises :class:`~.answers.BadRequest` for a target that is not a path
    or a path that is not UTF-8."""
    # Byte tests as ints (0x2F '/', 0x3F '?', 0x25 '%'): a bytes needle costs several times as much, once per request.
    if not target or target[0] != 0x2F:
        try:
            target = httptools.parse_url(target).path or b"/"  # absolute form, as proxies send it
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(f"request target {target[:100]!r} is not a path") from None
    if 0x3F in target:
        target = target[:target.index(0x3F)]
    if 0x25 in target:
        segments = [unquote_to_bytes(segment) for segment in target.split(b"/")]
        if any(b"/" in segment for segment in segments):
            return "\x00"  # matches no endpoint: an encoded '/' is not a path separator
        target = b"/".join(segments)
    try:
        return target.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request path is not UTF-8") from None
