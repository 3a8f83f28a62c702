"""Fixed response headers (``responseHeaders``): the property's checks in-process; over real HTTP through the
installed plugin under the emulated host, every answer of the endpoint carries them — success, refusals before and
after the body, the CORS preflight and its refusal — and no answer of another path does."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from httppush_plugin.errors import ConfigError
from httppush_plugin.headers import PROTOCOL_OWNED, parse_response_headers
from tests.hostemu import PluginHost
from tests.support.http import RawClient, push, request, sender
from tests.support.sentinel import assert_sentinel_next_on_channels

FIXED = {"X-Frame-Options": "DENY", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
ORIGIN = "https://app.example.com"
PASSWORD = "pw-rh-8c1f"
GOOD = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


def test_parse_response_headers() -> None:
    assert parse_response_headers(None) == parse_response_headers({}) == ()
    assert parse_response_headers({"x-frame-options": "DENY", "X-Max": 600}) == (("x-frame-options", "DENY"),
                                                                                  ("X-Max", "600"))
    csp = {"Content-Security-Policy": "default-src 'none'", "Strict-Transport-Security": "max-age=31536000"}
    assert parse_response_headers(csp) == tuple(csp.items())  # Content-* the server does not write is allowed


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection", "Date", "Content-Type",
                                  "X-Request-Id", "Retry-After", "WWW-Authenticate", "Access-Control-Allow-Origin",
                                  "access-control-expose-headers", "Vary", "Keep-Alive", "Allow",
                                  "Idempotent-Replayed"])
def test_a_name_the_protocol_owns_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"has the header {name!r}, which the server writes itself")):
        parse_response_headers({name: "x"})


@pytest.mark.parametrize("value, needle", [
    ({"X-A": "a\r\nSet-Cookie: evil=1"}, "property 'responseHeaders.X-A' is 'a\\r\\nSet-Cookie: evil=1'; a value "
                                        "must be 1 to 1024 visible ASCII"),
    ({"X-A": "a\nb"}, "property 'responseHeaders.X-A'"),
    ({"X-A": "caf\u00e9"}, "property 'responseHeaders.X-A'"),
    ({"X-A": ""}, "property 'responseHeaders.X-A' is ''"),
    ({"X-A": " padded"}, "property 'responseHeaders.X-A' is ' padded'"),
    ({"X-A": True}, "property 'responseHeaders.X-A' is True"),
    ({"X-A": "x" * 1025}, "a value must be 1 to 1024"),
    ({"Bad Name": "x"}, "has the header name 'Bad Name'; a name is letters, digits"),
    ({"X-A:": "x"}, "has the header name 'X-A:'"),
    ({"X-A": "1", "x-a": "2"}, "has the header 'x-a' twice"),
    ("X-A: 1", "property 'responseHeaders' is 'X-A: 1'; must be a mapping"),
    ({f"X-{n}": "v" for n in range(33)}, "has 33 headers; at most 32"),
])
def test_bad_names_and_values_are_refused(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_response_headers(value)


def test_every_owned_name_is_lower_case() -> None:
    assert all(name == name.lower() for name in PROTOCOL_OWNED)


def assert_fixed(headers: dict[str, str], what: str) -> None:
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, value in FIXED.items():
        assert lowered.get(name.lower()) == value, (what, headers)


def test_every_answer_of_the_endpoint_carries_them(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/rh", "responseHeaders": FIXED, "cors": {"origins": [ORIGIN]},
                                        "auth": {"type": "basic", "users": {"alice": PASSWORD}},
                                        "rateLimit": {"rate": 0.1, "burst": 3}, "meta": ["requestId"]})
    ok = push(server_port, "/rh", '{"t": 1}', headers={**GOOD, "Origin": ORIGIN})
    assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN and ok.headers["X-Request-Id"]
    assert_fixed(ok.headers, "200")
    assert ch.messages(1) == [{"t": 1}]
    refused = push(server_port, "/rh", '{"t": 2}')  # no credentials: 401 from the head
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert_fixed(refused.headers, "401")
    bad = push(server_port, "/rh", "[1,", headers=GOOD)  # a body that cannot be decoded
    assert bad.status == 400
    assert_fixed(bad.headers, "400")
    limited = push(server_port, "/rh", '{"t": 3}', headers=GOOD)  # the bucket (burst 3) is empty
    assert limited.status == 429 and limited.headers["Retry-After"]
    assert_fixed(limited.headers, "429")
    with RawClient(server_port) as conn:  # refused from the head, the body never read, the connection closed
        conn.send(request(path="/rh", headers={**GOOD, "Content-Length": "100000"}))
        answer = conn.read_response(timeout=2.0)
        assert answer.status == 429 and answer.header("Connection") == "close", answer
        assert_fixed(dict(answer.headers), str(answer.status))
    preflight = push(server_port, "/rh", b"", method="OPTIONS", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert_fixed(preflight.headers, "preflight")
    stranger = push(server_port, "/rh", b"", method="OPTIONS", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert stranger.status == 403
    assert_fixed(stranger.headers, "preflight 403")
    elsewhere = push(server_port, "/nothing-here", '{"t": 1}')  # no endpoint: not its headers
    assert elsewhere.status == 404 and "X-Frame-Options" not in elsewhere.headers, elsewhere.headers


def test_they_never_replace_a_protocol_header_and_a_bad_one_refuses_the_start(host: PluginHost,
                                                                             server_port: int) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "/x", "responseHeaders": {"Content-Type": "text/html"}},
                               expect_ok=False)
    assert "'responseHeaders' has the header 'Content-Type', which the server writes itself" in answer, answer
    answer = host.start_source("r2", "s2", {"datasource": "/x", "responseHeaders": {"X-A": "1\r\nX-B: 2"}},
                               expect_ok=False)
    assert "property 'responseHeaders.X-A'" in answer, answer
    ch = host.start_source("r3", "s3", {"datasource": "/x", "responseHeaders": {"X-Frame-Options": "DENY"}})
    other = host.start_source("r4", "s4", {"datasource": "/x", "responseHeaders": {"X-Frame-Options": "SAMEORIGIN"}},
                              expect_ok=False)
    assert "different 'responseHeaders'" in other, other
    with RawClient(server_port) as conn:
        conn.send(request(path="/x", body='{"t": 1}'))
        reply = conn.read_response(timeout=2.0)
    names = [name.lower() for name, _ in reply.headers]
    assert reply.status == 200 and names.count("x-frame-options") == 1 and names.count("content-type") == 1, reply
    with RawClient(server_port) as conn:  # 413 for its Content-Length, before the body: the endpoint's answer too
        conn.send(request(path="/x", headers={"Content-Length": str(1 << 34)}))
        too_large = conn.read_response(timeout=2.0)
    assert too_large.status == 413 and too_large.header("X-Frame-Options") == "DENY", too_large
    assert ch.messages(1) == [{"t": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/x"), ch)
