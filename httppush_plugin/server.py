"""The shared server's lifecycle: one event-loop thread (uvloop when installed), one listening socket serving
:class:`~.protocol.HttpConnection`, started by the first subscription and stopped — port released — when the last
one goes: at once when it never served, else once its endpoint's grace (``httpServerRestartGrace``) is over with no
new subscription, so that a rule restarting or being updated finds the port and its clients' connections open.

The SDK calls ``configure()``/``close()`` from its control thread; they reach the loop through :meth:`call`, which
waits for the result, so when ``configure()`` returns the server is bound and the route registered (eKuiper is told
``ok`` right after, and a client may push at once).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .admin import Admin
from .app import PushApp
from .auth import ClientCertAuth
from .budget import Budget
from .certificates import Certificates
from .channel import ChannelSender
from .connections import ConnectionSet
from .drain import Drain
from .errors import ConfigError
from .protocol import HttpConnection
from .routing import EndpointTable, Subscription
from .settings import ServerConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 2.0


class BindError(ConfigError):
    """The server cannot listen (port taken, address missing, certificate unreadable)."""


class SharedServer:
    """Example::

        server = SharedServer(lambda: ServerConfig(ip="127.0.0.1", port=0))
        server.subscribe(sub)      # binds, registers sub.endpoint
        server.unsubscribe(sub)    # last one: the port is released (after httpServerRestartGrace if it served)
    """

    def __init__(self, load_config: Callable[[], ServerConfig], drain: Drain | None = None) -> None:
        self._load_config = load_config
        #: whether this node drains: outlives the server's stops and starts (and, with a marker file, the process)
        self.drain = drain if drain is not None else Drain()
        #: routes come and go with the sources; their counters and idempotency keys live as long as this object
        self.table = EndpointTable()
        self.port: int | None = None  # the bound port (differs from config.port when that is 0)
        self._server: asyncio.AbstractServer | None = None
        self._connections: ConnectionSet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._idle: asyncio.TimerHandle | None = None  # the stop at the end of the last endpoint's grace
        self._reload: asyncio.TimerHandle | None = None  # the next look at the TLS files (httpServerTls)
        self._certs: Certificates | None = None  # the TLS files the server listens with (and looks at)

    # -- called from any thread ------------------------------------------------------------------------------

    def subscribe(self, sub: Subscription) -> None:
        self.call(self._subscribe(sub))

    def unsubscribe(self, sub: Subscription) -> None:
        self.call(self._unsubscribe(sub))

    def attach(self, sub: Subscription, sender: ChannelSender) -> None:
        self.call(self._attach(sub, sender))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the server's loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run the plain function ``fn`` on the server's loop and wait for its result."""

        async def call() -> T:
            return fn()

        return self.call(call(), timeout)

    # -- on the loop ----------------------------------------------------------------------------------------

    async def _subscribe(self, sub: Subscription) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._server is None:
            await self._start()
        try:
            self._check_path(sub)
            self._check_auth(sub)
            replaced = self.table.add(sub)
        except ConfigError:
            if len(self.table) == 0:  # started for this one: release the port again
                await self._stop()
            raise
        for old in replaced:
            # eKuiper sends one instance's start twice when a rule restarts after the plugin process died (the
            # replay of stored starts, then the restart's own): the newer start wins, the older goes quietly.
            log.warning("%s started again: replacing its previous subscription", old.label)
            sender, old.sender = old.sender, None
            old.detach()
            if sender is not None:
                sender.close()
        log.info("endpoint %s %s subscribed by %s", sub.endpoint.method, sub.endpoint.path, sub.label)

    def _check_path(self, sub: Subscription) -> None:
        config = self._connections.config if self._connections is not None else None
        if config is not None and sub.endpoint.method == "POST" and sub.endpoint.path in config.admin_actions:
            raise ConfigError(f"{sub.label} serves POST {sub.endpoint.path}, an admin action of this server "
                              "(httpServerAdminPath): choose another DATASOURCE, or move httpServerAdminPath")

    def _check_auth(self, sub: Subscription) -> None:
        if not isinstance(sub.endpoint.auth, ClientCertAuth):
            return
        tls = self._connections.config.tls if self._connections is not None else None
        if tls is None or tls.client_auth == "none":
            raise ConfigError(
                f"property 'auth' of {sub.label} is type 'clientcert', but the server asks for no client "
                "certificates: set httpServerTls.cafile (and clientAuth: required or optional) in the plugin's "
                "etc/kuiper.yaml, or <SYMBOL>_TLS_CAFILE")

    async def _attach(self, sub: Subscription, sender: ChannelSender) -> None:
        if self._connections is not None:
            sender.max_backlog = self._connections.config.max_source_backlog
            sender.budget = self._connections.budget
        sub.attach(sender)

    async def _unsubscribe(self, sub: Subscription) -> None:
        self.table.remove(sub)
        sub.detach()
        log.info("endpoint %s %s unsubscribed by %s", sub.endpoint.method, sub.endpoint.path, sub.label)
        if len(self.table) == 0 and self._server is not None:
            if self.table.vacancies():  # a restart may bring it back: keep the port until the grace is over
                if self._idle is None:
                    self._idle = asyncio.get_running_loop().call_later(self.table.grace, self._stop_when_idle)
            else:
                await self._stop()

    def _stop_when_idle(self) -> None:
        self._idle = None
        asyncio.ensure_future(self._stop_if_idle())

    async def _stop_if_idle(self) -> None:
        if len(self.table) == 0 and self._server is not None:  # checked when the task runs: no subscribe since
            await self._stop()

    async def _start(self) -> None:
        cfg = self._load_config()
        certs = _certificates(cfg) if cfg.tls is not None else None
        ssl_context = certs.listening if certs is not None else None
        admin = Admin(self.table, cfg, self.drain)
        budget = Budget(cfg.max_buffered)
        connections = ConnectionSet(PushApp(self.table, cfg, admin, budget), cfg, budget, self.drain)
        admin.gauges = connections.gauges if certs is None else lambda: {**connections.gauges(), **certs.gauges()}
        self.table.grace = cfg.restart_grace
        loop = asyncio.get_running_loop()
        checked = certs is not None and certs.tls.client_auth != "none"  # resumed sessions checked (_TlsConnection)
        try:
            server = await loop.create_server(
                (lambda: _TlsConnection(connections, certs)) if checked else (lambda: HttpConnection(connections)),
                cfg.ip, cfg.port, ssl=ssl_context, reuse_address=True,
                backlog=1024, ssl_handshake_timeout=cfg.read_header_timeout if ssl_context else None)
        except OSError as exc:
            raise BindError(f"cannot listen on {cfg.address}: {exc.strerror or exc}") from None
        connections.start()
        self.drain.on_drained = connections.close_idle
        self._server, self._connections = server, connections
        self._certs = certs
        if certs is not None and certs.tls.reload_interval > 0:
            self._reload = loop.call_later(certs.tls.reload_interval, self._look, certs)
        self.port = server.sockets[0].getsockname()[1] if server.sockets else cfg.port
        log.info("httppush server listening on %s (port %s)", cfg.address, self.port)

    async def _stop(self) -> None:
        # Ordered: stop accepting (the port is free from here), close idle connections and let in-flight requests
        # finish for up to SHUTDOWN_TIMEOUT_S, then answer what is left with 503 and close it.
        server, self._server = self._server, None
        if self._reload is not None:
            self._reload.cancel()
            self._reload = None
        self._certs = None  # a look still running sets no next one
        connections, self._connections = self._connections, None
        if server is not None:
            server.close()
        if connections is not None:
            self.drain.on_drained = lambda: None
            await connections.shutdown(SHUTDOWN_TIMEOUT_S)
        log.info("httppush server stopped; port %s released", self.port)
        self.port = None

    def _look(self, certs: Certificates) -> None:
        """Every ``httpServerTls.reloadInterval``: a changed certificate set is loaded (certificates.py), in a worker
        thread — parsing a CA bundle takes tens of milliseconds (Debian's 220 KB one: ~70 ms), which the loop's
        clients would wait; the next look is set when this one is done, while the server still listens with
        ``certs``."""
        loop = asyncio.get_running_loop()

        def again(looked: asyncio.Future[bool]) -> None:
            if not looked.cancelled() and looked.exception() is not None:
                log.error("httpServerTls: looking at the files failed", exc_info=looked.exception())
            if self._server is not None and self._certs is certs:
                self._reload = loop.call_later(certs.tls.reload_interval, self._look, certs)

        loop.run_in_executor(None, certs.look).add_done_callback(again)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = _new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="httppush-loop", daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop


class _TlsConnection(HttpConnection):
    """A connection over TLS: one resuming a session from before the certificate set in use is closed at once
    (:meth:`Certificates.stale`); every other one is an :class:`HttpConnection`."""

    def __init__(self, shared: ConnectionSet, certs: Certificates) -> None:
        super().__init__(shared)
        self.certs = certs

    def connection_made(self, transport: Any) -> None:
        if self.certs.stale(transport.get_extra_info("ssl_object")):
            transport.abort()  # connection_lost follows
        super().connection_made(transport)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (≈ 1.3× the requests/s of asyncio's loop in bench/run.py), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _ssl_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context of ``cfg`` as loaded now (see certificates.py), or None for plain HTTP."""
    return _certificates(cfg).listening if cfg.tls is not None else None


def _certificates(cfg: ServerConfig) -> Certificates:
    try:
        return Certificates(cfg.tls)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise BindError(f"cannot listen on {cfg.address}: {exc}") from None
