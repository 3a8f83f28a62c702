"""Idempotent retries (property ``idempotency``), over real HTTP against the installed plugin (emulated host)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.hostemu import DataChannel, PluginHost
from tests.support.http import Reply, push, sender
from tests.support.metrics import gauge, samples, value
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

ON = {"window": 60, "maxKeys": 100}


def keyed(port: int, path: str, body: str, key: str, **headers: str) -> Reply:
    return push(port, path, body, headers={"Idempotency-Key": key, **headers})


def start(host: PluginHost, props: dict[str, Any] | None = None, path: str = "/api") -> DataChannel:
    ch = host.start_source("r1", "s1", {"datasource": path, "idempotency": ON, **(props or {})})
    assert isinstance(ch, DataChannel)
    return ch


def test_a_retry_gets_the_stored_answer_and_is_not_delivered_again(host: PluginHost, server_port: int) -> None:
    ch = start(host)
    first = keyed(server_port, "/api", '[{"n": 1}, {"n": 2}]', "order-17")
    assert first.status == 200 and first.body == {"accepted": 2, "sources": 1}
    assert "Idempotent-Replayed" not in first.headers
    again = keyed(server_port, "/api", '[{"n": 1}, {"n": 2}]', "order-17")
    assert again.status == 200 and again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert ch.messages(2) == [{"n": 1}, {"n": 2}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)  # the retry's records never went out
    found = samples(server_port)
    assert value(found, "httppush_idempotent_replays_total", method="POST", path="/api") == 1
    assert value(found, "httppush_idempotency_keys", method="POST", path="/api") == 1


def test_the_same_key_for_another_body_is_422_and_delivers_nothing(host: PluginHost, server_port: int) -> None:
    ch = start(host)
    assert keyed(server_port, "/api", '{"n": 1}', "k1").status == 200
    for body, extra in (('{"n": 2}', {}), ('{"n": 1}', {"Content-Type": "application/x-ndjson"})):
        answer = keyed(server_port, "/api", body, "k1", **extra)
        assert answer.status == 422, answer
        assert "Idempotency-Key 'k1' was used for a different request" in answer.body["error"]
    assert keyed(server_port, "/api", '{"n": 1}', '"k1"').headers.get("Idempotent-Replayed") == "true"  # sf-string
    assert ch.messages(1) == [{"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_the_query_is_part_of_the_request_and_quoted_keys_are_unescaped(host: PluginHost, server_port: int) -> None:
    ch = start(host)
    assert keyed(server_port, "/api?site=a", '{"n": 1}', 'k"q').status == 200
    assert keyed(server_port, "/api?site=b", '{"n": 1}', 'k"q').status == 422  # another query: another request
    replay = keyed(server_port, "/api?site=a", '{"n": 1}', '"k\\"q"')  # RFC 8941 string for the key k"q
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true", replay
    for malformed in ('"k\\x"', '"k"q"', '"k\\"'):
        assert keyed(server_port, "/api", '{"n": 1}', malformed).status == 400, malformed
    assert ch.messages(1) == [{"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_a_key_in_flight_is_never_evicted() -> None:
    """The store itself: eviction skips keys whose request is still being handled."""
    from httppush_plugin.answers import Answer, Conflict
    from httppush_plugin.idempotency import IdempotencyConfig, KeyStore, Ticket
    from httppush_plugin.metrics import EndpointStats
    from httppush_plugin.request import RequestHead

    def head(key: str) -> RequestHead:
        return RequestHead("POST", "/api", b"/api", [(b"Idempotency-Key", key.encode())], "", "127.0.0.1")

    store = KeyStore(IdempotencyConfig(window=60, max_keys=2), EndpointStats("POST", "/api"))
    busy = store.admit(head("busy"), None, b"f1")
    done = store.admit(head("done"), None, b"f2")
    assert isinstance(busy, Ticket) and isinstance(done, Ticket)
    done.settle(Answer(200, b"{}"))
    assert isinstance(store.admit(head("new"), None, b"f3"), Ticket)  # over maxKeys: "done" goes, "busy" stays
    with pytest.raises(Conflict):
        store.admit(head("busy"), None, b"f1")
    assert isinstance(store.admit(head("done"), None, b"f2"), Ticket)  # forgotten: new again
    assert store.stats.evictions == 1


def test_a_key_is_forgotten_after_an_answer_that_is_not_2xx(host: PluginHost, server_port: int) -> None:
    ch = start(host)
    assert keyed(server_port, "/api", '{"n": ', "k2").status == 400
    assert keyed(server_port, "/api", '{"n": ', "k2").status == 400  # handled again, not replayed
    fixed = keyed(server_port, "/api", '{"n": 2}', "k2")
    assert fixed.status == 200 and "Idempotent-Replayed" not in fixed.headers
    assert ch.messages(1) == [{"n": 2}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_without_the_property_the_header_is_ignored(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/plain"})
    assert isinstance(ch, DataChannel)
    for _ in range(2):
        answer = keyed(server_port, "/plain", '{"n": 1}', "k")
        assert answer.status == 200 and "Idempotent-Replayed" not in answer.headers
    assert ch.messages(2) == [{"n": 1}, {"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/plain"), ch)


def test_unusable_keys_are_400(host: PluginHost, server_port: int) -> None:
    ch = start(host)
    for key in ("x" * 256, "a b", "caf\u00e9".encode().decode("latin-1"), '""'):
        answer = keyed(server_port, "/api", '{"n": 1}', key)
        assert answer.status == 400 and "Idempotency-Key must be 1 to 255 visible ASCII" in answer.body["error"], key
    assert keyed(server_port, "/api", '{"n": 1}', "x" * 255).status == 200
    assert ch.messages(1) == [{"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_a_key_in_flight_gets_409_then_the_answer(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """The host stops reading: the first request's records wait, its key is in flight; a retry then is 409. The host's
    send timeout is 5 s: long enough to see the stall in ``/metrics``, which renders at most once a second."""
    ch = start(make_host(server_port, send_timeout_ms=5000))
    ch.pause()
    filler = json.dumps([{"pad": "x" * 1000}] * 600)  # ~600 KB: more than the IPC socket buffers hold
    results: dict[str, Reply] = {}
    threads = [threading.Thread(target=lambda: results.update(filler=push(server_port, "/api", filler))),
               threading.Thread(target=lambda: results.update(first=keyed(server_port, "/api", '{"n": 1}', "k3")))]
    threads[0].start()
    # the filler's records wait at the stalled channel (its body and the records the kernel did not take are held)
    wait_until(lambda: gauge(server_port, "httppush_buffered_bytes") > len(filler), 10.0,
               "the filler's records to wait at the stalled channel")
    threads[1].start()
    wait_until(lambda: value(samples(server_port), "httppush_idempotency_keys", method="POST", path="/api") >= 1,
               10.0, "the first keyed request to reach the plugin")
    busy = keyed(server_port, "/api", '{"n": 1}', "k3")
    assert busy.status == 409 and busy.headers["Retry-After"] == "1", busy
    assert "is still being handled" in busy.body["error"]
    ch.resume()
    for thread in threads:
        thread.join(timeout=15)
    assert results["filler"].status == 200 and results["first"].status == 200, results
    assert len(ch.take(601, timeout=15)) == 601
    replay = keyed(server_port, "/api", '{"n": 1}', "k3")
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_keys_expire_after_the_window(host: PluginHost, server_port: int) -> None:
    ch = start(host, {"idempotency": {"window": 1}})
    assert keyed(server_port, "/api", '{"n": 1}', "k4").status == 200
    assert keyed(server_port, "/api", '{"n": 1}', "k4").headers.get("Idempotent-Replayed") == "true"
    time.sleep(1.2)  # the stimulus: the 1 s window passes (what is tested: after it, the same request is new)
    fresh = keyed(server_port, "/api", '{"n": 1}', "k4")
    assert fresh.status == 200 and "Idempotent-Replayed" not in fresh.headers
    assert ch.messages(2) == [{"n": 1}, {"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_max_keys_evicts_the_oldest(host: PluginHost, server_port: int) -> None:
    ch = start(host, {"idempotency": {"window": 60, "maxKeys": 2}})
    for key in ("a", "b", "c"):
        assert keyed(server_port, "/api", json.dumps({"k": key}), key).status == 200
    assert keyed(server_port, "/api", '{"k": "c"}', "c").headers.get("Idempotent-Replayed") == "true"
    evicted = keyed(server_port, "/api", '{"k": "a"}', "a")  # "a" went when "c" came: delivered again
    assert evicted.status == 200 and "Idempotent-Replayed" not in evicted.headers
    assert ch.messages(4) == [{"k": "a"}, {"k": "b"}, {"k": "c"}, {"k": "a"}]
    found = samples(server_port)
    assert value(found, "httppush_idempotency_evictions_total", method="POST", path="/api") == 2  # a, then b
    assert value(found, "httppush_idempotency_keys", method="POST", path="/api") == 2
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_keys_survive_a_rule_restart(host: PluginHost, server_port: int) -> None:
    """Stopping the only rule stops the shared server; the keys belong to the process and are still there."""
    ch = start(host)
    assert keyed(server_port, "/api", '{"n": 1}', "k5").status == 200
    assert ch.messages(1) == [{"n": 1}]
    assert host.stop_source(ch) == "ok"
    ch = start(host)
    replay = keyed(server_port, "/api", '{"n": 1}', "k5")
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_keys_are_per_user_and_replays_keep_the_configured_answer(host: PluginHost, server_port: int) -> None:
    users = {"type": "basic", "users": {"ann": "pw1", "bob": "pw2"}}
    ch = start(host, {"auth": users, "successStatus": 201, "meta": ["requestId"]})
    ann = {"Authorization": "Basic YW5uOnB3MQ=="}
    bob = {"Authorization": "Basic Ym9iOnB3Mg=="}
    first = keyed(server_port, "/api", '{"n": 1}', "shared", **ann, **{"X-Request-Id": "req-1"})
    assert first.status == 201 and first.headers["X-Request-Id"] == "req-1"
    replay = keyed(server_port, "/api", '{"n": 1}', "shared", **ann, **{"X-Request-Id": "req-2"})
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["X-Request-Id"] == "req-2"  # the retry's own id
    assert keyed(server_port, "/api", '{"n": 1}', "shared", **bob).status == 201  # bob's key is his own
    assert [r["message"] for r in ch.take(2)] == [{"n": 1}, {"n": 1}]

    assert_sentinel_next_on_channels(sender(server_port, "/api", headers=ann), ch, status=201)  # successStatus


def test_one_users_keys_cannot_evict_anothers(host: PluginHost, server_port: int) -> None:
    """maxKeys is shared fairly: bob sending many keys forgets his own oldest ones, never ann's (she holds fewer)."""
    users = {"type": "basic", "users": {"ann": "pw1", "bob": "pw2"}}
    ch = start(host, {"auth": users, "idempotency": {"window": 60, "maxKeys": 4}})
    ann = {"Authorization": "Basic YW5uOnB3MQ=="}
    bob = {"Authorization": "Basic Ym9iOnB3Mg=="}
    for key in ("a1", "a2"):
        assert keyed(server_port, "/api", json.dumps({"ann": key}), key, **ann).status == 200
    for index in range(10):
        assert keyed(server_port, "/api", json.dumps({"bob": index}), f"b{index}", **bob).status == 200
    for key in ("a1", "a2"):
        replay = keyed(server_port, "/api", json.dumps({"ann": key}), key, **ann)
        assert replay.headers.get("Idempotent-Replayed") == "true", (key, replay)
    assert keyed(server_port, "/api", '{"bob": 9}', "b9", **bob).headers.get("Idempotent-Replayed") == "true"
    again = keyed(server_port, "/api", '{"bob": 0}', "b0", **bob)  # bob's oldest went: delivered again
    assert again.status == 200 and "Idempotent-Replayed" not in again.headers
    assert [r["message"] for r in ch.take(13)] == [{"ann": "a1"}, {"ann": "a2"}] + [
        {"bob": index} for index in range(10)] + [{"bob": 0}]
    found = samples(server_port)
    assert value(found, "httppush_idempotency_evictions_total", method="POST", path="/api") == 9  # all bob's
    assert_sentinel_next_on_channels(sender(server_port, "/api", headers=ann), ch)


