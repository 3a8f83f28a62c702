"""Hand-off from the event loop to one source's host channel.

eKuiper listens with a PULL socket on ``ipc:///tmp/{ruleId}_{opId}_{instanceId}.ipc`` and takes exactly one record per
message (``host-contract.md`` §4). Instead of one blocking ``pynng`` send per record (≈ 30 µs and a thread hop each),
this module speaks the SP-over-IPC wire protocol that nng and eKuiper's mangos both implement, on an asyncio Unix
socket owned by the event loop:

* after connecting, each side sends the 8-byte header ``00 'S' 'P' 00 <protocol:u16 BE> 00 00`` — PUSH is 0x50,
  PULL 0x51 (mangos ``transport/conn.go``);
* then every message is ``01 <length:u64 BE> <body>`` (mangos ``transport/connipc_posix.go``).

All records of a request go out in one ``write``. A request is handed over once its last byte has left our buffer
for the kernel — the same point at which an nng send completes. If the host does not take the bytes within the send
timeout, the connection is aborted (so nothing reported as undelivered can arrive later) and the request fails with
the number of records that did go out; the next request dials again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

PUSH_HEADER = b"\x00SP\x00\x00\x50\x00\x00"
PULL_PROTOCOL = 0x51
_FRAME_TAG = b"\x01"


def channel_url(rule_id: str, op_id: str, instance_id: int | str) -> str:
    """The data channel eKuiper's portable runtime listens on for one source instance."""
    return f"ipc:///tmp/{rule_id}_{op_id}_{instance_id}.ipc"


class DeliveryError(Exception):
    """Part of a batch was not handed over. ``delivered`` records went out before the failure."""

    def __init__(self, delivered: int, reason: str) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason


class Batch:
    """Records framed once, for every source that receives the same messages."""

    __slots__ = ("data", "sizes")

    def __init__(self, payloads: list[bytes]) -> None:
        self.sizes = [len(p) + 9 for p in payloads]
        self.data = b"".join([_FRAME_TAG + len(p).to_bytes(8, "big") + p for p in payloads])

    def __len__(self) -> int:
        return len(self.sizes)

    def count_within(self, nbytes: int) -> int:
        """How many whole frames fit in the first ``nbytes`` bytes of this batch."""
        count = 0
        for size in self.sizes:
            nbytes -= size
            if nbytes < 0:
                break
            count += 1
        return count


class _Pipe(asyncio.Protocol):
    """One connection to the host's PULL socket; tracks how many bytes the kernel has taken."""

    def __init__(self) -> None:
        self.transport: Any = None  # asyncio's or uvloop's transport (uvloop's are no asyncio.WriteTransport)
        self.peer_header: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.queued = 0  # bytes given to the transport
        self.confirmed = 0  # bytes seen leave our buffer (a lower bound once the connection is gone)
        self.lost: str | None = None
        self._received = b""
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    # -- asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # Wake us as soon as the buffer is empty, i.e. everything written is in the kernel.
        transport.set_write_buffer_limits(high=0, low=0)
        transport.write(PUSH_HEADER)
        self.queued = len(PUSH_HEADER)

    def data_received(self, data: bytes) -> None:
        if not self.peer_header.done():
            self._received += data
            if len(self._received) >= 8:
                self.peer_header.set_result(self._received[:8])

    def resume_writing(self) -> None:
        self._settle()

    def eof_received(self) -> bool | None:
        self.flushed()  # note what left before the transport drops its buffer
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        # Not flushed() here: a transport that failed has already cleared its buffer, which would count
        # never-sent bytes as sent. `confirmed` holds the last reading taken while the buffer was intact.
        self.lost = f"the host closed the channel ({exc})" if exc else "the host closed the channel"
        if not self.peer_header.done():
            self.peer_header.set_exception(ConnectionError(self.lost))
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(self.lost))

    # -- used by ChannelSender
    def flushed(self) -> int:
        if self.transport is not None and self.lost is None and not self.transport.is_closing():
            self.confirmed = self.queued - self.transport.get_write_buffer_size()
        return self.confirmed

    def write(self, data: bytes) -> int:
        assert self.transport is not None
        self.transport.write(data)
        self.queued += len(data)
        self.flushed()
        return self.queued

    async def wait_flushed(self, offset: int) -> None:
        if self.lost is not None:
            raise ConnectionError(self.lost)
        if self.flushed() >= offset:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, fut))
        await fut

    def _settle(self) -> None:
        flushed = self.flushed()
        while self._waiters and self._waiters[0][0] <= flushed:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)


