"""Rules over the plugin in a REAL eKuiper 2.4.2: event time, a scan table joined with a stream, shared streams,
several streams on one path, config groups (CONF_KEY, shipped and REST-stored). One host for the session (``ctx`` in
tests/conftest.py, helpers in tests/realhost_support.py); results read back through a ``rest`` sink."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.realhost_support import PLUGIN, Ctx, by_tag, check_template_meta_id, epoch_ms, metric, uid
from tests.support.http import push
from tests.support.metrics import samples
from tests.support.metrics import value as sample_value
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost


# --------------------------------------------------------------------------------------------------------------------
# Event time
# --------------------------------------------------------------------------------------------------------------------


def test_event_time_windows_close_on_pushed_times(ctx: Ctx) -> None:
    """TIMESTAMP="ts" with ``isEventTime``: windows follow the pushed times, not the wall clock.

    Both routes work: ts as "YYYY-MM-dd HH:mm:ss" text with TIMESTAMP_FORMAT, and ts as epoch-ms numbers without it.
    Host (lateTolerance 0): a tumbling window [t, t+10s) is emitted as soon as a record with ts >= t+10s arrives (the
    watermark is the largest event time seen); nothing is emitted before, however much wall-clock time passes. A
    record older than the watermark is dropped (it is not counted in any window). Quirks: the FIRST window's
    ``window_start()`` is the first record's time (00:00:01), not the aligned boundary (00:00:00); when the watermark
    jumps over a whole window, that empty window is still emitted, as a row without ``count(*)`` (``vs`` null).
    """
    sel = ('SELECT count(*) AS n, collect(v) AS vs, window_start() AS ws, window_end() AS we, "{mode}" AS mode '
           'FROM {s} GROUP BY TUMBLINGWINDOW(ss, 10)')
    options = {"isEventTime": True, "lateTolerance": 0}
    text, text_path = ctx.stream('FORMAT="json", TIMESTAMP="ts", TIMESTAMP_FORMAT="YYYY-MM-dd HH:mm:ss"')
    millis, ms_path = ctx.stream('FORMAT="json", TIMESTAMP="ts"')
    ctx.rule(sel.format(mode="text", s=text), options=options)
    ctx.rule(sel.format(mode="ms", s=millis), options=options)

    def send(second: int, value: str) -> None:
        stamp = f"2024-01-01 00:00:{second:02d}"
        assert ctx.push(text_path, json.dumps({"ts": stamp, "v": value})).status == 200
        assert ctx.push(ms_path, json.dumps({"ts": epoch_ms(stamp + "+00:00"), "v": value})).status == 200

    # Each closing record below is the sentinel for what came before it: a rule's rows reach the sink in order, so a
    # row emitted early (by the wall clock) or for the late record would come first and break the equality.
    t = lambda second: epoch_ms(f"2024-01-01T00:00:{second:02d}+00:00")  # noqa: E731
    for second, value in ((1, "a"), (5, "b"), (9, "c")):
        send(second, value)
    time.sleep(1.5)  # the stimulus: wall-clock time passes (these times are long past), not a wait for a result

    send(10, "d")  # watermark reaches 00:00:10: [00:00:00, 00:00:10) closes
    first = {"n": 3, "vs": ["a", "b", "c"], "ws": t(1), "we": t(10)}
    assert by_tag(ctx.sink.wait_for(2)) == {"text": [first], "ms": [first]}  # the wall clock closed nothing before

    send(12, "e")
    send(8, "late")  # older than the watermark: dropped
    send(19, "f")
    send(20, "g")
    second_window = {"n": 3, "vs": ["d", "e", "f"], "ws": t(10), "we": t(20)}
    assert by_tag(ctx.sink.wait_for(4)) == {"text": [first, second_window], "ms": [first, second_window]}

    send(45, "h")  # closes [20, 30) and the empty [30, 40)
    tail = [{"n": 1, "vs": ["g"], "ws": t(20), "we": t(30)}, {"vs": None, "ws": t(30), "we": t(40)}]
    assert by_tag(ctx.sink.wait_for(8)) == {"text": [first, second_window, *tail], "ms": [first, second_window, *tail]}


# --------------------------------------------------------------------------------------------------------------------
# Scan table joined with a stream
# --------------------------------------------------------------------------------------------------------------------


def test_scan_table_join_uses_last_retained_rows(ctx: Ctx) -> None:
    """A scan table fed by its own endpoint keeps the last RETAIN_SIZE="2" rows; the join sees only those."""
    t, t_path = ctx.table('RETAIN_SIZE="2", KIND="scan", FORMAT="json"', "(id string, name string)")
    s, s_path = ctx.stream('FORMAT="json"', "(id string, v bigint)")
    r = ctx.rule(f"SELECT {s}.id AS id, {s}.v AS v, {t}.name AS name FROM {s} INNER JOIN {t} ON {s}.id = {t}.id",
                 sources=2)  # the table's source and the stream's, both in this rule
    assert ctx.push(t_path, '[{"id": "1", "name": "a"}, {"id": "2", "name": "b"}]').body["accepted"] == 2
    assert ctx.push(t_path, '{"id": "3", "name": "c"}').body["accepted"] == 1
    ctx.host.wait_rule_metric(r, f"source_{t}_0_records_in_total", 3)
    # the join has taken the table's rows in (its aligner processed them) before the stream records arrive
    wait_until(lambda: metric(ctx.status(r), "_join_aligner_0_messages_processed_total") >= 3, 10.0,
               "the join to take the table's three rows in")
    for i in (1, 2, 3):
        assert ctx.push(s_path, json.dumps({"id": str(i), "v": i})).status == 200
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 3)
    assert ctx.sink.wait_for(2) == [{"id": "2", "v": 2, "name": "b"}, {"id": "3", "v": 3, "name": "c"}]
    # id 1 fell out of the table: no row for it came before a sentinel that does match
    ctx.assert_sentinel_next_in_sink(s_path, 2, body=json.dumps({"id": "3", "v": 99}),
                                expect={"id": "3", "v": 99, "name": "c"})


# --------------------------------------------------------------------------------------------------------------------
# Fan-out: shared streams, several streams per path, POST and PUT on one path
# --------------------------------------------------------------------------------------------------------------------


def test_shared_stream_feeds_two_rules_from_one_source(ctx: Ctx) -> None:
    """SHARED="true": ONE plugin source (the host's rule id for it is ``$$subtopo_<stream>``), both rules get it."""
    s, path = ctx.stream('FORMAT="json", SHARED="true"')
    r1 = ctx.rule(f'SELECT *, "r1" AS rule FROM {s}', ref_key=f"$$subtopo_{s}")
    r2 = ctx.rule(f'SELECT *, "r2" AS rule FROM {s}', ref_key=f"$$subtopo_{s}")
    assert ctx.host.plugin_status(PLUGIN)["refCount"][f"$$subtopo_{s}"] == 1
    assert r1 not in ctx.host.plugin_status(PLUGIN)["refCount"]

    assert ctx.push(path, '{"a": 1}').body == {"accepted": 1, "sources": 1}
    records = by_tag(ctx.sink.wait_for(2), "rule")
    assert records == {"r1": [{"a": 1}], "r2": [{"a": 1}]}
    for r in (r1, r2):
        ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 1)


