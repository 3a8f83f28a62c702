"""Body formats through a REAL eKuiper 2.4.2: what a rule sees for each FORMAT the plugin decodes, on schemaless and
typed streams. One host for the session (``ctx`` in tests/conftest.py, helpers in tests/realhost_support.py); results
read back through a ``rest`` sink (:class:`harness.realhost.RecordSink`)."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from tests.realhost_support import PLUGIN, Ctx, by_tag, epoch_ms, metric, uid
from tests.support.http import push
from tests.support.protobuf import message_class

try:  # the test's own zstd encoder (requirements-dev.txt)
    from compression import zstd as ZSTD  # type: ignore[import-not-found]  # noqa: N812
except ImportError:
    from backports import zstd as ZSTD  # type: ignore[import-not-found,no-redef]  # noqa: N812

pytestmark = pytest.mark.realhost

TYPED = "(b bigint, f float, s string, d datetime, ok boolean, arr array(bigint), st struct(x bigint), raw bytea)"
PROTO = """syntax = "proto3";
message Reading {
  string id = 1;
  double value = 2;
  int64 count = 3;
  bytes raw = 4;
  repeated int32 tags = 5;
}
"""


# --------------------------------------------------------------------------------------------------------------------
# JSON bodies, schemaless and typed streams
# --------------------------------------------------------------------------------------------------------------------


def test_json_object_and_array_pass_schemaless(ctx: Ctx) -> None:
    """An object body is one record, an array of objects one record each; bad bodies are refused with nothing sent.

    Host: a schemaless stream passes the plugin's records on untouched — except that the host reads every JSON number
    as float64, so an integer above 2^53 loses precision (9007199254740993 → 9007199254740992); small integers still
    print as integers in the sink.
    """
    s, path = ctx.stream('FORMAT="json"')
    r = ctx.rule(f"SELECT * FROM {s}")

    reply = ctx.push(path, '{"a": 5, "b": 1.5, "c": "x", "big": 9007199254740993}')
    assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 1})
    reply = ctx.push(path, '[{"t": 1}, {"t": 2}, {"t": 3}]')
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    bad = ctx.push(path, "[1, 2]")
    assert bad.status == 400 and "element 0 is a number" in bad.body["error"]

    assert ctx.sink.wait_for(4) == [{"a": 5, "b": 1.5, "c": "x", "big": 9007199254740992}, {"t": 1}, {"t": 2},
                                    {"t": 3}]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 4)
    ctx.assert_sentinel_next_in_sink(path, 4)  # nothing of the refused body reached the rule
    assert ctx.status(r)[f"source_{s}_0_exceptions_total"] == 0


def test_typed_stream_converts_only_with_strict_validation(ctx: Ctx) -> None:
    """One push reaches two typed streams on the same path, one with STRICT_VALIDATION="true".

    What eKuiper 2.4.2 does with the records of a plugin (tuple) source in a typed stream — measured:

    * WITHOUT STRICT_VALIDATION: no conversion at all, the declared types are not applied. Every JSON number is a
      float64 in the host: bigint 5 still prints as 5 in the sink, but ``b / 2`` is 2.5 (float division); 5.7 in a
      bigint field stays 5.7; a datetime given as epoch ms stays that number (``d`` prints 1700000000123), a string
      stays a string; bytea base64 text stays TEXT (``cast(raw, "string")`` gives the base64 text itself); a string
      "7" in a bigint field reaches the rule as a string (``b / 2`` then fails in the project operator and the row is
      dropped, counted as that operator's exception). Missing fields are fine.
    * WITH STRICT_VALIDATION="true" (a "preprocessor" operator appears in the rule): values are converted to the
      declared types. bigint: 5 → integer (``b / 2`` = 2), 5.7 → 5 (truncated), "7" → rejected ("field b type
      mismatch: cannot convert string(7) to int64"); array(bigint) elements converted ([1.5] → [1]); datetime: epoch ms
      and date strings become a time, which the JSON sink prints as RFC 3339 in the host's time zone
      ("2023-11-14T22:13:20.123Z"); bytea: base64 text is decoded to bytes (``cast(raw, "string")`` = "hello"), text
      that is not base64 becomes its own UTF-8 bytes (no error); the sink prints bytes as base64 again, so ``raw``
      looks unchanged for base64 input. NOT converted: fields inside a struct (st.x 2.9 stays 2.9, "9" stays "9").
      Rejected with a preprocessor exception (row dropped): a declared field missing ("field b is not found"), a
      string for a number/bool/float and vice versa, a number for bytea. Undeclared extra fields pass through.
    """
    sel = 'SELECT *, b / 2 AS bhalf, cast(raw, "string") AS rawtext, "{mode}" AS mode FROM {s}'
    plain, path = ctx.stream('FORMAT="json"', TYPED)
    off = uid("off")  # the plugin's own check off: this test shows what the host does (tests/test_realhost_schema.py)
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{off}", {"validation": "off"})
    strict, _ = ctx.stream(f'FORMAT="json", STRICT_VALIDATION="true", CONF_KEY="{off}"', TYPED, path=path)
    r_plain = ctx.rule(sel.format(mode="plain", s=plain))
    r_strict = ctx.rule(sel.format(mode="strict", s=strict))

    good = {"b": 5, "f": 2.5, "s": "txt", "d": 1700000000123, "ok": True, "arr": [1, 2], "st": {"x": 7},
            "raw": base64.b64encode(b"hello").decode()}
    loose = {"b": 5.7, "f": 3, "s": "12", "d": "2023-11-14T22:13:20.123Z", "ok": True, "arr": [1.5], "st": {"x": 2.9},
             "raw": "not base64!"}
    wrong = dict(good, b="7")
    for body in (good, loose, wrong):
        reply = ctx.push(path, json.dumps(body))
        assert (reply.status, reply.body) == (200, {"accepted": 1, "sources": 2})

    for r, s in ((r_plain, plain), (r_strict, strict)):
        ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 3)
    records = by_tag(ctx.sink.wait_for(4))
    # the "wrong" body was dropped by both rules (see the metrics below), not just late
    ctx.assert_sentinel_next_in_sink(path, 4, copies=2, record=good)

    assert records["plain"] == [
        dict(good, bhalf=2.5, rawtext="aGVsbG8="),
        dict(loose, bhalf=2.85, rawtext="not base64!"),
    ]
    first, second = records["strict"]
    for record in (first, second):
        assert isinstance(record["d"], str) and epoch_ms(record["d"]) == 1700000000123
        assert record["d"] == "2023-11-14T22:13:20.123Z"
    assert first == dict(good, d=first["d"], bhalf=2, rawtext="hello")
    assert second == {"b": 5, "f": 3, "s": "12", "d": second["d"], "ok": True, "arr": [1], "st": {"x": 2.9},
                      "raw": base64.b64encode(b"not base64!").decode(), "bhalf": 2, "rawtext": "not base64!"}

    plain_status, strict_status = ctx.status(r_plain), ctx.status(r_strict)
    assert metric(plain_status, "_project_0_exceptions_total") == 1
    assert "string(7) / int64(2)" in metric(plain_status, "_project_0_last_exception")
    assert metric(strict_status, "_preprocessor_0_exceptions_total") == 1
    assert "field b type mismatch: cannot convert string(7) to int64" in metric(
        strict_status, "_preprocessor_0_last_exception")


# --------------------------------------------------------------------------------------------------------------------
# FORMAT="binary"
# --------------------------------------------------------------------------------------------------------------------


def test_binary_rule_sees_base64_text(ctx: Ctx) -> None:
    """FORMAT="binary": what the rule gets is the plugin's base64 TEXT of the body, not the bytes.

    The data channel is JSON, so the plugin sends ``{"self": "<base64 of body>"}``; for a binary stream the host's
    preprocessor only MOVES ``self`` into the declared BYTEA field (internal/topo/operator/preprocessor.go), with no
    conversion even under STRICT_VALIDATION. ``cast(x, "string")`` tells bytes and text apart (bytes → the raw text,
    text → itself): it gives the base64 text here, while eKuiper's built-in httppush gives "hello world" for the same
    body. ``length()``/``md5()`` are no help: for bytes they work on Go's ``%v`` rendering ("[104 101 ...]").
    ``decode(x, "base64")`` recovers the exact bytes in SQL (it only accepts text — it fails on a built-in source's
    bytes), and the sink prints those bytes as base64, which here happens to equal the text it started from.

    Host bug (also with the built-in httppush): a BYTEA field NAMED ``self`` — ``(self BYTEA)`` — is always empty:
    the preprocessor does ``msg[name] = msg["self"]; delete(msg, "self")``, deleting what it just moved. Use any other
    name, e.g. ``(payload BYTEA)``.
    """
    sel = ('SELECT payload, cast(payload, "string") AS text, decode(payload, "base64") AS decoded, '
           'cast(decode(payload, "base64"), "string") AS decoded_text, "{mode}" AS mode FROM {s}')
    plain, path = ctx.stream('FORMAT="binary"', "(payload BYTEA)")
    strict, _ = ctx.stream('FORMAT="binary", STRICT_VALIDATION="true"', "(payload BYTEA)", path=path)
    named_self, _ = ctx.stream('FORMAT="binary"', "(self BYTEA)", path=path)
    ctx.rule(sel.format(mode="plain", s=plain))
    ctx.rule(sel.format(mode="strict", s=strict))
    ctx.rule(f'SELECT *, "self" AS mode FROM {named_self}')

    body = b"hello world"
    b64 = base64.b64encode(body).decode()
    assert ctx.push(path, body).body == {"accepted": 1, "sources": 3}
    records = by_tag(ctx.sink.wait_for(3))
    expected = [{"payload": b64, "text": b64, "decoded": b64, "decoded_text": "hello world"}]
    assert records["plain"] == expected
    assert records["strict"] == expected
    assert records["self"] == [{}]  # the (self BYTEA) field is gone

    # every byte value survives the round trip body → base64 text → decode() in SQL
    ctx.sink.clear()
    every_byte = bytes(range(256))
    assert ctx.push(path, every_byte).status == 200
    records = by_tag(ctx.sink.wait_for(3))
    assert records["plain"][0]["payload"] == base64.b64encode(every_byte).decode()
    assert base64.b64decode(records["plain"][0]["decoded"]) == every_byte


# --------------------------------------------------------------------------------------------------------------------
# The other formats
# --------------------------------------------------------------------------------------------------------------------


def test_delimited_default_names_and_rest_conf_key_fields(ctx: Ctx) -> None:
    """DELIMITER=";" with col0, col1… and, on the same path, with ``fields`` from a conf key stored through REST
    (``PUT /metadata/sources/pyhttppush/confKeys/<key>``): that key reaches the plugin's config like a yaml group.
    The plugin makes one record per line (eKuiper's own converter would split the whole body)."""
    key = uid("fields")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"fields": ["id", "t"]})
    cols, path = ctx.stream('FORMAT="delimited", DELIMITER=";"')
    named, _ = ctx.stream(f'FORMAT="delimited", DELIMITER=";", CONF_KEY="{key}"', path=path)
    ctx.rule(f'SELECT *, "cols" AS mode FROM {cols}')
    r_named = ctx.rule(f'SELECT *, "named" AS mode FROM {named}')

    assert ctx.push(path, "1;20.5\n2;21").body == {"accepted": 2, "sources": 2}
    records = by_tag(ctx.sink.wait_for(4))
    assert records["cols"] == [{"col0": "1", "col1": "20.5"}, {"col0": "2", "col1": "21"}]
    assert records["named"] == [{"id": "1", "t": "20.5"}, {"id": "2", "t": "21"}]
    ctx.host.wait_rule_metric(r_named, f"source_{named}_0_records_in_total", 2)


def test_urlencoded_single_and_repeated_keys(ctx: Ctx) -> None:
    s, path = ctx.stream('FORMAT="urlencoded"')
    r = ctx.rule(f"SELECT * FROM {s}")
    assert ctx.push(path, "a=1&b=x+y&b=%C3%A9&c").body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"a": "1", "b": ["x y", "é"], "c": ""}]
    bad = ctx.push(path, "a=%zz")
    assert bad.status == 400 and "malformed escape" in bad.body["error"]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 1)
    token = uid("end")
    ctx.assert_sentinel_next_in_sink(path, 1, body=f"sentinel={token}", expect={"sentinel": token})