class ChannelSender:
    """Sends records to one source instance's host channel; lives on the event loop.

    Example (on the loop)::

        sender = await ChannelSender.connect("ipc:///tmp/r1_s_0.ipc", 1.0, "rule r1 stream s instance 0")
        await sender.deliver(Batch([b'{"message":{"a":1},"meta":{}}']))
    """

    def __init__(self, url: str, send_timeout_s: float, label: str) -> None:
        if not url.startswith("ipc://"):
            raise ValueError(f"unsupported channel url {url!r}; eKuiper's portable runtime uses ipc://")
        self.url = url
        self.path = url[len("ipc://"):]
        self.send_timeout_s = send_timeout_s
        self.label = label
        self._pipe: _Pipe | None = None
        self._closed = False
        self._dialing: asyncio.Lock | None = None

    @classmethod
    async def connect(cls, url: str, send_timeout_s: float, label: str) -> ChannelSender:
        sender = cls(url, send_timeout_s, label)
        await sender._dial()
        return sender

    async def _dial(self) -> _Pipe:
        if self._dialing is None:
            self._dialing = asyncio.Lock()
        async with self._dialing:
            if self._pipe is not None and self._pipe.lost is None:
                return self._pipe
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    transport, pipe = await loop.create_unix_connection(_Pipe, self.path)
                    header = await pipe.peer_header
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"cannot connect to the host channel {self.url}: {exc or 'timed out'}") from None
            if header[:4] != b"\x00SP\x00" or int.from_bytes(header[4:6], "big") != PULL_PROTOCOL:
                transport.abort()
                raise ConnectionError(f"{self.url} is not an SP PULL socket (header {header!r})")
            self._pipe = pipe
            return pipe

    async def deliver(self, batch: Batch) -> int:
        """Write the batch and wait until the kernel has all of it; returns the record count or raises
        :class:`DeliveryError` with how many whole records went out."""
        if self._closed:
            raise DeliveryError(0, f"{self.label} is stopping")
        pipe = self._pipe
        if pipe is None or pipe.lost is not None:
            try:
                pipe = await self._dial()
            except ConnectionError as exc:
                raise DeliveryError(0, f"{self.label}: {exc}") from None
        start = pipe.queued
        end = pipe.write(batch.data)
        if pipe.confirmed >= end:  # the kernel took it all at once: the usual case, no timer needed
            return len(batch)
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await pipe.wait_flushed(end)
        except TimeoutError:
            delivered = batch.count_within(pipe.flushed() - start)
            self._abort(pipe)
            raise DeliveryError(delivered, f"the host did not take records for {self.label} within "
                                           f"{self.send_timeout_s:g} s") from None
        except ConnectionError as exc:
            raise DeliveryError(batch.count_within(pipe.flushed() - start), f"{self.label}: {exc}") from None
        return len(batch)

    def _abort(self, pipe: _Pipe) -> None:
        # Drop what is still in our buffer: the client is told those records were not delivered, so they must
        # never reach the host later. A half-written frame makes the host drop that message and the connection.
        pipe.flushed()
        if pipe.transport is not None:
            pipe.transport.abort()
        if self._pipe is pipe:
            self._pipe = None

    async def close(self) -> None:
        self._closed = True
        pipe, self._pipe = self._pipe, None
        if pipe is not None and pipe.transport is not None:
            pipe.transport.close()
