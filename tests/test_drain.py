"""What a load balancer needs of one node, over real HTTP against the installed plugin under the emulated host:
draining (the authenticated admin actions, health 503 "draining", Connection: close, the grace, undraining, a drain
that outlives the plugin process), connection max age and max requests, and health's states."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from httppush_plugin.answers import Answer
from httppush_plugin.drain import Drain
from tests.hostemu import DataChannel, PluginHost
from tests.support.http import RawClient, push, request, sender, wait_healthy
from tests.support.metrics import samples, value
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

TOKEN = "drain-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def marker(installed: Path) -> Iterator[Path]:
    """The drain marker in the emulated host's data folder: removed after the test whatever happened, so that a
    drain never leaks into the next test's plugin."""
    path = installed.parents[2] / "data" / "pyhttppush.draining"
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def _started(plugin: Callable[..., PluginHost], port: int, **env: str) -> tuple[PluginHost, DataChannel]:
    host = plugin(PYHTTPPUSH_SERVER_ADMIN_TOKEN=TOKEN, **env)
    channel = host.start_source("r1", "s1", {"datasource": "/api"})
    assert isinstance(channel, DataChannel)
    wait_healthy(port)
    return host, channel


def _exchange(conn: RawClient, n: int) -> tuple[int, str]:
    """Push record ``n`` on ``conn``: the status and the answer's Connection header."""
    conn.send(request(path="/api", body=json.dumps({"n": n})))
    answer = conn.read_response()
    return answer.status, answer.header("Connection") or ""


def test_admin_actions_need_the_token(plugin: Callable[..., PluginHost], server_port: int, marker: Path) -> None:
    host = plugin()  # no httpServerAdminToken: switched off
    host.start_source("r1", "s1", {"datasource": "/api"})
    wait_healthy(server_port)
    off = push(server_port, "/admin/drain", b"", headers=BEARER)
    assert off.status == 403 and "httpServerAdminToken" in off.body["error"], off
    assert push(server_port, "/admin/drain", b"", method="GET").status == 405  # POST only
    assert wait_healthy(server_port).body["status"] == "ok"
    assert not marker.exists()


def test_a_wrong_token_is_refused_and_backs_off(plugin: Callable[..., PluginHost], server_port: int,
                                                marker: Path) -> None:
    """The admin actions back off on their own: refused admin tokens do not lock out devices from the same address,
    and a device's refused credentials (a proxy on the node: one address for all) do not lock out the operator."""
    host, _ = _started(plugin, server_port)
    device = {"Authorization": "Bearer device-token-0123456789"}
    secure = host.start_source("r2", "s2", {"datasource": "/secure", "auth": {"type": "bearer", "tokens": [
        device["Authorization"].split()[1]]}})
    assert isinstance(secure, DataChannel)
    for attempt in range(10):
        assert push(server_port, "/secure", "{}", headers={"Authorization": f"Bearer no-{attempt}"}).status == 401
    assert push(server_port, "/secure", "{}", headers=device).status == 429  # the devices' backoff
    with_body = push(server_port, "/admin/drain", b"{}", headers=BEARER)
    assert with_body.status == 413 and "no body" in with_body.body["error"], with_body
    assert push(server_port, "/admin/undrain", b"", headers=BEARER).status == 200  # not the admin's
    for attempt in range(10):
        wrong = push(server_port, "/admin/drain", b"", headers={"Authorization": f"Bearer wrong-{attempt:020d}"})
        assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer"), wrong
    backed_off = push(server_port, "/admin/drain", b"", headers=BEARER)  # even the right one, now
    assert backed_off.status == 429 and "Retry-After" in backed_off.headers, backed_off
    found = samples(server_port)  # counted with the requests that reached no endpoint
    assert value(found, "httppush_requests_total", status="401") == 10  # the admin's (no method and path)
    assert value(found, "httppush_requests_total", status="429") == 1
    assert value(found, "httppush_requests_total", method="POST", path="/secure", status="401") == 10
    assert wait_healthy(server_port).body["status"] == "ok" and not marker.exists()


