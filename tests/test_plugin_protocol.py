"""The installed plugin driven over eKuiper's exact protocol (emulated host), with real HTTP over loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.net import free_port, wait_port_closed
from tests.hostemu import PluginHost
from tests.support.http import push, sender
from tests.support.metrics import gauge
from tests.support.pki import Pki, client_context, tls_env
from tests.support.protobuf import message_class
from tests.support.sentinel import SENTINEL, assert_sentinel_next_on_channels
from tests.support.wait import wait_until

OBJECT = '{"temperature": 21.5, "id": "a1"}'
ARRAY = '[{"t": 1}, {"t": 2}, {"t": 3}]'
PROTO = """
syntax = "proto3";
package demo;
message Reading {
  string id = 1;
  double value = 2;
  int64 count = 3;
  bytes raw = 4;
  repeated int32 tags = 5;
  Inner inner = 6;
  enum Kind { UNKNOWN = 0; HOT = 1; }
  Kind kind = 7;
  map<string, int32> extra = 8;
}
message Inner { bool ok = 1; }
"""


def test_json_object_and_array(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/api/data",
                                        "meta": ["method", "path", "remoteAddr", "contentType"]})
    reply = push(server_port, "/api/data", OBJECT, headers={"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
    first = ch.take(1)[0]
    assert first["message"] == {"temperature": 21.5, "id": "a1"}
    assert first["meta"]["path"] == "/api/data" and first["meta"]["method"] == "POST"
    assert first["meta"]["contentType"] == "application/json"

    reply = push(server_port, "/api/data", ARRAY)
    assert reply.body["accepted"] == 3
    assert ch.messages(3) == [{"t": 1}, {"t": 2}, {"t": 3}]


@pytest.mark.parametrize("body, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "element 0 is a number"),
    ('"text"', "is a string"),
    ('{"x": NaN}', "not valid JSON"),
])
def test_json_bad_bodies_rejected_and_nothing_emitted(host: PluginHost, server_port: int, body: str,
                                                      needle: str) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j"})
    reply = push(server_port, "/j", body)
    assert reply.status == 400
    assert needle in reply.body["error"]
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_binary(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/bin", "format": "BINARY"})
    payload = bytes(range(256))
    assert push(server_port, "/bin", payload).status == 200
    assert base64.b64decode(ch.messages(1)[0]["self"]) == payload


def test_delimited_lines_fields_and_bad_utf8(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/d", "format": "delimited", "delimiter": ";",
                                        "fields": ["id", "t"]})
    reply = push(server_port, "/d", "1;20.5\r\n\n2;21;extra\n")
    assert reply.body["accepted"] == 2
    assert ch.messages(2) == [{"id": "1", "t": "20.5"}, {"id": "2", "t": "21"}]
    assert push(server_port, "/d", b"\xff;1").status == 400
    assert_sentinel_next_on_channels(sender(server_port, "/d"), ch, body=b"end;1",
                            record={"id": "end", "t": "1"})


def test_delimited_default_names(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/d", "format": "delimited"})
    push(server_port, "/d", "a,b,c")
    assert ch.messages(1) == [{"col0": "a", "col1": "b", "col2": "c"}]


def test_urlencoded(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/u", "format": "urlencoded"})
    assert push(server_port, "/u", "a=1&b=x+y&b=%C3%A9&c").status == 200
    assert ch.messages(1) == [{"a": "1", "b": ["x y", "é"], "c": ""}]
    reply = push(server_port, "/u", "a=%zz")
    assert reply.status == 400 and "malformed escape" in reply.body["error"]
    assert push(server_port, "/u", "a=1;b=2").status == 400
    assert_sentinel_next_on_channels(sender(server_port, "/u"), ch, body=b"sentinel=end",
                            record={"sentinel": "end"})


def test_protobuf_from_host_schema_dir(host: PluginHost, server_port: int, installed: Path) -> None:
    schema_dir = installed.parents[2] / "data" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True, exist_ok=True)
    (schema_dir / "reading.proto").write_text(PROTO)
    ch = host.start_source("r1", "s1", {"datasource": "/p", "format": "protobuf", "schemaId": "reading.Reading"})
    body = _encode_reading(installed)
    assert push(server_port, "/p", body).status == 200
    record = ch.messages(1)[0]
    assert record == {"id": "x", "value": 1.5, "count": 2**40, "raw": base64.b64encode(b"\x00\x01").decode(),
                      "tags": [1, 2], "inner": {"ok": True}, "kind": 1, "extra": {"k": 7}}
    reply = push(server_port, "/p", b"\xff\xff\xff")
    assert reply.status == 400 and "demo.Reading" in reply.body["error"]
    # unset fields: scalars at their defaults, message fields absent (as eKuiper's converter)
    push(server_port, "/p", b"")
    assert ch.messages(1) == [{"id": "", "value": 0.0, "count": 0, "raw": "", "tags": [], "kind": 0, "extra": {}}]


def _encode_reading(installed: Path) -> bytes:
    proto = installed.parents[2] / "data" / "schemas" / "protobuf" / "reading.proto"
    cls = message_class(proto, "Reading")
    message = cls(id="x", value=1.5, count=2**40, raw=b"\x00\x01", tags=[1, 2], kind=1)
    message.inner.ok = True
    message.extra["k"] = 7
    return message.SerializeToString()


def test_protobuf_bad_schema_id_refuses_start(host: PluginHost) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "/p", "format": "protobuf", "schemaId": "nosuch.Msg"},
                               expect_ok=False)
    assert "nosuch.proto" in answer and "was found" in answer


def test_custom_decoder_via_conf_group_and_schema_id(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/kv", "decoder": "kv:decode"})
    reply = push(server_port, "/kv", "temperature=21.5 humidity=40\nstatus=ok\n")
    assert reply.body["accepted"] == 2
    assert ch.messages(2) == [{"temperature": 21.5, "humidity": 40}, {"status": "ok"}]
    bad = push(server_port, "/kv", "oops")
    assert bad.status == 400 and "not key=value" in bad.body["error"]
    assert_sentinel_next_on_channels(sender(server_port, "/kv"), ch, body=b"sentinel=end",
                            record={"sentinel": "end"})
    # eKuiper 1.x style: FORMAT="custom" + SCHEMAID="<module>.<function>"
    ch2 = host.start_source("r2", "s2", {"datasource": "/kv1", "format": "custom", "schemaId": "kv.decode"})
    push(server_port, "/kv1", "a=1")
    assert ch2.messages(1) == [{"a": 1}]


def test_host_options_accepted(host: PluginHost, server_port: int) -> None:
    # validation off: with STRICT_VALIDATION the plugin would ask eKuiper's REST for the stream's fields, and the
    # emulated host has none (tests/test_schema_plugin.py)
    ch = host.start_source("r1", "s1", {"datasource": "/o", "timestamp": "ts", "timestampFormat": "x",
                                        "retainSize": 3, "strictValidation": True, "key": "id",
                                        "interval": 0, "validation": "off"})
    push(server_port, "/o", '{"ts": 1}')
    assert ch.messages(1) == [{"ts": 1}]


def test_fan_out_and_mixed_formats_decode_once_each(host: PluginHost, server_port: int) -> None:
    a = host.start_source("r1", "s1", {"datasource": "/f"})
    b = host.start_source("r2", "s1", {"datasource": "/f"})
    c = host.start_source("r3", "s3", {"datasource": "/f", "format": "binary"})
    reply = push(server_port, "/f", '{"v": 1}')
    assert reply.status == 200 and reply.body["sources"] == 3
    assert a.messages(1) == b.messages(1) == [{"v": 1}]
    assert c.messages(1) == [{"self": base64.b64encode(b'{"v": 1}').decode()}]
    # a body one subscriber cannot decode is refused for all
    assert push(server_port, "/f", "not json").status == 400
    assert_sentinel_next_on_channels(sender(server_port, "/f"), a, b)
    c.expect_next({"self": base64.b64encode(json.dumps(SENTINEL).encode()).decode()})


def test_post_and_put_on_one_path_404_405(make_host: Callable[..., PluginHost], server_port: int) -> None:
    host = make_host(server_port, PYHTTPPUSH_SERVER_RESTART_GRACE="0.3")
    post = host.start_source("r1", "s1", {"datasource": "/x"})
    put = host.start_source("r2", "s2", {"datasource": "/x", "method": "put"})
    push(server_port, "/x", '{"m": "post"}')
    push(server_port, "/x", '{"m": "put"}', method="PUT")
    assert post.messages(1) == [{"m": "post"}] and put.messages(1) == [{"m": "put"}]
    assert_sentinel_next_on_channels(sender(server_port, "/x"), post)  # the PUT did not reach it
    missing = push(server_port, "/nope", "{}")
    assert missing.status == 404 and "/nope" in missing.body["error"]
    host.stop_source(put)
    vacant = push(server_port, "/x", "{}", method="PUT")  # within httpServerRestartGrace: it may come back
    assert vacant.status == 503 and vacant.headers["Retry-After"] == "1" and "PUT /x" in vacant.body["error"]
    wrong = wait_until(lambda: (lambda r: r if r.status != 503 else None)(push(server_port, "/x", "{}", method="PUT")),
                       5.0, "the grace to end")
    assert wrong.status == 405 and wrong.headers["Allow"] == "POST" and "PUT" in wrong.body["error"]


def test_start_refused_for_bad_datasource_and_method(host: PluginHost) -> None:
    answer = host.start_source("r1", "s1", {"datasource": "api"}, expect_ok=False)
    assert "DATASOURCE is 'api'" in answer and "starting with '/'" in answer
    answer = host.start_source("r1", "s1", {"datasource": "/a", "method": "GET"}, expect_ok=False)
    assert "property 'method' is 'GET'; must be POST or PUT" in answer


def test_server_released_with_last_source_and_back(host: PluginHost, server_port: int) -> None:
    a = host.start_source("r1", "s1", {"datasource": "/a"})
    b = host.start_source("r2", "s2", {"datasource": "/b"})
    assert push(server_port, "/b", "{}").status == 200
    host.stop_source(a)
    assert push(server_port, "/b", '{"still": 1}').status == 200
    assert b.messages(2)[1] == {"still": 1}
    host.stop_source(b)
    assert wait_port_closed(server_port), "port still open after the last source stopped"
    c = host.start_source("r3", "s3", {"datasource": "/c"})
    assert push(server_port, "/c", '{"again": 1}').status == 200
    assert c.messages(1) == [{"again": 1}]


def test_bind_failure_refuses_only_that_start(make_host: Callable[..., PluginHost]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        host = make_host(port)
        answer = host.start_source("r1", "s1", {"datasource": "/a"}, expect_ok=False)
        assert f"cannot listen on http://127.0.0.1:{port}" in answer and "in use" in answer
    ch = host.start_source("r2", "s2", {"datasource": "/a"})
    assert push(port, "/a", '{"ok": 1}').status == 200
    assert ch.messages(1) == [{"ok": 1}]
    assert host.alive()


def test_host_not_reading_gives_503_with_delivered_counts(host: PluginHost, server_port: int) -> None:
    ok = host.start_source("r1", "s1", {"datasource": "/h"})
    gone = host.start_source("r2", "s2", {"datasource": "/h"})
    assert push(server_port, "/h", '{"a": 0}').status == 200  # both attached and delivering
    assert ok.messages(1) == gone.messages(1) == [{"a": 0}]
    gone.close()  # the host stops reading this instance (its PULL socket is gone)
    reply = push(server_port, "/h", '[{"a": 1}, {"a": 2}]')
    assert reply.status == 503
    assert "not all delivered" in reply.body["error"]
    delivered = reply.body["delivered"]
    assert delivered["rule r1 stream s1 instance 0"] == 2
    assert delivered["rule r2 stream s2 instance 0"] == 0
    assert ok.messages(2) == [{"a": 1}, {"a": 2}]


def test_stalled_host_times_out_and_503_counts_exactly_what_arrives(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/stall"})
    assert push(server_port, "/stall", '{"warm": 1}').status == 200
    ch.messages(1)
    ch.pause()  # the host keeps the channel open but stops reading
    records = [{"i": i, "pad": "x" * 1000} for i in range(3000)]
    reply = push(server_port, "/stall", json.dumps(records))
    assert reply.status == 503 and "within 1 s" in reply.body["error"]
    delivered = reply.body["delivered"]["rule r1 stream s1 instance 0"]
    assert 0 < delivered < len(records)
    ch.resume()
    got = ch.messages(delivered, timeout=10)
    assert [r["i"] for r in got] == list(range(delivered))  # in order, none missing
    # nothing reported undelivered arrives later, and the next push goes through (a new connection is dialled)
    assert_sentinel_next_on_channels(sender(server_port, "/stall"), ch)


def test_slow_host_does_not_freeze_other_endpoints(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """One stalled host channel (open, not read) blocks only the requests for its own endpoint. The host's send
    timeout is 5 s: long enough to see the stall in ``/metrics``, which renders at most once a second."""
    host = make_host(server_port, send_timeout_ms=5000)
    fast = host.start_source("r1", "s1", {"datasource": "/fast"})
    slow = host.start_source("r2", "s2", {"datasource": "/slow"})
    assert push(server_port, "/slow", "{}").status == 200
    slow.messages(1)
    slow.pause()  # stalled, not gone: the socket stays open and the plugin's writes block once its buffers fill
    big = json.dumps([{"i": i, "pad": "x" * 1000} for i in range(3000)])  # far more than the socket buffers hold

    results = {}
    stuck = threading.Thread(target=lambda: results.setdefault("slow", push(server_port, "/slow", big)))
    stuck.start()
    # the slow request has reached the stalled channel: its body and the records the kernel did not take are held
    wait_until(lambda: gauge(server_port, "httppush_buffered_bytes") > len(big), 5.0,
               "the slow request's records to wait at the stalled channel")
    assert stuck.is_alive(), f"the request to the stalled channel was answered at once: {results}"
    start = time.monotonic()
    assert push(server_port, "/fast", '{"f": 1}').status == 200
    elapsed = time.monotonic() - start
    assert stuck.is_alive(), "the fast endpoint was answered only after the stuck request"
    stuck.join()
    assert results["slow"].status == 503
    assert elapsed < 0.5, f"the fast endpoint waited {elapsed:.2f}s behind a stuck host channel"
    assert fast.messages(1) == [{"f": 1}]


def test_body_too_large(make_host: Callable[..., PluginHost]) -> None:
    port = free_port()
    ch = make_host(port, PYHTTPPUSH_SERVER_MAX_BODY_SIZE="100").start_source("r1", "s1", {"datasource": "/a"})
    reply = push(port, "/a", '{"x": "' + "y" * 200 + '"}')
    assert reply.status == 413 and "limit is 100 bytes" in reply.body["error"]
    assert_sentinel_next_on_channels(sender(port, "/a"), ch)


def _chunked(port: int, path: str, chunks: list[bytes]) -> tuple[int, dict]:
    """A request with Transfer-Encoding: chunked (no Content-Length), as streaming clients send."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=iter(chunks), encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_chunked_bodies_and_their_size_limit(make_host: Callable[..., PluginHost]) -> None:
    port = free_port()
    ch = make_host(port, PYHTTPPUSH_SERVER_MAX_BODY_SIZE="1000").start_source("r1", "s1", {"datasource": "/c"})
    status, body = _chunked(port, "/c", [b'[{"a": 1},', b' {"a": 2}]'])
    assert (status, body) == (200, {"accepted": 2, "sources": 1})
    assert ch.messages(2) == [{"a": 1}, {"a": 2}]
    status, body = _chunked(port, "/c", [b"[" + b'{"x": 1},' * 150, b'{"x": 1}]'])
    assert status == 413 and "over 1000 bytes" in body["error"]
    assert_sentinel_next_on_channels(sender(port, "/c"), ch)


