"""The host stalls: it stops reading its data channel but keeps the socket open (``DataChannel.pause``).

The plugin's send timeout (the host's ``sendTimeout``, 1 s, see tests/hostemu.py) measures lack of progress: a host
that takes nothing for 1 s gets its channel closed, and every request still waiting is answered 503 with, per
source, how many of its records were handed over (``delivered``) before that. The promise checked here: once the
host reads again, it receives exactly the records of the 200s plus the first ``delivered`` records of each 503 —
in order within each request — and nothing else, ever (a sentinel pushed at the end is the next record). A host that
reads slowly but steadily never hits the timeout, however long the batch takes.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tests.hostemu import SEND_TIMEOUT_MS, PluginHost
from tests.support.http import RawClient, push, request, sender
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until

SEND_TIMEOUT_S = SEND_TIMEOUT_MS / 1000


def channel_connected(port: int, rule: str) -> bool:
    """Whether the plugin reports its channel to ``rule``'s source connected (``GET /healthz``)."""
    health = push(port, "/healthz", b"", method="GET").body
    return any(source.get("connected") for endpoint in health["endpoints"] for source in endpoint["sources"]
               if source["rule"] == rule)


def batch(client: int, seq: int, n: int) -> bytes:
    pad = "p" * 60
    return ("[" + ",".join(f'{{"c":{client},"b":{seq},"k":{k},"pad":"{pad}"}}' for k in range(n)) + "]").encode()


def test_stalled_host_503_delivered_counts_are_exact(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """The host pauses. First, 10 small batches (20 records) in a row: the kernel's socket buffer takes them, so
    they are delivered and answered 200 although nobody reads. Then 8 clients push 3 batches of 5,000 records
    (~0.5 MB) each: requests wait, then get 503 + ``delivered`` once 1 s has passed without progress (the next
    request dials the channel again, and stalls again). After resume: exactly the 200s' records and each 503's first
    ``delivered`` records arrive, each request's in order, then the sentinel."""
    host = make_host(server_port)
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    label = "rule r1 stream s1 instance 0"
    assert push(server_port, "/api", '{"warm": 1}').status == 200
    assert ch.messages(1) == [{"warm": 1}]
    assert channel_connected(server_port, "r1")
    # the plugin's sender has one connection; the SDK keeps the one it dialled as the source started, unused
    others = ch.connections() - 1
    n = 5_000
    results: dict[tuple[int, int], tuple[int, Any, float]] = {}
    sizes: dict[tuple[int, int], int] = {}

    def client(c: int, batches: int, size: int) -> None:
        with RawClient(server_port, timeout=30) as conn:
            for seq in range(batches):
                started = time.monotonic()
                sizes[(c, seq)] = size
                conn.send(request(path="/api", body=batch(c, seq, size)))
                answer = conn.read_response(timeout=30)
                results[(c, seq)] = (answer.status, answer.json(), time.monotonic() - started)
                if answer.header("Connection") == "close":
                    break

    ch.pause()
    paused_at = time.monotonic()
    client(99, 10, 20)
    threads = [threading.Thread(target=client, args=(c, 3, n)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stalled_for = time.monotonic() - paused_at
    ch.resume()

    assert len(results) == 34, f"only {len(results)} of 34 requests were answered"
    expected: dict[tuple[int, int], int] = {}
    statuses: dict[int, int] = defaultdict(int)
    for key, (status, doc, took) in sorted(results.items()):
        statuses[status] += 1
        assert status in (200, 503), (key, status, doc)
        assert took < SEND_TIMEOUT_S + 3, f"request {key} was answered only after {took:.1f} s"
        if status == 200:
            assert doc == {"accepted": sizes[key], "sources": 1}, doc
            expected[key] = sizes[key]
        else:
            assert set(doc) == {"error", "delivered"}, doc
            assert set(doc["delivered"]) == {label}, doc
            delivered = doc["delivered"][label]
            assert 0 <= delivered < sizes[key], doc
            assert label in doc["error"], doc
            expected[key] = delivered
    assert all(results[(99, seq)][0] == 200 for seq in range(10)), "a batch the kernel buffer could take got no 200"
    assert statuses[503] > 0, "nothing was refused: the host never stalled the plugin"
    first = [took for (c, seq), (status, _, took) in results.items() if c < 8 and seq == 0 and status == 503]
    assert max(first) >= SEND_TIMEOUT_S * 0.9, f"the first 503s came after {max(first):.2f} s: before the timeout"
    partial = sorted(v for k, v in expected.items() if results[k][0] == 503)
    total = sum(expected.values())
    print(f"\nhost paused {stalled_for:.1f} s: {dict(statuses)}; 503s delivered {partial} records; "
          f"{total} records due after resume")
    assert statuses[503] > 0, "nothing was refused: the host never stalled the plugin"

    records = ch.messages(total, timeout=60)
    by_request: dict[tuple[int, int], list[int]] = defaultdict(list)
    for record in records:
        by_request[(record["c"], record["b"])].append(record["k"])
    for key, count in expected.items():
        assert by_request.get(key, []) == list(range(count)), \
            f"request {key} ({results[key][0]}, delivered {count}): got {len(by_request.get(key, []))} records"
    assert set(by_request) <= set(expected), set(by_request) - set(expected)
    # Before the sentinel the host must have read whatever else the channels closed after a 503 still held: it has
    # once their connections are gone. What stays is the SDK's and the sender's current one, if any (health says).
    wait_until(lambda: ch.connections() == others + channel_connected(server_port, "r1"), 10.0,
               lambda: f"the channels closed after a 503 to be read to their end ({ch.connections()} connections, "
                       f"{others} besides the sender's)")
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)
    assert ch.records.empty() and not ch.dropped


def test_slow_but_steady_host_gets_200_not_503(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """The host reads 0.3 s, pauses 0.3 s, and so on: never 1 s without progress. A batch of 100,000 records
    (the default httpServerMaxRecords) takes several seconds to hand over, and is answered 200."""
    host = make_host(server_port)
    ch = host.start_source("r1", "s1", {"datasource": "/api"})
    n = 100_000
    body = ("[" + ",".join(f'{{"k":{k},"pad":"{"q" * 60}"}}' for k in range(n)) + "]").encode()
    stop = threading.Event()
    cycles = [0]

    def stutter() -> None:
        while not stop.is_set():
            ch.pause()
            time.sleep(0.3)  # the stimulus: a host that stops reading for 0.3 s ...
            ch.resume()
            cycles[0] += 1
            time.sleep(0.3)  # ... and reads for 0.3 s
        ch.resume()

    reader = threading.Thread(target=stutter)
    reader.start()
    try:
        started = time.monotonic()
        reply = push(server_port, "/api", body, timeout=120)
        took = time.monotonic() - started
    finally:
        stop.set()
        reader.join()
    print(f"\n100,000 records ({len(body) / 2**20:.1f} MiB) to a host reading 0.3 s on / 0.3 s off: {reply.status} "
          f"after {took:.1f} s ({cycles[0]} pause cycles)")
    assert reply.status == 200, reply
    assert reply.body == {"accepted": n, "sources": 1}
    assert took > 3 * SEND_TIMEOUT_S, f"delivery took only {took:.1f} s: the test did not outlast the send timeout"
    records = ch.messages(n, timeout=60)
    assert [r["k"] for r in records] == list(range(n))
    assert_sentinel_next_on_channels(sender(server_port, "/api"), ch)