def test_eviction_takes_from_the_user_holding_the_most() -> None:
    """The store itself: with N users each keeps at least maxKeys / N, whoever sends more."""
    from httppush_plugin.answers import Answer
    from httppush_plugin.idempotency import IdempotencyConfig, KeyStore, Ticket
    from httppush_plugin.metrics import EndpointStats
    from httppush_plugin.request import RequestHead

    store = KeyStore(IdempotencyConfig(window=60, max_keys=9), EndpointStats("POST", "/api"))

    def send(user: str, key: str) -> Answer | Ticket | None:
        head = RequestHead("POST", "/api", b"/api", [(b"idempotency-key", key.encode())], "", "127.0.0.1")
        outcome = store.admit(head, user, key.encode())
        if isinstance(outcome, Ticket):
            outcome.settle(Answer(200, b"{}"))
        return outcome

    for index in range(9):
        send("carol", f"c{index}")  # carol alone: she may hold every key
    for index in range(5):
        send("ann", f"a{index}")
    for index in range(40):
        send("bob", f"b{index}")
    held = {user: sum(1 for slot in store._entries if slot[0] == user) for user in ("ann", "bob", "carol")}
    assert held == {"ann": 3, "bob": 3, "carol": 3} and len(store) == 9, held
    assert isinstance(send("ann", "a4"), Answer) and isinstance(send("carol", "c8"), Answer)  # the newest kept
    assert isinstance(send("carol", "c0"), Ticket)  # the oldest went


