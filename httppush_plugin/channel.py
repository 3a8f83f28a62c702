"""The connection to one source instance's host channel.

eKuiper listens with an nng PULL socket on ``ipc:///tmp/{ruleId}_{opId}_{instanceId}.ipc`` and reads one record per
message (``docs/host-behaviour.md`` §4). Instead of one blocking ``pynng`` send per record (≈ 30 µs and a thread hop
each, ``bench/nng_send.py``), this module speaks the SP-over-IPC wire protocol that nng and eKuiper's mangos both
implement, on a non-blocking Unix socket that it owns, driven by the server's event loop:

* after connecting, each side sends the 8-byte header ``00 'S' 'P' 00 <protocol:u16 BE> 00 00`` — PUSH is 0x50,
  PULL 0x51 (mangos ``transport/conn.go``);
* then every message is ``01 <length:u64 BE> <body>`` (built by :mod:`.framing`).

A request's frames are handed over once their last byte is in the kernel's socket buffer — the point at which an nng
send completes. The socket is written with ``send()`` directly, not through an asyncio transport, so the count of
bytes the kernel took is exact at every moment: when the host makes no progress for the send timeout, the socket is
closed on the spot, whatever is still queued here is dropped, and the records reported as undelivered can never
reach the host later (a transport's ``abort()`` only schedules the close). A frame cut in half makes the host drop
that message with the connection.

Example (on the loop)::

    sender = await ChannelSender.connect("ipc:///tmp/r1_s_0.ipc", 1.0, "rule r1 stream s instance 0")
    waiter = sender.send(frames)   # None: all in the kernel already
    if waiter is not None:
        await waiter               # or DeliveryError(delivered=…)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable

from .budget import Budget
from .delivery import Delivery, DeliveryError
from .framing import Frames

log = logging.getLogger(__name__)

PUSH_HEADER = b"\x00SP\x00\x00\x50\x00\x00"
PULL_PROTOCOL = 0x51


def channel_url(rule_id: str, op_id: str, instance_id: int | str) -> str:
    """The data channel eKuiper's portable runtime listens on for one source instance."""
    return f"ipc:///tmp/{rule_id}_{op_id}_{instance_id}.ipc"


