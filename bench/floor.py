#!/usr/bin/env python3
"""The floor of the benchmark (target c): the plugin's job done by the least Python that can do it.

Per request, on one ``asyncio.Protocol`` with ``httptools.HttpRequestParser`` (on uvloop when installed, as the
plugin): parse the request, decode the body into records, ``orjson.dumps`` each record into the host envelope and SP
frame the plugin sends (``01 <length:u64 BE> {"message":<record>}``, ``httppush_plugin/framing.py``, the plugin's
default ``meta`` being none), write the frames to a Unix socket that another process drains, and answer with ONE
``transport.write`` (status line, ``Content-Type: application/json``, ``Content-Length``, ``Date``, and
``{"accepted":N,"sources":1}``). What the plugin does on top of this — routing, limits, timeouts, metrics, the
eKuiper source protocol, error answers — is what the table's "how far above the floor" measures; what sits below
this floor is Python, the event loop and the kernel.

Decoding by the request's media type, the minimum of each case of ``bench/run.py``, as the plugin's decoders
(``httppush_plugin/decoders``) turn those bodies into records:

* ``application/json``: ``orjson.loads``; an object is one record, an array one record per element;
* ``text/plain``: delimited, one record per non-empty line, ``{"col0": …, "col1": …}`` split on ``,``;
* ``application/octet-stream``: binary, one record ``{"self": <base64 of the body>}``;
* anything else: 415. A body that does not decode: 400. Neither happens with the benchmark's bodies.

``--mode`` says how the frames reach the drain:

* ``coalesced`` (default, what the plugin does, ``httppush_plugin/channel.py``): the first send of a loop iteration
  goes straight to the non-blocking socket; later sends in the same iteration are joined and written at the
  iteration's end (``loop.call_soon``), one system call for all of them; what the kernel does not take waits for the
  socket to be writable;
* ``per-request``: one ``send()`` per request (the same waiting when the kernel does not take it all);
* ``none``: the frames are built and dropped, no drain is started: the cost of the channel, by difference.

As in the plugin, a request is answered only once the last byte of its frames is in the kernel's socket buffer (a
coalesced request: at the end of its loop iteration). The drain is ``python bench/floor.py --drain PATH``, started
by the floor: it accepts one connection and reads and discards as fast as it can, standing in for eKuiper's channel
reader, so that the floor's CPU (the process ``bench/run.py`` measures) has no reader's share in it. There is no SP
handshake: the drain reads bytes, not messages.

Keep-alive and ``Content-Length`` bodies; chunked bodies are read too (``httptools``); a request the parser refuses
gets 400 and the connection is closed.

Usage: ``python bench/floor.py PORT [--mode coalesced|per-request|none]`` (serves until SIGTERM/SIGINT; prints
``floor listening on PORT`` once it accepts connections).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httptools
import orjson

MODES = ("coalesced", "per-request", "none")
DRAIN_CONNECT_TIMEOUT_S = 10.0
#: The drain gives up when no floor connects within this long (the floor died before it could).
DRAIN_ACCEPT_TIMEOUT_S = 30.0
DRAIN_READ_BYTES = 1 << 20

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s"
_ERROR = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s"
_CLOSE = b"Connection: close\r\n"
_PREFIX = b'{"message":'
_TAG = b"\x01"


class BadBody(ValueError):
    """The body does not decode as its media type says: 400."""


# -- decoding: the records the plugin's decoders would make of the benchmark's bodies ----------------------------


def decode_json(body: bytes) -> list[Any]:
    """An object → one record; an array → one record per element (like the plugin's FORMAT="json")."""
    doc = orjson.loads(body)
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return doc
    raise BadBody("JSON body must be an object or an array")


def decode_delimited(body: bytes) -> list[Any]:
    """One record per non-empty line, values split on ``,`` (like the plugin's FORMAT="delimited" without fields)."""
    return [{f"col{i}": v for i, v in enumerate(line.split(","))}
            for line in body.decode("utf-8").split("\n") if line]


def decode_binary(body: bytes) -> list[Any]:
    """The whole body as one record (like the plugin's FORMAT="binary": the channel carries JSON, not bytes)."""
    return [{"self": base64.b64encode(body).decode("ascii")}]


DECODERS: dict[bytes, Callable[[bytes], list[Any]]] = {
    b"application/json": decode_json, b"text/plain": decode_delimited, b"application/octet-stream": decode_binary}


def frame(records: list[Any]) -> bytes:
    """The plugin's framing (``httppush_plugin/framing.py``, meta none): one SP message per record, joined."""
    dumps = orjson.dumps
    parts = []
    for record in records:
        payload = _PREFIX + dumps(record) + b"}"
        parts.append(_TAG + len(payload).to_bytes(8, "big") + payload)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# -- the channel: frames to the drain, answers once their bytes are in the kernel --------------------------------


class Channel:
    """The plugin's way of writing to the host channel (``ChannelSender.send``), reduced to what a bench needs: no
    reconnect, no timeout, no backlog limit; a failure of the socket stops the floor (the run is then void)."""

    def __init__(self, sock: socket.socket | None, loop: asyncio.AbstractEventLoop, coalesce: bool,
                 fail: Callable[[str], None]) -> None:
        self.sock = sock
        self.loop = loop
        self.coalesce = coalesce
        self.fail = fail
        self.queued = 0  # bytes offered so far
        self.sent = 0  # bytes the kernel took so far
        self.unsent: list[bytes | memoryview] = []
        #: answers owed: (offset just past the request's frames, its transport, its answer, close after it)
        self.waiters: deque[tuple[int, Any, bytes, bool]] = deque()
        self.window = False  # a send went straight out in this loop iteration: the next ones join the flush
        self.writing = False  # waiting for the socket to be writable

    def send(self, data: bytes, transport: Any, answer: bytes, close: bool) -> None:
        """Hand ``data`` to the drain; ``answer`` is written to ``transport`` (then closed when ``close``) once the
        kernel has all of it."""
        sock = self.sock
        if sock is None:  # --mode none
            _answer(transport, answer, close)
            return
        self.queued = end = self.queued + len(data)
        if self.unsent or self.window:
            self.unsent.append(data)
            self.waiters.append((end, transport, answer, close))
            return
        if self.coalesce:
            self.window = True
            self.loop.call_soon(self._end_window)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.fail(f"the drain's socket failed: {exc}")
            return
        self.sent += sent
        if sent == len(data):
            _answer(transport, answer, close)
            return
        self.unsent.append(memoryview(data)[sent:])
        self.waiters.append((end, transport, answer, close))
        self._wait_writable()

    def _end_window(self) -> None:
        self.window = False
        if self.unsent and not self.writing:
            self._flush()
            if self.unsent:
                self._wait_writable()

    def _wait_writable(self) -> None:
        assert self.sock is not None
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.sock.fileno(), self._flush)

    def _flush(self) -> None:
        sock, unsent = self.sock, self.unsent
        assert sock is not None
        if len(unsent) > 1:  # one system call for everything queued
            unsent[:] = [b"".join(unsent)]
        while unsent:
            view = unsent[0]
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.fail(f"the drain's socket failed: {exc}")
                return
            self.sent += sent
            if sent < len(view):
                unsent[0] = memoryview(view)[sent:]
                break
            unsent.pop(0)
        waiters = self.waiters
        while waiters and waiters[0][0] <= self.sent:
            _, transport, answer, close = waiters.popleft()
            if not transport.is_closing():
                _answer(transport, answer, close)
        if not unsent and self.writing:
            self.writing = False
            self.loop.remove_writer(sock.fileno())