def test_two_streams_one_path_and_post_put_split(ctx: Ctx) -> None:
    """Two POST streams on one path each get every push ("sources": 2); a PUT stream (CONF_KEY="put") on the same
    path gets only the PUTs, and the POST streams never see them."""
    a, path = ctx.stream('FORMAT="json"')
    b, _ = ctx.stream('FORMAT="json"', path=path)
    c, _ = ctx.stream('FORMAT="json", CONF_KEY="put"', path=path)
    rules = {name: ctx.rule(f'SELECT *, "{name}" AS rule FROM {name}') for name in (a, b, c)}

    assert ctx.push(path, '{"m": "post"}').body == {"accepted": 1, "sources": 2}
    assert ctx.push(path, '{"m": "put"}', method="PUT").body == {"accepted": 1, "sources": 1}
    other = ctx.push(path, "{}", method="PATCH")
    assert other.status == 405 and other.headers["Allow"] == "POST, PUT"
    records = by_tag(ctx.sink.wait_for(3), "rule")
    assert records == {a: [{"m": "post"}], b: [{"m": "post"}], c: [{"m": "put"}]}
    for name, rule_id in rules.items():
        ctx.host.wait_rule_metric(rule_id, f"source_{name}_0_records_in_total", 1)
    ctx.assert_sentinel_next_in_sink(path, 3, copies=2)  # the PUT reached neither POST stream
    ctx.assert_sentinel_next_in_sink(path, 5, method="PUT")  # and the POST not the PUT stream


# --------------------------------------------------------------------------------------------------------------------
# Config groups
# --------------------------------------------------------------------------------------------------------------------


def test_conf_key_shipped_put_group_selects_put(ctx: Ctx) -> None:
    s, path = ctx.stream('FORMAT="json", CONF_KEY="put"')
    r = ctx.rule(f"SELECT * FROM {s}")
    wrong = ctx.push(path, '{"x": 0}')
    assert wrong.status == 405 and wrong.headers["Allow"] == "PUT"
    assert "method POST is not served" in wrong.body["error"]
    assert ctx.push(path, '{"x": 1}', method="PUT").body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"x": 1}]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 1)


