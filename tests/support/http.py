"""HTTP to the plugin's server over loopback, in the three ways the tests need it.

* :func:`push` — one request on its own connection through ``http.client``, the answer parsed (:class:`Reply`): what a
  device does, and what most tests need. :func:`sender` wraps it for one endpoint, returning the status (what the
  sentinel checks push with).
* :class:`RawClient` — one TCP (or TLS) connection spoken to byte by byte, for what ``http.client`` would hide or
  refuse to send: pipelining, malformed requests, half-sent bodies, timeouts, closes. :func:`request` and
  :func:`chunked` build the bytes.
* :func:`parse_response` — THE reader of raw HTTP/1.x responses: :class:`RawClient`, the fuzzers' pipelining client
  and raw-request checks, and the asyncio clients all parse what they received with it, so one set of rules decides
  what a well-formed answer is.
"""

from __future__ import annotations

import errno
import http.client
import json
import re
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.wait import wait_until

# -- one request, parsed ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """An answer as :func:`push` returns it: the status, the body parsed as JSON (else its text), the headers (names
    as sent), and the body's bytes."""

    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes = b""


def push(port: int, path: str, body: bytes | str, method: str = "POST", headers: dict[str, str] | None = None,
         tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> Reply:
    """One HTTP request to the plugin over loopback, on its own connection; the JSON answer parsed (or the text)."""
    data = body.encode() if isinstance(body, str) else body
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(resp.status, parsed, {k: v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def sender(port: int, path: str, *, method: str = "POST", headers: dict[str, str] | None = None,
           tls: ssl.SSLContext | None = None) -> Callable[[bytes], int]:
    """How a known good body reaches one endpoint: ``send(body)`` pushes it (as :func:`push`) and returns the status.

    The sentinel checks (:mod:`tests.support.sentinel`) take one, so that the same check works for endpoints that
    need a method, credentials or TLS. Example::

        assert_sentinel_next_on_channels(sender(port, "/b", headers=basic("alice", PASSWORD)), ch)
    """
    return lambda body: push(port, path, body, method=method, headers=headers, tls=tls).status


def wait_healthy(port: int, path: str = "/healthz", timeout: float = 10.0) -> Reply:
    """GET the health path until it answers 200 — every source attached — and return that answer.

    A source is attached a moment after its start is answered "ok" (the SDK runs ``open()`` after ``configure()``);
    until then health says 503, truthfully."""
    def ready() -> Reply | None:
        reply = push(port, path, b"", method="GET")
        return reply if reply.status == 200 else None

    return wait_until(ready, timeout, f"GET {path} to answer 200 (every source attached)")


# -- raw responses ------------------------------------------------------------------------------------------------

#: The longest response head accepted: the server's answers are short; more without an end is not HTTP.
MAX_HEAD = 16384
_STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) (\d{3}) ([^\r\n]*)")


@dataclass
class Answer:
    """One parsed HTTP response."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "content-length", "chunked", "eof" or "none" (HEAD, 1xx, 204, 304)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); several are joined with ", " as RFC 9110 allows."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def closes(self) -> bool:
        """Whether the answer says the server closes the connection after it."""
        return (self.header("Connection") or "").lower() == "close"

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"{self.status} answer's body is not JSON: {self.body[:300]!r}") from None

    def __repr__(self) -> str:
        return f"<{self.version} {self.status} {self.reason!r} {self.headers} {self.body[:200]!r}>"


def parse_response(buf: bytes, *, head: bool = False, eof: bool = False,
                   strict: bool = False) -> tuple[Answer, int] | None:
    """The first whole response in ``buf`` and how many bytes it took, or ``None`` when more bytes are needed.

    Anything that is not a well-formed response raises :class:`AssertionError`: a head over :data:`MAX_HEAD` bytes
    without its end, a status line that is not ``HTTP/x.y NNN reason`` (RFC 9112: the space before the reason is not
    optional), a header line without a colon or with space around the name, a chunked body whose framing is wrong.

    ``head``: the request was HEAD, so the answer has no body whatever its ``Content-Length``. ``eof``: the server has
    closed the connection, so a body framed by the close ends where ``buf`` does. ``strict``: only what this plugin's
    server may send to any request (the fuzzers' rule): ``HTTP/1.1``, and every final answer framed by
    ``Content-Length``.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise AssertionError(f"no end of the response head in {buf[:300]!r}")
        return None
    lines = buf[:end].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None or (strict and match.group(1) != b"HTTP/1.1"):
        raise AssertionError(f"not an HTTP{'/1.1' if strict else ''} status line: {lines[0][:200]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise AssertionError(f"malformed response header line {line!r} in {buf[:end][:300]!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    status = int(match.group(2))
    answer = Answer(match.group(1).decode(), status, match.group(3).decode("latin-1"), headers, b"", "none")
    start = end + 4
    if 100 <= status < 200 or (not strict and (head or status in (204, 304))):
        return answer, start
    length = answer.header("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise AssertionError(f"Content-Length {length!r} in {answer!r}")
        if len(buf) < start + int(length):
            return None
        answer.body, answer.framing = buf[start:start + int(length)], "content-length"
        return answer, start + int(length)
    if strict:
        raise AssertionError(f"{status} answer without Content-Length: {buf[:end]!r}")
    if "chunked" in (answer.header("Transfer-Encoding") or "").lower():
        chunks = _chunked_body(buf, start)
        if chunks is None:
            return None
        answer.body, answer.framing = chunks[0], "chunked"
        return answer, chunks[1]
    if not eof:  # delimited by the close
        return None
    answer.body, answer.framing = buf[start:], "eof"
    return answer, len(buf)


def _chunked_body(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``pos``: the decoded bytes and where the message ends, or ``None`` if incomplete."""
    body = b""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = buf[pos:eol].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise AssertionError(f"not a chunk size: {buf[pos:eol][:100]!r}") from None
        pos = eol + 2
        if size == 0:
            while True:  # the trailer, up to its empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                line, pos = buf[pos:eol], eol + 2
                if not line:
                    return body, pos
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise AssertionError(f"a chunk of {size} bytes does not end with CRLF: {buf[pos:pos + size + 2][-40:]!r}")
        body += buf[pos:pos + size]
        pos += size + 2


# -- a raw HTTP/1.x client ----------------------------------------------------------------------------------------


class RawClient:
    """One TCP (or TLS) connection to the plugin's server, spoken to byte by byte.

    It sends bytes, reads one whole response (:func:`parse_response`) within a deadline, and tells whether the
    server closed the connection (``recv`` returns ``b""`` or the connection is reset) within a deadline.

    Example::

        with RawClient(port) as conn:
            conn.send(request(path="/a", body='{"x": 1}'))
            answer = conn.read_response()
            assert conn.wait_closed(2.0)
    """

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 3.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""  # received, not yet parsed
        self.unexpected = b""  # received while waiting for the close
        self.eof = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a server that has already closed (it may answer before reading everything)."""
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            return False

    def has_data(self, wait: float = 0.0) -> bool:
        """Whether something (bytes or EOF) can be read within ``wait`` seconds."""
        if self.buf or self.eof:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], wait)
        return bool(readable)

    def _recv(self, deadline: float) -> bytes | None:
        """Bytes, ``b""`` at EOF or reset, ``None`` when the deadline passes first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            data = b""
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                raise
            data = b""
        if not data:
            self.eof = True
        return data

    def read_response(self, timeout: float = 3.0, head: bool = False, informational: bool = False) -> Answer:
        """The next whole response; 1xx responses are skipped unless ``informational``. ``head``: the request
        was HEAD, so the response has no body whatever its ``Content-Length``."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_one(deadline, head)
            if informational or not 100 <= answer.status < 200:
                return answer

    def _read_one(self, deadline: float, head: bool) -> Answer:
        while True:
            parsed = parse_response(self.buf, head=head, eof=self.eof)
            if parsed is not None:
                answer, used = parsed
                self.buf = self.buf[used:]
                return answer
            if self.eof:
                raise AssertionError(f"the server closed the connection before a whole response; received: "
                                     f"{self.buf[:300]!r}")
            data = self._recv(deadline)
            if data is None:
                raise AssertionError(f"no whole response before the deadline; received so far: {self.buf[:300]!r}")
            self.buf += data

    def wait_closed(self, within: float = 2.0) -> bool:
        """Whether the server closes the connection (EOF or reset) within ``within`` seconds; bytes that arrive
        meanwhile are kept in :attr:`unexpected`."""
        if self.eof:
            return True
        deadline = time.monotonic() + within
        while True:
            data = self._recv(deadline)
            if data is None:
                return False
            if not data:
                return True
            self.unexpected += data

    @property
    def leftover(self) -> bytes:
        """Everything received that no response read consumed."""
        return self.buf + self.unexpected


def request(method: str = "POST", path: str = "/p", body: bytes | str = b"", *, version: str = "HTTP/1.1",
            headers: dict[str, str] | None = None, length: bool | None = None) -> bytes:
    """The bytes of one request with ``Host``; ``Content-Length`` for POST/PUT or any body unless ``length`` is
    False or ``headers`` frame the body themselves. Header values are sent as latin-1 (any byte)."""
    data = body.encode() if isinstance(body, str) else body
    hdrs = dict(headers or {})
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs)
    if length is None:
        length = not framed and (bool(data) or method in ("POST", "PUT"))
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if length:
        lines.append(f"Content-Length: {len(data)}")
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` as a chunked body (upper-case hex sizes), with its last chunk."""
    return b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# -- what every answer of the plugin looks like ---------------------------------------------------------------------


def assert_json_answer(answer: Answer, head: bool = False) -> None:
    """``Content-Type: application/json`` and a ``Content-Length`` that is the body's length."""
    content_type = answer.header("Content-Type") or ""
    assert content_type.split(";")[0].strip().lower() == "application/json", f"Content-Type of {answer!r}"
    length = answer.header("Content-Length")
    assert length is not None, f"no Content-Length in {answer!r}"
    if not head:
        assert answer.framing == "content-length" and int(length) == len(answer.body), answer


def assert_error(answer: Answer, *statuses: int, head: bool = False) -> str:
    """The answer has one of ``statuses`` and, unless HEAD, the JSON body ``{"error": "<text>"}``."""
    assert answer.status in statuses, f"expected {statuses}, got {answer!r}"
    assert_json_answer(answer, head=head)
    if head:
        return ""
    error = answer.json().get("error")
    assert isinstance(error, str) and error, f"no 'error' text in {answer!r}"
    return error


def assert_ok(answer: Answer, accepted: int, sources: int = 1) -> None:
    """200 with the JSON body ``{"accepted": accepted, "sources": sources}``."""
    assert answer.status == 200, answer
    assert_json_answer(answer)
    assert answer.json() == {"accepted": accepted, "sources": sources}
