"""The edge's schema check (``schema.py``, ``fieldtypes.py``): eKuiper's STRICT_VALIDATION verdict for each type, read
from ``internal/topo/operator/field_processor.go`` and ``pkg/cast`` (2.4.0 and 2.4.2) and paired against the real
host in ``tests/test_realhost_schema.py``; the property's grammar; the REST answer's shape; the 422 body."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httppush_plugin.answers import error_answer
from httppush_plugin.decoders import JsonDecoder, Limits
from httppush_plugin.errors import ConfigError
from httppush_plugin.fieldtypes import FieldType, from_json_schema, parse_fields
from httppush_plugin.schema import MAX_NAMED, CheckedDecoder, Schema, SchemaMismatch


def verdict(ftype: str, value: Any, ignore_case: bool = False) -> str | None:
    """None when the host takes ``{"v": value}`` for a stream ``(v <ftype>)``, else what the 422 says was found."""
    try:
        Schema(parse_fields(f"v {ftype}"), ignore_case).check([{"v": value}])
    except SchemaMismatch as exc:
        return exc.extra["failures"][0]["found"]
    return None


NOT_NUMBERS = ["7", True, None, {"a": 1}, [1]]


@pytest.mark.parametrize("ftype, passes, dropped", [
    # bigint: ToInt64(CONVERT_SAMEKIND) takes float64 (truncating), no string, bool or nil
    ("bigint", [5, 5.7, -3.2, 0, 2**53], NOT_NUMBERS),
    ("float", [2.5, 3, 0], NOT_NUMBERS),
    ("boolean", [True, False], ["true", 1, 0, None, {}, []]),
    ("string", ["", "x", "12"], [12, 1.5, True, None, {"a": "b"}, ["x"]]),
    # datetime: InterfaceToTime takes float64 (epoch ms) and strings (parsed: left to the host, but "" never
    # parses), nothing else
    ("datetime", [1700000000123, 1.5, "2023-11-14T22:13:20.123Z", "not a date (host's verdict)", " "],
     [True, None, {}, [], ""]),
    ("array(datetime)", [[1, "x"], []], [[1, ""], [""]]),
    # bytea: ToByteA takes any string (base64, else its UTF-8 bytes)
    ("bytea", ["aGVsbG8=", "not base64!", ""], [1, True, None, {}, []]),
    ("array(bigint)", [None, [], [1, 2.5]], ["[1]", 1, {}, True, [1, "2"], [None], [True]]),
    ("array(array(float))", [[[1.5], None, []]], [[[1, "x"]], [1]]),
    ("array(struct(x bigint))", [[{"x": 1}, None, '{"x": 2}', {"x": 1, "extra": "y"}]],
     [[{"x": "1"}], [{}], [5], ['"text"'], ["null"], ["{bad json"], [{"X": 1}]]),
])
def test_the_hosts_verdict_per_type(ftype: str, passes: list[Any], dropped: list[Any]) -> None:
    for value in passes:
        assert verdict(ftype, value) is None, (ftype, value)
    for value in dropped:
        assert verdict(ftype, value) is not None, (ftype, value)


def test_a_top_level_struct_is_never_checked() -> None:
    """The planner prunes a top-level struct field a rule does not read with ``->`` (``SELECT *`` too): eKuiper lets a
    number, a wrong inner type, even a missing one through."""
    schema = Schema(parse_fields("st struct(x bigint, y struct(z string))"))
    for record in ({"st": 5}, {"st": {"x": "no"}}, {"st": {"y": {"z": 1}}}, {}, {"st": "text"}):
        schema.check([record])


def test_missing_is_dropped_extra_passes_null_is_a_value() -> None:
    schema = Schema(parse_fields("a bigint, b array(string)"))
    schema.check([{"a": 1, "b": None, "extra": {"anything": [1]}}])
    with pytest.raises(SchemaMismatch) as caught:
        schema.check([{"a": 1}])
    assert caught.value.extra["failures"] == [{"record": 0, "field": "b", "expected": "array(string)",
                                               "found": "missing"}]


def test_ignore_case_follows_the_hosts_setting() -> None:
    """eKuiper's ``basic.ignoreCase`` (default false): a field missing as written is looked up in any case."""
    assert verdict("bigint", 1) is None
    schema = Schema(parse_fields("Temp float"))
    with pytest.raises(SchemaMismatch):
        schema.check([{"temp": 1.5}])
    Schema(parse_fields("Temp float"), ignore_case=True).check([{"temp": 1.5}])
    with pytest.raises(SchemaMismatch):
        Schema(parse_fields("Temp float"), ignore_case=True).check([{"TEMP": "x"}])


