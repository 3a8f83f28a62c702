"""Health, metrics and the log on the shared server, over real HTTP: against the installed plugin under the emulated
host, and (for a source that is configured but not attached, a moment no host command can hold open) against the
server in-process with a real nng channel."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pynng
import pytest

from harness.net import free_port
from httppush_plugin import answers
from tests.hostemu import DataChannel, PluginHost
from tests.support.http import RawClient, parse_response, push, request, sender, wait_healthy
from tests.support.metrics import gauge_of, samples, value
from tests.support.sentinel import assert_sentinel_next_on_channels

# -- health ----------------------------------------------------------------------------------------------------------


def test_health_lists_every_endpoint_and_its_sources(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/api"})
    host.start_source("r2", "s2", {"datasource": "/api"})
    host.start_source("r3", "s3", {"datasource": "/devices/{id}", "method": "PUT", "format": "delimited"})
    answer = wait_healthy(server_port)
    assert answer.headers["Content-Type"] == "application/json", answer
    health = answer.body
    assert health["status"] == "ok"
    endpoints = {(e["method"], e["path"]): e for e in health["endpoints"]}
    assert set(endpoints) == {("POST", "/api"), ("PUT", "/devices/{id}")}
    assert endpoints[("PUT", "/devices/{id}")]["format"] == ["delimited"]
    sources = {(s["rule"], s["stream"], s["attached"], s["connected"]) for s in endpoints[("POST", "/api")]["sources"]}
    assert sources == {("r1", "s1", True, True), ("r2", "s2", True, True)}
    head = push(server_port, "/healthz", b"", method="HEAD")
    assert head.status == 200 and head.body == "" and int(head.headers["Content-Length"]) == len(answer.raw)


def test_health_and_metrics_are_get_only_and_a_source_may_share_the_path(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/metrics"})
    assert isinstance(ch, DataChannel)
    assert push(server_port, "/metrics", '{"pushed": true}').body == {"accepted": 1, "sources": 1}
    assert ch.messages(1) == [{"pushed": True}]
    assert push(server_port, "/metrics", b"", method="GET").status == 200  # GET is the scrape, POST the source
    assert push(server_port, "/healthz", "{}").status == 405
    assert push(server_port, "/healthz", "{}", method="PUT").status == 405
    assert_sentinel_next_on_channels(sender(server_port, "/metrics"), ch)


def test_health_and_metrics_paths_can_be_moved_and_switched_off(make_host: Callable[..., PluginHost],
                                                                 server_port: int) -> None:
    host = make_host(server_port, PYHTTPPUSH_SERVER_HEALTH_PATH="/-/ready", PYHTTPPUSH_SERVER_METRICS_PATH="off")
    host.start_source("r1", "s1", {"datasource": "/api"})
    wait_healthy(server_port, "/-/ready")
    for path in ("/healthz", "/metrics"):  # not at the default paths
        assert push(server_port, path, b"", method="GET").status == 404, path


def test_health_is_503_while_a_source_is_not_attached(tmp_path: Path) -> None:
    """In-process: the configure()→open() gap (subscribed, channel not dialled yet) held open on purpose."""
    from httppush_plugin.channel import ChannelSender
    from httppush_plugin.decoders import build_decoder
    from httppush_plugin.properties import EndpointConfig
    from httppush_plugin.routing import Subscription
    from httppush_plugin.server import SharedServer
    from httppush_plugin.settings import ServerConfig

    port = free_port()
    # no httpServerRestartGrace: the server goes with its last source at once
    server = SharedServer(lambda: ServerConfig(ip="127.0.0.1", port=port, restart_grace=0.0))
    endpoint = EndpointConfig.from_props({"datasource": "/api"})
    sub = Subscription(endpoint, build_decoder(endpoint, None), instance=("rule1", "stream1", 0))
    url = f"ipc://{tmp_path}/channel.ipc"
    pull = pynng.Pull0(recv_timeout=5000)
    pull.listen(url)
    try:
        server.subscribe(sub)
        answer = push(port, "/healthz", b"", method="GET")
        assert answer.status == 503, answer
        health = answer.body
        assert health["status"] == "unavailable"
        assert health["endpoints"][0]["sources"] == [
            {"source": "rule rule1 stream stream1 instance 0", "attached": False, "rule": "rule1",
             "stream": "stream1", "instance": 0}]
        found = samples(port)
        assert value(found, "httppush_sources", method="POST", path="/api", attached="false") == 1
        other = Subscription(endpoint.__class__.from_props({"datasource": "/other"}), sub.decoder,
                             instance=("rule2", "stream2", 0))
        server.subscribe(other)
        sender_ = server.call(ChannelSender.connect(url, 1.0, "rule rule1 stream stream1 instance 0"))
        server.attach(sub, sender_)
        answer = push(port, "/healthz", b"", method="GET")  # one of two attached
        assert answer.status == 503 and answer.body["status"] == "partial", answer
        server.unsubscribe(other)
        answer = push(port, "/healthz", b"", method="GET")
        assert answer.status == 200 and answer.body["status"] == "ok", answer
        assert push(port, "/api", '{"a": 1}').status == 200
        assert json.loads(pull.recv())["message"] == {"a": 1}
        server.run(sender_.close)
        server.unsubscribe(sub)
        with pytest.raises(OSError):  # the last source went: so did the server, health and all
            push(port, "/healthz", b"", method="GET")
    finally:
        pull.close()
        if server._loop is not None:
            server._loop.call_soon_threadsafe(server._loop.stop)


# -- metrics ---------------------------------------------------------------------------------------------------------


def test_metrics_count_requests_records_bytes_and_failures(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    csv = host.start_source("r2", "s2", {"datasource": "/csv", "format": "delimited", "fields": ["a", "b"]})
    assert isinstance(ch, DataChannel) and isinstance(csv, DataChannel)
    bodies = ['{"a": 1}', '[{"a": 2}, {"a": 3}]', '{"a": 4}']
    for body in bodies:
        assert push(server_port, "/api", body).status == 200
    assert push(server_port, "/api", '{"a": ').status == 400
    assert push(server_port, "/api", "[1]").status == 400
    assert push(server_port, "/csv", "1,2\n3,4\n").status == 200
    assert push(server_port, "/nowhere", "{}").status == 404
    assert push(server_port, "/api", "{}", method="GET").status == 405
    with RawClient(server_port) as conn:  # over httpServerMaxBodySize: answered from its head, the body never read
        conn.send(request(path="/api", headers={"Content-Length": str(11 * 1024 * 1024)}))
        assert conn.read_response().status == 413
    assert ch.messages(4) == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]
    found = samples(server_port)
    api = {"method": "POST", "path": "/api"}
    assert value(found, "httppush_requests_total", **api, status="200") == 3
    assert value(found, "httppush_requests_total", **api, status="400") == 2
    assert value(found, "httppush_requests_total", **api, status="413") == 1
    assert value(found, "httppush_requests_total", method="POST", path="/csv", status="200") == 1
    assert value(found, "httppush_requests_total", status="404") == 1  # no endpoint: no method and path labels
    assert value(found, "httppush_requests_total", status="405") == 1
    assert value(found, "httppush_records_total", **api) == 4
    assert value(found, "httppush_records_total", method="POST", path="/csv") == 2
    assert value(found, "httppush_request_body_bytes_total", **api) == sum(map(len, bodies)) + len('{"a": ') + 3
    assert value(found, "httppush_decode_failures_total", **api, format="json") == 2
    assert value(found, "httppush_delivery_failures_total", **api) == 0
    assert value(found, "httppush_request_duration_seconds_count", **api) == 5  # decoded: the 413 never was
    assert value(found, "httppush_request_duration_seconds_bucket", **api, le="+Inf") == 5
    assert 0 < value(found, "httppush_request_duration_seconds_sum", **api) < 5
    assert value(found, "httppush_sources", **api, attached="true") == 1
    assert value(found, "httppush_open_connections") >= 1  # this scrape's own
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_metrics_count_delivery_failures(make_host: Callable[..., PluginHost], server_port: int) -> None:
    host = make_host(server_port, PYHTTPPUSH_SERVER_MAX_SOURCE_BACKLOG=str(64 * 1024))
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    assert isinstance(ch, DataChannel)
    ch.pause()
    body = json.dumps([{"n": i, "pad": "x" * 200} for i in range(100)])
    statuses = [push(server_port, "/api", body).status for _ in range(40)]
    assert 503 in statuses and 200 in statuses, statuses
    found = samples(server_port)
    api = {"method": "POST", "path": "/api"}
    assert value(found, "httppush_delivery_failures_total", **api) == statuses.count(503)
    assert value(found, "httppush_requests_total", **api, status="503") == statuses.count(503)
    assert value(found, "httppush_records_total", **api) == 100 * statuses.count(200)
    ch.resume()
    assert len(ch.take(100 * statuses.count(200), timeout=15)) == 100 * statuses.count(200)
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_metrics_outlive_a_restart_of_the_only_rule(host: PluginHost, server_port: int) -> None:
    """The server stops with its last source and starts with the next; the counters belong to the process."""
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    assert isinstance(ch, DataChannel)
    assert push(server_port, "/api", "{}").status == 200
    assert host.stop_source(ch) == "ok"
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    assert isinstance(ch, DataChannel)
    assert push(server_port, "/api", "{}").status == 200
    found = samples(server_port)
    assert value(found, "httppush_requests_total", method="POST", path="/api", status="200") == 2


def test_metrics_speak_openmetrics_when_asked(host: PluginHost, server_port: int) -> None:
    host.start_source("r1", "s1", {"datasource": "/api"})
    assert push(server_port, "/api", "{}").status == 200
    answer = push(server_port, "/metrics", b"", method="GET",
                  headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/openmetrics-text"), answer
    text = answer.raw.decode()
    assert text.endswith("# EOF\n") and 'httppush_requests_total{method="POST",path="/api",status="200"} 1.0' in text


def test_metrics_label_values_are_the_configured_paths_never_the_requested_ones(host: PluginHost,
                                                                                server_port: int) -> None:
    """A client can't grow the series: a template's label is the template; an unknown path has no label at all."""
    host.start_source("r1", "s1", {"datasource": "/d/{id}"})
    for i in range(20):
        assert push(server_port, f"/d/{i}", "{}").status == 200
        assert push(server_port, f"/random-{i}", "{}").status == 404
    found = samples(server_port)
    paths = {dict(labels).get("path") for name, labels in found if name == "httppush_requests_total"}
    assert paths == {"/d/{id}", None}, paths
    assert value(found, "httppush_requests_total", method="POST", path="/d/{id}", status="200") == 20


def test_scrape_while_pushing_from_other_connections(host: PluginHost, server_port: int) -> None:
    """Scrapes interleave with pushes on the one event loop; the totals add up exactly."""
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    assert isinstance(ch, DataChannel)

    async def run() -> list[int]:
        async def client(n: int) -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
            ok, buf = 0, b""
            for i in range(n):
                body = json.dumps({"i": i}).encode()
                writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                while (parsed := parse_response(buf, strict=True)) is None:
                    data = await reader.read(65536)
                    assert data, f"the server closed the connection before answering; received {buf[:300]!r}"
                    buf += data
                answer, used = parsed
                buf = buf[used:]
                ok += answer.status == 200
            writer.close()
            return ok

        async def scraper() -> int:
            scrapes = 0
            for _ in range(20):
                reply = await asyncio.to_thread(push, server_port, "/metrics", b"", "GET")
                scrapes += reply.status == 200
            return scrapes

        return await asyncio.gather(*(client(200) for _ in range(4)), scraper())

    *oks, scrapes = asyncio.run(run())
    assert scrapes == 20 and oks == [200] * 4
    assert len(ch.take(800, timeout=15)) == 800
    found = samples(server_port)
    assert value(found, "httppush_requests_total", method="POST", path="/api", status="200") == 800
    assert value(found, "httppush_records_total", method="POST", path="/api") == 800
    assert gauge_of(found, "httppush_buffered_bytes") == 0
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


# -- the log -------------------------------------------------------------------------------------------------------


def test_a_logged_refusal_escapes_what_the_client_sent(host: PluginHost, server_port: int) -> None:
    """A path with ``%0a`` (decoded: a newline) or ``%1b`` (ESC) is logged escaped: no forged line, no terminal
    control."""
    ch = host.start_source("r1", "s1", {"datasource": "/logged"})
    forged = "/nope%0a2026-12-03%2007:00:00%20ERROR%20FORGED-LINE%0d%1b[31m%e2%80%a8red"
    with RawClient(server_port) as conn:  # sent as is: the first refusal of this plugin, so it is logged
        conn.send(request(path=forged, body="{}"))
        assert conn.read_response().status == 404
    assert_sentinel_next_on_channels(sender(server_port, "/logged"), ch)
    text = host.log_text()
    lines = [line for line in text.splitlines() if "FORGED-LINE" in line]
    assert lines and all("rejected" in line and line.index("rejected") > line.index("FORGED") for line in lines), text
    assert "/nope\\x0a2026-12-03 07:00:00 ERROR FORGED-LINE\\x0d\\x1b[31m\\u2028red" in text, text
    assert "\x1b" not in text and "\u2028" not in text


def test_an_unexpected_error_is_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise ValueError("bad value 'x\n" + "FOR" + "GED ERROR line'")  # not one word in this source line

    try:
        fail()
    except ValueError as exc:
        with caplog.at_level(logging.ERROR, logger="httppush_plugin.answers"):
            assert answers.error_answer(exc).status == 500
    lines = caplog.text.splitlines()
    assert any("Traceback" in line for line in lines) and any("in fail" in line for line in lines), caplog.text
    assert [line for line in lines if "FORGED" in line] == [
        line for line in lines if "unexpected error while handling a request: ValueError: bad value 'x\\x0aFORGED"
        in line] != [], caplog.text
    assert answers.printable("plain /path?q=1 é") == "plain /path?q=1 é"
    assert answers.printable("\t\x7f\x85") == "\\x09\\x7f\\x85"