class ChannelSender:
    """Sends framed records to one source instance's host channel; lives on the event loop."""

    def __init__(self, url: str, send_timeout_s: float, label: str) -> None:
        if not url.startswith("ipc://"):
            raise ValueError(f"unsupported channel url {url!r}; eKuiper's portable runtime uses ipc://")
        self.url = url
        self.path = url[len("ipc://"):]
        self.send_timeout_s = send_timeout_s
        self.label = label
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        self._dialing: asyncio.Future[None] | None = None
        # Bytes offered (``queued``) and taken by the kernel (``sent``) over the life of the current connection.
        self._queued = 0
        self._sent = 0
        self._unsent: deque[bytes | memoryview] = deque()
        self._waiters: deque[Delivery] = deque()
        self._writing = False  # waiting for the socket to be writable again
        self._window = False  # a send went out in this loop iteration: the next ones join the flush at its end
        self._last_progress = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._unsent_bytes = 0
        #: Set by the server when the sender is attached: the backlog limit and the server-wide budget.
        self.max_backlog = 0
        self.budget: Budget | None = None

    @classmethod
    async def connect(cls, url: str, send_timeout_s: float, label: str) -> ChannelSender:
        sender = cls(url, send_timeout_s, label)
        await sender._dial()
        return sender

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- connecting ------------------------------------------------------------------------------------------

    async def _dial(self) -> None:
        """Connect and exchange SP headers; concurrent callers share one attempt. Raises ``ConnectionError``.

        Connected already: nothing to do. A send that found no connection dials in a task of its own, which may run
        only after another task's dial has connected; a second connection then would take over the counters of the
        first and write the rest of a frame the first had begun, so the host would read a broken message on it and
        drop that connection with every record after it — records already reported delivered."""
        if self._sock is not None:
            return
        if self._dialing is not None:
            return await asyncio.shield(self._dialing)
        loop = self._loop = asyncio.get_running_loop()
        self._dialing = loop.create_future()
        try:
            sock = await asyncio.wait_for(self._handshake(loop), self.send_timeout_s)
        except BaseException as exc:
            if isinstance(exc, ConnectionError):
                error = exc
            else:
                timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
                error = ConnectionError(f"cannot connect to the host channel {self.url}: "
                                        f"{'timed out' if timed_out else exc}")
            self._dialing.set_exception(error)
            self._dialing.exception()  # retrieved: nobody else may be waiting
            self._dialing = None
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise error from None
        self._dialing.set_result(None)
        self._dialing = None
        if self._closed:
            sock.close()
            raise ConnectionError(f"{self.label} is stopping")
        self._sock = sock
        self._queued = self._sent = 0
        loop.add_reader(sock.fileno(), self._on_readable)

    async def _handshake(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.path)
            await loop.sock_sendall(sock, PUSH_HEADER)
            header = b""
            while len(header) < 8:
                chunk = await loop.sock_recv(sock, 8 - len(header))
                if not chunk:
                    raise ConnectionError(f"the host closed {self.url} during the handshake")
                header += chunk
            if header[:4] != b"\x00SP\x00" or int.from_bytes(header[4:6], "big") != PULL_PROTOCOL:
                raise ConnectionError(f"{self.url} is not an SP PULL socket (header {header!r})")
        except OSError as exc:
            sock.close()
            if isinstance(exc, ConnectionError):
                raise
            raise ConnectionError(f"cannot connect to the host channel {self.url}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()  # a failed or cancelled handshake must not leak the socket
            raise
        return sock

    # -- sending ---------------------------------------------------------------------------------------------

    def send(self, frames: Frames, then: Callable[[Delivery], None] | None = None) -> Delivery | None:
        """Hand ``frames`` to the host. Returns ``None`` when the kernel took every byte at once, else a
        :class:`Delivery` that completes when it has, or fails, and then calls ``then`` with itself. Call on the
        loop.

        The first send of a loop iteration goes straight to the socket; sends later in the same iteration (many
        clients at once) are joined and written together at the iteration's end: one system call for many requests
        here, and fewer, fuller reads for eKuiper (about a quarter less of its CPU per record, see bench/README.md)."""
        if self._closed:
            raise DeliveryError(0, f"{self.label} is stopping")
        sock = self._sock
        if sock is None:
            return self._dial_and_send(frames, then)
        data = frames.data
        start = self._queued
        backlog = start - self._sent
        if backlog and self.max_backlog and backlog + len(data) > self.max_backlog:
            raise DeliveryError(0, f"{self.label}: {backlog} bytes are already waiting for eKuiper to read them "
                                   f"(httpServerMaxSourceBacklog is {self.max_backlog})")
        self._queued = end = start + len(data)
        if not self._unsent and not self._window:
            self._window = True
            assert self._loop is not None
            self._loop.call_soon(self._end_window)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose(f"the host channel failed: {exc.strerror or exc}")
                raise DeliveryError(0, f"{self.label}: the host channel failed: {exc.strerror or exc}") from None
            self._sent += sent
            if sent == len(data):
                return None
            self._hold(memoryview(data)[sent:])
            self._wait_writable()
        else:
            self._hold(data)
        delivery = Delivery(frames, start, end, then)
        self._waiters.append(delivery)
        return delivery

    def _end_window(self) -> None:
        self._window = False
        if self._unsent and self._sock is not None and not self._writing:
            self._on_writable()
            if self._unsent:
                self._wait_writable()

    def _wait_writable(self) -> None:
        assert self._loop is not None and self._sock is not None
        self._last_progress = time.monotonic()
        self._writing = True
        self._loop.add_writer(self._sock.fileno(), self._on_writable)
        self._arm_watchdog(self.send_timeout_s)

    def _hold(self, view: bytes | memoryview) -> None:
        self._unsent.append(view)
        self._unsent_bytes += len(view)
        if self.budget is not None:
            self.budget.force(len(view))

    def _release(self, nbytes: int) -> None:
        self._unsent_bytes -= nbytes
        if self.budget is not None:
            self.budget.give(nbytes)

    def _dial_and_send(self, frames: Frames, then: Callable[[Delivery], None] | None) -> Delivery:
        """Not connected (the host closed the channel, or a send timed out): dial again, then send."""
        delivery = Delivery(frames, 0, 0, then)

        async def dial_and_send() -> None:
            try:
                await self._dial()
                outcome = self.send(frames)
                if outcome is not None:
                    await outcome.wait()
            except DeliveryError as exc:
                delivery.fail_with(exc)
            except ConnectionError as exc:
                delivery.fail_with(DeliveryError(0, f"{self.label}: {exc}"))
            else:
                delivery.complete()

        asyncio.ensure_future(dial_and_send())
        return delivery

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        unsent = self._unsent
        progressed = False
        if len(unsent) > 1:  # one system call for everything queued
            joined = memoryview(b"".join(unsent))
            unsent.clear()
            unsent.append(joined)
        while unsent:
            view = unsent[0]
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lose(f"the host channel failed: {exc.strerror or exc}")
                return
            progressed = True
            self._sent += sent
            self._release(sent)
            if sent < len(view):
                unsent[0] = memoryview(view)[sent:]
                break
            unsent.popleft()
        if progressed:
            self._last_progress = time.monotonic()
        while self._waiters and self._waiters[0].end <= self._sent:
            self._waiters.popleft().complete()
        if not unsent and self._writing:
            assert self._loop is not None
            self._writing = False
            self._loop.remove_writer(sock.fileno())

    def _arm_watchdog(self, delay: float) -> None:
        if self._watchdog is None:
            assert self._loop is not None
            self._watchdog = self._loop.call_later(delay, self._check_progress)

    def _check_progress(self) -> None:
        """The send timeout measures lack of progress: a large batch the host reads steadily never times out."""
        self._watchdog = None
        if not self._unsent:
            return
        # Try the socket before blaming the host. When an I/O callback held the loop up (a body decoded on the loop,
        # a collection, another thread holding the GIL), libuv runs due timers straight after that poll phase, before
        # it has seen the socket become writable: the host may have read all along.
        self._on_writable()
        if not self._unsent or self._sock is None:
            return
        idle = time.monotonic() - self._last_progress
        if idle >= self.send_timeout_s:
            self._lose(f"the host took no records for {self.label} within {self.send_timeout_s:g} s")
        else:
            self._arm_watchdog(self.send_timeout_s - idle)

    def _on_readable(self) -> None:
        # The host never sends after its header: readable means it closed the channel (or sent garbage).
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(f"the host closed the channel ({exc.strerror or exc})")
            return
        if not data:
            self._lose("the host closed the channel")

    def _lose(self, reason: str) -> None:
        """Close the socket now; everything not yet in the kernel is dropped and its senders are told."""
        sock, self._sock = self._sock, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            self._writing = False
            sock.close()
        self._unsent.clear()
        self._release(self._unsent_bytes)
        sent = self._sent
        while self._waiters:
            self._waiters.popleft().fail(sent, f"{self.label}: {reason}")

    def close(self) -> None:
        """Stop: fail what is still queued and close the socket. Call on the loop."""
        self._closed = True
        self._lose(f"{self.label} is stopping")
