"""A request's frames on their way into one host channel: a :class:`Delivery` completes once the kernel has taken its
last byte — the point at which an nng send completes — or fails with a :class:`DeliveryError` that says how many whole
records went out before the failure.

Callbacks run on the loop, synchronously, the moment the outcome is known (no task, no extra loop iteration);
:meth:`Delivery.wait` is there for code that would rather await it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .framing import Frames

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """Part of a request's records was not handed over; ``delivered`` whole records went out before the failure."""

    def __init__(self, delivered: int, reason: str) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason


class Delivery:
    """A send still waiting for the kernel to take its bytes: it completes with ``error`` None, or fails with a
    :class:`DeliveryError`. Callbacks run on the loop, synchronously, the moment the outcome is known (no task, no
    extra loop iteration); :meth:`wait` is there for code that would rather await it."""

    __slots__ = ("frames", "start", "end", "done", "error", "_then", "_more")

    def __init__(self, frames: Frames, start: int, end: int, then: Callable[[Delivery], None] | None = None) -> None:
        self.frames, self.start, self.end = frames, start, end
        self.done = False
        self.error: DeliveryError | None = None
        self._then = then  # the one callback a delivery has, as a rule
        self._more: list[Callable[[Delivery], None]] | None = None

    def add_callback(self, fn: Callable[[Delivery], None]) -> None:
        if self.done:
            fn(self)
        elif self._then is None:
            self._then = fn
        else:
            self._more = [*(self._more or ()), fn]

    def wait(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(delivery: Delivery) -> None:
            if not future.done():
                if delivery.error is None:
                    future.set_result(None)
                else:
                    future.set_exception(delivery.error)

        self.add_callback(settle)
        return future

    def complete(self) -> None:
        self._settle(None)

    def fail(self, sent: int, reason: str) -> None:
        self._settle(DeliveryError(self.frames.count_within(max(0, sent - self.start)), reason))

    def fail_with(self, error: DeliveryError) -> None:
        self._settle(error)

    def _settle(self, error: DeliveryError | None) -> None:
        if self.done:
            return
        self.done, self.error = True, error
        first, more, self._then, self._more = self._then, self._more, None, None
        for fn in (first, *more) if more else (first,):
            if fn is None:
                continue
            try:
                fn(self)
            except Exception:  # one broken continuation must not keep the others from their answers
                log.exception("a delivery callback failed")
