"""Per-client rate limits (``rateLimit``): the bucket arithmetic and the bounded table in-process (with a clock the
test sets), everything else through the installed plugin under the emulated host over real HTTP. "Nothing else
arrived" is checked with a sentinel record.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from httppush_plugin import ratelimit
from httppush_plugin.answers import TooManyRequests
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.ratelimit import Buckets, RateLimit, parse_rate_limit
from tests.hostemu import PluginHost
from tests.support.http import RawClient, push, request, sender
from tests.support.metrics import samples, value
from tests.support.sentinel import assert_sentinel_next_on_channels

RECORD = '{"t": 1}'
TOKEN_A, TOKEN_B = "Tok-rl-a-19c2", "Tok-rl-b-77e0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit, "_now", fake)
    return fake


def retry_after(buckets: Buckets, client: str) -> int:
    with pytest.raises(TooManyRequests) as refused:
        buckets.take(client)
    return int(refused.value.headers["Retry-After"])


# -- parsing -------------------------------------------------------------------------------------------------------

def test_parse_rate_limit_defaults_and_off() -> None:
    for off in (None, {}, "", "off", False):
        assert parse_rate_limit(off) is None
    assert parse_rate_limit({"rate": 10}) == RateLimit(10.0, 10, "address", ratelimit.MAX_CLIENTS)
    assert parse_rate_limit({"rate": 0.5}) == RateLimit(0.5, 1, "address", ratelimit.MAX_CLIENTS)
    # a yaml file's keys arrive lower-cased
    assert parse_rate_limit({"rate": "2.5", "burst": 5, "by": "User", "maxclients": 50}) == RateLimit(2.5, 5, "user",
                                                                                                       50)
    assert EndpointConfig.from_props({"datasource": "/a"}).rate_limit is None


@pytest.mark.parametrize("value, needle", [
    ({"burst": 5}, "property 'rateLimit.rate' is None; must be the requests a second"),
    ({"rate": 0}, "property 'rateLimit.rate' is 0; must be more than 0"),
    ({"rate": "fast"}, "property 'rateLimit.rate' is 'fast'; must be more than 0"),
    ({"rate": True}, "property 'rateLimit.rate' is True"),
    ({"rate": 5, "burst": 0}, "property 'rateLimit.burst' is 0; must be from 1"),
    ({"rate": 5, "by": "ip"}, "property 'rateLimit.by' is 'ip'; must be address or user"),
    ({"rate": 5, "maxClients": 0}, "property 'rateLimit.maxClients' is 0"),
    ({"rate": 5, "per": "record"}, "property 'rateLimit' has key 'per'; allowed keys are rate, burst, by and "
                                   "maxClients"),
    ([5], "property 'rateLimit' is [5]; must be a mapping"),
])
def test_parse_rate_limit_errors_name_the_key(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_rate_limit(value)


def test_by_user_needs_an_auth_checked_from_the_head() -> None:
    with pytest.raises(ConfigError, match=re.escape("'rateLimit.by' is user, but 'auth' is none")):
        EndpointConfig.from_props({"datasource": "/a", "rateLimit": {"rate": 1, "by": "user"}})
    with pytest.raises(ConfigError, match=re.escape("'rateLimit.by' is user, but 'auth' is hmac")):
        EndpointConfig.from_props({"datasource": "/a", "rateLimit": {"rate": 1, "by": "user"},
                                   "auth": {"type": "hmac", "secret": "s"}})
    assert EndpointConfig.from_props({"datasource": "/a", "rateLimit": {"rate": 1, "by": "user"},
                                      "auth": {"type": "bearer", "tokens": [TOKEN_A]}}).rate_limit is not None


# -- the buckets ---------------------------------------------------------------------------------------------------

def test_bucket_burst_then_retry_after_from_the_refill(clock: Clock) -> None:
    buckets = Buckets(RateLimit(rate=0.25, burst=3))
    for _ in range(3):
        buckets.take("a")
    assert retry_after(buckets, "a") == 4  # one token at 0.25/s: 4 s
    clock.now += 1.5  # 0.375 tokens: 2.5 s to go → 3
    assert retry_after(buckets, "a") == 3
    clock.now += 2.5
    buckets.take("a")  # a whole token again
    buckets.take("b")  # another client has its own
    clock.now += 0.1
    assert retry_after(buckets, "a") == 4  # 0.025 tokens: ceil(3.9)
    clock.now += 3600  # refilled to burst, never beyond
    for _ in range(3):
        buckets.take("a")
    assert retry_after(buckets, "a") == 4
    assert buckets.stats.rate_limited == 4


def test_fast_rate_retry_after_is_at_least_one_second(clock: Clock) -> None:
    buckets = Buckets(RateLimit(rate=1000, burst=1))
    buckets.take("a")
    assert retry_after(buckets, "a") == 1


def test_table_bounded_full_buckets_forgotten_first_then_one_shared_bucket(clock: Clock) -> None:
    buckets = Buckets(RateLimit(rate=1, burst=2, max_clients=3))
    buckets.take("idle")  # will refill: the same as no bucket
    clock.now += 5
    buckets.take("busy-1")
    buckets.take("busy-1")
    buckets.take("busy-2")
    buckets.take("busy-2")
    assert len(buckets) == 3 and buckets.stats.rate_clients == 3
    buckets.take("new-1")  # replaces the full one (idle), not a busy one
    assert len(buckets) == 3
    assert retry_after(buckets, "busy-1") == 1  # busy-1 kept its empty bucket: no fresh burst by eviction
    # the table is full of active clients: newcomers share the overflow bucket (burst 2)
    buckets.take("new-2")
    buckets.take("new-3")
    with pytest.raises(TooManyRequests, match="tracks 3 clients, all active, so this one shares a bucket"):
        buckets.take("new-4")
    assert len(buckets) == 3 and buckets.stats.rate_clients == 3
    clock.now += 10  # everyone refilled: a newcomer gets its own bucket again
    buckets.take("new-5")
    with pytest.raises(TooManyRequests):
        for _ in range(3):
            buckets.take("new-5")


def test_a_client_rotating_addresses_is_bounded_by_the_table(clock: Clock) -> None:
    """Thousands of addresses within one refill period: at most (maxClients + 1) × burst requests are admitted."""
    buckets = Buckets(RateLimit(rate=1, burst=5, max_clients=100))
    admitted = 0
    for n in range(1000):
        for _ in range(5):  # each address spends its whole burst
            try:
                buckets.take(f"2001:db8::{n:x}")
                admitted += 1
            except TooManyRequests:
                pass
            clock.now += 0.0001  # 0.5 s in all: less than burst / rate
    assert admitted == (100 + 1) * 5, admitted
    assert len(buckets) == 100


# -- through the plugin --------------------------------------------------------------------------------------------

def test_429_per_address_before_the_body_with_retry_after_and_metrics(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/rl", "meta": ["remoteAddr"], "trustedProxies": ["127.0.0.1"],
                                        "rateLimit": {"rate": 0.2, "burst": 3}})
    hog, other = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "203.0.113.10"}
    for n in range(3):
        assert push(server_port, "/rl", f'{{"n": {n}}}', headers=hog).status == 200
    refused = push(server_port, "/rl", '{"n": "refused"}', headers=hog)
    assert refused.status == 429, refused
    assert "rate limit reached" in refused.body["error"] and "0.2 requests a second per client address" in \
        refused.body["error"] and "burst 3" in refused.body["error"], refused.body
    assert 1 <= int(refused.headers["Retry-After"]) <= 5, refused.headers
    with RawClient(server_port) as conn:  # refused from the head: the body is never read
        conn.send(request(path="/rl", headers={**hog, "Content-Length": "100000"}))
        answer = conn.read_response(timeout=2.0)
        assert answer.status == 429 and answer.header("Connection") == "close", answer
    assert [m["message"]["n"] for m in ch.take(3)] == [0, 1, 2]
    assert push(server_port, "/rl", RECORD, headers=other).status == 200  # another client has its own bucket
    assert ch.take(1)[0] == {"message": {"t": 1}, "meta": {"remoteAddr": "203.0.113.10"}}
    found = samples(server_port)
    assert value(found, "httppush_rate_limited_total", method="POST", path="/rl") == 2
    assert value(found, "httppush_requests_total", method="POST", path="/rl", status="429") == 2
    assert value(found, "httppush_rate_limit_clients", method="POST", path="/rl") == 2
    assert_sentinel_next_on_channels(sender(server_port, "/rl", headers={"X-Forwarded-For": "203.0.113.11"}), ch)


def test_429_by_user_after_auth(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/u", "rateLimit": {"rate": 0.1, "burst": 2, "by": "user"},
                                        "auth": {"type": "bearer", "tokens": {"a": TOKEN_A, "b": TOKEN_B}}})
    a, b = {"Authorization": f"Bearer {TOKEN_A}"}, {"Authorization": f"Bearer {TOKEN_B}"}
    assert [push(server_port, "/u", RECORD, headers=a).status for _ in range(3)] == [200, 200, 429]
    refused = push(server_port, "/u", RECORD, headers=a)
    assert refused.status == 429 and "per user" in refused.body["error"], refused
    assert push(server_port, "/u", RECORD, headers={"Authorization": "Bearer wrong"}).status == 401  # auth first
    assert push(server_port, "/u", RECORD, headers=b).status == 200  # same address, another user
    assert ch.messages(3) == [{"t": 1}] * 3
    assert_sentinel_next_on_channels(sender(server_port, "/u", headers=b), ch)


def test_streams_on_one_route_must_agree_and_a_restart_keeps_the_buckets(host: PluginHost, server_port: int) -> None:
    props = {"datasource": "/agree", "trustedProxies": ["127.0.0.1"], "rateLimit": {"rate": 0.1, "burst": 1}}
    first = host.start_source("r1", "s1", props)
    answer = host.start_source("r2", "s2", {**props, "rateLimit": {"rate": 5}}, expect_ok=False)
    assert "different 'rateLimit'" in answer and "0.1/s, burst 1" in answer, answer
    hog = {"X-Forwarded-For": "198.51.100.1"}
    assert push(server_port, "/agree", RECORD, headers=hog).status == 200
    assert push(server_port, "/agree", RECORD, headers=hog).status == 429
    assert first.messages(1) == [{"t": 1}]
    host.stop_source(first)
    ch = host.start_source("r1", "s1", dict(props))  # a rule restart
    assert push(server_port, "/agree", '{"t": "again"}', headers=hog).status == 429  # no fresh burst
    assert_sentinel_next_on_channels(sender(server_port, "/agree", headers={"X-Forwarded-For": "198.51.100.2"}), ch)



def from_peer(port: int, path: str, address: str) -> Any:
    """A sentinel sender whose connections come from another loopback address: another peer, its own bucket."""
    import http.client

    def send(body: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            return conn.getresponse().status
        finally:
            conn.close()

    return send


def test_x_forwarded_for_from_an_untrusted_peer_buys_no_fresh_bucket(host: PluginHost, server_port: int) -> None:
    """The client is the peer unless the peer is a trusted proxy: a forged X-Forwarded-For (or Forwarded) on each
    request gets no new bucket, with trustedProxies that do not list the peer and without any."""
    ch = host.start_source("r1", "s1", {"datasource": "/spoof", "meta": ["remoteAddr"],
                                        "trustedProxies": ["192.0.2.0/24"],  # not the test's loopback peer
                                        "rateLimit": {"rate": 0.1, "burst": 2}})
    statuses = [push(server_port, "/spoof", RECORD, headers={"X-Forwarded-For": f"203.0.113.{n}",
                                                             "Forwarded": f"for=203.0.113.{n}"}).status
                for n in range(4)]
    assert statuses == [200, 200, 429, 429], statuses
    assert ch.take(2) == [{"message": {"t": 1}, "meta": {"remoteAddr": "127.0.0.1"}}] * 2
    assert value(samples(server_port), "httppush_rate_limit_clients", method="POST", path="/spoof") == 1
    bare = host.start_source("r2", "s2", {"datasource": "/spoof2", "rateLimit": {"rate": 0.1, "burst": 1}})
    assert [push(server_port, "/spoof2", RECORD, headers={"X-Forwarded-For": f"203.0.113.{n}"}).status
            for n in range(3)] == [200, 429, 429]
    assert bare.messages(1) == [{"t": 1}]
    assert_sentinel_next_on_channels(from_peer(server_port, "/spoof", "127.0.0.2"), ch)
    assert_sentinel_next_on_channels(from_peer(server_port, "/spoof2", "127.0.0.3"), bare)
