"""The edge's schema check against the real eKuiper, on the pinned v2.4.2 and on v2.4.0: each case paired with the
host's own verdict.

Two typed streams with ``STRICT_VALIDATION="true"`` and the same fields, one rule each (``SELECT *``):

* ``chk`` — the plugin checks (``validation: auto``, fields from eKuiper's REST at the source's start);
* ``raw`` — the same, with ``validation: off`` (a REST-stored conf key): every body reaches the host, whose
  preprocessor shows its own verdict — a dropped record counts in ``op_*_preprocessor_0_exceptions_total``.

For every case, one record: where the host drops it (``raw``), ``chk`` answers 422 naming the field and the host never
sees it (``chk``'s exception counter stays 0); where the host converts it or lets it through, ``chk`` answers 200 and
the rule's output equals ``raw``'s, i.e. the record arrives as the host would have it. A sentinel after all the cases
shows that nothing else arrived. The expected verdicts are this module's reading of eKuiper's source
(``internal/topo/operator/field_processor.go``, ``pkg/cast``): the ``raw`` half checks that reading on each release.
The REST that requires authentication: ``tests/test_realhost_schema_auth.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hostlock import HOST_LOCK
from harness.net import free_port
from harness.realhost import EkuiperHost, RecordSink, require_kuiperd
from tests.realhost_support import PLUGIN, Ctx, by_tag, metric, realhost_env, uid
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost

VERSIONS = ("v2.4.2", "v2.4.0")
FIELDS = ("(b BIGINT, f FLOAT, s STRING, ok BOOLEAN, d DATETIME, raw BYTEA, arr ARRAY(BIGINT), st STRUCT(x BIGINT), "
          "nest ARRAY(STRUCT(y FLOAT, z ARRAY(STRING))))")
GOOD = {"b": 5, "f": 2.5, "s": "txt", "ok": True, "d": 1700000000123, "raw": "aGVsbG8=", "arr": [1, 2],
        "st": {"x": 7}, "nest": [{"y": 1.5, "z": ["a"]}]}
MISSING = object()

#: (case, field, value, the host drops it): one record each, GOOD with ``field`` set to ``value`` (or removed)
CASES: list[tuple[str, str, Any, bool]] = [
    ("good", "b", 5, False),
    ("bigint-fraction", "b", 5.7, False), ("bigint-string", "b", "7", True), ("bigint-bool", "b", True, True),
    ("bigint-null", "b", None, True), ("bigint-missing", "b", MISSING, True),
    ("float-int", "f", 3, False), ("float-string", "f", "2.5", True), ("float-array", "f", [1.5], True),
    ("string-number", "s", 12, True), ("string-object", "s", {"a": 1}, True), ("string-null", "s", None, True),
    ("bool-false", "ok", False, False), ("bool-yes", "ok", "yes", True), ("bool-one", "ok", 1, True),
    ("datetime-iso", "d", "2023-11-14T22:13:20.123Z", False), ("datetime-fraction", "d", 1700000000123.9, False),
    ("datetime-bool", "d", True, True), ("datetime-null", "d", None, True), ("datetime-object", "d", {}, True),
    ("datetime-empty", "d", "", True),
    ("bytea-text", "raw", "not base64!", False), ("bytea-number", "raw", 5, True), ("bytea-null", "raw", None, True),
    ("array-converted", "arr", [1.5, 2], False), ("array-null", "arr", None, False), ("array-empty", "arr", [], False),
    ("array-string", "arr", "[1]", True), ("array-element-string", "arr", [1, "x"], True),
    ("array-element-null", "arr", [None], True), ("array-object", "arr", {"0": 1}, True),
    ("struct-number", "st", 5, False), ("struct-inner-type", "st", {"x": "no"}, False),
    ("struct-missing", "st", MISSING, False), ("struct-string", "st", "text", False),
    ("nested-json-text", "nest", ['{"y": 2, "z": null}'], False), ("nested-null-element", "nest", [None], False),
    ("nested-inner-string", "nest", [{"y": "1", "z": []}], True),
    ("nested-inner-missing", "nest", [{"y": 1}], True), ("nested-deep-element", "nest", [{"y": 1, "z": [2]}], True),
    ("nested-number-element", "nest", [5], True), ("nested-bad-text", "nest", ["{oops"], True),
    ("extra-field", "other", {"any": ["thing"]}, False),
]


def _record(case: str, field: str, value: Any) -> dict[str, Any]:
    record = dict(GOOD, case=case)
    if value is MISSING:
        del record[field]
    else:
        record[field] = value
    return record


@pytest.fixture(scope="module", params=VERSIONS)
def v(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
      zips: dict[str, Path]) -> Iterator[Ctx]:
    version: str = request.param
    require_kuiperd(version)
    if getattr(HOST_LOCK, "_depth", 0):
        pytest.fail("another eKuiper host is already running in this test process (tests/test_realhost_versions.py)")
    port = free_port()
    with RecordSink() as sink, EkuiperHost(tmp_path_factory.mktemp(f"schema-{version}"),
                                           extra_env=realhost_env(port), version=version) as host:
        host.install_plugin(PLUGIN, zips["pyhttppush"])
        helper = Ctx(host, sink, port)
        yield helper
        helper.cleanup()


@pytest.fixture(autouse=True)
def _fresh_sink(request: pytest.FixtureRequest) -> None:
    if "v" in request.fixturenames:
        request.getfixturevalue("v").sink.clear()


def test_each_type_paired_with_the_hosts_own_verdict(v: Ctx) -> None:
    off = uid("off")
    v.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{off}", {"validation": "off"})
    chk, chk_path = v.stream('FORMAT="json", STRICT_VALIDATION="true"', FIELDS)
    raw, raw_path = v.stream(f'FORMAT="json", STRICT_VALIDATION="true", CONF_KEY="{off}"', FIELDS)
    r_chk = v.rule(f'SELECT *, "chk" AS mode FROM {chk}')
    r_raw = v.rule(f'SELECT *, "raw" AS mode FROM {raw}')

    refused: dict[str, dict[str, Any]] = {}
    for case, field, value, _ in CASES:
        body = json.dumps(_record(case, field, value))
        assert v.push(raw_path, body).status == 200, case
        reply = v.push(chk_path, body)
        assert reply.status in (200, 422), (case, reply)
        if reply.status == 422:
            refused[case] = reply.body
    end = json.dumps(dict(GOOD, case="end"))
    assert v.push(raw_path, end).status == 200 and v.push(chk_path, end).status == 200

    dropped = {case for case, _, _, drops in CASES if drops}
    passed = [case for case, _, _, drops in CASES if not drops]
    rows = by_tag(v.sink.wait_for(2 * len(passed) + 2, timeout=20.0))
    # the host's own verdict is the one read from its source ...
    assert [row["case"] for row in rows["raw"]] == passed + ["end"]
    # ... and the edge's: 422 for exactly what the host drops, and nothing of it reached the rule (the "end" sentinel
    # is the next row after the accepted cases)
    assert set(refused) == dropped
    assert [row["case"] for row in rows["chk"]] == passed + ["end"]
    # what the edge accepted arrives as the host has it (converted by the host: 5.7 → 5, epoch ms → a time, …)
    assert rows["chk"] == rows["raw"]
    by_case = {row["case"]: row for row in rows["chk"]}
    assert by_case["bigint-fraction"]["b"] == 5 and by_case["array-converted"]["arr"] == [1, 2]
    assert by_case["struct-inner-type"]["st"] == {"x": "no"}

    for case, field, _, _ in CASES:
        if case in refused:
            failures = refused[case]["failures"]
            assert [f["field"].split("[")[0] for f in failures] == [field], (case, refused[case])
            assert failures[0]["record"] == 0 and failures[0]["expected"], (case, failures)
    assert refused["bigint-string"]["failures"][0] == {"record": 0, "field": "b", "expected": "bigint",
                                                       "found": "string"}
    assert refused["nested-inner-missing"]["failures"][0] == {"record": 0, "field": "nest[0].z",
                                                              "expected": "array(string)", "found": "missing"}

    wait_until(lambda: metric(v.status(r_raw), "_preprocessor_0_exceptions_total") == len(dropped), 10.0,
               "the raw rule's preprocessor to count every dropped record")
    assert metric(v.status(r_chk), "_preprocessor_0_exceptions_total") == 0


def test_delimited_values_are_strings_for_the_host_too(v: Ctx) -> None:
    """FORMAT="delimited": every value is a string, for the edge and the host alike: under STRICT_VALIDATION a BIGINT
    column ("7") is dropped by the host and refused by the edge, an empty DATETIME column ("") too, a missing column
    too; a STRING and a parseable DATETIME pass. Each line paired with the host's own verdict (``validation: off``)."""
    rules: dict[tuple[str, str], str] = {}
    paths: dict[tuple[str, str], str] = {}
    for mode, extra in (("chk", {}), ("raw", {"validation": "off"})):
        key = uid(mode)
        v.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"fields": ["s", "d", "n"], **extra})
        for kind, fields in (("dt", "(s STRING, d DATETIME)"), ("int", "(s STRING, n BIGINT)")):
            name, paths[mode, kind] = v.stream(f'FORMAT="delimited", STRICT_VALIDATION="true", CONF_KEY="{key}"',
                                               fields)
            rules[mode, kind] = v.rule(f'SELECT *, "{mode}" AS mode FROM {name}')  # all fields checked
    lines = [("a,2023-11-14T22:13:20Z,1", "dt", False), ("empty-d,,1", "dt", True), ("missing-d", "dt", True),
             ("bigint-string,x,7", "int", True)]
    for line, kind, drops in lines:
        assert v.push(paths["raw", kind], line).status == 200, line
        reply = v.push(paths["chk", kind], line)
        assert reply.status == (422 if drops else 200), (line, reply)
        if drops:
            assert reply.body["failures"][0]["found"] in ("string", "empty string", "missing"), reply.body
    for mode in ("chk", "raw"):
        assert v.push(paths[mode, "dt"], "end,2023-11-14T22:13:21Z").status == 200
    rows = by_tag(v.sink.wait_for(4, timeout=20.0))
    # the host drops exactly what the edge refuses: on each side the accepted line, then the sentinel
    assert [row["s"] for row in rows["raw"]] == ["a", "end"] and rows["chk"] == rows["raw"]
    # a BIGINT column never passes (a string): counted by the host's preprocessor, never sent by the edge
    for kind, dropped in (("dt", 2), ("int", 1)):
        wait_until(lambda k=kind, n=dropped: metric(v.status(rules["raw", k]), "_preprocessor_0_exceptions_total") == n,
                   10.0, f"the raw {kind} rule to count its dropped lines")
        assert metric(v.status(rules["chk", kind]), "_preprocessor_0_exceptions_total") == 0