def test_the_422_names_records_fields_and_caps_the_list() -> None:
    schema = Schema(parse_fields("n bigint, tags array(string)"))
    records = [{"n": 1, "tags": []}, {"n": "2", "tags": ["a", 3]}] + [{"n": "x", "tags": []}] * 20
    with pytest.raises(SchemaMismatch) as caught:
        schema.check(records)
    exc = caught.value
    failures = exc.extra["failures"]
    assert failures[:2] == [{"record": 1, "field": "n", "expected": "bigint", "found": "string"},
                            {"record": 1, "field": "tags[1]", "expected": "string", "found": "number"}]
    assert len(failures) == MAX_NAMED and exc.extra["more"] == 22 - MAX_NAMED
    answer = error_answer(exc)
    body = orjson.loads(answer.body)
    assert answer.status == 422
    assert "record 1 field 'n': expected bigint, found string" in body["error"]
    assert f"and {22 - MAX_NAMED} more" in body["error"] and body["more"] == 22 - MAX_NAMED


def test_the_property_grammar() -> None:
    text = parse_fields("temperature FLOAT, `my field` string, tags Array(String), "
                        "pos struct(x bigint, y bigint), l array(struct(a array(bytea)))")
    mapping = parse_fields({"temperature": "float", "my field": "string", "tags": "array(string)",
                            "pos": {"x": "bigint", "y": "BIGINT"}, "l": "array(struct(a array(bytea)))"})
    assert text == mapping
    assert str(dict(text)["l"]) == "array(struct(a array(bytea)))"
    for bad in ("t floot", "t array(float", "t float,", "t", "array(x)", 5, {"t": 5}, {}, "t float extra"):
        with pytest.raises(ConfigError, match="property 'schema'"):
            parse_fields(bad)


def test_the_rest_answer() -> None:
    """``GET /streams/{name}/schema``: ``ast.JsonStreamField`` by name; a schemaless stream's entry has untyped
    (null) fields, which eKuiper does not check."""
    answer = {"b": {"type": "bigint", "index": 0}, "arr": {"type": "array", "items": {"type": "float"}, "index": 0},
              "st": {"type": "struct", "properties": {"x": {"type": "string", "index": 0}}, "index": 0},
              "loose": None}
    assert from_json_schema(answer) == (
        ("arr", FieldType("array", items=FieldType("float"))), ("b", FieldType("bigint")),
        ("st", FieldType("struct", fields=(("x", FieldType("string")),))))
    # a type this plugin does not know is left to the host, whatever the value
    unknown = Schema(from_json_schema({"x": {"type": "decimal"}, "l": {"type": "array", "items": {"type": "geo"}}}))
    unknown.check([{"x": "anything", "l": [1, "two"]}, {"x": None, "l": None}])
    with pytest.raises(SchemaMismatch, match="field 'x': expected a value, found missing"):
        unknown.check([{"l": []}])  # but a declared field must be there ("field x is not found")


def test_checked_decoder_refuses_the_whole_body_and_shares_by_key() -> None:
    schema = Schema(parse_fields("t float"))
    decoder = CheckedDecoder(JsonDecoder(), schema)
    assert decoder.format == "json"
    assert decoder.decode_request(b'[{"t": 1}, {"t": 2.5}]', "application/json", Limits()) == [{"t": 1}, {"t": 2.5}]
    with pytest.raises(SchemaMismatch, match="record 1 field 't'"):
        decoder.decode_request(b'[{"t": 1}, {"t": "2.5"}]', "application/json", Limits())
    assert decoder.key == CheckedDecoder(JsonDecoder(), Schema(parse_fields("t float"))).key
    assert decoder.key != CheckedDecoder(JsonDecoder(), Schema(parse_fields("t bigint"))).key
    assert decoder.key != JsonDecoder().key


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False,
                           allow_infinity=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xyz"), inner,
                                                                                       max_size=3), max_leaves=8)


