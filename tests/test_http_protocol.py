"""What every HTTP client relies on, checked over real sockets against the installed plugin (emulated host):
keep-alive, HTTP/1.0, pipelining, chunked bodies, ``Expect: 100-continue``, size limits, malformed requests,
methods, TLS, the server's timeouts, a graceful stop, and the shape of every answer.

Byte-level cases use :class:`tests.support.http.RawClient` (a plain socket, optionally TLS-wrapped): it sends bytes,
reads one whole response within a deadline, and tells whether the server closed the connection (``recv`` returns
``b""`` or the connection is reset) within a deadline.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable

import pytest

from harness.net import wait_port_closed
from tests.hostemu import PluginHost
from tests.support.http import Answer, RawClient, assert_error, assert_ok, chunked, request, sender
from tests.support.metrics import gauge
from tests.support.pki import Pki, client_context, tls_env
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

#: Every server timeout at about a second (one as a float, which is allowed), so that each case ends quickly.
TIMEOUTS = {"PYHTTPPUSH_SERVER_IDLE_TIMEOUT": "1", "PYHTTPPUSH_SERVER_READ_HEADER_TIMEOUT": "1",
            "PYHTTPPUSH_SERVER_READ_BODY_TIMEOUT": "1.0"}
#: How long a "~1 s" timeout may take to act, measured by the client (scheduling slack included).
TIMEOUT_SLACK_S = 3.5


# -- helpers -------------------------------------------------------------------------------------------------------

def records(tag: int, n: int) -> bytes:
    """A JSON array of ``n`` records ``{"req": tag, "k": 0..n-1}``."""
    return json.dumps([{"req": tag, "k": k} for k in range(n)]).encode()


def trickle_until_answer(conn: RawClient, piece: bytes, every: float, within: float) -> tuple[Answer, float]:
    """Send ``piece`` every ``every`` seconds until the server answers; the answer and the time it took."""
    start = time.monotonic()
    deadline = start + within
    while not conn.has_data(every):
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer within {within} s while the client kept trickling {piece!r}")
        if not conn.try_send(piece):
            break
    return conn.read_response(timeout=max(0.5, deadline - time.monotonic())), time.monotonic() - start


# -- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture
def tls_host(make_host: Callable[..., PluginHost], server_port: int, pki: Pki) -> tuple[PluginHost, ssl.SSLContext]:
    """The plugin serving TLS with the session PKI's server certificate, and a client context trusting it."""
    return make_host(server_port, **tls_env(pki)), client_context(pki)


@pytest.fixture
def limited_host(make_host: Callable[..., PluginHost], server_port: int) -> PluginHost:
    """The plugin with a 1000-byte body limit."""
    return make_host(server_port, PYHTTPPUSH_SERVER_MAX_BODY_SIZE="1000")


@pytest.fixture
def timeout_host(make_host: Callable[..., PluginHost], server_port: int) -> PluginHost:
    """The plugin with its idle, header and body timeouts at 1 s."""
    return make_host(server_port, **TIMEOUTS)


# -- keep-alive ----------------------------------------------------------------------------------------------------

def test_keepalive_two_requests_on_one_connection(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/k"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/k", body='{"n": 1}'))
        assert_ok(conn.read_response(), 1)
        conn.send(request(path="/k", body='{"n": 2}'))
        assert_ok(conn.read_response(), 1)
    assert ch.messages(2) == [{"n": 1}, {"n": 2}]


def test_keepalive_connection_close_is_honoured(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/k"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/k", body='{"n": 1}', headers={"Connection": "close"}))
        answer = conn.read_response()
        assert_ok(answer, 1)
        assert (answer.header("Connection") or "").lower() == "close", answer
        assert conn.wait_closed(2.0), "the server kept the connection open after answering 'Connection: close'"
        assert conn.leftover == b""
    assert ch.messages(1) == [{"n": 1}]


# -- HTTP/1.0 ------------------------------------------------------------------------------------------------------

def test_http10_without_keepalive_is_answered_then_closed(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/old"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/old", body='{"v": 10}', version="HTTP/1.0"))
        answer = conn.read_response()
        assert answer.version in ("HTTP/1.0", "HTTP/1.1")
        assert_ok(answer, 1)
        assert conn.wait_closed(2.0), "an HTTP/1.0 connection without keep-alive was left open"
    assert ch.messages(1) == [{"v": 10}]