def test_drain_serves_closes_and_is_drained_after_the_grace(plugin: Callable[..., PluginHost], server_port: int,
                                                            marker: Path) -> None:
    _, channel = _started(plugin, server_port, PYHTTPPUSH_SERVER_DRAIN_GRACE="30")
    with RawClient(server_port) as busy, RawClient(server_port) as idle:
        assert _exchange(busy, 1) == (200, "")  # kept alive before the drain
        assert _exchange(idle, 2) == (200, "")
        drained = push(server_port, "/admin/drain?grace=1.5", b"", headers=BEARER)
        assert drained.status == 200, drained
        assert drained.body["status"] == "draining" and drained.body["graceS"] == 1.5, drained
        assert drained.body["drained"] is False and 0 < drained.body["graceLeftS"] <= 1.5, drained
        assert drained.body["persisted"] is False and not marker.exists()
        health = push(server_port, "/healthz", b"", method="GET")
        assert health.status == 503 and health.body["status"] == "draining", health
        # still served, and the connection closes after the answer
        assert _exchange(busy, 3) == (200, "close")
        assert busy.wait_closed(2.0)
        assert push(server_port, "/api", '{"n": 4}').headers.get("Connection") == "close"
        # the idle one is closed once the grace is over
        assert idle.wait_closed(10.0) and idle.unexpected == b""
    assert push(server_port, "/healthz", b"", method="GET").body["drained"] is True
    assert [m["n"] for m in channel.messages(4)] == [1, 2, 3, 4]
    undrained = push(server_port, "/admin/undrain", b"", headers=BEARER)
    assert undrained.status == 200 and undrained.body["status"] == "ok" and "drained" not in undrained.body
    assert not marker.exists()
    with RawClient(server_port) as conn:  # kept alive again
        assert _exchange(conn, 5) == (200, "")
        assert _exchange(conn, 6) == (200, "")
    assert [m["n"] for m in channel.messages(2)] == [5, 6]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), channel)


def test_a_drain_can_wait_for_its_grace(plugin: Callable[..., PluginHost], server_port: int, marker: Path) -> None:
    """``?wait=true``: a preStop hook's curl returns once the node is drained."""
    _started(plugin, server_port)
    started = time.monotonic()
    held = push(server_port, "/admin/drain?grace=1&wait=true", b"", headers=BEARER)
    assert held.status == 200 and held.body["status"] == "draining" and held.body["drained"] is True, held
    assert time.monotonic() - started >= 0.9
    for query, what in (("grace=soon", "grace"), ("grace=-1", "grace"), ("grace=", "grace"), ("wait=maybe", "wait"),
                        ("wait", "wait"), ("persist=1", "persist"), ("grce=5", "unknown parameter 'grce'")):
        bad = push(server_port, f"/admin/drain?{query}", b"", headers=BEARER)
        assert bad.status == 400 and what in bad.body["error"], (query, bad)


def test_an_undrain_ends_a_waiting_drain(plugin: Callable[..., PluginHost], server_port: int, marker: Path) -> None:
    """A preStop hook's ``curl -f`` must not take a drain cut short for one that ran its course."""
    _started(plugin, server_port)
    with RawClient(server_port, timeout=30) as waiting:
        waiting.send(request(path="/admin/drain?grace=60&wait=true", headers=BEARER))
        wait_until(lambda: push(server_port, "/healthz", b"", method="GET").status == 503, 10.0, "the drain")
        assert push(server_port, "/admin/undrain", b"", headers=BEARER).status == 200
        cut = waiting.read_response(timeout=10.0)
    assert cut.status == 409 and "undrain" in cut.json()["error"], cut
    assert wait_healthy(server_port).body["status"] == "ok"


def test_a_drain_outlives_the_plugin_process(plugin: Callable[..., PluginHost], make_host: Callable[..., PluginHost],
                                             server_port: int, marker: Path) -> None:
    """An upgrade or restart while drained comes back drained, until undrained."""
    starter = lambda **env: make_host(server_port, may_exit=True, **env)  # noqa: E731
    first, _ = _started(starter, server_port)
    assert push(server_port, "/admin/drain?grace=0", b"", headers=BEARER).body["persisted"] is False
    first.close()  # not kept: the next process serves at once
    assert not marker.exists()
    second, _ = _started(starter, server_port)
    kept = push(server_port, "/admin/drain?grace=0&persist=true", b"", headers=BEARER)
    assert kept.status == 200 and kept.body["persisted"] is True, kept
    assert json.loads(marker.read_text())["grace"] == 0
    second.close()
    third = plugin(PYHTTPPUSH_SERVER_ADMIN_TOKEN=TOKEN)
    channel = third.start_source("r1", "s1", {"datasource": "/api"})
    health = wait_until(lambda: (reply := push(server_port, "/healthz", b"", method="GET")).body.get(
        "endpoints") and reply.body["endpoints"][0]["sources"][0]["attached"] and reply, 10.0, "the source to attach")
    assert health.status == 503 and health.body["status"] == "draining" and health.body["drained"] is True, health
    assert health.body["persisted"] is True
    assert push(server_port, "/api", '{"n": 1}').status == 200  # served, while drained
    assert push(server_port, "/admin/undrain", b"", headers=BEARER).body["status"] == "ok"
    assert wait_healthy(server_port).body["status"] == "ok" and not marker.exists()
    assert [m["n"] for m in channel.messages(1)] == [1]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), channel)


