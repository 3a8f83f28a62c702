"""The schema check in the installed plugin under the emulated host, with a stand-in for eKuiper's REST API on
loopback (``GET /streams/{name}/schema``, found through ``KUIPER__BASIC__RESTIP``/``RESTPORT`` as the plugin finds the
real one): where the fields come from, when the check applies, the start error, and a stream update seen at the next
start. The host's own verdicts are paired in ``tests/test_realhost_schema.py``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.hostemu import PluginHost
from tests.support.http import push, sender
from tests.support.sentinel import assert_sentinel_next_on_channels

TYPED = {"n": {"type": "bigint"}, "tags": {"type": "array", "items": {"type": "string"}},
         "sentinel": {"type": "string"}}
GOOD = {"n": 1.5, "tags": ["a"], "sentinel": "x"}


class FakeRest:
    """eKuiper's REST as far as the plugin asks it: ``schemas[name]`` answered for streams, 404 otherwise, or
    ``status`` for every request (401: authentication on)."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.tables: dict[str, Any] = {}
        self.status = 200
        self.asked: list[str] = []
        rest = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rest.asked.append(self.path)
                parts = self.path.strip("/").split("/")
                found = (rest.schemas if parts[0] == "streams" else rest.tables).get(parts[1])
                status = rest.status if rest.status != 200 else 200 if found is not None else 404
                body = json.dumps(found if status == 200 else {"error": 1000, "message": "not found"}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rest() -> Iterator[FakeRest]:
    fake = FakeRest()
    yield fake
    fake.close()


@pytest.fixture
def started(plugin: Callable[..., PluginHost], rest: FakeRest) -> PluginHost:
    return plugin(KUIPER__BASIC__RESTIP="127.0.0.1", KUIPER__BASIC__RESTPORT=str(rest.port))


def test_rest_fields_checked_under_strict_validation(started: PluginHost, rest: FakeRest, server_port: int) -> None:
    rest.schemas["s1"] = TYPED
    ch = started.start_source("r1", "s1", {"datasource": "/v", "strictValidation": True})
    assert rest.asked == ["/streams/s1/schema"]
    reply = push(server_port, "/v", json.dumps([GOOD, {"n": "7", "tags": ["a", 2], "sentinel": "x"}, GOOD]))
    assert reply.status == 422
    assert reply.body["failures"] == [
        {"record": 1, "field": "n", "expected": "bigint", "found": "string"},
        {"record": 1, "field": "tags[1]", "expected": "string", "found": "number"}]
    assert reply.body["more"] == 0
    # nothing of the refused body arrived: the sentinel (itself checked: a string 'sentinel', n and tags) is next
    assert_sentinel_next_on_channels(sender(server_port, "/v"), ch, body=json.dumps(GOOD).encode(), record=GOOD)
    # the record is delivered as sent: the host converts (1.5 → 1), not the plugin
    assert push(server_port, "/v", json.dumps(GOOD)).status == 200
    assert ch.messages(1) == [GOOD]
    # a large body (decoded and checked in a worker thread, app.Exchange._large): the same verdict, its last record
    many = [GOOD] * 2000 + [dict(GOOD, tags=None, n=None)]
    reply = push(server_port, "/v", json.dumps(many))
    assert reply.status == 422 and reply.body["failures"] == [
        {"record": 2000, "field": "n", "expected": "bigint", "found": "null"}]
    assert_sentinel_next_on_channels(sender(server_port, "/v"), ch, body=json.dumps(GOOD).encode(), record=GOOD)


def test_a_table_and_a_changed_stream_seen_at_the_next_start(started: PluginHost, rest: FakeRest,
                                                             server_port: int) -> None:
    rest.tables["t1"] = {"n": {"type": "bigint"}}
    ch = started.start_source("r1", "t1", {"datasource": "/t", "strictValidation": True})
    assert rest.asked == ["/streams/t1/schema", "/tables/t1/schema"]
    assert push(server_port, "/t", '{"n": "x"}').status == 422
    started.stop_source(ch)
    rest.tables["t1"] = {"n": {"type": "string"}}  # the table replaced: its rules restart
    ch = started.start_source("r1", "t1", {"datasource": "/t", "strictValidation": True})
    assert push(server_port, "/t", '{"n": "x"}').status == 200
    assert push(server_port, "/t", '{"n": 1}').status == 422
    assert ch.messages(1) == [{"n": "x"}]


def test_when_the_check_applies(started: PluginHost, rest: FakeRest, server_port: int) -> None:
    """auto without STRICT_VALIDATION and off: REST is not even asked; on: checked without STRICT_VALIDATION; a
    stream without fields: nothing to check; FORMAT="binary": eKuiper skips the check, so does auto."""
    rest.schemas.update(s1=TYPED, plain={})
    bad = '{"n": "x", "tags": [], "sentinel": "x"}'
    started.start_source("r1", "s1", {"datasource": "/auto"})
    started.start_source("r2", "s1", {"datasource": "/off", "strictValidation": True, "validation": "off"})
    started.start_source("r3", "s1", {"datasource": "/bin", "strictValidation": True, "format": "binary"})
    assert rest.asked == []
    started.start_source("r4", "s1", {"datasource": "/on", "validation": "on"})
    started.start_source("r5", "plain", {"datasource": "/plain", "strictValidation": True})
    assert rest.asked == ["/streams/s1/schema", "/streams/plain/schema"]
    for path in ("/auto", "/off", "/bin", "/plain"):
        assert push(server_port, path, bad).status == 200, path
    assert push(server_port, "/on", bad).status == 422


def test_rest_requiring_auth_falls_back_to_the_property_or_fails_the_start(started: PluginHost, rest: FakeRest,
                                                                          server_port: int) -> None:
    rest.status = 401
    started.start_source("r0", "s0", {"datasource": "/other"})  # keeps the server up
    answer = started.start_source("r1", "s1", {"datasource": "/a", "strictValidation": True}, expect_ok=False)
    assert isinstance(answer, str)
    assert f"GET http://127.0.0.1:{rest.port}/streams/s1/schema answered 401" in answer
    assert "property 'schema' is not set" in answer and "Traceback" not in answer
    assert push(server_port, "/a", "{}").status == 404  # the failed start left no endpoint behind
    ch = started.start_source("r1", "s1", {"datasource": "/a", "strictValidation": True,
                                           "schema": "n bigint, pos struct(x float)"})
    reply = push(server_port, "/a", '{"n": true, "pos": 5}')
    assert reply.status == 422 and reply.body["failures"] == [
        {"record": 0, "field": "n", "expected": "bigint", "found": "boolean"}]
    assert_sentinel_next_on_channels(sender(server_port, "/a"), ch, body=b'{"n": 2, "pos": 5}',
                                     record={"n": 2, "pos": 5})


def test_rest_unreachable_names_the_address(plugin: Callable[..., PluginHost], server_port: int) -> None:
    from harness.net import free_port

    port = free_port()  # nothing listens: refused until the look-up's 2 s are up
    host = plugin(KUIPER__BASIC__RESTIP="127.0.0.1", KUIPER__BASIC__RESTPORT=str(port))
    answer = host.start_source("r1", "s1", {"datasource": "/u", "strictValidation": True}, expect_ok=False)
    assert isinstance(answer, str)
    assert f"GET http://127.0.0.1:{port}/streams/s1/schema" in answer and "Connection refused" in answer
    assert "'schema'" in answer


def test_a_shared_streams_source_asks_for_the_stream(started: PluginHost, rest: FakeRest, server_port: int) -> None:
    """A SHARED stream's source starts in the rule ``$$subtopo_<stream>`` with the opId ``subtopo_<stream>`` (eKuiper
    2.4): the stream's name is taken from the rule id."""
    rest.schemas["s1"] = {"n": {"type": "bigint"}}
    started.start_source("$$subtopo_s1", "subtopo_s1", {"datasource": "/sh", "strictValidation": True})
    assert rest.asked == ["/streams/s1/schema"]
    assert push(server_port, "/sh", '{"n": "x"}').status == 422
