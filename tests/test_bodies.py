"""How a body holds its records: NDJSON / JSON Lines framing (property ``framing: lines`` or a request's
``Content-Type: application/x-ndjson``), checked in-process and over real HTTP against the installed plugin
(emulated host)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from httppush_plugin.config import ConfigError, EndpointConfig
from httppush_plugin.decoders import DecodeError, JsonDecoder
from httppush_plugin.decoders.json import decode_lines
from tests.conftest import push
from tests.hostemu import PluginHost, assert_next_is_sentinel

NDJSON = b'{"id": 1, "t": 20.5}\n{"id": 2, "t": 21}\n{"id": 3, "t": 19.25}\n'
NDJSON_RECORDS = [{"id": 1, "t": 20.5}, {"id": 2, "t": 21}, {"id": 3, "t": 19.25}]
#: CRLF line ends, blank lines (empty, spaces, a lone CR) and no newline after the last line
NDJSON_MESSY = b'{"id": 1, "t": 20.5}\r\n\r\n   \n{"id": 2, "t": 21}\r\n\n{"id": 3, "t": 19.25}'
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines",
                "Application/X-NDJSON; charset=utf-8")


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

def _sender(port: int, path: str, headers: dict[str, str] | None = None) -> Callable[[bytes], int]:
    return lambda body: push(port, path, body, headers=headers).status


def test_ndjson_by_property(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    reply = push(server_port, "/nd", NDJSON)
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    reply = push(server_port, "/nd", NDJSON_MESSY, headers={"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, {"accepted": 3, "sources": 1})
    assert ch.messages(3) == NDJSON_RECORDS
    assert_next_is_sentinel(_sender(server_port, "/nd"), ch)


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
    assert_next_is_sentinel(_sender(server_port, "/j"), ch)


def test_ndjson_bad_line_refuses_the_whole_body(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    body = NDJSON + b'\n{"id": 4}\n"five"\n{"id": 6}\n'
    reply = push(server_port, "/nd", body)
    assert reply.status == 400
    assert reply.body == {"error": "NDJSON line 6 is a string; every line must be an object"}
    reply = push(server_port, "/nd", b'{"id": 1}\r\n{"id": 2,}\r\n', headers={"Content-Type": "application/x-ndjson"})
    assert reply.status == 400 and reply.body["error"].startswith("NDJSON line 2 is not valid JSON"), reply.body
    assert_next_is_sentinel(_sender(server_port, "/nd"), ch)  # nothing of either body was emitted


def test_ndjson_max_records(make_host: Callable[..., PluginHost], server_port: int) -> None:
    host = make_host(server_port, PYHTTPPUSH_SERVER_MAX_RECORDS="3")
    ch = host.start_source("r1", "s1", {"datasource": "/nd", "framing": "lines"})
    assert push(server_port, "/nd", NDJSON + b"\n\n").body == {"accepted": 3, "sources": 1}  # blank lines: no records
    assert ch.messages(3) == NDJSON_RECORDS
    reply = push(server_port, "/nd", NDJSON + b'{"id": 4}\n')
    assert reply.status == 413 and "httpServerMaxRecords" in reply.body["error"], reply.body
    assert_next_is_sentinel(_sender(server_port, "/nd"), ch)
