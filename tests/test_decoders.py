"""Decoders in-process, against what eKuiper's own converters do (internal/converter/*), and where we differ."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from httppush_plugin.config import ConfigError, EndpointConfig
from httppush_plugin.decoders import (
    BinaryDecoder,
    CustomDecoder,
    CustomDecoderFault,
    DecodeError,
    DelimitedDecoder,
    JsonDecoder,
    ProtobufDecoder,
    SearchPaths,
    UrlencodedDecoder,
    build_decoder,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def paths(tmp_path: Path) -> SearchPaths:
    plugin_dir = tmp_path / "plugins" / "portable" / "pyhttppush"
    (plugin_dir / "decoders").mkdir(parents=True)
    (plugin_dir / "decoders" / "kv.py").write_text((ROOT / "etc" / "decoders" / "kv.py").read_text())
    return SearchPaths(plugin_dir)


def test_json_object_array_and_errors() -> None:
    decoder = JsonDecoder()
    assert decoder.decode(b'{"a": 1}') == [{"a": 1}]
    assert decoder.decode(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert decoder.decode(b"[]") == []
    for body, needle in [(b"[1]", "element 0 is a number"), (b"true", "a boolean"), (b"null", "null"),
                         (b"{", "not valid JSON"), (b'{"a": Infinity}', "not valid JSON"), (b"\xff", "not valid")]:
        with pytest.raises(DecodeError, match=needle):
            decoder.decode(body)


def test_json_object_body_is_passed_through_untouched() -> None:
    decoder = JsonDecoder()
    body = b'{"big": 123456789012345678901234567890, "s": "x"}'  # beyond 64 bits: orjson alone refuses it
    records = decoder.decode(body)
    assert records[0]["big"] == float(123456789012345678901234567890)
    assert decoder.messages(body, records) == [body]
    array = b'[{"a": 1}, {"b": 2}]'
    assert decoder.messages(array, decoder.decode(array)) == [b'{"a":1}', b'{"b":2}']


def test_binary_is_base64() -> None:
    assert BinaryDecoder().decode(b"\x00\xff") == [{"self": base64.b64encode(b"\x00\xff").decode()}]


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


def test_urlencoded_like_go_parsequery() -> None:
    decoder = UrlencodedDecoder()
    assert decoder.decode(b"a=1&a=2&b=&c&d=x%20y+z") == [{"a": ["1", "2"], "b": "", "c": "", "d": "x y z"}]
    assert decoder.decode(b"") == [{}]
    assert decoder.decode(b"k%3D=v%26") == [{"k=": "v&"}]
    for body in (b"a=%", b"a=%2", b"a=%g0", b"a=1;b=2", b"a=%ff"):
        with pytest.raises(DecodeError):
            decoder.decode(body)


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
}
"""


def test_protobuf_every_declared_field_like_ekuiper(tmp_path: Path) -> None:
    host = tmp_path / "host"
    schema_dir = host / "etc" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True)
    (schema_dir / "point.proto").write_text(PROTO)
    decoder = ProtobufDecoder("point.Point", SearchPaths(host / "plugins" / "portable" / "p"))
    cls = decoder.message_class
    msg = cls(n=-5, f=float("nan"), code=7, big=2**63)
    msg.wrapped.value = 3
    msg.children.add(n=1)
    records = decoder.decode(msg.SerializeToString())
    assert records == [{"n": -5, "f": None, "code": 7, "wrapped": 3, "children": [{"n": 1, "f": 0.0, "children": [],
                                                                                   "big": 0}], "big": 2**63}]
    assert orjson.loads(decoder.messages(b"", records)[0]) == records[0]
    with pytest.raises(DecodeError, match="Point"):
        decoder.decode(b"\x0a\xff")


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
    with pytest.raises(ConfigError, match="'Other' not found"):
        ProtobufDecoder("ok.Other", paths)


def test_custom_decoder(paths: SearchPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = CustomDecoder("kv:decode", paths)
    assert decoder.decode(b"a=1 b=x\n\nc=2.5") == [{"a": 1, "b": "x"}, {"c": 2.5}]
    with pytest.raises(DecodeError, match="rejected the body"):
        decoder.decode(b"nokey")
    with pytest.raises(DecodeError, match="rejected the body"):
        decoder.decode(b"\xff=1")
    for ref, needle in [("kv", "must be"), ("kv:nothing", "no function 'nothing'"), ("zz:f", "no zz.py")]:
        with pytest.raises(ConfigError, match=needle):
            CustomDecoder(ref, paths)
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "weird.py").write_text("def decode(body):\n    return 42\n\ndef sets(body):\n    return {'s': {1}}\n")
    (extra / "crash.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setenv("HTTPPUSH_DECODERS_PATH", str(extra))
    with pytest.raises(CustomDecoderFault, match="returned int"):
        CustomDecoder("weird:decode", paths).decode(b"")
    sets = CustomDecoder("weird:sets", paths)
    with pytest.raises(CustomDecoderFault, match="not JSON"):
        sets.messages(b"", sets.decode(b""))
    with pytest.raises(ConfigError, match="failed to load: RuntimeError: boom"):
        CustomDecoder("crash:decode", paths)


def test_build_decoder_registry(paths: SearchPaths) -> None:
    cfg = EndpointConfig.from_props({"datasource": "/a", "format": "delimited", "delimiter": ";", "fields": "a, b"})
    decoder = build_decoder(cfg, paths)
    assert isinstance(decoder, DelimitedDecoder) and decoder.fields == ("a", "b") and decoder.delimiter == ";"
    kv = build_decoder(EndpointConfig.from_props({"datasource": "/a", "decoder": "kv:decode"}), paths)
    assert isinstance(kv, CustomDecoder)