def _answer(transport: Any, answer: bytes, close: bool) -> None:
    transport.write(answer)
    if close:
        transport.close()


# -- HTTP ----------------------------------------------------------------------------------------------------------


class Clock:
    """The ``Date`` header line, renewed every second (as the plugin's sweep does), not formatted per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.date = b""
        self.tick()

    def tick(self) -> None:
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        self.loop.call_later(1.0, self.tick)


class FloorProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse, decode, frame, send, answer. Nothing else."""

    __slots__ = ("channel", "clock", "parser", "transport", "content_type", "body")

    def __init__(self, channel: Channel, clock: Clock) -> None:
        self.channel = channel
        self.clock = clock
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.content_type = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error(400, "Bad Request", f"malformed HTTP request: {exc}")

    # parser callbacks

    def on_message_begin(self) -> None:
        self.content_type = b""
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        chunks = self.body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        decode = DECODERS.get(self.content_type.split(b";", 1)[0].strip().lower())
        if decode is None:
            self._error(415, "Unsupported Media Type", "the floor decodes application/json, text/plain and "
                                                       "application/octet-stream")
            return
        try:
            records = decode(body)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._error(400, "Bad Request", f"body does not decode: {exc}")
            return
        text = b'{"accepted":%d,"sources":1}' % len(records)
        keep_alive = self.parser.should_keep_alive()
        answer = _OK % (len(text), self.clock.date, b"" if keep_alive else _CLOSE, text)
        self.channel.send(frame(records), self.transport, answer, not keep_alive)

    def _error(self, status: int, reason: str, message: str) -> None:
        text = orjson.dumps({"error": message})
        self.transport.write(_ERROR % (status, reason.encode(), len(text), self.clock.date, text))
        self.transport.close()


