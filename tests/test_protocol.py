"""The HTTP/1.1 protocol in-process: a fake transport on one side, a fake application on the other. What is checked is
what the protocol owns — the two calls per request, pipelining order, flow control, byte and time limits, 100-continue,
early answers, the bytes written — with no socket, process or event loop in between."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

import pytest

from httppush_plugin.answers import Answer, Later, error_answer
from httppush_plugin.budget import Budget
from httppush_plugin.connections import ConnectionSet
from httppush_plugin.incoming import DRAIN_BYTES, LINGER_BYTES, MAX_HEAD_SIZE, MAX_HEADERS, MAX_QUEUED, READ_SLACK
from httppush_plugin.protocol import BODY, IDLE, LINGER, HttpConnection
from httppush_plugin.request import RequestHead
from httppush_plugin.settings import ServerConfig
from httppush_plugin.wire import encode, status_line

BODY_JSON = b'{"t": 1}'


class FakeTransport:
    """What the protocol uses of an asyncio transport, recorded."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.eof = False
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "written after close"
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def answers(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Everything written, as (status, headers, body) per answer (``100 Continue`` included)."""
        data, out = b"".join(self.written), []
        while data:
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:])
            size = int(headers.get("Content-Length", "0"))
            out.append((int(lines[0].split()[1]), headers, data[:size]))
            data = data[size:]
        return out


@dataclass
class FakeExchange:
    app: FakeApp
    head: RequestHead
    limit: int = 1000
    answer: Answer | Later | None = None

    def body(self, data: bytes) -> Answer | Later:
        self.app.calls.append(("body", self.head.path, data))
        if self.head.path in self.app.broken:
            raise RuntimeError("a fault in the application")
        return self.answer if self.answer is not None else Answer(200, b'{"got":%d}' % len(data))

    def failed(self, exc: BaseException) -> Answer:
        self.app.calls.append(("failed", self.head.path, type(exc).__name__))
        return error_answer(exc)


@dataclass
class FakeApp:
    """Answers ``early[path]`` from the head when set, else reads the body; records every call."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    early: dict[str, Answer] = field(default_factory=dict)
    later: dict[str, Later] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # paths whose body() raises
    limit: int = 1000

    def head(self, head: RequestHead) -> Answer | FakeExchange:
        self.calls.append(("head", head.path, head.method))
        if head.path in self.early:
            return self.early[head.path]
        return FakeExchange(self, head, self.limit, self.later.get(head.path))

    def failed(self, exc: BaseException, head: RequestHead | None = None, remote: str = "") -> Answer:
        self.calls.append(("app-failed", remote, type(exc).__name__))
        return error_answer(exc)


def connect(app: FakeApp, budget: int = 1 << 20, **config: Any) -> tuple[HttpConnection, FakeTransport]:
    shared = ConnectionSet(app, ServerConfig(**config), Budget(budget))
    shared.date = b"Date: Wed, 02 Dec 2026 20:00:00 GMT\r\n"
    conn, transport = HttpConnection(shared), FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def post(path: str = "/a", body: bytes = BODY_JSON, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_a_post_is_two_calls_and_one_write() -> None:
    app = FakeApp()
    conn, transport = connect(app)
    conn.data_received(post())
    assert app.calls == [("head", "/a", "POST"), ("body", "/a", BODY_JSON)]
    assert len(transport.written) == 1
    assert transport.answers() == [(200, {"Content-Type": "application/json", "Content-Length": "9",
                                          "Date": "Wed, 02 Dec 2026 20:00:00 GMT"}, b'{"got":8}')]
    assert conn.phase == IDLE and transport.reading and not transport.closed


def test_pipelined_requests_are_answered_in_order_while_one_waits() -> None:
    app = FakeApp()
    waiting = app.later["/slow"] = Later()
    conn, transport = connect(app)
    conn.data_received(post("/slow") + post("/b") + post("/c", b"xyz"))
    assert [call[:2] for call in app.calls] == [("head", "/slow"), ("body", "/slow"), ("head", "/b"), ("head", "/c")]
    assert transport.written == [] and not transport.reading  # nothing answered before the first, nothing more read
    waiting.resolve(Answer(202, b"{}"))
    assert [status for status, _, _ in transport.answers()] == [202, 200, 200]
    assert [body for _, _, body in transport.answers()][1:] == [b'{"got":8}', b'{"got":3}']
    assert transport.reading


def test_a_head_time_answer_drops_the_body_and_keeps_the_connection() -> None:
    app = FakeApp(early={"/nope": Answer(404, b'{"error":"no"}')})
    conn, transport = connect(app)
    conn.data_received(post("/nope", b"x" * 500) + post())
    assert ("body", "/nope", b"x" * 500) not in app.calls
    assert [status for status, _, _ in transport.answers()] == [404, 200]
    assert not transport.closed


def test_a_closing_head_time_answer_is_written_before_the_body_arrives() -> None:
    app = FakeApp(early={"/auth": Answer(401, b'{"error":"who"}', close=True)})
    conn, transport = connect(app)
    conn.data_received(post("/auth", b"x" * 500)[:-500])  # the head only
    assert transport.answers() == [(401, {"Content-Type": "application/json", "Content-Length": "15",
                                          "Date": "Wed, 02 Dec 2026 20:00:00 GMT", "Connection": "close"},
                                    b'{"error":"who"}')]
    assert transport.eof and conn.phase == LINGER  # our side shut; what still comes is read and dropped
    conn.data_received(b"x" * 500 + post())
    assert len(transport.answers()) == 1


def test_expect_100_continue() -> None:
    app = FakeApp(early={"/nope": Answer(404, b"{}")})
    conn, transport = connect(app)
    request = post(extra="Expect: 100-continue\r\n")
    conn.data_received(request[:-len(BODY_JSON)])
    assert transport.written == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    conn.data_received(BODY_JSON)
    assert [status for status, _, _ in transport.answers()] == [100, 200]
    conn.data_received(post("/nope", extra="Expect: 100-continue\r\n")[:-len(BODY_JSON)])
    assert [status for status, _, _ in transport.answers()] == [100, 200, 404]  # no 100: answered and closed
    assert transport.eof


def test_expect_100_continue_behind_an_owed_answer() -> None:
    """A pipelined head asks for 100 Continue while the answer before it is owed: nothing is written for it and
    nothing more is read until that answer is out; then its 100, then (the body sent) its answer. Decided from its
    head instead: that answer, and the connection closes."""
    for path, expected in (("/b", [202, 100, 200]), ("/nope", [202, 404])):
        app = FakeApp(early={"/nope": Answer(404, b"{}")})
        waiting = app.later["/slow"] = Later()
        conn, transport = connect(app)
        conn.data_received(post("/slow") + post(path, extra="Expect: 100-continue\r\n")[:-len(BODY_JSON)])
        assert transport.written == [] and not transport.reading
        waiting.resolve(Answer(202, b"{}"))
        if path == "/b":
            assert [status for status, _, _ in transport.answers()] == [202, 100] and transport.reading
            conn.data_received(BODY_JSON)
        assert [status for status, _, _ in transport.answers()] == expected
        assert transport.eof == (path == "/nope")
    # A client that sends its body without waiting owes nothing a 100: the request after it gets none either.
    app = FakeApp()
    waiting = app.later["/slow"] = Later()
    conn, transport = connect(app)
    conn.data_received(post("/slow") + post("/b", extra="Expect: 100-continue\r\n") + post("/c", b"x" * 50)[:-10])
    waiting.resolve(Answer(202, b"{}"))
    conn.data_received(b"x" * 10)
    assert [status for status, _, _ in transport.answers()] == [202, 200, 200]


def test_a_request_that_begins_behind_an_owed_answer_pauses_reading() -> None:
    """A pipelining client gets no more of its bytes read than the chunk already in hand until its turn: the rest of
    a body behind an owed answer stays in the kernel, not in the server's memory."""
    app = FakeApp()
    waiting = app.later["/slow"] = Later()
    conn, transport = connect(app)
    conn.data_received(post("/slow"))
    assert transport.reading  # one answer owed and nothing behind it: no pause (two system calls saved)
    conn.data_received(post("/b", b"x" * 500)[:-400])
    assert not transport.reading and conn.shared.budget.used == len(BODY_JSON) + 100
    waiting.resolve(Answer(202, b"{}"))
    assert transport.reading
    conn.data_received(b"x" * 400)
    assert [status for status, _, _ in transport.answers()] == [202, 200] and conn.shared.budget.used == 0


def test_a_fault_in_the_application_is_answered_and_its_bytes_given_back() -> None:
    app = FakeApp(broken={"/bug"})
    conn, transport = connect(app)
    conn.data_received(post("/bug", b"q" * 100) + post())
    assert [status for status, _, _ in transport.answers()] == [500, 200]
    assert ("failed", "/bug", "RuntimeError") in app.calls  # by the exchange: counted and decorated by its endpoint
    assert conn.shared.budget.used == 0


@pytest.mark.parametrize("case, status, failed_by", [
    (post(body=b"x" * 2000), 413, "failed"),  # Content-Length over the exchange's limit
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n", 413, "failed"),
    (b"GARBAGE\r\n\r\n", 400, "app-failed"),
    (b"POST /a HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n", 431, "app-failed"),
    (b"POST /a HTTP/2.0\r\nContent-Length: 0\r\n\r\n", 505, "app-failed"),
    (b"POST /a\r\n\r\n", 400, "app-failed"),
    (b"POST /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 11\r\n\r\nhello world", 400,
     "app-failed"),
    (post(extra="Content-Encoding: br\r\n"), 415, "failed"),
    (post(body=gzip.compress(b"x" * 5000), extra="Content-Encoding: gzip\r\n"), 413, "failed"),  # over once inflated
    (post(body=b"not gzip", extra="Content-Encoding: gzip\r\n"), 400, "failed"),
])
def test_refusals_are_made_by_whoever_knows_the_request(case: bytes, status: int, failed_by: str) -> None:
    """Before a head: the application's ``failed``; after it: the exchange's, so the endpoint can count and
    decorate it. A refusal mid-body closes the connection."""
    app = FakeApp()
    conn, transport = connect(app)
    conn.data_received(case)
    answers = transport.answers()
    assert [answer[0] for answer in answers] == [status], answers
    assert [call[0] for call in app.calls if call[0] in ("failed", "app-failed")] == [failed_by]
    assert not any(call[0] == "body" for call in app.calls)
    assert answers[0][1].get("Connection") == ("close" if status != 415 else None)


def test_the_budget_refuses_a_body_before_it_is_sent_and_is_given_back() -> None:
    app = FakeApp()
    conn, transport = connect(app, budget=100)
    conn.data_received(post(body=b"x" * 101, extra="Expect: 100-continue\r\n")[:-101])
    assert [status for status, _, _ in transport.answers()] == [503]
    assert conn.shared.budget.used == 0
    conn2, transport2 = connect(app, budget=100)
    conn2.data_received(post(body=b"y" * 60))
    assert conn2.shared.budget.used == 0  # answered at once: given back
    assert [status for status, _, _ in transport2.answers()] == [200]


def test_a_body_held_while_its_answer_waits_counts_in_the_budget() -> None:
    app = FakeApp()
    waiting = app.later["/slow"] = Later()
    conn, _ = connect(app)
    conn.data_received(post("/slow", b"z" * 300))
    assert conn.shared.budget.used == 300
    waiting.resolve(Answer(200, b"{}"))
    assert conn.shared.budget.used == 0


def test_head_and_http10() -> None:
    app = FakeApp(early={"/h": Answer(200, b'{"status":"ok"}')})
    conn, transport = connect(app)
    conn.data_received(b"HEAD /h HTTP/1.1\r\n\r\n")
    assert transport.written[-1].endswith(b"Content-Length: 15\r\nDate: Wed, 02 Dec 2026 20:00:00 GMT\r\n\r\n")
    conn.data_received(b"GET /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert transport.written[-1].endswith(b"Connection: keep-alive\r\n\r\n{\"status\":\"ok\"}")


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    conn, transport = connect(FakeApp())
    conn.pause_writing()
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading


def test_deadlines() -> None:
    conn, transport = connect(FakeApp(), read_body_timeout=5)
    conn.data_received(post(body=b"x" * 10)[:-5])
    assert conn.phase == BODY
    conn.on_deadline()  # the sweep found it past its deadline
    assert [status for status, _, _ in transport.answers()] == [408]
    assert b"httpServerReadBodyTimeout" in transport.written[0]
    idle, idle_transport = connect(FakeApp())
    idle.data_received(post())
    idle.on_deadline()
    assert idle_transport.closed and len(idle_transport.answers()) == 1  # idle: closed without a word


def test_over_the_connection_limit() -> None:
    app = FakeApp()
    shared = ConnectionSet(app, ServerConfig(max_connections=1), Budget(100))
    first, second = HttpConnection(shared), HttpConnection(shared)
    first.connection_made(FakeTransport())
    transport = FakeTransport()
    second.connection_made(transport)
    (status, headers, body), = transport.answers()
    assert (status, headers["Retry-After"]) == (503, "1") and b"httpServerMaxConnections" in body


def test_status_lines_come_from_http_status() -> None:
    assert status_line(413).startswith(b"HTTP/1.1 413 ") and status_line(202) == b"HTTP/1.1 202 Accepted\r\n"
    assert status_line(299) == b"HTTP/1.1 299 \r\n"  # no registered phrase: an empty one, never an exception
    assert encode(Answer(204, b"", {"Vary": "Origin"}), b"") == b"HTTP/1.1 204 No Content\r\nVary: Origin\r\n\r\n"


# -- refusals don't read; every byte counts; nothing is answered to a client that does not read ------------------


def test_a_head_time_answer_with_a_large_or_chunked_body_closes_without_reading_it() -> None:
    for extra, body in ((f"Content-Length: {DRAIN_BYTES + 1}\r\n", b""),
                        ("Transfer-Encoding: chunked\r\n", b"")):
        app = FakeApp(early={"/nope": Answer(404, b'{"error":"no"}')})
        conn, transport = connect(app)
        conn.data_received(f"POST /nope HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode() + body)
        assert [status for status, _, _ in transport.answers()] == [404]
        assert transport.eof and conn.phase == LINGER, extra  # answered and shut at once: the body is not awaited
        conn.data_received(post())  # what the client sends anyway is dropped, not parsed
        assert len(transport.answers()) == 1 and [call[0] for call in app.calls] == ["head"]


def test_lingering_reads_a_bounded_amount_then_closes() -> None:
    conn, transport = connect(FakeApp(early={"/nope": Answer(404, b"{}")}))
    conn.data_received(f"POST /nope HTTP/1.1\r\nContent-Length: {200 << 20}\r\n\r\n".encode())
    assert conn.phase == LINGER and not transport.closed
    chunk = b"x" * (256 * 1024)
    for _ in range(LINGER_BYTES // len(chunk)):
        conn.data_received(chunk)
    assert not transport.closed
    conn.data_received(chunk)
    assert transport.closed  # past LINGER_BYTES: closed whether or not the client has read the answer


def test_the_413_for_content_length_comes_first_even_when_another_refusal_applies() -> None:
    conn, transport = connect(FakeApp())  # the fake exchange's limit is 1000 bytes
    conn.data_received(b"POST /a HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 5000\r\n\r\n")
    assert [status for status, _, _ in transport.answers()] == [413] and transport.eof


def test_chunk_extensions_and_trailers_count_toward_the_limit() -> None:
    app = FakeApp()
    conn, transport = connect(app)  # limit 1000: allowed = head limit + 1000 + one read's slack
    conn.data_received(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=")
    extension = b"x" * (64 * 1024)
    for _ in range((MAX_HEAD_SIZE + 1000 + READ_SLACK) // len(extension) + 1):
        if transport.answers():
            break
        conn.data_received(extension)
    (status, _, body), = transport.answers()
    assert status == 413 and b"chunk extensions" in body and ("failed", "/a", "TooLarge") in app.calls


def test_a_header_value_cannot_grow_past_the_head_limit_unseen() -> None:
    conn, transport = connect(FakeApp())
    conn.data_received(b"POST /a HTTP/1.1\r\nX-Big: ")
    for _ in range(100):  # llhttp gathers one header's value before the callback: the bytes received are counted
        if transport.answers():
            break
        conn.data_received(b"x" * (64 * 1024))
    assert [status for status, _, _ in transport.answers()] == [431]


def test_too_many_header_lines_are_431() -> None:
    conn, transport = connect(FakeApp())
    headers = "".join(f"X-{n}: 1\r\n" for n in range(MAX_HEADERS + 1))
    conn.data_received(f"GET /a HTTP/1.1\r\n{headers}\r\n".encode())
    (status, _, body), = transport.answers()
    assert status == 431 and str(MAX_HEADERS).encode() in body


@pytest.mark.parametrize("upgrade", ["Upgrade: websocket\r\n", "Connection: Upgrade\r\nUpgrade: websocket\r\n",
                                     "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n"])
def test_an_upgrade_is_refused_at_its_head_and_never_reaches_the_application(upgrade: str) -> None:
    app = FakeApp()
    conn, transport = connect(app)
    conn.data_received(post(body=b"hello world", extra=upgrade))
    (status, _, body), = transport.answers()
    assert status == 400 and b"Upgrade" in body and not any(call[0] == "body" for call in app.calls)


def test_the_http2_preface_is_named() -> None:
    conn, transport = connect(FakeApp())
    conn.data_received(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    (status, _, body), = transport.answers()
    assert status == 400 and b"HTTP/2" in body


def test_nothing_is_answered_while_the_client_does_not_read() -> None:
    app = FakeApp(early={"/m": Answer(200, b"metrics" * 100)})
    conn, transport = connect(app)
    get = b"GET /m HTTP/1.1\r\n\r\n"
    conn.data_received(get)
    conn.pause_writing()  # the transport's buffer is full: the client is not reading
    conn.data_received(get * 5)  # parsed from one read already taken: queued, not answered
    assert len(transport.answers()) == 1 and not transport.reading
    conn.resume_writing()
    assert len(transport.answers()) == 6 and transport.reading


def test_answers_queued_per_connection_are_bounded() -> None:
    app = FakeApp(early={"/m": Answer(200, b"{}")})
    conn, transport = connect(app)
    conn.pause_writing()
    conn.data_received(b"GET /m HTTP/1.1\r\n\r\n" * (MAX_QUEUED + 500))
    heads = sum(call[0] == "head" for call in app.calls)
    assert heads == MAX_QUEUED  # parsing stopped at the bound
    conn.resume_writing()
    statuses = [status for status, _, _ in transport.answers()]
    assert statuses == [200] * MAX_QUEUED + [503] and transport.eof


def test_a_client_that_stops_reading_with_requests_queued_is_given_up_on() -> None:
    conn, transport = connect(FakeApp(early={"/m": Answer(200, b"{}")}), idle_timeout=5)
    conn.pause_writing()
    conn.data_received(b"GET /m HTTP/1.1\r\n\r\n" * 3)  # parsed from a read already taken: queued, not answered
    assert transport.answers() == [] and conn.deadline < float("inf")  # the queue does not make it wait forever
    conn.on_deadline()
    assert transport.aborted


def test_nothing_after_a_closing_answer_is_handled() -> None:
    app = FakeApp()
    conn, transport = connect(app)
    conn.shared.stopping = True  # every answer now closes the connection
    conn.data_received(post("/a") + post("/b"))
    assert [status for status, _, _ in transport.answers()] == [200]
    assert ("body", "/b", BODY_JSON) not in app.calls  # its records would go to eKuiper with no one told


def test_a_retired_connection_finishes_the_request_being_read() -> None:
    """Retired (draining, past its age or requests) while a pipelined request is half read: the answer owed goes out
    kept alive, the half-read request is read and answered, and that answer closes the connection."""
    app = FakeApp()
    waiting = app.later["/slow"] = Later()
    conn, transport = connect(app)
    conn.shared.drain.active = True
    second = post("/b")
    conn.data_received(post("/slow") + second[:-3])
    waiting.resolve(Answer(202, b"{}"))
    assert [(status, headers.get("Connection")) for status, headers, _ in transport.answers()] == [(202, None)]
    assert not transport.closed
    conn.data_received(second[-3:])
    assert [(status, headers.get("Connection")) for status, headers, _ in transport.answers()] == [
        (202, None), (200, "close")]
    assert transport.closed and ("body", "/b", BODY_JSON) in app.calls