def test_a_page_can_send_keys_and_read_the_replay_header(host: PluginHost, server_port: int) -> None:
    origin = "https://app.example.com"
    ch = start(host, {"cors": {"origins": [origin], "headers": ["Content-Type", "Idempotency-Key"]}})
    preflight = push(server_port, "/api", b"", method="OPTIONS",
                     headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                              "Access-Control-Request-Headers": "idempotency-key"})
    assert preflight.status == 204 and "Idempotency-Key" in preflight.headers["Access-Control-Allow-Headers"]
    for replayed in (False, True):
        answer = keyed(server_port, "/api", '{"n": 1}', "web-1", Origin=origin)
        assert answer.status == 200 and answer.headers["Access-Control-Allow-Origin"] == origin, answer
        assert answer.headers["Access-Control-Expose-Headers"] == "Retry-After, Idempotent-Replayed"
        assert (answer.headers.get("Idempotent-Replayed") == "true") == replayed
    assert ch.messages(1) == [{"n": 1}]
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)


def test_fan_out_sources_must_agree_on_idempotency(host: PluginHost, server_port: int) -> None:
    start(host)
    answer = host.start_source("r2", "s2", {"datasource": "/api"}, expect_ok=False)
    assert isinstance(answer, str) and "'idempotency'" in answer and "stream s1" in answer, answer


