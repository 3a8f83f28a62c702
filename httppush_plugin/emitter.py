"""Hand-off from the event loop to one source's host channel.

eKuiper listens with PULL on ``ipc:///tmp/{ruleId}_{opId}_{instanceId}.ipc`` and takes exactly one record per
message (``host-contract.md`` §4). An nng send blocks until the host takes the message or the send timeout runs out,
so sends never run on the event loop: each source owns a :class:`ChannelSender` whose thread drains a queue of jobs
(one job = the records of one request) and resolves the request's future once per drained batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

import pynng

log = logging.getLogger(__name__)


def channel_url(rule_id: str, op_id: str, instance_id: int | str) -> str:
    """The data channel eKuiper's portable runtime listens on for one source instance."""
    return f"ipc:///tmp/{rule_id}_{op_id}_{instance_id}.ipc"


class DeliveryError(Exception):
    """Part of a job was not handed over. ``delivered`` records went out before the failure."""

    def __init__(self, delivered: int, reason: str) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason


_Job = tuple[list[bytes], "asyncio.Future[int]", asyncio.AbstractEventLoop]


class ChannelSender:
    """Owns one PUSH socket dialled to the host and the thread that sends on it.

    Example (on the event loop): ``delivered = await sender.submit([b'{"message":{"a":1},"meta":{}}'])``.
    """

    def __init__(self, url: str, send_timeout_ms: int, label: str = "") -> None:
        self.url = url
        self.label = label or url
        self._socket = pynng.Push0(send_timeout=send_timeout_ms)
        try:
            self._socket.dial(url, block=True)
        except pynng.NNGException:
            self._socket.close()
            raise
        self._jobs: deque[_Job] = deque()
        self._wakeup = threading.Condition(threading.Lock())
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sender {self.label}", daemon=True)
        self._thread.start()

    def submit(self, payloads: list[bytes]) -> asyncio.Future[int]:
        """Queue ``payloads`` (one host message each); the future gives the count sent, or DeliveryError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._wakeup:
            if self._closed:
                future.set_exception(DeliveryError(0, f"source {self.label} is stopping"))
                return future
            self._jobs.append((payloads, future, loop))
            self._wakeup.notify()
        return future

    def close(self) -> None:
        """Stop taking jobs, fail what is queued, close the socket (which also ends a send that is blocked)."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._socket.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._jobs and not self._closed:
                    self._wakeup.wait()
                batch = list(self._jobs)
                self._jobs.clear()
                closed = self._closed
            if closed:
                self._resolve([(fut, loop, 0, f"source {self.label} is stopping") for _, fut, loop in batch])
                return
            self._resolve([(fut, loop, *self._send(payloads)) for payloads, fut, loop in batch])

    def _send(self, payloads: list[bytes]) -> tuple[int, str | None]:
        send = self._socket.send
        sent = 0
        try:
            for payload in payloads:
                send(payload)
                sent += 1
        except pynng.Timeout:
            return sent, f"the host did not take records for {self.label} within the send timeout"
        except pynng.NNGException as exc:
            return sent, f"the host channel of {self.label} failed: {exc}"
        return sent, None

    @staticmethod
    def _resolve(results: list[tuple[asyncio.Future[int], asyncio.AbstractEventLoop, int, str | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for fut, loop, sent, error in results:
            by_loop.setdefault(loop, []).append((fut, sent, error))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _settle(items: list[tuple[asyncio.Future[int], int, str | None]]) -> None:
    for fut, sent, error in items:
        if fut.done():
            continue
        if error is None:
            fut.set_result(sent)
        else:
            fut.set_exception(DeliveryError(sent, error))