def test_conf_key_stored_through_rest_takes_effect(ctx: Ctx) -> None:
    """A conf key stored through ``PUT /metadata/sources/pyhttppush/confKeys/<key>`` (host: kept in its sqlite
    store, not in a yaml) overlays the yaml default group exactly like a shipped group: method and fields apply."""
    key = uid("putfields")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"method": "PUT", "fields": ["x", "y"]})
    s, path = ctx.stream(f'FORMAT="delimited", CONF_KEY="{key}"')
    r = ctx.rule(f"SELECT * FROM {s}")
    assert ctx.push(path, "1,2").status == 405
    assert ctx.push(path, "1,2", method="PUT").body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"x": "1", "y": "2"}]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 1)


# --------------------------------------------------------------------------------------------------------------------
# Path templates and request metadata
# --------------------------------------------------------------------------------------------------------------------


def test_path_template_segment_is_meta_id(ctx: Ctx) -> None:
    """DATASOURCE="/<name>/{id}/telemetry": every device's path reaches the one stream, the segment as meta(id)."""
    name = check_template_meta_id(ctx)
    assert ctx.push(f"/{name}/42/other", "{}").status == 404
    ctx.assert_sentinel_next_in_sink(f"/{name}/9/telemetry", 2)


def test_meta_headers_readable_with_meta(ctx: Ctx) -> None:
    """metaHeaders (a REST-stored group): the copied header is meta(<lower-cased name>) in SQL."""
    key = uid("hdrs")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"metaHeaders": ["Sensor*"]})
    s, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    ctx.rule(f"SELECT meta(sensorid) AS sensor, * FROM {s}")
    reply = push(ctx.port, path, '{"v": 1}', headers={"SensorId": "boiler-3", "Other": "x"})
    assert reply.body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"sensor": "boiler-3", "v": 1}]


# --------------------------------------------------------------------------------------------------------------------
# Idempotent retries, health and metrics
# --------------------------------------------------------------------------------------------------------------------


def test_idempotency_key_retry_reaches_the_rule_once_even_across_a_rule_restart(ctx: Ctx) -> None:
    """idempotency (a REST-stored group): a retried request is answered from memory, its records reach the rule once;
    the same key with another body is 422; the keys outlive a restart of the rule (which stops the shared server when
    it is the only one)."""
    key = uid("idem")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"idempotency": {"window": 120, "maxKeys": 1000}})
    s, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    r = ctx.rule(f"SELECT * FROM {s}")
    body = '[{"order": 17, "qty": 2}, {"order": 17, "qty": 3}]'
    first = push(ctx.port, path, body, headers={"Idempotency-Key": "order-17"})
    assert first.status == 200 and first.body == {"accepted": 2, "sources": 1}
    retry = push(ctx.port, path, body, headers={"Idempotency-Key": "order-17"})
    assert retry.status == 200 and retry.body == first.body and retry.headers["Idempotent-Replayed"] == "true"
    other = push(ctx.port, path, '{"order": 18}', headers={"Idempotency-Key": "order-17"})
    assert other.status == 422 and "different request" in other.body["error"]
    assert ctx.sink.wait_for(2) == [{"order": 17, "qty": 2}, {"order": 17, "qty": 3}]
    ctx.assert_sentinel_next_in_sink(path, 2)

    ctx.host.stop_rule(r)
    wait_until(lambda: r not in ctx.host.plugin_status(PLUGIN)["refCount"], 10.0, f"the plugin to stop {r}'s source")
    ctx.host.start_rule(r)
    ctx.wait_started(r)
    after = push(ctx.port, path, body, headers={"Idempotency-Key": "order-17"})
    assert after.status == 200 and after.headers["Idempotent-Replayed"] == "true", after
    ctx.assert_sentinel_next_in_sink(path, 3)


def test_health_names_the_rule_and_metrics_count_what_it_got(ctx: Ctx) -> None:
    """GET /healthz lists the endpoint with eKuiper's rule and stream; /metrics counts the records the rule saw."""
    s, path = ctx.stream('FORMAT="json"')
    r = ctx.rule(f"SELECT * FROM {s}")
    assert ctx.push(path, '[{"v": 1}, {"v": 2}, {"v": 3}]').body == {"accepted": 3, "sources": 1}
    assert ctx.push(path, '{"v": ').status == 400
    ctx.sink.wait_for(3)

    def ready() -> Any:
        answer = push(ctx.port, "/healthz", b"", method="GET")
        return answer if answer.status == 200 else None

    health = wait_until(ready, 10.0, "health to be 200")
    endpoint = next(e for e in health.body["endpoints"] if e["path"] == path)
    assert [(src["rule"], src["stream"], src["attached"]) for src in endpoint["sources"]] == [(r, s, True)]
    found = samples(ctx.port)
    assert sample_value(found, "httppush_records_total", method="POST", path=path) == 3
    assert sample_value(found, "httppush_decode_failures_total", method="POST", path=path, format="json") == 1
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 3)