#: Bodies a fuzzed client sends: three good ones (one, one, two records) and one that is not JSON.
BODIES = ('{"n": 0}', '{"n": 1}', '[{"n": 2}, {"n": 3}]', '{"n": ')
#: One request: (key index or None for no key, body index).
REQUESTS = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.integers(0, len(BODIES) - 1)),
                    min_size=1, max_size=15)


def test_fuzz_sequences_of_keyed_requests_against_an_oracle(host: PluginHost, server_port: int) -> None:
    """Random sequences of requests with keys from a small pool: every answer is the oracle's (deliver, replay, 422,
    400), and exactly the records of the delivered requests arrive, in order, then the sentinel."""
    ch = start(host)

    @settings(max_examples=60, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def run(requests: list[tuple[int | None, int]]) -> None:
        prefix = uuid.uuid4().hex[:8]  # keys stay in the plugin between examples: each example has its own
        remembered: dict[str, int] = {}
        expected: list[Any] = []
        for key_index, body_index in requests:
            body = BODIES[body_index]
            key = None if key_index is None else f"{prefix}-{key_index}"
            answer = keyed(server_port, "/api", body, key) if key else push(server_port, "/api", body)
            good = body_index < 3
            if key is not None and key in remembered:
                if remembered[key] == body_index:
                    assert answer.status == 200 and answer.headers.get("Idempotent-Replayed") == "true", answer
                else:
                    assert answer.status == 422, answer
                continue
            assert "Idempotent-Replayed" not in answer.headers, answer
            if not good:
                assert answer.status == 400, answer
                continue
            assert answer.status == 200, answer
            records = json.loads(body)
            expected.extend(records if isinstance(records, list) else [records])
            if key is not None:
                remembered[key] = body_index
        assert ch.messages(len(expected)) == expected
        assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)

    run()
