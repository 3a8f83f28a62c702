"""The application's stages in-process: route → admit → idempotency → decode → meta → frame → deliver → answer, with a
fake channel sender in place of eKuiper's channel and request heads built by hand (no socket, no process)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from httppush_plugin.answers import Answer, Later
from httppush_plugin.app import Exchange, PushApp
from httppush_plugin.decoders import build_decoder
from httppush_plugin.delivery import Delivery
from httppush_plugin.framing import Frames
from httppush_plugin.layout import SearchPaths
from httppush_plugin.properties import EndpointConfig
from httppush_plugin.request import RequestHead
from httppush_plugin.routing import EndpointTable, Subscription
from httppush_plugin.settings import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
READING = b'{"t": 21.5}'


class FakeSender:
    """A host channel that takes everything at once (``hold``: sends wait until :meth:`settle`)."""

    def __init__(self, label: str, hold: bool = False) -> None:
        self.label = label
        self.hold = hold
        self.connected = True
        self.sent: list[Frames] = []
        self.waiting: list[Delivery] = []

    def send(self, frames: Frames, then: Callable[[Delivery], None] | None = None) -> Delivery | None:
        self.sent.append(frames)
        if not self.hold:
            return None
        delivery = Delivery(frames, 0, len(frames.data), then)
        self.waiting.append(delivery)
        return delivery

    def settle(self, fail_after: int | None = None) -> None:
        for delivery in self.waiting:
            if fail_after is None:
                delivery.complete()
            else:
                delivery.fail(delivery.frames.ends[fail_after - 1] if fail_after else 0, f"{self.label}: gone")
        self.waiting = []

    def envelopes(self) -> list[dict[str, Any]]:
        """Every frame sent, decoded as eKuiper reads it (``{"message", "meta"}``)."""
        out = []
        for frames in self.sent:
            data, start = frames.data, 0
            for end in frames.ends:
                assert data[start] == 1 and int.from_bytes(data[start + 1:start + 9], "big") == end - start - 9
                out.append(json.loads(data[start + 9:end]))
                start = end
        return out


class Endpoints:
    """A table with an app on it; ``add`` subscribes a source with a fake sender."""

    def __init__(self, **config: Any) -> None:
        self.table = EndpointTable()
        self.app = PushApp(self.table, ServerConfig(**config))

    def add(self, props: dict[str, Any], name: str = "s1", hold: bool = False, attach: bool = True) -> FakeSender:
        endpoint = EndpointConfig.from_props(props)
        sub = Subscription(endpoint, build_decoder(endpoint, SearchPaths(ROOT)), instance=("r", name, 0))
        self.table.add(sub)
        sender = FakeSender(f"rule r stream {name} instance 0", hold)
        if attach:
            sub.attach(sender)  # type: ignore[arg-type]
        return sender

    def request(self, path: str, body: bytes = READING, method: str = "POST", headers: dict[str, str] | None = None,
                content_type: str = "application/json") -> Answer | Later:
        head = RequestHead(method, path.split("?")[0], path.encode(), [(k.encode(), v.encode()) for k, v in (
            headers or {}).items()], content_type, "10.0.0.9", bool(body))
        decided = self.app.head(head)
        return decided if isinstance(decided, Answer) else decided.body(body)

    def stats(self, method: str, path: str) -> dict[int, int]:
        return self.table.metrics.endpoint(method, path).statuses


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The app creates asyncio objects (locks, events); each test gets its own loop, set as current."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def answer(result: Answer | Later) -> Answer:
    assert isinstance(result, Answer), f"expected an answer now, got {result!r}"
    return result


def error(result: Answer | Later) -> str:
    return str(json.loads(answer(result).body)["error"])


def test_a_body_is_decoded_framed_and_delivered_once(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api"})
    result = answer(endpoints.request("/api", b'[{"a": 1}, {"a": 2}]'))
    assert (result.status, result.body) == (200, b'{"accepted":2,"sources":1}')
    assert sender.envelopes() == [{"message": {"a": 1}}, {"message": {"a": 2}}]
    assert endpoints.stats("POST", "/api") == {200: 1}
    assert endpoints.table.metrics.endpoint("POST", "/api").records == 2


def test_one_bad_decoding_refuses_the_body_for_every_source(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    as_json = endpoints.add({"datasource": "/api"}, "s1")
    as_lines = endpoints.add({"datasource": "/api", "framing": "lines"}, "s2")
    result = answer(endpoints.request("/api", b'{"a": 1}\n{"a": 2}'))  # whole JSON it is not; NDJSON it is
    assert result.status == 400 and b"not valid JSON" in result.body
    assert as_json.sent == as_lines.sent == []
    assert endpoints.table.metrics.endpoint("POST", "/api").decode_failures == {"json": 1}


def test_route_refusals_and_the_servers_own_paths(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    endpoints.add({"datasource": "/api"})
    assert "no source listens on /nope" in error(endpoints.request("/nope"))
    not_allowed = answer(endpoints.request("/api", method="PUT"))
    assert (not_allowed.status, not_allowed.headers) == (405, {"Allow": "POST"})
    health = answer(endpoints.request("/healthz", b"", "GET"))
    assert health.status == 200 and json.loads(health.body)["endpoints"][0]["sources"][0]["attached"] is True
    metrics = answer(endpoints.request("/metrics", b"", "GET"))
    assert b'httppush_requests_total{method="",path="",status="404"} 1.0' in metrics.body
    assert answer(endpoints.request("/metrics", b"", "POST")).headers == {"Allow": "GET, HEAD"}


def test_a_template_routes_and_its_variables_reach_meta(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/d/{id}/t", "meta": ["path", "remoteAddr"]})
    assert answer(endpoints.request("/d/42/t")).status == 200
    assert sender.envelopes() == [{"message": {"t": 21.5}, "meta": {"id": "42", "path": "/d/42/t",
                                                                     "remoteAddr": "10.0.0.9"}}]
    assert answer(endpoints.request("/d/42/t/x")).status == 404


def test_meta_forwarded_address_headers_and_query(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api", "meta": ["remoteAddr"], "trustedProxies": ["10.0.0.0/8"],
                            "metaHeaders": ["x-site-*"], "metaQuery": ["unit"]})
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.2", "X-Site-Id": "plant-7"}
    assert answer(endpoints.request("/api?unit=C&other=1", headers=headers)).status == 200
    assert sender.envelopes()[0]["meta"] == {"remoteAddr": "203.0.113.7", "x-site-id": "plant-7", "unit": "C"}


def test_basic_auth_refuses_at_the_head(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api", "auth": {"type": "basic", "users": {"alice": "pw"}},
                            "meta": ["user"]})
    refused = answer(endpoints.request("/api"))
    # answered from the head: whether the body is then read and dropped or the connection closes is the protocol's
    assert refused.status == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    good = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert answer(endpoints.request("/api", headers={"Authorization": good})).status == 200
    assert sender.envelopes() == [{"message": {"t": 21.5}, "meta": {"user": "alice"}}]
    assert endpoints.stats("POST", "/api") == {401: 1, 200: 1}


def test_hmac_is_checked_with_the_body(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/hook", "auth": {"type": "hmac", "secret": "s3"}})
    signature = "sha256=" + hmac.new(b"s3", READING, hashlib.sha256).hexdigest()
    assert answer(endpoints.request("/hook", headers={"X-Hub-Signature-256": signature})).status == 200
    assert answer(endpoints.request("/hook", b'{"t": 99}', headers={"X-Hub-Signature-256": signature})).status == 401
    assert len(sender.sent) == 1


def test_a_delivery_that_waits_answers_later_and_one_that_fails_says_what_arrived(
        loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api"}, hold=True)
    later = endpoints.request("/api", b'[{"a": 1}, {"a": 2}]')
    assert isinstance(later, Exchange)
    got: list[Answer] = []
    later.then(got.append)
    assert got == []
    sender.settle()
    assert [(a.status, a.body) for a in got] == [(200, b'{"accepted":2,"sources":1}')]
    failing = endpoints.request("/api", b'[{"a": 1}, {"a": 2}]')
    assert isinstance(failing, Later)
    failing.then(got.append)
    sender.settle(fail_after=1)
    body = json.loads(got[-1].body)
    assert got[-1].status == 503 and body["delivered"] == {"rule r stream s1 instance 0": 1}
    assert endpoints.table.metrics.endpoint("POST", "/api").delivery_failures == 1


def test_idempotency_replays_conflicts_and_forgets(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api", "idempotency": True}, hold=True)
    key = {"Idempotency-Key": "k1"}
    first = endpoints.request("/api", headers=key)
    assert isinstance(first, Later)
    assert answer(endpoints.request("/api", headers=key)).status == 409  # still in flight
    sender.settle()
    replay = answer(endpoints.request("/api", headers=key))
    assert (replay.status, replay.headers) == (200, {"Idempotent-Replayed": "true"})
    assert answer(endpoints.request("/api", b'{"t": 0}', headers=key)).status == 422
    assert len(sender.sent) == 1
    stats = endpoints.table.metrics.endpoint("POST", "/api")
    assert (stats.replays, stats.key_conflicts) == (1, 2)


def test_every_answer_of_a_cors_route_carries_its_headers_once(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    endpoints.add({"datasource": "/api", "cors": {"origins": ["https://app.example"]}, "meta": ["requestId"],
                   "successStatus": 204, "auth": {"type": "bearer", "tokens": {"web": "t0k"}}})
    origin = {"Origin": "https://app.example", "X-Request-Id": "req-7"}
    ok = answer(endpoints.request("/api", headers={**origin, "Authorization": "Bearer t0k"}))
    refused = answer(endpoints.request("/api", headers=origin))
    bad = answer(endpoints.request("/api", b"[1]", headers={**origin, "Authorization": "Bearer t0k"}))
    for result, status in ((ok, 204), (refused, 401), (bad, 400)):
        assert result.status == status
        assert result.headers is not None and result.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert result.headers["X-Request-Id"] == "req-7"
        assert result.headers["Access-Control-Expose-Headers"] == "Retry-After, X-Request-Id"
    assert ok.body == b""
    preflight = answer(endpoints.request("/api", b"", "OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"}))
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Methods"] == "POST"
    stranger = answer(endpoints.request("/api", b"", "OPTIONS", headers={"Origin": "https://evil.example"}))
    assert stranger.status == 403


def test_a_page_of_another_origin_is_refused_before_auth_and_not_backed_off(loop: asyncio.AbstractEventLoop) -> None:
    """The origin is checked first (403, credentials unchecked), and a refused origin is no failed authentication:
    eleven of them leave the client's credentials working (the backoff's 429 comes after ten failures)."""
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api", "cors": {"origins": ["https://app.example"]},
                            "auth": {"type": "bearer", "tokens": {"web": "t0k"}}})
    for _ in range(11):
        refused = answer(endpoints.request("/api", headers={"Origin": "https://evil.example",
                                                             "Authorization": "Bearer wrong"}))
        assert refused.status == 403 and b"'https://evil.example' may not push to /api" in refused.body, refused
        assert refused.headers is not None and refused.headers["Vary"] == "Origin", refused.headers
        assert "Access-Control-Allow-Origin" not in refused.headers
    ok = answer(endpoints.request("/api", headers={"Origin": "https://app.example", "Authorization": "Bearer t0k"}))
    assert ok.status == 200 and len(sender.sent) == 1, ok
    assert endpoints.stats("POST", "/api") == {403: 11, 200: 1}


def test_a_source_not_attached_yet_is_waited_for(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints()
    endpoints.add({"datasource": "/api"}, attach=False)
    sub = endpoints.table.lookup("/api", "POST").subscriptions[0]  # type: ignore[union-attr]
    later = endpoints.request("/api")
    assert isinstance(later, Later)
    got: list[Answer] = []
    later.then(got.append)
    sender = FakeSender("late")
    loop.call_soon(sub.attach, sender)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert [a.status for a in got] == [200] and len(sender.sent) == 1


def test_too_many_records_is_413_and_nothing_is_sent(loop: asyncio.AbstractEventLoop) -> None:
    endpoints = Endpoints(max_records=2)
    sender = endpoints.add({"datasource": "/api"})
    result = answer(endpoints.request("/api", b"[{}, {}, {}]"))
    assert result.status == 413 and b"httpServerMaxRecords" in result.body and sender.sent == []


def test_a_large_body_cancelled_as_the_server_stops_is_answered_503_and_closes(
        loop: asyncio.AbstractEventLoop) -> None:
    """A body of LARGE_BODY or more is worked on in a task. Cancelled (the server stops) before that task took its
    first step, or while it waits for the worker thread, it is still answered: 503, counted once, connection closed."""
    endpoints = Endpoints()
    sender = endpoints.add({"datasource": "/api"})
    big = b"[" + b",".join([b'{"k": 1}'] * 130_000) + b"]"  # over 1 MiB: LARGE_BODY

    async def cancelled(steps_first: int) -> list[Answer]:
        exchange = endpoints.request("/api", big)
        assert isinstance(exchange, Exchange) and exchange.task is not None
        for _ in range(steps_first):
            await asyncio.sleep(0)  # the task starts and waits on the worker thread
        got: list[Answer] = []
        exchange.then(got.append)
        exchange.cancel()
        await asyncio.wait_for(asyncio.gather(exchange.task, return_exceptions=True), 10)
        return got

    for steps_first in (0, 1):
        got = loop.run_until_complete(cancelled(steps_first))
        assert [(a.status, a.close) for a in got] == [(503, True)], got
        assert b"stopping" in got[0].body
    assert sender.sent == [] and endpoints.stats("POST", "/api") == {503: 2}


def test_auth_backoff_counts_per_client_in_a_window_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from httppush_plugin import backoff as backoff_module
    from httppush_plugin.answers import TooManyRequests, Unauthorized
    from httppush_plugin.auth import parse_auth

    clock = [1000.0]
    monkeypatch.setattr(backoff_module, "_now", lambda: clock[0])
    auth = parse_auth({"type": "basic", "users": {"alice": "pw"}})
    assert auth is not None
    good = head("/api", {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()})
    bad = head("/api", {"Authorization": "Basic " + base64.b64encode(b"alice:no").decode()})
    guard = backoff_module.AuthBackoff(max_failures=3, window=60, max_peers=100)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            guard.admit(auth, bad, "10.0.0.1")
    assert guard.admit(auth, good, "10.0.0.1") == "alice"  # a success does not clear the count
    with pytest.raises(Unauthorized):
        guard.admit(auth, bad, "10.0.0.1")
    clock[0] += 20
    with pytest.raises(TooManyRequests) as caught:
        guard.admit(auth, good, "10.0.0.1")
    assert caught.value.headers == {"Retry-After": "40"}
    assert guard.admit(auth, good, "10.0.0.2") == "alice"  # another client
    clock[0] += 40.5  # the window from the first failure is over
    assert guard.admit(auth, good, "10.0.0.1") == "alice"
    for index in range(5000):  # many addresses: at most max_peers remembered, the least recently failing dropped
        guard.failed(f"198.51.{index // 256}.{index % 256}")
    assert len(guard) == 100


def head(path: str, headers: dict[str, str]) -> RequestHead:
    return RequestHead("POST", path, path.encode(), [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                       "application/json", "10.0.0.9", True)


def test_what_a_large_body_will_hold_counts_against_the_budget(loop: asyncio.AbstractEventLoop) -> None:
    """Before a large body is decoded, what its records and frames will hold is counted in httpServerMaxBuffered: 413
    when it could never fit, 503 while other requests hold too much, given back once it is answered."""
    endpoints = Endpoints(max_buffered=4 * 2**20, max_body_size=2 * 2**20)
    sender = endpoints.add({"datasource": "/api"})
    budget = endpoints.app.budget

    async def answered(body: bytes) -> Answer:
        result = endpoints.request("/api", body)
        if isinstance(result, Answer):
            return result
        got: list[Answer] = []
        result.then(got.append)
        await asyncio.wait_for(asyncio.gather(*endpoints.app.offload.tasks), 10)
        return got[0]

    def settle(body: bytes) -> Answer:
        return loop.run_until_complete(answered(body))

    values = b"[" + b",".join([b"1"] * 500_000) + b"]"  # ~1 MB of values: about 45 MB decoded
    refused = settle(values)
    assert refused.status == 413 and b"httpServerMaxBuffered" in refused.body and budget.used == 0
    records = b"[" + b",".join([b'{"pad": "%s"}' % (b"x" * 200)] * 100) + b"]"  # 21 KB in 100 records
    budget.take(budget.limit - 50_000)  # other requests hold nearly everything
    busy = settle(records)
    assert busy.status == 503 and b"retry later" in busy.body and sender.sent == []
    budget.give(budget.limit - 50_000)
    assert settle(records).status == 200 and len(sender.envelopes()) == 100 and budget.used == 0