def test_a_changed_stream_is_seen_after_its_rules_restart(v: Ctx) -> None:
    """``PUT /streams/{name}`` (a stream update) restarts its rules: the source's next start reads the new fields."""
    s, path = v.stream('FORMAT="json", STRICT_VALIDATION="true"', "(n BIGINT)")
    r = v.rule(f"SELECT * FROM {s}")
    assert v.push(path, '{"n": "seven"}').status == 422
    v.host.put(f"/streams/{s}", {"sql": f'CREATE STREAM {s} (n STRING) WITH (TYPE="{PLUGIN}", DATASOURCE="{path}", '
                                        'FORMAT="json", STRICT_VALIDATION="true")'})
    v.host.stop_rule(r)
    v.host.start_rule(r)
    wait_until(lambda: v.push(path, '{"n": "seven"}').status == 200, 20.0, "the new schema at the restarted source")
    assert v.push(path, '{"n": 7}').status == 422
    assert v.sink.wait_for(1) == [{"n": "seven"}]
    v.assert_sentinel_next_in_sink(path, 1, record={"n": "end"})


def test_a_shared_stream(v: Ctx) -> None:
    """A SHARED stream has one source for all its rules (ruleId ``$$subtopo_<stream>``, opId the stream): its fields
    are found the same way, and a refused body reaches neither rule."""
    s, path = v.stream('FORMAT="json", SHARED="true", STRICT_VALIDATION="true"', "(n BIGINT, tags ARRAY(STRING))")
    v.rule(f'SELECT *, "one" AS mode FROM {s}', ref_key=f"$$subtopo_{s}")
    v.rule(f'SELECT *, "two" AS mode FROM {s}', ref_key=f"$$subtopo_{s}")
    reply = v.push(path, '[{"n": 1, "tags": []}, {"n": 2, "tags": "x"}]')
    assert reply.status == 422 and [f["field"] for f in reply.body["failures"]] == ["tags"]
    assert v.push(path, '{"n": 3.5, "tags": ["a"]}').body == {"accepted": 1, "sources": 1}
    assert sorted(map(str, by_tag(v.sink.wait_for(2)).items())) == sorted(
        map(str, {"one": [{"n": 3, "tags": ["a"]}], "two": [{"n": 3, "tags": ["a"]}]}.items()))
    v.assert_sentinel_next_in_sink(path, 2, copies=2, record={"n": 4, "tags": []})

def test_rules_restored_at_boot_get_the_schema(v: Ctx) -> None:
    """At boot eKuiper starts its stored rules before its REST server listens (``internal/server/server.go``): the
    source's look-up waits for it (refused connections are retried within the 2 s budget) and the rule comes up
    checked, with no start error. Runs last: it restarts this module's host."""
    s, path = v.stream('FORMAT="json", STRICT_VALIDATION="true"', "(n BIGINT)")
    r = v.rule(f"SELECT * FROM {s}")
    v.host.restart()
    v.wait_started(r)
    v.wait_endpoint(path)
    reply = v.push(path, '{"n": "x"}')
    assert reply.status == 422 and reply.body["failures"][0]["field"] == "n"
    assert v.push(path, '{"n": 4.2}').status == 200
    assert v.sink.wait_for(1) == [{"n": 4}]
    assert v.status(r)["status"] == "running"
