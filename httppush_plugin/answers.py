"""What the server says: an :class:`Answer`, the HTTP errors, :func:`error_answer`, the one place where an
exception becomes an answer, and :class:`RateLimitedLog`, the warning a refusal leaves in eKuiper's log.

Every stage of a request raises an :class:`HttpError` subclass (or a decoder's error, which is one too) with a message
that names the problem; nothing else builds an error response. :class:`Later` is an answer that is not known yet: the
protocol registers what to do with it, and whoever owes it resolves it, on the event loop, without a task.

Example: ``error_answer(TooLarge("body is over 10 bytes"))`` → ``Answer(413, b'{"error":"body is over 10 bytes"}')``.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait before retrying a 503 or 409.
RETRY_AFTER_S = 1
#: What may not reach a log line as it is: C0 and C1 controls, DEL and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` for a log line: every control character escaped (``\\n`` → ``\\x0a``), so that nothing a client
    sends (a path with ``%0a``, a header value) can start a forged line in eKuiper's log or colour a terminal. The one
    helper for every client-controlled string that is logged."""
    return text if text.isprintable() else _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                                                          else f"\\u{ord(m[0]):04x}", text)


class Answer:
    """What the connection writes: status, body (JSON unless ``content_type`` says otherwise), extra headers.

    ``close``: close the connection after this answer. An answer decided from a request's head alone (before its
    body) with ``close`` set is written at once, and the body is never read.

    Treat an answer as a value once it is given: common ones are shared (the application's success answers), so a
    changed one is a new one."""

    __slots__ = ("status", "body", "headers", "content_type", "close", "wire")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                 content_type: str | None = None, close: bool = False) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type
        self.close = close
        #: (Date header, bytes): its encoding as last written (``wire.encode``), for an answer written many times
        self.wire: tuple[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:200]!r}, {self.headers!r})"


class Later:
    """An answer still being worked out (records on their way to eKuiper, a large body in a worker thread).

    :meth:`then` runs a function with the answer as soon as it is resolved, synchronously, on the loop;
    :meth:`cancel` asks whoever owes it to give up (the server is stopping) and still answer."""

    __slots__ = ("answer", "_then")

    def __init__(self) -> None:
        self.answer: Answer | None = None
        self._then: Callable[[Answer], None] | None = None

    def then(self, fn: Callable[[Answer], None]) -> None:
        if self.answer is not None:
            fn(self.answer)
        else:
            self._then = fn

    def resolve(self, answer: Answer) -> None:
        if self.answer is not None:
            return
        self.answer = answer
        fn, self._then = self._then, None
        if fn is not None:
            fn(answer)

    def cancel(self) -> None:
        """Nothing to give up by default: deliveries settle within their channel's send timeout."""


class HttpError(Exception):
    """An answer other than success; ``extra`` goes into the JSON body beside ``error``."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra
        self.headers = headers or {}


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    """401: ``challenge`` is the ``WWW-Authenticate`` value (RFC 9110 §11.6.1: every 401 carries one); ``counted``:
    whether the auth backoff counts it as a failure."""

    status = 401

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message, {"WWW-Authenticate": challenge})
        self.counted = True


class Forbidden(HttpError):
    status = 403


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message, {"Allow": ", ".join(allowed)})


class RequestTimeout(HttpError):
    status = 408


class Conflict(HttpError):
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)})


class TooLarge(HttpError):
    status = 413


class UnsupportedMediaType(HttpError):
    status = 415


class Unprocessable(HttpError):
    status = 422


class TooManyRequests(HttpError):
    """429: the client is asked to wait ``retry_after`` seconds (``Retry-After``)."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class HeadersTooLarge(HttpError):
    status = 431


class ServerFault(HttpError):
    """500 for a fault of the server's side that is not a bug here (a user's decoder broke its contract)."""

    status = 500


class Unavailable(HttpError):
    status = 503

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)}, **extra)


class VersionNotSupported(HttpError):
    status = 505


def error_answer(exc: BaseException) -> Answer:
    """The one place that turns an exception into an HTTP answer: status + ``{"error": "..."}``. Anything that is
    not an :class:`HttpError` is a bug: logged with its traceback, answered 500."""
    if isinstance(exc, HttpError):
        return Answer(exc.status, orjson.dumps({"error": str(exc), **exc.extra}), dict(exc.headers) or None)
    # the traceback's frames are code; the exception's text may hold client input: escaped
    log.error("unexpected error while handling a request: %s\nTraceback (most recent call last):\n%s",
              printable(f"{type(exc).__name__}: {exc}"),
              "".join(traceback.format_tb(exc.__traceback__)).rstrip())
    return Answer(500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}))


class RateLimitedLog:
    """Warn about refused requests at most once per ``interval`` seconds, with a count of what was skipped. What is
    logged (the request, the refusal's text) is passed through :func:`printable`."""

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
        log.warning("%s rejected: %s%s", printable(what), printable(str(exc)),
                    f" ({skipped} more rejected since the last warning)" if skipped else "")
