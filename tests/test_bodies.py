"""How a body holds its records: NDJSON / JSON Lines framing (property ``framing: lines`` or a request's
``Content-Type: application/x-ndjson``), and compressed bodies (``Content-Encoding: gzip``, ``deflate``), checked
in-process and over real HTTP against the installed plugin (emulated host), a 10 GB gzip bomb included."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable

import pytest

from httppush_plugin.answers import HttpError
from httppush_plugin.decoders import DecodeError, JsonDecoder
from httppush_plugin.decoders.json import decode_lines
from httppush_plugin.encoding import inflater_for
from httppush_plugin.errors import ConfigError
from httppush_plugin.properties import EndpointConfig
from tests.hostemu import PluginHost
from tests.support.bombs import BOMB_PEAK_RSS_MB, gzip_pieces, push_bomb
from tests.support.http import push, sender
from tests.support.sentinel import assert_sentinel_next_on_channels

NDJSON = b'{"id": 1, "t": 20.5}\n{"id": 2, "t": 21}\n{"id": 3, "t": 19.25}\n'
NDJSON_RECORDS = [{"id": 1, "t": 20.5}, {"id": 2, "t": 21}, {"id": 3, "t": 19.25}]
#: CRLF line ends, blank lines (empty, spaces, a lone CR) and no newline after the last line
NDJSON_MESSY = b'{"id": 1, "t": 20.5}\r\n\r\n   \n{"id": 2, "t": 21}\r\n\n{"id": 3, "t": 19.25}'
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines",
                "Application/X-NDJSON; charset=utf-8")

BODY = b'[{"id": 1, "t": 20.5}, {"id": 2, "t": 21}, {"id": 3, "t": 19.25}]'
RAW_DEFLATE = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
#: the same body in each Content-Encoding the server takes; "deflate" both as zlib (RFC 9110) and raw, as some send it
ENCODED = {"gzip": gzip.compress(BODY), "deflate": zlib.compress(BODY),
           "deflate (raw)": RAW_DEFLATE.compress(BODY) + RAW_DEFLATE.flush()}


# -- in-process ----------------------------------------------------------------------------------------------------

def test_decode_lines_crlf_blank_lines_and_bom() -> None:
    assert decode_lines(NDJSON) == NDJSON_RECORDS
    assert decode_lines(NDJSON_MESSY) == NDJSON_RECORDS
    assert decode_lines(b"\xef\xbb\xbf" + NDJSON) == NDJSON_RECORDS
    assert decode_lines(b"") == decode_lines(b"\n\r\n") == []


@pytest.mark.parametrize("body, needle", [
    (b'{"a": 1}\n[2]\n', "NDJSON line 2 is an array; every line must be an object"),
    (b'{"a": 1}\n\n7', "NDJSON line 3 is a number; every line must be an object"),
    (b'{"a": 1}\n{"a": \n', "NDJSON line 2 is not valid JSON: unexpected end of data: column 7"),
    (b'{"a": 1} {"a": 2}\n', "NDJSON line 1 is not valid JSON"),
    (b'{"a": 1}\n{"a": NaN}', "NDJSON line 2 is not valid JSON"),
    (b'{"a": 1}\n{"a": "\xff"}', "NDJSON line 2 is not UTF-8 text: its byte 7 is 0xff"),
    ('{"a": 1}\n'.encode("utf-16"), "NDJSON body must be UTF-8; it looks like UTF-16"),
])
def test_decode_lines_bad_line_named(body: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(needle)):
        decode_lines(body)


def test_json_decoder_framing_by_property_and_content_type() -> None:
    whole, lines = JsonDecoder(), JsonDecoder(lines=True)
    assert whole.key != lines.key  # sources with different framing get their own decoding
    assert whole.decode_request(b'[{"a": 1}, {"a": 2}]', "application/json") == [{"a": 1}, {"a": 2}]
    with pytest.raises(DecodeError, match="not valid JSON"):
        whole.decode_request(NDJSON, "application/json")
    for media_type in NDJSON_TYPES:
        assert whole.decode_request(NDJSON, media_type) == NDJSON_RECORDS, media_type
    assert lines.decode_request(NDJSON, "application/json") == NDJSON_RECORDS  # the property holds for every request
    assert lines.decode(NDJSON) == NDJSON_RECORDS


def test_framing_property() -> None:
    assert EndpointConfig.from_props({"datasource": "/a"}).framing == "whole"
    assert EndpointConfig.from_props({"datasource": "/a", "framing": "Lines"}).framing == "lines"
    with pytest.raises(ConfigError, match="property 'framing' is 'ndjson'; must be whole or lines"):
        EndpointConfig.from_props({"datasource": "/a", "framing": "ndjson"})
    with pytest.raises(ConfigError, match="property 'framing' is 'lines', but FORMAT is 'delimited'"):
        EndpointConfig.from_props({"datasource": "/a", "format": "delimited", "framing": "lines"})


# -- over HTTP -------------------------------------------------------------------------------------------------------

def test_ndjson_by_property(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    reply = push(server_port, "/nd", NDJSON)
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    reply = push(server_port, "/nd", NDJSON_MESSY, headers={"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    assert_sentinel_next_on_channels(sender(server_port, "/nd"), ch)


@pytest.mark.parametrize("media_type", NDJSON_TYPES)
def test_ndjson_by_content_type(host: PluginHost, server_port: int, media_type: str) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/j"})
    reply = push(server_port, "/j", NDJSON_MESSY, headers={"Content-Type": media_type})
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    # the same endpoint still reads a whole JSON body as before
    assert push(server_port, "/j", b'[{"a": 1}, {"a": 2}]').body == {"accepted": 2, "sources": 1}
    assert ch.messages(2) == [{"a": 1}, {"a": 2}]
    assert push(server_port, "/j", NDJSON).status == 400  # NDJSON without the Content-Type is not one JSON text
    assert_sentinel_next_on_channels(sender(server_port, "/j"), ch)


def test_ndjson_bad_line_refuses_the_whole_body(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    body = NDJSON + b'\n{"id": 4}\n"five"\n{"id": 6}\n'
    reply = push(server_port, "/nd", body)
    assert reply.status == 400
    assert reply.body == {"error": "NDJSON line 6 is a string; every line must be an object"}
    reply = push(server_port, "/nd", b'{"id": 1}\r\n{"id": 2,}\r\n', headers={"Content-Type": "application/x-ndjson"})
    assert reply.status == 400 and reply.body["error"].startswith("NDJSON line 2 is not valid JSON"), reply.body
    assert_sentinel_next_on_channels(sender(server_port, "/nd"), ch)  # nothing of either body was emitted


def test_ndjson_max_records(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """The limit counts lines, blank ones too (so that a body of blank lines is refused from one count of its
    newlines); the blank ones hold no record."""
    host = make_host(server_port, PYHTTPPUSH_SERVER_MAX_RECORDS="5")
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    assert push(server_port, "/nd", NDJSON + b"\n \r\n").body == {"accepted": 3, "sources": 1}  # 5 lines, 2 blank
    assert ch.messages(3) == NDJSON_RECORDS
    reply = push(server_port, "/nd", NDJSON + b"\n\n\n")
    assert reply.status == 413 and reply.body["error"] == ("body has more than 5 lines (blank ones count too); the "
                                                           "limit is 5 (httpServerMaxRecords)"), reply.body
    reply = push(server_port, "/nd", NDJSON * 2)
    assert reply.status == 413 and "httpServerMaxRecords" in reply.body["error"], reply.body
    assert_sentinel_next_on_channels(sender(server_port, "/nd"), ch)


# -- Content-Encoding ------------------------------------------------------------------------------------------------

def _inflate(encoding: str, data: bytes, limit: int = 1 << 20, step: int = 1) -> bytes:
    inflater = inflater_for(encoding, limit)
    assert inflater is not None
    out = b""
    for start in range(0, len(data), step):
        out += inflater.feed(data[start:start + step], len(out))
    inflater.finish()
    return out


@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_inflater_any_piece_sizes(step: int) -> None:
    for name, data in ENCODED.items():
        assert _inflate(name.split()[0], data, step=step) == BODY, name
    two_members = gzip.compress(BODY[:10]) + gzip.compress(BODY[10:])  # RFC 1952 §2.2: members back to back
    assert _inflate("x-gzip", two_members, step=step) == BODY
    assert inflater_for("identity", 1) is None and inflater_for("", 1) is None


@pytest.mark.parametrize("encoding, data, status, needle", [
    ("gzip", ENCODED["gzip"][:-4], 400, "the gzip body ends before its compressed stream does"),
    ("gzip", BODY, 400, "the body is not valid gzip (Content-Encoding)"),
    ("deflate", ENCODED["deflate"] + b"!", 400, "the deflate body goes on after its compressed stream ends"),
    ("gzip", gzip.compress(b" " * 101), 413, "body inflates to over 100 bytes, the limit (httpServerMaxBodySize"),
    ("br", b"", 415, "Content-Encoding 'br' is not supported; send the body as is (identity) or encoded with one "
                     "of: gzip, deflate"),  # and zstd where a decoder is installed (tests/test_zstd.py)
    ("gzip, gzip", b"", 415, "Content-Encoding 'gzip, gzip' is not supported"),
])
def test_inflater_refusals(encoding: str, data: bytes, status: int, needle: str) -> None:
    with pytest.raises(HttpError, match=re.escape(needle)) as caught:
        _inflate(encoding, data, limit=100, step=7)
    assert caught.value.status == status


@pytest.mark.parametrize("name", list(ENCODED))
def test_compressed_bodies_decode(host: PluginHost, server_port: int, name: str) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    reply = push(server_port, "/z", ENCODED[name], headers={"Content-Encoding": name.split()[0].upper()})
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    ndjson = push(server_port, "/z", gzip.compress(NDJSON), headers={"Content-Encoding": "gzip",
                                                                      "Content-Type": "application/x-ndjson"})
    assert ndjson.body == {"accepted": 3, "sources": 1}
    assert ch.messages(3) == NDJSON_RECORDS
    assert push(server_port, "/z", BODY, headers={"Content-Encoding": "identity"}).status == 200
    assert ch.messages(3) == NDJSON_RECORDS
    assert_sentinel_next_on_channels(sender(server_port, "/z", headers={"Content-Encoding": "gzip"}), ch,
                            body=gzip.compress(b'{"sentinel": "gz"}'), record={"sentinel": "gz"})


def test_compressed_body_refusals(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    unknown = push(server_port, "/z", b"\xce\xb2\xcf\x81", headers={"Content-Encoding": "br"})
    assert unknown.status == 415
    assert unknown.body["error"] == ("Content-Encoding 'br' is not supported; send the body as is (identity) or "
                                     "encoded with one of: gzip, deflate, zstd")
    assert push(server_port, "/z", ENCODED["gzip"], headers={"Content-Encoding": "gzip, gzip"}).status == 415
    corrupt = bytearray(ENCODED["gzip"])
    corrupt[12] ^= 0xFF
    reply = push(server_port, "/z", bytes(corrupt), headers={"Content-Encoding": "gzip"})
    assert reply.status == 400 and "gzip" in reply.body["error"], reply.body
    truncated = push(server_port, "/z", ENCODED["gzip"][:-8], headers={"Content-Encoding": "gzip"})
    assert (truncated.status, truncated.body) == (
        400, {"error": "the gzip body ends before its compressed stream does (Content-Encoding)"})
    assert_sentinel_next_on_channels(sender(server_port, "/z"), ch)  # nothing of any refused body was emitted


def test_gzip_bomb_refused_with_bounded_memory(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/z"})
    pushed = push_bomb(server_port, host.process.pid, "/z", "gzip", gzip_pieces())
    answer, peak = pushed.answer, pushed.rss_peak_mb
    print(f"\ngzip bomb: {pushed.sent} compressed bytes sent in {pushed.seconds:.2f} s; plugin RSS "
          f"{pushed.rss_before_mb:.1f} MB before, peak {peak:.1f} MB")
    assert answer.status == 413, answer
    assert "inflates to over 10485760 bytes" in answer.json()["error"]
    assert peak < BOMB_PEAK_RSS_MB, f"the plugin's peak RSS reached {peak:.1f} MB refusing the bomb"
    assert_sentinel_next_on_channels(sender(server_port, "/z"), ch)