def test_max_requests_per_connection(plugin: Callable[..., PluginHost], server_port: int) -> None:
    _, channel = _started(plugin, server_port, PYHTTPPUSH_SERVER_MAX_CONNECTION_REQUESTS="3")
    with RawClient(server_port) as conn:
        assert [_exchange(conn, n) for n in range(3)] == [(200, ""), (200, ""), (200, "close")]
        assert conn.wait_closed(2.0)
    with RawClient(server_port) as conn:  # pipelined past the limit: answered up to the one that closes
        conn.send(b"".join(request(path="/api", body=json.dumps({"n": n})) for n in range(3, 7)))
        answers = [conn.read_response()]
        while not answers[-1].closes:
            answers.append(conn.read_response())
        assert len(answers) >= 3 and {a.status for a in answers} == {200}, answers
        assert conn.wait_closed(2.0) and conn.leftover == b""
    # every request answered 2xx delivered, those never answered not
    assert [m["n"] for m in channel.messages(3 + len(answers))] == list(range(3 + len(answers)))
    assert_sentinel_next_on_channels(sender(server_port, "/api"), channel)


def test_max_connection_age(plugin: Callable[..., PluginHost], server_port: int) -> None:
    age = 2.0
    _, channel = _started(plugin, server_port, PYHTTPPUSH_SERVER_MAX_CONNECTION_AGE=str(age))
    opened = time.monotonic()  # the server accepted each connection after this
    with RawClient(server_port) as busy, RawClient(server_port) as idle:
        assert _exchange(idle, 0)[0] == 200
        statuses, done = [], []
        while not statuses or statuses[-1][1] != "close":
            statuses.append(_exchange(busy, len(statuses) + 1))
            done.append(time.monotonic())
            assert len(statuses) < 100_000, "never closed"
        assert {status for status, _ in statuses} == {200} and busy.wait_closed(2.0)
        # answered before the connection could be 2 s old: kept alive (a loaded machine may answer none that soon)
        young = [connection for (_, connection), at in zip(statuses, done, strict=True) if at - opened < age]
        assert set(young) <= {""}, young
        assert done[-1] - opened >= age  # the close came once it was that old
        # idle past its age: not closed under a client that may be sending just then, but its next answer closes it
        assert not idle.has_data() and _exchange(idle, -1) == (200, "close") and idle.wait_closed(2.0)
    assert len(channel.messages(len(statuses) + 2)) == len(statuses) + 2
    assert_sentinel_next_on_channels(sender(server_port, "/api"), channel)


def test_health_while_a_rule_restarts(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """During httpServerRestartGrace a stopped source's endpoint is vacant (503 to its clients): health says so,
    "partial" while another is attached, "unavailable" once none is."""
    host, channel = _started(plugin, server_port, PYHTTPPUSH_SERVER_RESTART_GRACE="30")
    other = host.start_source("r2", "s2", {"datasource": "/other"})
    assert isinstance(other, DataChannel)
    wait_healthy(server_port)
    host.stop_source(channel)
    health = push(server_port, "/healthz", b"", method="GET")
    assert health.status == 503 and health.body["status"] == "partial", health
    assert [(e["path"], e["sources"]) for e in health.body["endpoints"] if "vacantS" in e] == [("/api", [])]
    host.stop_source(other)
    health = push(server_port, "/healthz", b"", method="GET")
    assert health.status == 503 and health.body["status"] == "unavailable", health
    assert sorted(e["path"] for e in health.body["endpoints"]) == ["/api", "/other"]


def test_a_stream_may_not_take_an_admin_action(plugin: Callable[..., PluginHost], server_port: int) -> None:
    host, _ = _started(plugin, server_port)
    refused = host.start_source("r2", "s2", {"datasource": "/admin/drain"}, expect_ok=False)
    assert isinstance(refused, str) and "httpServerAdminPath" in refused, refused
    assert host.start_source("r3", "s3", {"datasource": "/admin/drain", "method": "PUT"}) is not None


def test_a_grace_timer_that_fires_early_still_answers_drained() -> None:
    """The loop's timer may fire a little before the monotonic clock reaches the grace's end; a ``?wait=true`` held
    until then answered ``"drained": false`` (seen once under load). The grace's end is when its timer fires."""
    async def scenario() -> list[tuple[str, bool]]:
        drain = Drain()
        seen: list[tuple[str, bool]] = []
        drain.start(60.0)
        drain.hold(lambda ended: seen.append((ended, drain.drained)) or Answer(200, b"", {}))
        assert not drain.drained
        drain._over()  # the timer, firing before the clock says the 60 s are over
        return seen

    assert asyncio.run(scenario()) == [("drained", True)]
