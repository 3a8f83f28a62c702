"""Decoders in-process, against what eKuiper's own converters do (internal/converter/*), and where we differ."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httppush_plugin.decoders import (
    MAX_JSON_DEPTH,
    BinaryDecoder,
    CustomDecoder,
    CustomDecoderFault,
    DecodeError,
    Decoder,
    DelimitedDecoder,
    JsonDecoder,
    Limits,
    OverLimit,
    ProtobufDecoder,
    SearchPaths,
    TooManyRecords,
    UrlencodedDecoder,
    base,
    build_decoder,
)
from httppush_plugin.decoders import json as json_decoder
from httppush_plugin.decoders.base import check_json_values, nonblank_lines
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig

ROOT = Path(__file__).resolve().parents[1]

PROTO = """
syntax = "proto3";
import "google/protobuf/wrappers.proto";
message Point {
  sint64 n = 1;
  float f = 2;
  oneof choice { string name = 3; int32 code = 4; }
  google.protobuf.Int32Value wrapped = 5;
  repeated Point children = 6;
  optional bool flag = 7;
  fixed64 big = 8;
  map<string, bytes> blobs = 9;
  double d = 10;
}
"""
# A user's decoder module with things that look callable but must not be accepted as decoders
TRICKY_MODULE = """
from os import system
from os.path import join

VALUE = 3


class Thing:
    def __init__(self, body):
        pass


def decode(body):
    return 42


def sets(body):
    return {"s": {1}}
