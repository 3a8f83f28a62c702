"""The load of `make soak` (bench/soak.py): the request mix, the client that sends it, and the accounting.

Every request is of one of the kinds :func:`build_kinds` makes, each bound to one stream (one endpoint) of the
soak's host:

* ``ok`` kinds carry records in every format the plugin decodes (json object and array, NDJSON by Content-Type and
  by ``framing: lines``, delimited, urlencoded, binary, protobuf, the shipped ``kv`` custom decoder), some gzipped,
  one endpoint behind basic auth. A 2xx answer must say ``{"accepted": <records sent>, "sources": 1}``; those
  records are the ones the stream's rule must read, exactly.
* ``idem`` sends a request with a fresh ``Idempotency-Key``, then the same request again (a retry), which must be
  answered 2xx with ``Idempotent-Replayed: true`` and is counted once; now and then the same key with another body,
  which must get 422.
* ``bad`` kinds are bodies and requests a client can get wrong (each format's malformed body, a corrupt gzip stream,
  an unsupported encoding, missing or wrong credentials, an unknown path): each must get its 4xx (400, 415, 401,
  404), never a 2xx, never a 5xx but a 503 with ``Retry-After``.

A 503 with ``Retry-After`` is allowed for any request (the plugin's way of saying "not now"); its ``delivered``
records count as read by the host. A request that gets no answer at all breaks exact accounting and fails the soak.

The client is one asyncio protocol per keep-alive connection with httptools' response parser (on uvloop when
installed, as the plugin): requests are pre-built bytes, so the generator costs little next to the plugin.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools
import orjson

USER, PASSWORD = "soak", "soak-secret-1"
#: How each stream is declared: name → (CREATE STREAM schema and options, conf key or None).
STREAMS: dict[str, tuple[str, dict | None]] = {
    "json": ('() WITH (FORMAT="json"', None),
    "ndjson": ('() WITH (FORMAT="json"', {"framing": "lines"}),
    "delim": ('() WITH (FORMAT="delimited"', {"fields": ["kind", "seq", "v"]}),
    "url": ('() WITH (FORMAT="urlencoded"', None),
    "bin": ('(payload BYTEA) WITH (FORMAT="binary"', None),
    "proto": ('() WITH (FORMAT="protobuf", SCHEMAID="soakreading.Reading"', None),
    "kv": ('() WITH (CONF_KEY="kv"', None),
    "auth": ('() WITH (FORMAT="json"', {"auth": {"type": "basic", "users": {USER: PASSWORD}}}),
    "idem": ('() WITH (FORMAT="json"', {"idempotency": {"window": 10, "maxKeys": 10000}}),
}
PROTO = 'syntax = "proto3";\nmessage Reading {\n  string id = 1;\n  double value = 2;\n  int64 count = 3;\n}\n'
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def path_of(stream: str) -> str:
    return f"/soak/{stream}"


def request(path: str, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one POST."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def reading(id_: str, value: float, count: int) -> bytes:
    """The protobuf wire bytes of ``Reading{id, value, count}`` (PROTO), written by hand: fields 1 (string), 2
    (double, fixed64) and 3 (int64, varint)."""
    raw = id_.encode()
    varint, n = bytearray(), count
    while True:
        varint.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return b"\x0a" + bytes([len(raw)]) + raw + b"\x11" + struct.pack("<d", value) + b"\x18" + bytes(varint)


# -- the mix ---------------------------------------------------------------------------------------------------------


@dataclass
class Kind:
    name: str
    stream: str
    weight: float
    expect: str  # "ok", "bad" or "idem"
    records: int  # per request (ok, idem)
    pool: list[bytes]  # pre-built requests (ok, bad); idem builds its own
    status: int = 0  # bad: the status it must get (or a 503 with Retry-After)
    #: the client address it is sent from: wrong credentials come from a peer of their own (127.0.0.2), which the
    #: plugin backs off (429 with Retry-After) after 10 failures a minute, as it must, without locking out the others
    peer: str = "127.0.0.1"


def _ok_pool(stream: str, make: Callable[[int], tuple[bytes, str, dict[str, str]]], n: int = 16) -> list[bytes]:
    out = []
    for seq in range(n):
        body, ctype, headers = make(seq)
        out.append(request(path_of(stream), body, ctype, headers))
    return out


def _json(seq: int) -> bytes:
    return orjson.dumps({"kind": "r", "seq": seq, "t": 21.5 + seq, "dev": f"d-{seq % 7}", "ok": True})


def build_kinds() -> list[Kind]:
    """The mix: weights per 100 requests (the idempotent pair and its conflicts are one draw)."""
    rnd = random.Random(7)
    lines5 = lambda s: b"\n".join(_json(s * 5 + i) for i in range(5)) + b"\n"  # noqa: E731
    kinds = [
        Kind("json1", "json", 40, "ok", 1, _ok_pool("json", lambda s: (_json(s), "application/json", {}))),
        Kind("json10.gz", "json", 6, "ok", 10, _ok_pool("json", lambda s: (
            gzip.compress(b"[" + b",".join(_json(s * 10 + i) for i in range(10)) + b"]"), "application/json",
            {"Content-Encoding": "gzip"}))),
        Kind("ndjson5.ctype", "json", 4, "ok", 5, _ok_pool("json", lambda s: (lines5(s), "application/x-ndjson", {}))),
        Kind("ndjson5.lines", "ndjson", 4, "ok", 5, _ok_pool("ndjson", lambda s: (lines5(s), "application/json", {}))),
        Kind("ndjson5.lines.gz", "ndjson", 1, "ok", 5, _ok_pool("ndjson", lambda s: (
            gzip.compress(lines5(s)), "application/json", {"Content-Encoding": "gzip"}))),
        Kind("delim10", "delim", 5, "ok", 10, _ok_pool("delim", lambda s: (
            b"\n".join(f"r,{s * 10 + i},{20 + i / 10}".encode() for i in range(10)), "text/plain", {}))),
        Kind("delim10.gz", "delim", 1, "ok", 10, _ok_pool("delim", lambda s: (
            gzip.compress(b"\r\n".join(f"r,{s * 10 + i},{i}".encode() for i in range(10))), "text/plain",
            {"Content-Encoding": "gzip"}))),
        Kind("urlencoded", "url", 8, "ok", 1, _ok_pool("url", lambda s: (
            f"kind=r&seq={s}&v=1.5&tag=a&tag=b".encode(), "application/x-www-form-urlencoded", {}))),
        Kind("binary1k", "bin", 5, "ok", 1, _ok_pool("bin", lambda s: (
            rnd.randbytes(1024), "application/octet-stream", {}))),
        Kind("binary64k", "bin", 0.2, "ok", 1, _ok_pool("bin", lambda s: (
            rnd.randbytes(65536), "application/octet-stream", {}), n=2)),
        Kind("protobuf", "proto", 8, "ok", 1, _ok_pool("proto", lambda s: (
            reading(f"r{s}", 1.5 * s, 2**40 + s), "application/x-protobuf", {}))),
        Kind("kv", "kv", 5, "ok", 1, _ok_pool("kv", lambda s: (
            f"kind=r seq={s} temperature=21.5".encode(), "text/plain", {}))),
        Kind("kv3.gz", "kv", 1, "ok", 3, _ok_pool("kv", lambda s: (
            gzip.compress(f"kind=r seq={s}\nkind=r seq={s + 1}\nkind=r v=x".encode()), "text/plain",
            {"Content-Encoding": "gzip"}))),
        Kind("auth", "auth", 5, "ok", 1, _ok_pool("auth", lambda s: (_json(s), "application/json",
                                                                    {"Authorization": AUTH}))),
        Kind("idempotent", "idem", 3, "idem", 1, []),
    ]
    bad = [  # (name, stream, body, content type, headers, status)
        ("bad.json-array", "json", b"[1, 2]", "application/json", {}, 400),
        ("bad.json-syntax", "json", b'{"kind": ', "application/json", {}, 400),
        ("bad.ndjson-line", "ndjson", b'{"kind": "r"}\n[5]\n', "application/json", {}, 400),
        ("bad.delim-utf8", "delim", b"r,1,\xff\xfe", "text/plain", {}, 400),
        ("bad.urlencoded", "url", b"a=%zz", "application/x-www-form-urlencoded", {}, 400),
        ("bad.protobuf", "proto", b"\xff\xff\xff", "application/x-protobuf", {}, 400),
        ("bad.kv", "kv", b"oops", "text/plain", {}, 400),
        ("bad.gzip-corrupt", "json", b"\x1f\x8b\x08\x00garbage-not-deflate", "application/json",
         {"Content-Encoding": "gzip"}, 400),
        ("bad.encoding-br", "json", b"{}", "application/json", {"Content-Encoding": "br"}, 415),
        ("bad.auth-missing", "auth", _json(1), "application/json", {}, 401),
        ("bad.auth-wrong", "auth", _json(1), "application/json",
         {"Authorization": "Basic " + base64.b64encode(b"soak:wrong").decode()}, 401),
        ("bad.no-such-path", "nowhere", _json(1), "application/json", {}, 404),
    ]
    for name, stream, body, ctype, headers, status in bad:
        kinds.append(Kind(name, stream, 0.25, "bad", 0, [request(path_of(stream), body, ctype, headers)], status,
                          ATTACKER if status == 401 else "127.0.0.1"))
    return kinds


# -- the client ------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


_WANTED = {b"retry-after": "retry-after", b"idempotent-replayed": "idempotent-replayed"}


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: write a request (at once or trickled), await its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable answer: {exc}"))
            self.close()

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _WANTED.get(name.lower())
        if key:
            self._headers[key] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Reply(self.parser.get_status_code(), self._headers, b"".join(self._body),
                                    self.parser.should_keep_alive()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection closed before the answer ({exc or 'EOF'})"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(self, data: bytes, timeout: float, trickle: tuple[int, float, int, float] | None = None) -> Reply:
        """Send ``data`` and return the answer. ``trickle``: (head chunk bytes, pause s, body chunk bytes, pause s)."""
        assert self.transport is not None and self.waiter is None
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        if trickle is None:
            self.transport.write(data)
        else:
            split = data.index(b"\r\n\r\n") + 4
            for part, size, pause in ((data[:split], trickle[0], trickle[1]), (data[split:], trickle[2], trickle[3])):
                for i in range(0, len(part), size):
                    if waiter.done() or self.closed:
                        break
                    self.transport.write(part[i:i + size])
                    await asyncio.sleep(pause)
        # not asyncio.wait_for: on Python 3.11 it wraps every await in a task of its own, which costs the load
        # generator more than the rest of a request
        timer = asyncio.get_running_loop().call_later(timeout, self._fail, TimeoutError(f"no answer in {timeout:g} s"))
        try:
            return await waiter
        finally:
            timer.cancel()


#: The peer address refused credentials come from.
ATTACKER = "127.0.0.2"


async def connect(port: int, peer: str = "127.0.0.1") -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, "127.0.0.1", port, local_addr=(peer, 0))
    return conn


# -- accounting ------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw. ``expected[stream]``: records the stream's rule must have read (2xx answers, a 503's
    ``delivered``); ``statuses[(kind, status)]``: answers; ``problems``: every broken promise, first ones kept."""

    expected: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # records of 2xx answers alone (no 503 ``delivered``)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    requests: int = 0
    records: int = 0
    replays: int = 0
    backed_off: int = 0  # refused credentials answered 429 (the peer backed off) instead of 401
    unanswered: int = 0
    unanswered_records: int = 0
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 30:
            self.problems.append(f"{time.strftime('%H:%M:%S')} {text}")

    def count_5xx(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for (_, status), n in self.statuses.items():
            if status >= 500:
                out[status] += n
        return out

    def answer(self, kind: Kind, reply: Reply, records: int, mode: str = "first") -> bool:
        """Account one answer; True when it was a 2xx. ``mode``: "first" (a request), "retry" (the same request
        with the Idempotency-Key of one answered 2xx: must be a replay), "again" (the same request after one that
        was not answered 2xx: handled afresh), "conflict" (that key with another body: must get 422), "slow" (a first
        request sent trickled)."""
        self.requests += 1
        status = reply.status
        self.statuses[(kind.name + ("" if mode == "first" else f".{mode}"), status)] += 1
        if status == 503:
            if "retry-after" not in reply.headers:
                self.problem(f"{kind.name}: 503 without Retry-After: {reply.body[:200]!r}")
            answer = _json_or_none(reply.body)
            delivered = answer.get("delivered") if isinstance(answer, dict) else None
            self.expected[kind.stream] += sum(delivered.values()) if isinstance(delivered, dict) else 0
            return False
        if status >= 500:
            self.problem(f"{kind.name}: {status}: {reply.body[:200]!r}")
            return False
        ok = 200 <= status < 300
        if kind.expect == "bad" or mode == "conflict":
            if ok:
                self.problem(f"{kind.name} ({mode}): answered {status}: {reply.body[:200]!r}")
                self.expected[kind.stream] += _accepted(reply.body)  # whatever it says it delivered
                self.accepted[kind.stream] += _accepted(reply.body)
            elif status == 429 and kind.status == 401 and "retry-after" in reply.headers:
                self.backed_off += 1  # the peer failed too often: its credentials are not even checked
            elif status != (422 if mode == "conflict" else kind.status):
                self.problem(f"{kind.name} ({mode}): answered {status}, not {kind.status or 422}: "
                             f"{reply.body[:200]!r}")
            return ok
        if not ok:
            self.problem(f"{kind.name} ({mode}): answered {status}: {reply.body[:200]!r}")
            return False
        replayed = reply.headers.get("idempotent-replayed") == "true"
        if replayed != (mode == "retry"):
            self.problem(f"{kind.name} ({mode}): Idempotent-Replayed is {replayed}")
        answer = _json_or_none(reply.body)
        if answer != {"accepted": records, "sources": 1}:
            self.problem(f"{kind.name}: 2xx answer {reply.body[:200]!r}, expected accepted {records}, sources 1")
        if replayed:
            self.replays += 1
        else:
            got = int(answer.get("accepted", records)) if isinstance(answer, dict) else records
            self.expected[kind.stream] += got
            self.accepted[kind.stream] += got
            self.records += got
        return True

    def lost_answer(self, kind: Kind, records: int, exc: BaseException) -> None:
        self.requests += 1
        self.unanswered += 1
        self.unanswered_records += records
        self.statuses[(kind.name, 0)] += 1
        self.problem(f"{kind.name}: no answer ({type(exc).__name__}: {exc})")


def _json_or_none(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _accepted(body: bytes) -> int:
    answer = _json_or_none(body)
    return int(answer.get("accepted", 0)) if isinstance(answer, dict) else 0


# -- the load --------------------------------------------------------------------------------------------------------

#: Slow clients trickle the head (3 bytes per 40 ms: ~1.5 s for a head, under httpServerReadHeaderTimeout's 10 s) and
#: the body (8 bytes per 60 ms).
TRICKLE = (3, 0.04, 8, 0.06)
SLOW_KINDS = ("json1", "delim10.gz", "auth", "protobuf")
ANSWER_TIMEOUT_S = 30.0


class Load:
    """``conns`` keep-alive connections drawing from the mix, paced to ``rate`` requests/s in all (None: each sends
    its next request as soon as the last is answered), plus ``slow`` connections that trickle every request."""

    def __init__(self, port: int, kinds: list[Kind], tally: Tally, conns: int, slow: int) -> None:
        self.port, self.kinds, self.tally, self.conns, self.slow = port, kinds, tally, conns, slow
        self.cum: list[float] = []
        total = 0.0
        for kind in kinds:
            total += kind.weight
            self.cum.append(total)
        self.by_name = {kind.name: kind for kind in kinds}
        self.rate: float | None = None
        self.stopping = False
        self._keys = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.conns)]
        self._tasks += [asyncio.create_task(self._slow(i)) for i in range(self.slow)]

    async def stop(self) -> None:
        """Let every connection finish the request it is on (so every request is answered and counted)."""
        self.stopping = True
        await asyncio.gather(*self._tasks)

    async def _worker(self, i: int) -> None:
        rnd = random.Random(i)
        conn: Conn | None = None
        next_t = time.monotonic()
        while not self.stopping:
            if self.rate is None:
                next_t = time.monotonic()
            else:
                next_t += self.conns / self.rate
                delay = next_t - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:  # more than a second behind: no burst to catch up
                    next_t = time.monotonic()
            kind = rnd.choices(self.kinds, cum_weights=self.cum)[0]
            if conn is None or conn.closed:
                conn = await connect(self.port)
            if kind.peer != "127.0.0.1":  # a request from another client: a connection of its own, for it alone
                other, _ = await self._one(await connect(self.port, kind.peer), kind, rnd.choice(kind.pool), 0)
                if other is not None:
                    other.close()
                continue
            if kind.expect == "idem":
                conn, sent = await self._idempotent(conn, kind, rnd)
                if self.rate is not None:  # the pace counts requests, not draws
                    next_t += (sent - 1) * self.conns / self.rate
            else:
                conn, _ = await self._one(conn, kind, rnd.choice(kind.pool), kind.records)
        if conn is not None:
            conn.close()

    async def _one(self, conn: Conn, kind: Kind, data: bytes, records: int, mode: str = "first",
                   trickle: tuple[int, float, int, float] | None = None) -> tuple[Conn | None, bool]:
        """One request and its accounting; returns the connection (None once closed) and whether it got a 2xx."""
        try:
            reply = await conn.send(data, ANSWER_TIMEOUT_S * (3 if trickle else 1), trickle)
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.tally.lost_answer(kind, records, exc)
            conn.close()
            return None, False
        ok = self.tally.answer(kind, reply, records, mode)
        if not reply.keep_alive or conn.closed:
            conn.close()
            return None, ok
        return conn, ok

    async def _idempotent(self, conn: Conn, kind: Kind, rnd: random.Random) -> tuple[Conn | None, int]:
        """A request with a fresh key, its retry, and now and then the key reused for another body; returns the
        connection and the number of requests sent."""
        self._keys += 1
        key = {"Idempotency-Key": f"soak-{self._keys}-{rnd.getrandbits(32):08x}"}
        data = request(path_of(kind.stream), _json(self._keys), headers=key)
        got, ok = await self._one(conn, kind, data, kind.records)
        got, ok = await self._one(got or await connect(self.port), kind, data, kind.records,
                                  "retry" if ok else "again")
        if ok and rnd.random() < 0.2:  # the key is remembered now: another body with it is a conflict
            other = request(path_of(kind.stream), _json(-self._keys), headers=key)
            got, _ = await self._one(got or await connect(self.port), kind, other, kind.records, "conflict")
            return got, 3
        return got, 2

    async def _slow(self, i: int) -> None:
        rnd = random.Random(1000 + i)
        conn: Conn | None = None
        while not self.stopping:
            kind = self.by_name[SLOW_KINDS[i % len(SLOW_KINDS)]]
            if conn is None or conn.closed:
                conn = await connect(self.port)
            conn, _ = await self._one(conn, kind, rnd.choice(kind.pool), kind.records, "slow", TRICKLE)
            await asyncio.sleep(0.1)
        if conn is not None:
            conn.close()