def test_http10_with_keepalive_stays_open(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/old"})
    with RawClient(server_port) as conn:
        for n in (1, 2):
            conn.send(request(path="/old", body=f'{{"n": {n}}}', version="HTTP/1.0",
                              headers={"Connection": "keep-alive"}))
            answer = conn.read_response()
            assert answer.version in ("HTTP/1.0", "HTTP/1.1")
            assert_ok(answer, 1)
    assert ch.messages(2) == [{"n": 1}, {"n": 2}]


# -- pipelining ----------------------------------------------------------------------------------------------------

def test_pipelining_five_requests_in_one_send(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/pipe"})
    with RawClient(server_port) as conn:
        conn.send(b"".join(request(path="/pipe", body=records(i, i)) for i in range(1, 6)))
        for i in range(1, 6):
            assert_ok(conn.read_response(), i)
    got = ch.messages(15)
    assert [(r["req"], r["k"]) for r in got] == [(i, k) for i in range(1, 6) for k in range(i)]


def test_pipelining_404_then_good_request_in_order(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/pipe"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/nowhere", body=records(0, 3)) + request(path="/pipe", body=records(1, 2)))
        assert "/nowhere" in assert_error(conn.read_response(), 404)
        assert_ok(conn.read_response(), 2)
    assert ch.messages(2) == [{"req": 1, "k": 0}, {"req": 1, "k": 1}]


def test_pipelining_slow_first_request_answered_first(host: PluginHost, server_port: int) -> None:
    """The first request waits for a host that stopped reading (503 after the send timeout); the second, to a
    live source, is answered after it."""
    slow = host.start_source("r1", "s1", {"datasource": "/slow"})
    fast = host.start_source("r2", "s2", {"datasource": "/fast"})
    slow.close()  # the host stopped reading this instance
    with RawClient(server_port) as conn:
        conn.send(request(path="/slow", body='{"s": 1}') + request(path="/fast", body=records(2, 2)))
        assert_error(conn.read_response(timeout=8), 503)
        assert_ok(conn.read_response(), 2)
    assert fast.messages(2) == [{"req": 2, "k": 0}, {"req": 2, "k": 1}]


def test_pipelining_after_connection_close_while_an_answer_is_owed(host: PluginHost, server_port: int) -> None:
    """A request that must wait (a body over 1 MiB goes to the worker thread) says ``Connection: close``; bytes
    sent after it are refused by the parser while the answer is still owed. The owed answer goes out, the
    connection closes, and nothing is written after our side is shut (found by the raw-HTTP fuzz: uvloop raised
    "Cannot call write() after write_eof()")."""
    ch = host.start_source("r1", "s1", {"datasource": "/big"})
    # 5,000 records (what the channel's socket buffer takes at once, so the answer does not wait on how fast the
    # emulated host reads: 90,000 once took over 10 s in CI), padded past 1 MiB: off the loop
    n = 5_000
    big = "[" + ",".join(['{"k": 1}'] * n) + "]" + " " * (1024 * 1024)
    with RawClient(server_port) as conn:
        conn.send(request(path="/big", body=big, headers={"Connection": "close"}) + request(path="/big", body="{}"))
        assert_ok(conn.read_response(timeout=30), n)
        assert conn.wait_closed(), "the connection stayed open after Connection: close"
    assert len(ch.messages(n, timeout=20)) == n
    assert_sentinel_next_on_channels(sender(server_port, "/big"), ch)
    assert "Traceback" not in host.log_tail(200)


# -- chunked request bodies ----------------------------------------------------------------------------------------

def test_chunked_body_decoded_and_connection_reused(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/c"})
    body = chunked(b'[{"a": 1', b'}, {"a": ', b"2}]" + b" " * 20)
    with RawClient(server_port) as conn:
        conn.send(request(path="/c", body=body, headers={"Transfer-Encoding": "chunked"}))
        assert_ok(conn.read_response(), 2)
        conn.send(request(path="/c", body='{"a": 3}'))  # the chunked framing was consumed exactly
        assert_ok(conn.read_response(), 1)
    assert ch.messages(3) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_chunked_body_with_extension_and_trailer(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/c"})
    body = b'5;name=value\r\n{"a":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    with RawClient(server_port) as conn:
        conn.send(request(path="/c", body=body, headers={"Transfer-Encoding": "chunked", "Trailer": "X-Trailer"}))
        assert_ok(conn.read_response(), 1)
        conn.send(request(path="/c", body='{"a": 2}'))
        assert_ok(conn.read_response(), 1)
    assert ch.messages(2) == [{"a": 1}, {"a": 2}]


def test_chunked_body_over_limit_gets_413(limited_host: PluginHost, server_port: int) -> None:
    ch = limited_host.start_source("r1", "s1", {"datasource": "/c"})
    body = chunked(b"[" + b'{"x": 1},' * 100, b'{"x": 1},' * 100 + b'{"x": 1}]')  # 1810 bytes in two chunks
    with RawClient(server_port) as conn:
        conn.send(request(path="/c", body=body, headers={"Transfer-Encoding": "chunked"}))
        assert "httpServerMaxBodySize" in assert_error(conn.read_response(), 413)
    assert_sentinel_next_on_channels(sender(server_port, "/c"), ch)


def test_chunked_malformed_framing_gets_400_and_close(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/c"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/c", body=b'ZZ\r\n{"bad": 1}\r\n0\r\n\r\n', headers={"Transfer-Encoding": "chunked"}))
        assert_error(conn.read_response(), 400)
        assert conn.wait_closed(2.0), "the connection stayed open after malformed chunked framing"
    assert_sentinel_next_on_channels(sender(server_port, "/c"), ch)


# -- Expect: 100-continue ------------------------------------------------------------------------------------------

def test_expect_continue_100_before_the_body(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/e"})
    body = b'{"expected": 1}'
    with RawClient(server_port) as conn:
        conn.send(request(path="/e", headers={"Content-Length": str(len(body)), "Expect": "100-continue"}))
        interim = conn.read_response(timeout=1.0, informational=True)
        assert (interim.version, interim.status) == ("HTTP/1.1", 100), interim
        conn.send(body)
        assert_ok(conn.read_response(), 1)
    assert ch.messages(1) == [{"expected": 1}]


def test_expect_continue_over_limit_413_without_100_and_close(limited_host: PluginHost, server_port: int) -> None:
    ch = limited_host.start_source("r1", "s1", {"datasource": "/e"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/e", headers={"Content-Length": "5000", "Expect": "100-continue"}))
        answer = conn.read_response(timeout=1.0, informational=True)
        assert answer.status != 100, "100 Continue for a body over the limit"
        assert "httpServerMaxBodySize" in assert_error(answer, 413)
        assert conn.wait_closed(2.0), "the connection stayed open though the announced body was never read"
    assert_sentinel_next_on_channels(sender(server_port, "/e"), ch)


def test_expect_continue_503_without_100_when_the_server_holds_too_much(make_host: Callable[..., PluginHost],
                                                                           server_port: int) -> None:
    """httpServerMaxBuffered 1000: one client's half-sent body holds 600 bytes; another announcing 600 more with
    Expect: 100-continue gets 503 at once, not a 100 and then a 503 partway through its body."""
    host = make_host(server_port, PYHTTPPUSH_SERVER_MAX_BODY_SIZE="1000", PYHTTPPUSH_SERVER_MAX_BUFFERED="1000")
    ch = host.start_source("r1", "s1", {"datasource": "/e"})
    first = b'[' + b'{"a": 1},' * 99 + b'{"a": 1}]'
    with RawClient(server_port) as holder, RawClient(server_port) as late:
        holder.send(request(path="/e", headers={"Content-Length": str(len(first))}) + first[:600])
        wait_until(lambda: gauge(server_port, "httppush_buffered_bytes") >= 600, 5.0,  # counted as they arrive
                   "the holder's 600 bytes to be counted")
        late.send(request(path="/e", headers={"Content-Length": "600", "Expect": "100-continue"}))
        answer = late.read_response(timeout=1.0, informational=True)
        assert "httpServerMaxBuffered" in assert_error(answer, 503)
        assert dict((name.lower(), value) for name, value in answer.headers)["retry-after"] == "1"
        holder.send(first[600:])
        assert_ok(holder.read_response(), 100)
    assert len(ch.messages(100)) == 100
    assert_sentinel_next_on_channels(sender(server_port, "/e"), ch)


# -- size limits ---------------------------------------------------------------------------------------------------

def test_size_limit_content_length_413_before_the_body(limited_host: PluginHost, server_port: int) -> None:
    ch = limited_host.start_source("r1", "s1", {"datasource": "/big"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/big", headers={"Content-Length": "5000"}) + b'[{"x": 1},')  # 10 of 5000 bytes
        started = time.monotonic()
        error = assert_error(conn.read_response(timeout=1.0), 413)
        assert time.monotonic() - started < 1.0
        assert "httpServerMaxBodySize" in error
    assert_sentinel_next_on_channels(sender(server_port, "/big"), ch)


BIG_HEADERS = {
    "one_32k_header": {"X-Big": "b" * 32 * 1024},
    "forty_500_byte_headers": {f"X-Many-{i}": "m" * 500 for i in range(40)},
}


@pytest.mark.parametrize("headers", BIG_HEADERS.values(), ids=BIG_HEADERS.keys())
def test_size_limit_headers_over_16k_431_and_close(host: PluginHost, server_port: int,
                                                   headers: dict[str, str]) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/h"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/h", body='{"h": 1}', headers=headers))
        assert_error(conn.read_response(), 431)
        assert conn.wait_closed(2.0), "the connection stayed open after 431"
    assert_sentinel_next_on_channels(sender(server_port, "/h"), ch)


def test_size_limit_headers_under_16k_served(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/h"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/h", body='{"h": 12}', headers={f"X-Many-{i}": "m" * 1000 for i in range(12)}))
        assert_ok(conn.read_response(), 1)
    assert ch.messages(1) == [{"h": 12}]


# -- malformed requests --------------------------------------------------------------------------------------------

MALFORMED = {
    "garbage_request_line": b"this is not http at all\r\n\r\n",
    "header_without_colon": b'POST /j HTTP/1.1\r\nHost: x\r\nNo colon here\r\nContent-Length: 8\r\n\r\n{"a": 1}',
    "content_length_not_a_number": b'POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{"a": 1}',
    "content_length_negative": b'POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{"a": 1}',
    "content_length_list": b'POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: 8, 9\r\n\r\n{"a": 1}',
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_400_json_and_close(host: PluginHost, server_port: int, raw: bytes) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j"})
    with RawClient(server_port) as conn:
        conn.send(raw)
        assert_error(conn.read_response(), 400)
        assert conn.wait_closed(2.0), "the connection stayed open after a malformed request"
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_malformed_http09_request_line_400_and_no_record(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j"})
    with RawClient(server_port) as conn:
        conn.send(b'POST /j\r\n\r\n{"a":1}')
        assert_error(conn.read_response(), 400)
        assert conn.wait_closed(2.0), "the connection stayed open after a request line without a version"
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_malformed_unsupported_version_505_or_400(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/j", body='{"a": 2}', version="HTTP/2.0"))
        assert_error(conn.read_response(), 505, 400)
        assert conn.wait_closed(2.0), "the connection stayed open after an unsupported HTTP version"
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


# -- methods -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["HEAD", "GET", "OPTIONS"])
def test_methods_not_served_get_405_with_allow(host: PluginHost, server_port: int, method: str) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/m"})
    with RawClient(server_port) as conn:
        conn.send(request(method, "/m"))
        answer = conn.read_response(head=method == "HEAD")
        assert_error(answer, 405, head=method == "HEAD")
        assert answer.header("Allow") == "POST", answer
    assert_sentinel_next_on_channels(sender(server_port, "/m"), ch)


def test_methods_allow_lists_post_and_put(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/m"})
    host.start_source("r2", "s2", {"datasource": "/m", "method": "PUT"})
    with RawClient(server_port) as conn:
        conn.send(request("GET", "/m"))
        answer = conn.read_response()
        assert_error(answer, 405)
        assert sorted(m.strip() for m in (answer.header("Allow") or "").split(",")) == ["POST", "PUT"], answer


def test_methods_head_answer_has_no_body(host: PluginHost, server_port: int) -> None:
    """HEAD then POST pipelined: if the HEAD answer carried body bytes, the second answer would not parse."""
    ch = host.start_source("r1", "s1", {"datasource": "/m"})
    with RawClient(server_port) as conn:
        conn.send(request("HEAD", "/m") + request(path="/m", body='{"after": "head"}'))
        head = conn.read_response(head=True)
        assert head.status == 405 and head.header("Allow") == "POST", head
        assert conn.buf.startswith(b"HTTP/") or not conn.buf, f"bytes after the HEAD answer: {conn.buf[:100]!r}"
        assert_ok(conn.read_response(), 1)
        # one more request on the connection: its answer must be the next bytes (stray ones would come first)
        conn.send(request(path="/m", body='{"then": "end"}'))
        assert conn.buf.startswith(b"HTTP/") or not conn.buf, f"bytes after the POST answer: {conn.buf[:100]!r}"
        assert_ok(conn.read_response(), 1)
        assert conn.buf == b"", f"bytes after the last answer: {conn.buf[:100]!r}"
    assert ch.messages(2) == [{"after": "head"}, {"then": "end"}]


def test_methods_unknown_path_404_json(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/m"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/not/here", body="{}"))
        assert "/not/here" in assert_error(conn.read_response(), 404)


# -- TLS -----------------------------------------------------------------------------------------------------------

def test_tls_keepalive_and_pipelining(tls_host: tuple[PluginHost, ssl.SSLContext], server_port: int) -> None:
    plugin_host, context = tls_host
    ch = plugin_host.start_source("r1", "s1", {"datasource": "/s"})
    with RawClient(server_port, tls=context) as conn:
        for i in (1, 2):
            conn.send(request(path="/s", body=records(i, 1)))
            assert_ok(conn.read_response(), 1)
        conn.send(b"".join(request(path="/s", body=records(i, i - 2)) for i in (3, 4, 5)))
        for i in (3, 4, 5):
            assert_ok(conn.read_response(), i - 2)
    got = ch.messages(8)
    assert [(r["req"], r["k"]) for r in got] == [(1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (5, 0), (5, 1), (5, 2)]


def test_tls_plain_http_to_tls_port_is_refused_and_server_survives(
        tls_host: tuple[PluginHost, ssl.SSLContext], server_port: int) -> None:
    plugin_host, context = tls_host
    ch = plugin_host.start_source("r1", "s1", {"datasource": "/s"})
    with RawClient(server_port) as plain:
        plain.try_send(request(path="/s", body='{"plain": 1}'))
        assert plain.wait_closed(3.0), "a plain-HTTP connection to the TLS port was left open"
    with RawClient(server_port, tls=context) as conn:
        conn.send(request(path="/s", body='{"secure": 1}'))
        assert_ok(conn.read_response(), 1)
    assert ch.messages(1) == [{"secure": 1}]
    assert plugin_host.alive()


# -- timeouts ------------------------------------------------------------------------------------------------------

def test_timeouts_idle_keepalive_connection_closed_without_response(timeout_host: PluginHost,
                                                                      server_port: int) -> None:
    ch = timeout_host.start_source("r1", "s1", {"datasource": "/t"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/t", body='{"t": 1}'))
        assert_ok(conn.read_response(), 1)
        idle_since = time.monotonic()
        assert conn.wait_closed(TIMEOUT_SLACK_S), "an idle keep-alive connection outlived the 1 s idle timeout"
        assert time.monotonic() - idle_since >= 0.5, "the idle connection was closed long before its timeout"
        assert conn.leftover == b"", f"an idle connection got bytes: {conn.leftover[:200]!r}"
    assert ch.messages(1) == [{"t": 1}]


def test_timeouts_slow_headers_408_and_close(timeout_host: PluginHost, server_port: int) -> None:
    """The header timeout runs from the first byte to the end of the headers: header lines trickled in every
    0.2 s do not extend it."""
    ch = timeout_host.start_source("r1", "s1", {"datasource": "/t"})
    with RawClient(server_port) as conn:
        conn.send(b"POST /t HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer, took = trickle_until_answer(conn, b"X-Slow: 1\r\n", 0.2, TIMEOUT_SLACK_S)
        assert_error(answer, 408)
        assert took < TIMEOUT_SLACK_S
        assert conn.wait_closed(2.0), "the connection stayed open after 408"
    assert_sentinel_next_on_channels(sender(server_port, "/t"), ch)


def test_timeouts_slow_body_408_and_close(timeout_host: PluginHost, server_port: int) -> None:
    """The body timeout runs from the end of the headers to the end of the body: body bytes trickled in every
    0.2 s do not extend it."""
    ch = timeout_host.start_source("r1", "s1", {"datasource": "/t"})
    with RawClient(server_port) as conn:
        conn.send(request(path="/t", headers={"Content-Length": "1000"}) + b'[{"x": 1}')
        answer, took = trickle_until_answer(conn, b" ", 0.2, TIMEOUT_SLACK_S)
        assert_error(answer, 408)
        assert took < TIMEOUT_SLACK_S
        assert conn.wait_closed(2.0), "the connection stayed open after 408"
    assert_sentinel_next_on_channels(sender(server_port, "/t"), ch)


def test_timeouts_silent_connection_closed(timeout_host: PluginHost, server_port: int) -> None:
    timeout_host.start_source("r1", "s1", {"datasource": "/t"})
    with RawClient(server_port) as conn:
        assert conn.wait_closed(TIMEOUT_SLACK_S), "a connection that sent nothing outlived the 1 s timeouts"
        assert conn.leftover == b"" or conn.leftover.startswith(b"HTTP/1.1 408"), conn.leftover[:200]


def test_timeouts_other_clients_served_meanwhile(timeout_host: PluginHost, server_port: int) -> None:
    ch = timeout_host.start_source("r1", "s1", {"datasource": "/t"})
    stalled = [RawClient(server_port) for _ in range(3)]
    try:
        stalled[1].send(b"POST /t HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stalled[2].send(request(path="/t", headers={"Content-Length": "100"}) + b"[")
        with RawClient(server_port) as conn:
            for n in range(5):
                started = time.monotonic()
                conn.send(request(path="/t", body=f'{{"n": {n}}}'))
                assert_ok(conn.read_response(timeout=1.0), 1)
                assert time.monotonic() - started < 0.5
                time.sleep(0.1)  # pacing: the five requests spread over the stalled connections' timeouts
        assert ch.messages(5) == [{"n": n} for n in range(5)]
        for i, conn in enumerate(stalled):
            assert conn.wait_closed(TIMEOUT_SLACK_S), f"stalled connection {i} was never closed"
    finally:
        for conn in stalled:
            conn.close()


# -- graceful stop -------------------------------------------------------------------------------------------------

def test_graceful_stop_answers_the_request_in_flight_then_releases_the_port(host: PluginHost,
                                                                            server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/g"})
    with RawClient(server_port) as done:
        done.send(request(path="/g", body='{"before": 1}', headers={"Connection": "close"}))
        assert_ok(done.read_response(), 1)

    body = b'{"late": 1, "pad": "0123456789"}'
    raw = request(path="/g", body=body)
    split = len(raw) - len(body) // 2
    with RawClient(server_port, timeout=6.0) as mid:
        mid.send(raw[:split])  # the headers and half the body
        received = len(body) - len(body) // 2
        wait_until(lambda: gauge(server_port, "httppush_buffered_bytes") >= received, 5.0,
                   f"the server to hold the {received} body bytes sent: the request is in flight")
        answers: list[str] = []
        stopper = threading.Thread(target=lambda: answers.append(host.stop_source(ch)), daemon=True)
        stopper.start()
        if not mid.has_data(0.3):  # not answered at once (either is right): finish the body
            mid.try_send(raw[split:])
        answer = mid.read_response(timeout=6.0)
        assert_error(answer, 404, 503)
        assert mid.wait_closed(3.0), "the connection stayed open after the server stopped"
    stopper.join(10)
    assert answers == ["ok"], answers
    assert wait_port_closed(server_port), "the port is still open after the last source stopped"
    assert ch.messages(1) == [{"before": 1}]  # answered 200 before the stop: delivered
    assert ch.records.empty(), list(ch.records.queue)


# -- answers -------------------------------------------------------------------------------------------------------

def test_answers_json_with_exact_content_length(limited_host: PluginHost, server_port: int) -> None:
    limited_host.start_source("r1", "s1", {"datasource": "/a"})
    limited_host.start_source("r2", "s2", {"datasource": "/a"})
    close = {"Connection": "close"}
    cases = [
        (request(path="/a", body='[{"x": 1}, {"x": 2}]', headers=close), 200),
        (request(path="/a", body="not json", headers=close), 400),
        (request(path="/elsewhere", body="{}", headers=close), 404),
        (request("GET", "/a", headers=close), 405),
        (request(path="/a", body='"' + "y" * 1500 + '"', headers=close), 413),
    ]
    for raw, status in cases:
        with RawClient(server_port) as conn:
            conn.send(raw)
            answer = conn.read_response()
            if status == 200:
                assert_ok(answer, accepted=2, sources=2)
            else:
                assert_error(answer, status)
            # Content-Length exact: nothing follows the body before the close
            assert conn.wait_closed(2.0), f"no close after 'Connection: close' ({answer!r})"
            assert conn.leftover == b"", f"bytes after the {status} answer's body: {conn.leftover[:200]!r}"