"""
HUGE_INT = b"1" + b"0" * 309  # beyond float64: orjson refuses it; json.loads would have returned an int
UTF8_BOM = b"\xef\xbb\xbf"


def _nested(depth: int) -> bytes:
    """An object nested ``depth`` levels deep, arrays and objects alternating: ``[{"a":[{"a":1}]}]`` is depth 4."""
    opens, closes = [], []
    for level in range(depth):
        opens.append(b'{"a":' if level % 2 else b"[")
        closes.append(b"}" if level % 2 else b"]")
    return b"".join(opens) + b"1" + b"".join(reversed(closes))


@pytest.fixture
def paths(tmp_path: Path) -> SearchPaths:
    plugin_dir = tmp_path / "plugins" / "portable" / "pyhttppush"
    (plugin_dir / "decoders").mkdir(parents=True)
    (plugin_dir / "decoders" / "kv.py").write_text((ROOT / "etc" / "decoders" / "kv.py").read_text())
    return SearchPaths(plugin_dir)


@pytest.fixture(scope="module")
def point_decoder(tmp_path_factory: pytest.TempPathFactory) -> ProtobufDecoder:
    host = tmp_path_factory.mktemp("host")
    schema_dir = host / "etc" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True)
    (schema_dir / "point.proto").write_text(PROTO)
    return ProtobufDecoder("point.Point", SearchPaths(host / "plugins" / "portable" / "p"))


# ------------------------------------------------------------------------------------------------------------ json


def test_json_object_array_and_errors() -> None:
    decoder = JsonDecoder()
    assert decoder.decode(b'{"a": 1}') == [{"a": 1}]
    assert decoder.decode(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert decoder.decode(b"[]") == []
    for body, message in [
        (b'[{"a": 1}, 2]', "JSON array element 1 is a number; every element must be an object"),
        (b'"x"', "JSON body is a string; must be an object or an array of objects"),
        (b"true", "JSON body is a boolean; must be an object or an array of objects"),
        (b"null", "JSON body is null; must be an object or an array of objects"),
        (b"[[]]", "JSON array element 0 is an array; every element must be an object"),
        (b" \n", "JSON body is empty; must be an object or an array of objects"),
        (b"{", "body is not valid JSON: unexpected end of data: line 1 column 2"),
    ]:
        with pytest.raises(DecodeError) as info:
            decoder.decode(body)
        assert str(info.value) == message


def test_json_decoder_returns_records_only() -> None:
    # serialising records is framing.py's job: no bytes pass-through, no messages() on any decoder
    assert not hasattr(Decoder, "messages")
    body = b'{"s": "x"}'
    records = JsonDecoder().decode(body)
    assert records == [{"s": "x"}] and type(records[0]) is dict


def test_json_refuses_numbers_the_host_cannot_read() -> None:
    decoder = JsonDecoder()
    for body, message in [
        (b'{"a": 1e400}', "body is not valid JSON: number is infinity when parsed as double: line 1 column 7"),
        (b'{"a":-1e400}', "body is not valid JSON: number is infinity when parsed as double: line 1 column 6"),
        (b'{"a":' + HUGE_INT + b"}", "body is not valid JSON: number is infinity when parsed as double: line 1 "
                                     "column 6"),
        (b'{"a": NaN}', "body is not valid JSON: unexpected character, expected a JSON value: line 1 column 7"),
        (b'{"a": Infinity}', "body is not valid JSON: unexpected character, expected a JSON value: line 1 column 7"),
    ]:
        with pytest.raises(DecodeError) as info:
            decoder.decode(body)
        assert str(info.value) == message


def test_json_integers_beyond_64_bits_become_floats() -> None:
    decoder = JsonDecoder()
    big = 123456789012345678901234567890
    assert decoder.decode(b'{"big": %d, "neg": -%d}' % (big, big)) == [{"big": float(big), "neg": -float(big)}]
    assert decoder.decode(b'{"u64": %d}' % (2**64 - 1)) == [{"u64": 2**64 - 1}]
    assert decoder.decode(b'{"tiny": 1e-400}') == [{"tiny": 0.0}]


def test_json_refuses_lone_surrogates_and_invalid_utf8() -> None:
    decoder = JsonDecoder()
    with pytest.raises(DecodeError, match=r"^body is not valid JSON: no low surrogate in string: line 1 column 8$"):
        decoder.decode(b'[{"a":"\\ud800"}]')
    with pytest.raises(DecodeError, match=r"^JSON body is not UTF-8 text: byte 6 is 0xff$"):
        decoder.decode(b'{"a":"\xff"}')
    with pytest.raises(DecodeError, match=r"^JSON body is not UTF-8 text: byte 6 is 0xed$"):
        decoder.decode(b'{"a":"\xed\xa0\x80"}')  # a surrogate encoded as raw UTF-8 bytes
    assert decoder.decode('{"a":"\\ud83d\\ude00 é"}'.encode()) == [{"a": "\U0001f600 é"}]


@pytest.mark.parametrize("encoding, family", [
    ("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"),
    ("utf-32", "UTF-32"), ("utf-32-le", "UTF-32"), ("utf-32-be", "UTF-32"),
])
def test_json_refuses_utf16_and_utf32_bodies(encoding: str, family: str) -> None:
    with pytest.raises(DecodeError) as info:
        JsonDecoder().decode('{"a": 1}'.encode(encoding))
    assert str(info.value) == f"JSON body must be UTF-8; it looks like {family}"


def test_json_accepts_a_utf8_byte_order_mark() -> None:
    # RFC 8259 §8.1 lets a parser ignore it; orjson alone refuses it
    assert JsonDecoder().decode(UTF8_BOM + '[{"a": "é"}]'.encode()) == [{"a": "é"}]
    with pytest.raises(DecodeError, match="not valid JSON: unexpected end of data"):
        JsonDecoder().decode(UTF8_BOM + b'{"a":')
    with pytest.raises(DecodeError, match="JSON body is empty"):
        JsonDecoder().decode(UTF8_BOM)


def test_json_max_depth_is_what_orjson_accepts() -> None:
    # keeps MAX_JSON_DEPTH in step with the installed orjson
    orjson.loads(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    with pytest.raises(orjson.JSONDecodeError, match="depth"):
        orjson.loads(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


def test_json_nesting_up_to_max_depth_and_not_beyond() -> None:
    decoder = JsonDecoder()
    records = decoder.decode(_nested(MAX_JSON_DEPTH))
    assert len(records) == 1 and isinstance(records[0], dict)
    assert decoder.decode(b'{"a":' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH)[0]["a"]["a"]
    for body in (_nested(MAX_JSON_DEPTH + 1), b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
                 b"[" * 100_000):
        with pytest.raises(DecodeError, match=f"^body is not valid JSON: nesting is deeper than {MAX_JSON_DEPTH} "
                                              "levels: line 1 column "):
            decoder.decode(body)


# ---------------------------------------------------------------------------------------------------------- binary


def test_binary_is_base64() -> None:
    assert BinaryDecoder().decode(b"\x00\xff") == [{"self": base64.b64encode(b"\x00\xff").decode()}]
    assert BinaryDecoder().decode(b"") == [{"self": ""}]


# ------------------------------------------------------------------------------------------------------- delimited


def test_delimited_matches_ekuiper_on_one_line_and_splits_lines() -> None:
    # eKuiper: strings.Split(body, delimiter); names from `fields`, extra values dropped, values are strings
    assert DelimitedDecoder(",").decode(b"1,a,") == [{"col0": "1", "col1": "a", "col2": ""}]
    assert DelimitedDecoder(",", ("x",)).decode(b"1,2") == [{"x": "1"}]
    assert DelimitedDecoder(",", ("x", "y", "z")).decode(b"1,2") == [{"x": "1", "y": "2"}]
    # we differ: one record per non-empty line (eKuiper would give {"col0": "1", "col1": "2\n3", ...})
    assert DelimitedDecoder("|").decode(b"1|2\r\n\r\n3|4\n") == [{"col0": "1", "col1": "2"},
                                                                 {"col0": "3", "col1": "4"}]
    assert DelimitedDecoder("::").decode(b"a::b") == [{"col0": "a", "col1": "b"}]
    assert DelimitedDecoder(",").key != DelimitedDecoder(";").key
    assert DelimitedDecoder(",").key == DelimitedDecoder(",").key


def test_delimited_splits_lines_on_lf_and_crlf_only() -> None:
    decoder = DelimitedDecoder(",")
    # str.splitlines() would split at every one of these; they are data here
    for char in ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"):
        assert decoder.decode(f"a{char}b,c\nd".encode()) == [{"col0": f"a{char}b", "col1": "c"}, {"col0": "d"}]
    assert decoder.decode(b"a\r\r\nb\r") == [{"col0": "a\r"}, {"col0": "b\r"}]
    assert decoder.decode(b"\r\n\n\r\n") == []
    with pytest.raises(DecodeError, match="^delimited body is not UTF-8 text: byte 2 is 0xff$"):
        decoder.decode(b"a,\xff")


# ------------------------------------------------------------------------------------------------------ urlencoded


def test_urlencoded_like_go_parsequery() -> None:
    decoder = UrlencodedDecoder()
    assert decoder.decode(b"a=1&a=2&b=&c&d=x%20y+z") == [{"a": ["1", "2"], "b": "", "c": "", "d": "x y z"}]
    assert decoder.decode(b"") == [{}]
    assert decoder.decode(b"k%3D=v%26") == [{"k=": "v&"}]
    for body in (b"a=%", b"a=%2", b"a=%g0", b"a=1;b=2", b"a=%ff"):
        with pytest.raises(DecodeError):
            decoder.decode(body)


# -------------------------------------------------------------------------------------------------------- protobuf


def test_protobuf_every_declared_field_like_ekuiper(point_decoder: ProtobufDecoder) -> None:
    cls = point_decoder.message_class
    msg = cls(n=-5, f=float("nan"), code=7, big=2**63, d=float("-inf"))
    msg.wrapped.value = 3
    msg.children.add(n=1)
    msg.blobs["k"] = b"\x00"
    records = point_decoder.decode(msg.SerializeToString())
    child = {"n": 1, "f": 0.0, "children": [], "big": 0, "blobs": {}, "d": 0.0}
    assert records == [{"n": -5, "f": None, "code": 7, "wrapped": 3, "children": [child], "big": 2**63,
                        "blobs": {"k": "AA=="}, "d": None}]
    assert orjson.loads(orjson.dumps(records[0])) == records[0]
    with pytest.raises(DecodeError, match="Point"):
        point_decoder.decode(b"\x0a\xff")


def test_protobuf_config_errors(tmp_path: Path) -> None:
    paths = SearchPaths(tmp_path / "plugins" / "portable" / "p")
    with pytest.raises(ConfigError, match="no nosuch.proto was found"):
        ProtobufDecoder("nosuch.M", paths)
    schema_dir = tmp_path / "data" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True)
    (schema_dir / "broken.proto").write_text("syntax = \"proto3\"; message M { int32 x = ; }")
    with pytest.raises(ConfigError, match="cannot compile broken.proto"):
        ProtobufDecoder("broken.M", paths)
    (schema_dir / "ok.proto").write_text("syntax = \"proto3\"; package p.q; message M { int32 x = 1; }")
    assert ProtobufDecoder("ok.M", paths).decode(b"\x08\x02") == [{"x": 2}]  # package prefix optional
    assert ProtobufDecoder("ok.p.q.M", paths).decode(b"") == [{"x": 0}]
    (schema_dir / "my-schema_2.proto").write_text("syntax = \"proto3\"; message M { int32 x = 1; }")
    assert ProtobufDecoder("my-schema_2.M", paths).decode(b"") == [{"x": 0}]
    with pytest.raises(ConfigError, match="'Other' not found"):
        ProtobufDecoder("ok.Other", paths)


def test_protobuf_schemaid_cannot_leave_the_schema_folders(tmp_path: Path) -> None:
    paths = SearchPaths(tmp_path / "plugins" / "portable" / "p")
    schema_dir = tmp_path / "etc" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    assert "." not in str(outside)  # so the whole path is the file part of the SCHEMAID below
    (outside / "evil.proto").write_text("syntax = \"proto3\"; message M { int32 x = 1; }")
    # `folder / "/abs/evil.proto"` is "/abs/evil.proto": without the rule this SCHEMAID compiled the outside file
    for schema_id in (f"{outside}/evil.M", "../x.M", "..\\x.M", "a/b.M", ".hidden.M", "ok", "ok.", "sp ace.M"):
        with pytest.raises(ConfigError) as info:
            ProtobufDecoder(schema_id, paths)
        assert str(info.value).startswith(f"SCHEMAID is {schema_id!r}; must be \"<file>.<Message>\" where <file> is "
                                          "a plain file name")
    (schema_dir / "link.proto").symlink_to(outside / "evil.proto")
    with pytest.raises(ConfigError, match="^SCHEMAID is 'link.M', but .*link.proto leads to .*evil.proto, outside "
                                          "the search folders"):
        ProtobufDecoder("link.M", paths)
    # a symlink between two search folders stays inside
    data_dir = tmp_path / "data" / "schemas" / "protobuf"
    data_dir.mkdir(parents=True)
    (data_dir / "real.proto").write_text("syntax = \"proto3\"; message M { int32 x = 1; }")
    (schema_dir / "alias.proto").symlink_to(data_dir / "real.proto")
    assert ProtobufDecoder("alias.M", paths).decode(b"\x08\x05") == [{"x": 5}]


# ---------------------------------------------------------------------------------------------------------- custom


def test_custom_decoder(paths: SearchPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = CustomDecoder("kv:decode", paths)
    assert decoder.decode(b"a=1 b=x\n\nc=2.5") == [{"a": 1, "b": "x"}, {"c": 2.5}]
    # numbers JSON can't carry stay text: never a 500 ("the decoder broke its contract") a client can trigger
    edges = b"a=18446744073709551616 b=nan c=1e400 d=-inf e=18446744073709551615 f=-9223372036854775808"
    assert decoder.decode(edges) == [{"a": "18446744073709551616", "b": "nan", "c": "1e400", "d": "-inf",
                                      "e": 18446744073709551615, "f": -9223372036854775808}]
    with pytest.raises(DecodeError, match="rejected the body"):
        decoder.decode(b"nokey")
    with pytest.raises(DecodeError, match="rejected the body"):
        decoder.decode(b"\xff=1")
    for ref, needle in [("kv", "must be"), ("kv:", "must be"), (":decode", "must be"), ("k-v:decode", "must be"),
                        ("kv:a.b", "must be"), ("kv:nothing", "no function 'nothing'"), ("zz:f", "no zz.py")]:
        with pytest.raises(ConfigError, match=needle):
            CustomDecoder(ref, paths)
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "weird.py").write_text(TRICKY_MODULE)
    (extra / "crash.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setenv("HTTPPUSH_DECODERS_PATH", str(extra))
    with pytest.raises(CustomDecoderFault, match="returned int"):
        CustomDecoder("weird:decode", paths).decode(b"")
    # records that are not JSON pass through here: framing.py refuses them when it serialises
    assert CustomDecoder("weird:sets", paths).decode(b"") == [{"s": {1}}]
    with pytest.raises(ConfigError, match="failed to load: RuntimeError: boom"):
        CustomDecoder("crash:decode", paths)


@pytest.mark.parametrize("attr, what", [
    ("join", "a function imported from posixpath"),
    ("system", "a builtin_function_or_method, not a function"),
    ("Thing", "a class"),
    ("VALUE", "a int, not a function"),
])
def test_custom_decoder_must_be_a_function_of_that_module(paths: SearchPaths, attr: str, what: str) -> None:
    (paths.plugin_dir / "decoders" / "weird.py").write_text(TRICKY_MODULE)
    with pytest.raises(ConfigError) as info:
        CustomDecoder(f"weird:{attr}", paths)
    assert str(info.value) == (f"property 'decoder' is 'weird:{attr}', but {attr!r} in "
                               f"{(paths.plugin_dir / 'decoders' / 'weird.py').resolve()} is {what}; must be a plain "
                               "function defined in weird.py with 'def'")


def test_custom_decoder_module_must_lie_in_its_folders(paths: SearchPaths, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no os.py was found"):
        CustomDecoder("os:system", paths)
    outside = tmp_path / "outside.py"
    outside.write_text("def decode(body):\n    return {}\n")
    (paths.plugin_dir / "decoders" / "link.py").symlink_to(outside)
    with pytest.raises(ConfigError, match="^property 'decoder' is 'link:decode', but .*link.py leads to "
                                          ".*outside.py, outside the search folders"):
        CustomDecoder("link:decode", paths)


def test_build_decoder_registry(paths: SearchPaths) -> None:
    cfg = EndpointConfig.from_props({"datasource": "/a", "format": "delimited", "delimiter": ";", "fields": "a, b"})
    decoder = build_decoder(cfg, paths)
    assert isinstance(decoder, DelimitedDecoder) and decoder.fields == ("a", "b") and decoder.delimiter == ";"
    kv = build_decoder(EndpointConfig.from_props({"datasource": "/a", "decoder": "kv:decode"}), paths)
    assert isinstance(kv, CustomDecoder)


def test_stdlib_json_is_not_shadowed() -> None:
    import json

    assert json.loads("[1]") == [1] and not json.__name__.startswith("httppush")


# -------------------------------------------------------------------------------------------------------- property
# Light property tests (a few seconds in all); the heavier fuzz suite lives elsewhere.

# Text made of the characters that matter to the text formats, so examples reach past the first byte
_SYNTAX = list('{}[]":,.-+eE0123456789 \\utrfalsnNI=&;%\r\n\t\x00\x0b\x0c\x85') + ["\ud800", "\u2028", "é", "😀"]
BODIES = st.binary(max_size=200) | st.text(st.sampled_from(_SYNTAX), max_size=60).map(
    lambda s: s.encode("utf-8", "surrogatepass"))
# orjson parses integers in [-2**63, 2**64) as int, floats it reads back exactly, text without lone surrogates
JSON_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
JSON_LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | JSON_TEXT)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(JSON_TEXT, inner, max_size=5), max_leaves=30)
JSON_OBJECTS = st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=8)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _records_or_decode_error(decoder: Decoder, body: bytes, json_ready: bool = True) -> None:
    try:
        records = decoder.decode(body)
    except DecodeError:
        return
    assert isinstance(records, list) and all(type(record) is dict for record in records)
    if json_ready:
        orjson.dumps(records)  # what framing.py will do: built-in decoders never produce a value it refuses


@PROPERTY
@given(BODIES)
def test_property_json_any_bytes(body: bytes) -> None:
    _records_or_decode_error(JsonDecoder(), body)
    _records_or_decode_error(JsonDecoder(), UTF8_BOM + body)


@PROPERTY
@given(JSON_OBJECTS)
def test_property_json_round_trips_objects(doc: dict[str, Any]) -> None:
    assert JsonDecoder().decode(orjson.dumps(doc)) == [doc]
    assert JsonDecoder().decode(orjson.dumps([doc, doc])) == [doc, doc]


@PROPERTY
@given(st.binary(max_size=200))
def test_property_binary_any_bytes(body: bytes) -> None:
    _records_or_decode_error(BinaryDecoder(), body)
    assert base64.b64decode(BinaryDecoder().decode(body)[0]["self"]) == body


@PROPERTY
@given(BODIES, st.sampled_from([",", ";", "::", "\t"]))
def test_property_delimited_any_bytes(body: bytes, delimiter: str) -> None:
    _records_or_decode_error(DelimitedDecoder(delimiter), body)
    _records_or_decode_error(DelimitedDecoder(delimiter, ("a", "b")), body)


@PROPERTY
@given(BODIES)
def test_property_urlencoded_any_bytes(body: bytes) -> None:
    _records_or_decode_error(UrlencodedDecoder(), body)


@PROPERTY
@given(st.binary(max_size=200))
def test_property_protobuf_any_bytes(point_decoder: ProtobufDecoder, body: bytes) -> None:
    _records_or_decode_error(point_decoder, body)


@PROPERTY
@given(BODIES)
def test_property_custom_any_bytes(paths: SearchPaths, body: bytes) -> None:
    # a user's function may return values that are not JSON (framing.py's concern); kv's are, but don't rely on it
    _records_or_decode_error(CustomDecoder("kv:decode", paths), body, json_ready=False)


# ------------------------------------------------------------------------------------------ limits (issue 14: cost)

LIMITS = Limits(records=3, fields=2, values=40)


def test_line_formats_count_blank_lines_against_the_record_limit() -> None:
    assert JsonDecoder(lines=True).decode_request(b'{"a":1}\n \t\r\n\n', "", LIMITS) == [{"a": 1}]
    for decoder, body in ((JsonDecoder(lines=True), b'{"a":1}\n\n\n\n'), (DelimitedDecoder(), b"a\n\n \n\r\n")):
        with pytest.raises(OverLimit, match=r"^body has more than 3 lines \(blank ones count too\); the limit is 3 "
                                            r"\(httpServerMaxRecords\)$") as caught:
            decoder.decode_request(body, "", LIMITS)
        assert caught.value.status == 413


def test_line_formats_skip_whitespace_lines_and_name_the_bad_line() -> None:
    body = b' \t\r\n{"a":1}\r\n\t\n{"a":2}\n \n'
    assert JsonDecoder(lines=True).decode_request(body, "", Limits()) == [{"a": 1}, {"a": 2}]
    with pytest.raises(DecodeError, match="^NDJSON line 4 is not valid JSON"):
        JsonDecoder(lines=True).decode_request(b'\n \n{"a":1}\n{"a":\n', "", Limits())
    with pytest.raises(DecodeError, match="^NDJSON line 3 is an array"):
        JsonDecoder(lines=True).decode_request(b'\n \n[1]\n', "", Limits())
    assert DelimitedDecoder(",").decode(b" \t\r\na,b\r\n \r\nc\r") == [{"col0": "a", "col1": "b"}, {"col0": "c\r"}]


def test_nonblank_lines_in_steps_as_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [b"", b"\n", b"a", b"a\r\n", b" \r\n\tb\r\n\nc\r", b"x\ny\n\n z \n" * 7]
    whole = [nonblank_lines(body) for body in bodies] + [nonblank_lines(body.decode()) for body in bodies]
    monkeypatch.setattr(base, "COUNT_STEP", 3)
    assert [nonblank_lines(body) for body in bodies] + [nonblank_lines(body.decode()) for body in bodies] == whole
    assert base.count(b"a,b,,c" * 5, b",") == 15


def test_fields_limit() -> None:
    assert JsonDecoder().decode_request(b'{"a":1,"b":{"c":1,"d":2,"e":3}}', "", LIMITS)  # nested keys do not count
    for decoder, body, where in (
        (JsonDecoder(), b'{"a":1,"b":2,"c":3}', "JSON record 0"),
        (JsonDecoder(), b'[{"a":1},{"a":1,"b":2,"c":3}]', "JSON record 1"),
        (JsonDecoder(lines=True), b'{"a":1}\n{"a":1,"b":2,"c":3}', "NDJSON line 2"),
        (DelimitedDecoder(), b"a\na,b,c", "a delimited line"),
        (UrlencodedDecoder(), b"a=1&b=2&c=3", "the urlencoded body (up to 3 '&'-separated pairs)"),
    ):
        with pytest.raises(OverLimit, match=f"^{re.escape(where)} has more than 2 fields; the limit is 2 "
                                            r"\(httpServerMaxFields\)$"):
            decoder.decode_request(body, "", LIMITS)
    assert DelimitedDecoder(",", ("a", "b")).decode_request(b"1,2,3,4,5", "", LIMITS) == [{"a": "1", "b": "2"}]


def test_values_limit_counted_before_parsing() -> None:
    small = Limits(values=10)
    body = b'{"a":[1,2,3,4,5,6,7,8,9,10]}'
    with pytest.raises(OverLimit, match=r"^body holds up to 14 values \(counted as its ',' and '\[' characters "
                                        r"and three per '\{', strings included\); the limit is 10 "
                                        r"\(httpServerMaxValues\)$"):
        check_json_values(body, small)
    check_json_values(b'{"a":"' + b"," * 4 + b'"}', small)  # no longer than the limit: not counted
    with pytest.raises(OverLimit, match="httpServerMaxValues"):
        DelimitedDecoder().decode_request(b"a,b,c,d,e,f,g,h,i,j,k", "", small)


def test_urlencoded_repeated_keys_still_lists() -> None:
    assert UrlencodedDecoder().decode_request(b"a=1&b=2&a=3&a=4", "", Limits()) == [{"a": ["1", "3", "4"], "b": "2"}]


def _slice_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_decoder, "_SLICE", 16)


def test_json_array_in_slices_refuses_past_the_record_limit_and_keeps_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _slice_small(monkeypatch)
    records = [{"s": "},{", "n": [{"a": 1}, {"b": "]"}]}, {"x": 1}, {}] * 10
    body = orjson.dumps(records)
    assert json_decoder._parse_in_slices(body, Limits()) == records
    assert JsonDecoder().decode_request(b" \r\n" + body + b"\n", "", Limits()) == records
    with pytest.raises(TooManyRecords, match="httpServerMaxRecords"):
        JsonDecoder().decode_request(body, "", Limits(records=7))
    with pytest.raises(DecodeError, match="^JSON array element 2 is a number"):
        JsonDecoder().decode_request(b'[{"a":1},{"a":2},3,{"a":4},{"a":5}]', "", Limits())
    with pytest.raises(DecodeError, match="^body is not valid JSON"):
        JsonDecoder().decode_request(body[:-2], "", Limits())


@PROPERTY
@given(st.lists(JSON_OBJECTS, max_size=8))
def test_property_json_array_in_slices_as_whole(records: list[dict[str, Any]]) -> None:
    body = orjson.dumps(records)
    old, json_decoder._SLICE = json_decoder._SLICE, 8
    try:
        assert JsonDecoder().decode_request(body, "", Limits()) == records
    finally:
        json_decoder._SLICE = old


def test_delimited_values_are_bounded_with_fields_names_too() -> None:
    """With fields names a line holds at most as many values as there are names: the bound the value limit and the
    budget's estimate use, and no more."""
    named = DelimitedDecoder(",", ("a", "b", "c", "d", "e"))
    body = b"1,2,3,4,5,6,7\n" * 30  # 30 lines of 5 named values (the rest is never split off): 150
    assert named.values_bound(body) == 150  # lines x names: a bound, never below the truth
    with pytest.raises(OverLimit, match="httpServerMaxValues"):
        named.decode(body, Limits(values=100))
    assert len(named.decode(body, Limits(values=200))) == 30