def test_https(make_host: Callable[..., PluginHost], pki: Pki) -> None:
    port = free_port()
    host = make_host(port, **tls_env(pki))
    ch = host.start_source("r1", "s1", {"datasource": "/s"})
    assert push(port, "/s", '{"secure": true}', tls=client_context(pki)).status == 200
    assert ch.messages(1) == [{"secure": True}]


def test_unreadable_certificate_refuses_start(make_host: Callable[..., PluginHost], tmp_path: Path) -> None:
    host = make_host(free_port(), PYHTTPPUSH_TLS_CERTFILE=str(tmp_path / "missing.pem"),
                     PYHTTPPUSH_TLS_KEYFILE=str(tmp_path / "k"))
    answer = host.start_source("r1", "s1", {"datasource": "/s"}, expect_ok=False)
    assert "missing.pem" in answer and "cannot listen" in answer
    assert host.alive()


def test_repeated_start_of_one_instance_replaces_it(host: PluginHost, server_port: int) -> None:
    """eKuiper re-sends a start for the same instance after a plugin crash + rule restart: deliver once, not twice."""
    ch = host.start_source("r1", "s1", {"datasource": "/again"})
    _, control = host.channels[("r1", "s1", 0)]
    assert host.send_command("start", control) == "ok"
    reply = push(server_port, "/again", '{"n": 1}')
    assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
    assert ch.messages(1) == [{"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/again"), ch)  # no second copy of n=1
    host.stop_source(ch)
    assert wait_port_closed(server_port), "the replaced subscription kept the server open"


def test_endpoint_live_when_start_answers_ok(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/now"})
    assert push(server_port, "/now", '{"n": 1}').status == 200  # no retry: live at "ok"
    assert ch.messages(1) == [{"n": 1}]


def test_process_survives_handshake_idle(host: PluginHost, server_port: int) -> None:
    """The SDK re-sends ``handshake`` after 5 s without a command; commands after that still work."""
    assert host.await_request() == b"handshake"  # the SDK's again, after its 5 s receive timeout
    ch = host.start_source("r1", "s1", {"datasource": "/late"})
    assert push(server_port, "/late", "{}").status == 200
    assert ch.messages(1) == [{}]