# -- the drain: a separate process that reads and discards -------------------------------------------------------


def drain(path: str) -> None:
    """Listen on ``path``, accept one connection, read and discard until it closes; then remove ``path``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(DRAIN_ACCEPT_TIMEOUT_S)
    try:
        conn, _ = server.accept()
    finally:
        server.close()
        os.unlink(path)
    conn.settimeout(None)
    buffer = bytearray(DRAIN_READ_BYTES)
    recv_into = conn.recv_into
    with conn:
        while recv_into(buffer):
            pass


def start_drain(path: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start ``floor.py --drain path`` and connect to it; the socket is returned non-blocking."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--drain", path],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + DRAIN_CONNECT_TIMEOUT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except OSError as exc:
            sock.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"floor: cannot connect to the drain at {path}: {exc}") from None
            time.sleep(0.02)
    sock.setblocking(False)
    return proc, sock


async def serve(port: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[str | None] = loop.create_future()

    def fail(reason: str) -> None:
        if not stop.done():
            stop.set_result(reason)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, fail, None)
    drain_proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    tmp = tempfile.mkdtemp(prefix="floor-drain-")
    if mode != "none":
        drain_proc, sock = start_drain(os.path.join(tmp, "drain.sock"))
    channel = Channel(sock, loop, mode == "coalesced", fail)
    clock = Clock(loop)
    server = await loop.create_server(lambda: FloorProtocol(channel, clock), "127.0.0.1", port, backlog=1024)
    print(f"floor listening on {port} (mode {mode}, loop {type(loop).__module__})", flush=True)
    try:
        reason = await stop
    finally:
        server.close()
        if sock is not None:
            sock.close()  # the drain reads to the end and exits
        if drain_proc is not None:
            try:
                drain_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                drain_proc.kill()
                drain_proc.wait()
        os.rmdir(tmp)
    if reason is not None:
        raise SystemExit(f"floor: {reason}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="The benchmark's floor (target c); see the module docstring.")
    parser.add_argument("port", type=int, nargs="?", help="TCP port to serve on 127.0.0.1")
    parser.add_argument("--mode", choices=MODES, default="coalesced",
                        help="how frames reach the drain: joined per loop iteration (the plugin's way, default), one "
                             "send per request, or not at all")
    parser.add_argument("--drain", metavar="PATH", help="run as the drain on this Unix socket path (internal)")
    args = parser.parse_args(argv)
    if args.drain:
        drain(args.drain)
        return
    if args.port is None:
        parser.error("give a PORT (or --drain PATH)")
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args.port, args.mode))
    finally:
        loop.close()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as the plugin (``httppush_plugin/server.py``), so that plugin/floor compares work, not
    event loops."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main(sys.argv[1:])
