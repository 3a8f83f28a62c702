"""Every connection of one server: the count the limit is checked against, the sweep that enforces deadlines, the
server-wide gauges, and the ordered shutdown.

Timeouts are enforced by one sweep, not a timer per connection: each connection keeps one ``deadline`` (a float), set
as it moves between phases, and the sweep calls ``on_deadline()`` on those past theirs. The sweep also refreshes the
``Date`` header every answer carries.

A connection is retired — its next answer says ``Connection: close`` and it closes after it — while the node drains
(``drain.py``), once it is older than ``httpServerMaxConnectionAge`` or has carried ``httpServerMaxConnectionRequests``
requests: so clients and balancers holding connections open spread over the nodes there are now.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Protocol

from .answers import HttpError, Unavailable
from .budget import Budget
from .drain import Drain
from .request import Application
from .settings import ServerConfig

_now = time.monotonic


class Connection(Protocol):
    deadline: float
    born: float
    requests: int

    def on_deadline(self) -> None: ...

    def close_when_idle(self) -> None: ...

    def force_close(self, exc: HttpError) -> None: ...

    def abort(self) -> None: ...


class ConnectionSet:
    """What every connection of one server shares: the application, the settings, the byte budget."""

    def __init__(self, app: Application, config: ServerConfig, budget: Budget, drain: Drain | None = None) -> None:
        self.app = app
        self.config = config
        self.budget = budget
        self.drain = drain if drain is not None else Drain()
        self._max_age = config.max_connection_age or float("inf")
        self._max_requests = config.max_connection_requests or float("inf")
        self.connections: set[Connection] = set()
        self.stopping = False
        self.date = b""
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Event | None = None
        self._interval = min(1.0, max(0.05, min(config.read_header_timeout, config.read_body_timeout,
                                                config.idle_timeout) / 4))

    def start(self) -> None:
        self._sweep()

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The server-wide gauges of ``/metrics``, read now."""
        return {
            "httppush_open_connections": ("HTTP connections open now (limit: httpServerMaxConnections).",
                                          len(self.connections)),
            "httppush_buffered_bytes": ("Bytes held now for bodies being received or decoded and records waiting "
                                        "for eKuiper (limit: httpServerMaxBuffered).", self.budget.used),
        }

    def add(self, conn: Connection) -> bool:
        """Count a new connection; ``False`` when that takes the server over ``httpServerMaxConnections``."""
        self.connections.add(conn)
        return len(self.connections) <= self.config.max_connections

    def discard(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._empty is not None:
            self._empty.set()

    def retire(self, conn: Connection) -> bool:
        """Whether ``conn`` is to close after the answer being written (draining, or past its age or requests)."""
        return self.drain.active or conn.requests >= self._max_requests or _now() - conn.born >= self._max_age

    def close_idle(self) -> None:
        """Close the idle connections; ask the busy ones to close after their answers."""
        for conn in list(self.connections):
            conn.close_when_idle()

    def _sweep(self) -> None:
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now = _now()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()
        self._sweeper = asyncio.get_running_loop().call_later(self._interval, self._sweep)

    async def shutdown(self, timeout: float) -> None:
        """Ordered: close idle connections and ask busy ones to close after their answer; wait up to ``timeout``
        for them to go; then answer what is still in flight with 503 and close it; abort what is left."""
        self.stopping = True
        self.close_idle()
        await self._until_empty(timeout)
        for conn in list(self.connections):
            conn.force_close(Unavailable("the server is stopping"))
        await self._until_empty(0.5)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _until_empty(self, timeout: float) -> None:
        if not self.connections:
            return
        self._empty = asyncio.Event()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except asyncio.TimeoutError:
            pass
