"""The fuzzed plugin's settings and endpoints, and what one case sent to it is: shared by the strategies (which aim
at these limits), the oracles (which apply them) and the runner (which configures the plugin with them).

Limits are small so that generated bodies reach them: ``httpServerMaxRecords`` and ``httpServerMaxBodySize`` (413),
and the server's timeouts at a second or two so that the raw-HTTP fuzz's held connections end quickly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

# -- limits and timeouts --------------------------------------------------------------------------------------------

MAX_RECORDS = 50  # small, so that httpServerMaxRecords (413) is reached by generated bodies
MAX_BODY = 64 * 1024  # small, so that httpServerMaxBodySize (413) is too
MAX_FIELDS = 10_000  # httpServerMaxFields' default (README): an urlencoded body of '&'s reaches it
MAX_GZIP_MEMBERS = 1000  # README: the most gzip members one body may hold

# zstd for the strategies and oracles, as the plugin's (encoding.py): the test venv has what install.sh installs
try:
    from compression import zstd as ZSTD  # type: ignore[import-not-found]  # noqa: N812
except ImportError:
    try:
        from backports import zstd as ZSTD  # type: ignore[import-not-found,no-redef]  # noqa: N812
    except ImportError:
        ZSTD = None
#: The raw-HTTP fuzz keeps 40 connections open at a time (plus one per format): a server that frees each slot when
#: its connection ends never comes near 200; one that holds closed connections does, and answers 503.
MAX_CONNECTIONS = 200
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 2.0
LINGER_S = 2.0  # protocol.LINGER_S
SERVER_ENV = {
    "PYHTTPPUSH_SERVER_READ_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
    "PYHTTPPUSH_SERVER_READ_BODY_TIMEOUT": str(BODY_TIMEOUT_S),
    "PYHTTPPUSH_SERVER_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
    "PYHTTPPUSH_SERVER_MAX_RECORDS": str(MAX_RECORDS),
    "PYHTTPPUSH_SERVER_MAX_BODY_SIZE": str(MAX_BODY),
    "PYHTTPPUSH_SERVER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}

# -- endpoints and cases -------------------------------------------------------------------------------------------

#: Cases per format: EXAMPLES hypothesis examples of BATCH bodies each.
BATCH = 50
EXAMPLES = int(os.environ.get("HTTPPUSH_FUZZ_EXAMPLES", "205"))  # 205 x 50 = 10,250; fewer for a quick look
FIELDS = ("a", "b", "c")
PROTO = """
syntax = "proto3";
package fuzz;
message Sample {
  string s = 1;
  double d = 2;
  float f = 3;
  int64 i64 = 4;
  uint64 u64 = 5;
  sint32 s32 = 6;
  bool b = 7;
  bytes raw = 8;
  repeated int32 tags = 9;
  Sample child = 10;
  enum Kind { ZERO = 0; ONE = 1; }
  Kind kind = 11;
  map<string, string> labels = 12;
  oneof choice { string name = 13; int32 num = 14; }
  repeated double ds = 15;
  fixed64 f64 = 16;
}
"""
META = ["method", "path", "remoteAddr", "contentType"]  # every request fact, client text (Content-Type) included
ENDPOINTS: dict[str, dict[str, Any]] = {fmt: {**props, "meta": META} for fmt, props in {
    "json": {"datasource": "/f/json"},
    "delimited": {"datasource": "/f/delimited", "format": "delimited", "delimiter": ",", "fields": list(FIELDS)},
    "urlencoded": {"datasource": "/f/urlencoded", "format": "urlencoded"},
    "binary": {"datasource": "/f/binary", "format": "binary"},
    "protobuf": {"datasource": "/f/protobuf", "format": "protobuf", "schemaId": "fuzzsample.Sample"},
    "custom": {"datasource": "/f/custom", "decoder": "kv:decode"},
    "ndjson": {"datasource": "/f/ndjson"},  # FORMAT=json; each request says NDJSON in its Content-Type
    "compressed": {"datasource": "/f/compressed"},  # FORMAT=json; bodies with a Content-Encoding
    "raw": {"datasource": "/f/raw"},
}.items()}
#: Content-Type values sent in turn (a latin-1 byte, one over the 256 characters ``meta`` keeps, none at all).
CONTENT_TYPES: list[bytes | None] = [b"application/json", None, b"text/plain; charset=\xe9", b"x/" + b"y" * 300, b""]
#: The media types that make a body NDJSON, in the spellings a client may use.
NDJSON_TYPES: list[bytes | None] = [b"application/x-ndjson", b"Application/JSONL; charset=utf-8",
                                    b"application/json-lines", b"application/x-ndjson ;q=1"]
FORMAT_CONTENT_TYPES = {"ndjson": NDJSON_TYPES}


@dataclass(frozen=True)
class Body:
    """A body sent with a ``Content-Encoding`` header (``encoding``; None: no header)."""

    data: bytes
    encoding: bytes | None = None


#: Bodies per example where hypothesis would otherwise run out of room for a whole batch (NDJSON lines of documents).
BATCHES = {"ndjson": 25}


def _orjson_max_dump_depth() -> int:
    """The deepest nesting (containers, the record itself included) ``orjson.dumps`` serialises: deeper records
    cannot be framed ("Recursion limit reached") and their body gets 400. Measured, not assumed (254 with 3.x)."""
    for depth in range(1, 5000):
        value: Any = []
        for _ in range(depth):
            value = [value]  # depth + 1 containers
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return depth
    raise AssertionError("orjson serialised 5000 levels")


ORJSON_MAX_DUMP_DEPTH = _orjson_max_dump_depth()


#: How long any connection may live here: each timeout once, the linger after an error answer, the sweep's period.
RAW_BOUND_S = HEADER_TIMEOUT_S + BODY_TIMEOUT_S + IDLE_TIMEOUT_S + LINGER_S + 1.5
