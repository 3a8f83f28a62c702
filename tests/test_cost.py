"""What one costly body costs the plugin: each class of body that once cost far more than its bytes (issue 14), pushed
at up to ``httpServerMaxBodySize`` (10 MiB) to the installed plugin under the emulated host, while another client
keeps pushing small bodies to another source on its own connection.

Each row checks the bounds the issue states: the other client's every POST is answered 2xx within 250 ms; the
plugin process (the emulated host runs it as a subprocess: ``host.process.pid``) spends at most 1.5 s of CPU from
just before the body is sent until it is answered, the small requests included; its peak resident set stays within
256 MB of its resident set at rest just before; and the body gets its status, a 4xx naming the limit it passed. The
figures are printed (``-s``); ``bench/cost.py`` measures the decoders alone.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.procstat import cpu_seconds, peak_rss_mb, reset_peak_rss, rss_mb
from tests.hostemu import DataChannel, PluginHost
from tests.support.http import RawClient, Reply, assert_ok, request, sender, wait_healthy
from tests.support.sentinel import assert_sentinel_next_on_channels

MIB = 2**20
#: the issue's bounds
LATENCY_BOUND_S = 0.25
CPU_BOUND_S = 1.5
PEAK_OVER_IDLE_MB = 256.0


def costed_push(host: PluginHost, ch: DataChannel, port: int, path: str, body: bytes, label: str,
                headers: dict[str, str] | None = None) -> Reply:
    """Push ``body`` to ``path`` (the source of ``ch``) while small bodies go to ``/small`` on another connection;
    check the issue's bounds on the other client's latency, the plugin's CPU and its peak memory; return the reply.

    A latency bound missed once is measured once more, with the same body: a plugin that holds other clients up
    misses it again, a moment when the machine's other work took the CPU (CI's neighbours) does not recur. Records
    the first try delivered are taken off ``ch`` first."""
    for attempt in (1, 2):
        reply, slowest, cpu, idle, peak = _costed_once(host, port, path, body, label, headers)
        if slowest <= LATENCY_BOUND_S or attempt == 2:
            break
        print(f"  a small POST took {slowest * 1000:.0f} ms: measured once more")
        if reply.status == 200:
            ch.messages(reply.body["accepted"], timeout=60)
    assert slowest <= LATENCY_BOUND_S, f"a small POST took {slowest * 1000:.0f} ms (twice over the bound)"
    assert cpu <= CPU_BOUND_S, f"the plugin spent {cpu:.2f} s of CPU"
    assert peak - idle <= PEAK_OVER_IDLE_MB, f"peak RSS {peak:.0f} MB, {peak - idle:.0f} MB over idle"
    return reply


def _costed_once(host: PluginHost, port: int, path: str, body: bytes, label: str,
                 headers: dict[str, str] | None) -> tuple[Reply, float, float, float, float]:
    """One try of :func:`costed_push`: the reply, the slowest small POST (s), the plugin's CPU (s), its RSS at rest
    and at its peak (MB)."""
    pid = host.process.pid
    wait_healthy(port)
    result: dict[str, Any] = {}
    latencies: list[float] = []
    with RawClient(port, timeout=10) as conn:
        conn.send(request(path="/small", body='{"warm": 0}'))
        assert_ok(conn.read_response(), 1)
        idle = rss_mb(pid)
        reset_peak_rss(pid)
        cpu_before = cpu_seconds(pid)

        def costly() -> None:
            started = time.monotonic()
            # A body refused while it arrives is answered and its connection closed after a linger (LINGER_S,
            # LINGER_BYTES): a client still sending then meets a closed socket, and still reads the answer.
            with RawClient(port, timeout=120) as raw:
                raw.try_send(request(path=path, body=body, headers=headers))
                answer = raw.read_response(timeout=120)
            result["reply"] = Reply(answer.status, answer.json(), dict(answer.headers), answer.body)
            result["took"] = time.monotonic() - started

        thread = threading.Thread(target=costly)
        thread.start()
        n = 0
        while thread.is_alive() or n < 3:
            n += 1
            started = time.monotonic()
            conn.send(request(path="/small", body=f'{{"n": {n}}}'))
            assert_ok(conn.read_response(timeout=10), 1)
            latencies.append(time.monotonic() - started)
            time.sleep(0.01)  # pacing: a device's steady trickle
        thread.join()
        cpu = cpu_seconds(pid) - cpu_before
        peak = peak_rss_mb(pid)
    reply = result["reply"]
    print(f"\n{label}: {len(body) / MIB:.2f} MiB -> {reply.status} in {result['took']:.2f} s; plugin CPU {cpu:.2f} s; "
          f"RSS idle {idle:.0f} MB, peak {peak:.0f} MB (+{peak - idle:.0f}); {len(latencies)} small POSTs meanwhile, "
          f"slowest {max(latencies) * 1000:.0f} ms; answer {str(reply.body)[:160]}")
    return reply, max(latencies), cpu, idle, peak


def assert_refused(reply: Reply, status: int, *words: str) -> None:
    assert reply.status == status, reply
    for word in words:
        assert word in reply.body["error"], reply.body


def _start(host: PluginHost, props: dict[str, Any]) -> Any:
    host.start_source("r0", "small", {"datasource": "/small"})
    return host.start_source("r1", "costly", props)


NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.mark.parametrize("line", [b"\n", b" \t\r\n"], ids=["newlines", "whitespace-lines"])
def test_ndjson_blank_lines(plugin: Callable[..., PluginHost], server_port: int, line: bytes) -> None:
    """10 MiB of blank lines to a default JSON source as NDJSON: refused from one count of its lines."""
    host = plugin()
    ch = _start(host, {"datasource": "/j"})
    body = line * (10 * MIB // len(line))
    reply = costed_push(host, ch, server_port, "/j", body, f"NDJSON, {len(body) // len(line):,} blank lines", NDJSON)
    assert_refused(reply, 413, "lines", "httpServerMaxRecords")
    assert_sentinel_next_on_channels(sender(server_port, "/j", headers=NDJSON), ch)


def test_ndjson_blank_lines_within_the_limit_accepted(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """As many lines as the record limit allows, nearly all blank (whitespace), around two records: 2xx, the two
    records delivered, the blank lines skipped without a parse each."""
    host = plugin()
    ch = _start(host, {"datasource": "/j"})
    body = b'{"a":1}\n' + b" \t \r\n" * 99_998 + b'{"a":2}\n'
    reply = costed_push(host, ch, server_port, "/j", body, "NDJSON, 99,998 blank lines, 2 records", NDJSON)
    assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1}), reply
    assert ch.messages(2) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("props, words", [
    ({"format": "delimited"}, ("httpServerMaxValues",)),
    ({"format": "delimited", "fields": ["a", "b"]}, ()),
], ids=["no-fields", "two-fields"])
def test_delimited_commas(plugin: Callable[..., PluginHost], server_port: int, props: dict[str, Any],
                          words: tuple[str, ...]) -> None:
    """10 MiB of commas, one line: without names 413 before it is split; with two names one record of two empty
    values (the rest is dropped unsplit)."""
    host = plugin()
    ch = _start(host, {"datasource": "/d", **props})
    body = b"," * (10 * MIB)
    reply = costed_push(host, ch, server_port, "/d", body, f"delimited {props}, 10 MiB of commas")
    if words:
        assert_refused(reply, 413, *words)
    else:
        assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1}), reply
        assert ch.messages(1) == [{"a": "", "b": ""}]
    end = b"x,y" if props.get("fields") else b"x"
    assert_sentinel_next_on_channels(sender(server_port, "/d"), ch, body=end,
                                     record={"a": "x", "b": "y"} if props.get("fields") else {"col0": "x"})


def test_delimited_many_fields_per_line(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """Lines of 20,000 one-character values (1 million values in all): 413 naming httpServerMaxFields (10,000)."""
    host = plugin()
    ch = _start(host, {"datasource": "/d", "format": "delimited"})
    body = (b"a," * 19_999 + b"a\n") * 50
    reply = costed_push(host, ch, server_port, "/d", body, "delimited, 50 lines of 20,000 values")
    assert_refused(reply, 413, "httpServerMaxFields", "10000")
    assert_sentinel_next_on_channels(sender(server_port, "/d"), ch, body=b"x", record={"col0": "x"})


def test_gzip_members(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """10 MB of empty gzip members back to back: 413 naming the member limit, found while the body arrives."""
    host = plugin()
    ch = _start(host, {"datasource": "/j"})
    member = gzip.compress(b"")
    body = member * (10_000_000 // len(member))
    reply = costed_push(host, ch, server_port, "/j", body, f"{len(body) // len(member):,} empty gzip members",
                        {"Content-Encoding": "gzip"})
    assert_refused(reply, 413, "gzip members", "1000")
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_gzip_members_within_the_limit_accepted(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """1,000 members, one record each: all delivered."""
    host = plugin()
    ch = _start(host, {"datasource": "/j", "framing": "lines"})
    body = b"".join(gzip.compress(b'{"i":%d}\n' % i) for i in range(1000))
    reply = costed_push(host, ch, server_port, "/j", body, "1,000 gzip members", {"Content-Encoding": "gzip"})
    assert (reply.status, reply.body) == (200, {"accepted": 1000, "sources": 1}), reply
    assert ch.messages(1000) == [{"i": i} for i in range(1000)]


@pytest.mark.parametrize("element, words", [
    (b"{}", ("httpServerMaxValues",)),
    (b'{"a":"' + b"x" * 40 + b'"}', ("httpServerMaxRecords", "100000")),
], ids=["empty-objects", "objects-of-50-bytes"])
def test_json_array_over_the_record_limit(plugin: Callable[..., PluginHost], server_port: int, element: bytes,
                                          words: tuple[str, ...]) -> None:
    """10 MiB JSON arrays of more records than the limit: 413 before the array is built whole."""
    host = plugin()
    ch = _start(host, {"datasource": "/j"})
    n = (10 * MIB - 1) // (len(element) + 1)
    body = b"[" + b",".join([element] * n) + b"]"
    reply = costed_push(host, ch, server_port, "/j", body, f"JSON array of {n:,} x {element[:12]!r}")
    assert_refused(reply, 413, *words)
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_urlencoded_distinct_keys(plugin: Callable[..., PluginHost], server_port: int) -> None:
    """~10 MiB of 1.4 million distinct keys: 413 naming httpServerMaxFields, before any pair is split off."""
    host = plugin()
    ch = _start(host, {"datasource": "/u", "format": "urlencoded"})
    body = b"&".join(b"%d" % i for i in range(1_400_000))[:10 * MIB]
    reply = costed_push(host, ch, server_port, "/u", body, "urlencoded, 1.4 million distinct keys")
    assert_refused(reply, 413, "httpServerMaxFields", "10000")
    assert_sentinel_next_on_channels(sender(server_port, "/u"), ch, body=b"end=1", record={"end": "1"})


NESTED_RECORDS = 12_000  # each with an array of 8 objects: ~1.8 MiB, ~0.9 million values (their strings hold "},{")


@pytest.mark.parametrize("body, setting, records", [
    (b"[" + b",".join([b"[" * 1000 + b"]" * 1000] * (10 * MIB // 2001)) + b"]", "httpServerMaxValues", 0),
    (b'{"a":[' + b",".join([b"[[[[[[[[[[1]]]]]]]]]]"] * (10 * MIB // 23)) + b"]}", "httpServerMaxValues", 0),
    (b'{"a":{' + b",".join(b'"k%d":{"v":%d}' % (i, i) for i in range(100_000)) + b"}}",
     "httpServerMaxRecordValues", 0),
    (b'[{"a":1},{"a":[' + b",".join([b'"sssss"'] * 600_000) + b"]}]", "httpServerMaxRecordValues", 0),
    (b'{"a":[' + b",".join([b'"sssss"'] * 240_000) + b"]}", "", 1),
    (b"[" + b",".join(b'{"i":%d,"pts":[%s]}' % (i, b",".join([b'{"a":1,"b":"},{"}'] * 8))
                      for i in range(NESTED_RECORDS)) + b"]", "", NESTED_RECORDS),
], ids=["1000-deep-arrays", "10-deep-arrays", "100k-nested-objects-in-one-record",
        "600k-strings-in-one-record", "240k-strings-in-one-record", "12k-records-of-nested-objects"])
def test_json_deep_or_huge_nesting(plugin: Callable[..., PluginHost], server_port: int, body: bytes, setting: str,
                                   records: int) -> None:
    """Bodies of deeply or hugely nested containers: over httpServerMaxValues (the body) or httpServerMaxRecordValues
    (one record) 413 before parsing; within them accepted and delivered."""
    host = plugin()
    ch = _start(host, {"datasource": "/j"})
    reply = costed_push(host, ch, server_port, "/j", body, f"nested JSON {body[:24]!r}…")
    if setting:
        assert_refused(reply, 413, setting)
    else:
        assert (reply.status, reply.body) == (200, {"accepted": records, "sources": 1}), reply
        got = ch.messages(records, timeout=60)
        assert len(got) == records and (records > 1 or len(got[0]["a"]) == 240_000)
        del got
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)
