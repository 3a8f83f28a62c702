"""One request, straight through: look up → size → read → decode → deliver → answer.

Nothing is answered 2xx before every record has been handed to the host channel of every subscribed source, and
a body that any subscribed source cannot decode is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from .decoders import CustomDecoderFault, DecodeError
from .emitter import Batch, ChannelSender, DeliveryError
from .routing import EndpointTable, Subscription

log = logging.getLogger(__name__)

#: How long a request waits for a source that was configured but whose ``open()`` has not attached its channel yet.
ATTACH_TIMEOUT_S = 5.0


class HttpError(Exception):
    status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra
        self.headers: dict[str, str] = {}


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.headers = {"Allow": ", ".join(allowed)}


class BadBody(HttpError):
    status = 400


class TooLarge(HttpError):
    status = 413


class Unavailable(HttpError):
    status = 503


_JSON = {"Content-Type": "application/json"}


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers={**_JSON, **headers} if headers else _JSON)


def error_response(exc: BaseException) -> web.Response:
    """The one place that turns an exception into an HTTP answer: status + ``{"error": "..."}``."""
    if isinstance(exc, HttpError):
        return json_response(exc.status, {"error": str(exc), **exc.extra}, exc.headers)
    if isinstance(exc, DecodeError):
        return json_response(400, {"error": str(exc)})
    if isinstance(exc, CustomDecoderFault):
        return json_response(500, {"error": str(exc)})
    log.exception("unexpected error while handling a request")
    return json_response(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})


class _RateLimitedLog:
    """Warn about rejected requests at most once per ``interval`` seconds, with a count of what was skipped."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = 0.0
        self._skipped = 0

    def warn(self, request: web.BaseRequest, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        skipped, self._skipped, self._last = self._skipped, 0, now
        log.warning("%s %s from %s rejected: %s%s", request.method, request.path, request.remote, exc,
                    f" ({skipped} more rejected since the last warning)" if skipped else "")


class PushHandler:
    """The aiohttp low-level handler for every endpoint of the shared server."""

    def __init__(self, table: EndpointTable, max_body_size: int) -> None:
        self.table = table
        self.max_body_size = max_body_size
        self._reject_log = _RateLimitedLog()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except Exception as exc:  # every failure becomes an answer: never a dropped connection
            if isinstance(exc, HttpError | DecodeError):
                self._reject_log.warn(request, exc)
            return error_response(exc)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        route = self.table.lookup(path, method)
        if route is None:
            allowed = self.table.methods(path)
            if allowed:
                raise MethodNotAllowed(f"method {method} is not served on {path}; use {' or '.join(allowed)}",
                                       allowed)
            raise NotFound(f"no source listens on {path}")
        body = await self._read_body(request)

        meta = orjson.dumps({"method": method, "path": path, "remoteAddr": request.remote or "",
                             "contentType": request.headers.get("Content-Type", "")})
        # decode for every distinct decoder before sending anything: one bad decoding refuses the whole body
        batches = [(Batch(_envelopes(decoder.messages(body, decoder.decode(body)), meta)), subs)
                   for decoder, subs in route.groups]

        deliveries = [(sub, batch) for batch, subs in batches for sub in subs]
        results: list[BaseException | int]
        if len(deliveries) == 1:  # the common case: no task per delivery
            try:
                results = [await self._deliver(*deliveries[0])]
            except DeliveryError as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*(self._deliver(sub, batch) for sub, batch in deliveries),
                                           return_exceptions=True)
        if any(isinstance(res, BaseException) for res in results):
            delivered = {sub.label: (res.delivered if isinstance(res, DeliveryError) else
                                     0 if isinstance(res, BaseException) else res)
                         for (sub, _), res in zip(deliveries, results)}
            reasons = "; ".join(str(res) for res in results if isinstance(res, BaseException))
            raise Unavailable(f"records were not all delivered: {reasons}", delivered=delivered)
        accepted = max((len(batch) for batch, _ in batches), default=0)
        return json_response(200, {"accepted": accepted, "sources": len(deliveries)})

    async def _deliver(self, sub: Subscription, batch: Batch) -> int:
        return await (sub.sender or await self._wait_attached(sub)).deliver(batch)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.max_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise TooLarge(f"body is {length} bytes; the limit is {limit} bytes (httpServerMaxBodySize)")
        chunks = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body is over {limit} bytes, the limit (httpServerMaxBodySize)")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _wait_attached(sub: Subscription) -> ChannelSender:
        try:
            await asyncio.wait_for(sub.ready.wait(), ATTACH_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Unavailable(f"{sub.label} is not ready: the host has not opened it") from None
        if sub.sender is None:
            raise Unavailable(f"{sub.label} stopped before it was ready")
        return sub.sender


_PREFIX = b'{"message":'


def _envelopes(messages: list[bytes], meta: bytes) -> list[bytes]:
    """``{"message": <record>, "meta": {...}}``, the shape eKuiper's portable source reads (runtime/source.go)."""
    suffix = b',"meta":' + meta + b"}"
    return [_PREFIX + message + suffix for message in messages]
