"""Deliver, what is not the common case: a source whose channel is not attached yet, and what each source got when
not every record reached every source; and the success answers (:func:`success`), made once and shared.

A send (``app.Exchange._deliver``) completes at once (the kernel took every byte), later (a
:class:`~.delivery.Delivery` that settles within the channel's send timeout), or fails at once
(:class:`~.delivery.DeliveryError`: backlog full, channel gone). A source that was configured but whose ``open()`` has
not attached the host's channel yet is waited for, up to :data:`ATTACH_TIMEOUT_S`.

Example: ``summarize(outcomes)`` → ``({"rule r1 stream s instance 0": 3}, ["…: the host closed the channel"])``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .answers import Answer
from .delivery import Delivery, DeliveryError
from .framing import Frames
from .routing import Subscription

#: How long a request waits for a source that was configured but whose ``open()`` has not attached its channel yet.
ATTACH_TIMEOUT_S = 5.0

#: What became of one source's frames: None (all in the kernel), a Delivery still waiting, or the error.
Outcome = tuple[Subscription, Frames, Delivery | DeliveryError | None]
Framed = list[tuple[Frames, list[Subscription]]]


def summarize(outcomes: list[Outcome]) -> tuple[dict[str, int], list[str]]:
    """Once no outcome is pending: records each source got (by its label), and why some got fewer than sent."""
    delivered: dict[str, int] = {}
    reasons: list[str] = []
    for sub, frames, outcome in outcomes:
        error = outcome.error if isinstance(outcome, Delivery) else outcome
        if error is None:
            delivered[sub.label] = len(frames)
        else:
            delivered[sub.label] = error.delivered
            reasons.append(str(error))
    return delivered, reasons


def send_when_attached(sub: Subscription, frames: Frames, then: Callable[[Delivery], None] | None = None) -> Delivery:
    """The source was configured, but its ``open()`` has not attached the host channel yet: wait for it."""
    delivery = Delivery(frames, 0, 0, then)

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


#: (status, records, sources) → the success answer: shared, never changed (:meth:`Exchange._finish` makes new ones)
SUCCESS: dict[tuple[int, int, int], Answer] = {}


def success(status: int, accepted: int, sources: int) -> Answer:
    """2xx ``{"accepted": n, "sources": m}`` (204: no body); the common ones are made once."""
    key = (status, accepted, sources)
    answer = SUCCESS.get(key)
    if answer is None:
        answer = Answer(status, b"" if status == 204 else b'{"accepted":%d,"sources":%d}' % (accepted, sources))
        if accepted <= 1000 and sources <= 8:
            SUCCESS[key] = answer
    return answer