def test_protobuf_with_schema_registered_through_rest(ctx: Ctx) -> None:
    """SCHEMAID="reading.Reading" from ``POST /schemas/protobuf`` (the host writes data/schemas/protobuf/reading.proto,
    where the plugin finds it).

    Host: with SCHEMAID the host infers the stream's schema from the .proto (``GET /streams/<s>`` still shows no
    fields) and, like any typed stream, converts only under STRICT_VALIDATION: without it int64 ``count`` is a float
    in the rule (``count / 3`` has decimals) and bytes ``raw`` is the plugin's base64 text; with it ``count`` is an
    integer and ``raw`` real bytes (``cast(raw, "string")`` = "\\x00\\x01").
    """
    ctx.host.post("/schemas/protobuf", {"name": "reading", "content": PROTO}, expect=(200, 201))
    proto = ctx.host.root / "data" / "schemas" / "protobuf" / "reading.proto"
    assert proto.is_file()
    reading = message_class(proto, "Reading")
    body = reading(id="x", value=1.5, count=2**40, raw=b"\x00\x01", tags=[1, 2]).SerializeToString()

    sel = 'SELECT *, count / 3 AS third, cast(raw, "string") AS rawtext, "{mode}" AS mode FROM {s}'
    plain, path = ctx.stream('FORMAT="protobuf", SCHEMAID="reading.Reading"')
    strict, _ = ctx.stream('FORMAT="protobuf", SCHEMAID="reading.Reading", STRICT_VALIDATION="true"', path=path)
    ctx.rule(sel.format(mode="plain", s=plain))
    ctx.rule(sel.format(mode="strict", s=strict))

    assert ctx.push(path, body).body == {"accepted": 1, "sources": 2}
    records = by_tag(ctx.sink.wait_for(2))
    common = {"id": "x", "value": 1.5, "count": 2**40, "raw": "AAE=", "tags": [1, 2]}
    assert records["plain"] == [dict(common, third=pytest.approx(2**40 / 3), rawtext="AAE=")]
    assert records["plain"][0]["third"] != 2**40 // 3
    assert records["strict"] == [dict(common, third=2**40 // 3, rawtext="\x00\x01")]
    bad = ctx.push(path, b"\xff\xff\xff")
    assert bad.status == 400 and "Reading" in bad.body["error"]
    token = uid("end")
    ctx.assert_sentinel_next_in_sink(path, 2, copies=2, body=reading(id=token).SerializeToString(),
                                     expect={"id": token})


def test_custom_decoder_through_shipped_kv_group(ctx: Ctx) -> None:
    """CONF_KEY="kv" (etc/sources/httppush.yaml) sets ``decoder: kv:decode``, which replaces FORMAT."""
    s, path = ctx.stream('CONF_KEY="kv"')
    r = ctx.rule(f"SELECT * FROM {s}")
    assert ctx.push(path, "temperature=21.5 humidity=40").body == {"accepted": 1, "sources": 1}
    assert ctx.push(path, "a=1\nstatus=ok").body == {"accepted": 2, "sources": 1}
    assert ctx.sink.wait_for(3) == [{"temperature": 21.5, "humidity": 40}, {"a": 1}, {"status": "ok"}]
    bad = ctx.push(path, "oops")
    assert bad.status == 400 and "not key=value" in bad.body["error"]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 3)
    token = uid("end")
    ctx.assert_sentinel_next_in_sink(path, 3, body=f"sentinel={token}", expect={"sentinel": token})


# --------------------------------------------------------------------------------------------------------------------
# How a body holds its records: NDJSON, compressed bodies
# --------------------------------------------------------------------------------------------------------------------


def test_ndjson_one_row_per_line(ctx: Ctx) -> None:
    """NDJSON by the property ``framing: lines`` (a conf key stored through REST) and, on a plain json stream, by the
    request's ``Content-Type: application/x-ndjson``: the rule gets one row per line; a bad line refuses the body."""
    key = uid("lines")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"framing": "lines"})
    lines, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    plain, plain_path = ctx.stream('FORMAT="json"')
    r_lines = ctx.rule(f'SELECT *, "lines" AS mode FROM {lines}')
    r_plain = ctx.rule(f'SELECT *, "plain" AS mode FROM {plain}')

    body = b'{"n": 1}\r\n\n{"n": 2}\n{"n": 3}\n'
    assert push(ctx.port, path, body).body == {"accepted": 3, "sources": 1}
    by_type = push(ctx.port, plain_path, body, headers={"Content-Type": "application/x-ndjson"})
    assert by_type.body == {"accepted": 3, "sources": 1}
    bad = push(ctx.port, path, b'{"n": 4}\n[5]\n')
    assert (bad.status, bad.body) == (400, {"error": "NDJSON line 2 is an array; every line must be an object"})

    records = by_tag(ctx.sink.wait_for(6))
    assert records["lines"] == records["plain"] == [{"n": 1}, {"n": 2}, {"n": 3}]
    ctx.host.wait_rule_metric(r_lines, f"source_{lines}_0_records_in_total", 3)
    ctx.host.wait_rule_metric(r_plain, f"source_{plain}_0_records_in_total", 3)
    ctx.assert_sentinel_next_in_sink(path, 6)  # nothing of the refused body reached the rule


def test_gzip_body_reaches_the_rule(ctx: Ctx) -> None:
    """``Content-Encoding: gzip`` and ``zstd`` (two frames): the plugin inflates the body; the rule sees its
    records."""
    s, path = ctx.stream('FORMAT="json"')
    r = ctx.rule(f"SELECT * FROM {s}")
    reply = push(ctx.port, path, gzip.compress(b'[{"z": 1}, {"z": 2}]'), headers={"Content-Encoding": "gzip"})
    assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1})
    reply = push(ctx.port, path, ZSTD.compress(b'[{"z": 3}, ') + ZSTD.compress(b'{"z": 4}]'),
                 headers={"Content-Encoding": "zstd"})
    assert (reply.status, reply.body) == (200, {"accepted": 2, "sources": 1})
    assert push(ctx.port, path, b"{}", headers={"Content-Encoding": "br"}).status == 415
    assert ctx.sink.wait_for(4) == [{"z": 1}, {"z": 2}, {"z": 3}, {"z": 4}]
    ctx.host.wait_rule_metric(r, f"source_{s}_0_records_in_total", 4)
    ctx.assert_sentinel_next_in_sink(path, 4)