def _host(ftype: FieldType, value: Any) -> bool:
    """An independent, literal reading of field_processor.go's validateAndConvertField (a datetime string: the host
    parses it, taken as passing)."""
    kind = ftype.kind
    if kind in ("bigint", "float"):
        return type(value) in (int, float)
    if kind == "boolean":
        return type(value) is bool
    if kind in ("string", "bytea"):
        return type(value) is str
    if kind == "datetime":
        return type(value) in (int, float) or type(value) is str and value != ""
    if kind == "array":
        return value is None or (type(value) is list and all(_host(ftype.items, e) for e in value))  # type: ignore
    if value is None:
        return True
    if type(value) is str:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return False
        value = {} if value is None else value
    return type(value) is dict and all(name in value and _host(t, value[name]) for name, t in ftype.fields)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, ftype=st.sampled_from(["bigint", "float", "boolean", "string", "datetime", "bytea",
                                                   "array(bigint)", "array(struct(x bigint, y array(string)))",
                                                   "array(array(boolean))"]))
def test_property_agrees_with_a_literal_reading_of_the_host(value: Any, ftype: str) -> None:
    declared = dict(parse_fields(f"v {ftype}"))["v"]
    assert (verdict(ftype, value) is None) == _host(declared, value)


class _Custom(JsonDecoder):
    """A custom decoder's records: what a user's function may return, which is not JSON's own types."""

    format = "custom"

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__()
        self.records = records

    def decode(self, body: bytes) -> list[dict[str, Any]]:
        return self.records

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[dict[str, Any]]:
        return self.records


def test_a_custom_decoders_records_are_checked_as_the_json_the_host_reads() -> None:
    import datetime
    import uuid

    schema = Schema(parse_fields("t float, n bigint, s string, d datetime, a array(float)"))
    good = {"t": 1.5, "n": 2, "s": uuid.UUID(int=1), "d": datetime.datetime(2026, 1, 1), "a": [1.0]}
    assert CheckedDecoder(_Custom([good]), schema).decode_request(b"", "", Limits()) == [good]  # unchanged
    # orjson writes NaN and infinity as null, a datetime as a string: the host drops these
    for field, value, found in (("t", float("nan"), "null"), ("n", float("inf"), "null"),
                                ("a", [1.0, float("-inf")], "null"), ("n", datetime.datetime(2026, 1, 1), "string")):
        decoder = CheckedDecoder(_Custom([{**good, field: value}]), schema)
        with pytest.raises(SchemaMismatch, match=f"record 0 field '{field}.*found {found}"):
            decoder.decode_request(b"", "", Limits())
        with pytest.raises(SchemaMismatch):
            decoder.decode(b"")
    # what orjson cannot write at all is left to the framing (its 500 names the decoder)
    odd = [{**good, "x": b"bytes"}]
    assert CheckedDecoder(_Custom(odd), schema).decode_request(b"", "", Limits()) == odd
    # a JSON body is not round-tripped: the same schema on the json decoder
    assert CheckedDecoder(JsonDecoder(), schema).decode(b'{"t": 1, "n": 2, "s": "x", "d": 5, "a": []}')


def test_a_field_with_a_default_may_be_missing() -> None:
    """eKuiper after 2.4 (``DEFAULT`` clause, master's field_processor.go): a missing field with a default is filled
    in by the host, not dropped; its REST answer has ``"default"``. A value that is there is checked as before."""
    schema = Schema(from_json_schema({
        "b": {"type": "bigint", "default": "5"},
        "l": {"type": "array", "items": {"type": "struct", "properties": {
            "x": {"type": "float", "default": "1.5"}, "y": {"type": "bigint"}}}}}))
    schema.check([{"l": [{"y": 1}]}])
    for record, field, found in (({"b": "x", "l": []}, "b", "string"),
                                 ({"l": [{"x": "s", "y": 1}]}, "l[0].x", "string"),
                                 ({"l": [{"x": 1}]}, "l[0].y", "missing"), ({"b": 1}, "l", "missing")):
        with pytest.raises(SchemaMismatch, match=rf"field '{re.escape(field)}': expected .+, found {found}$"):
            schema.check([record])
