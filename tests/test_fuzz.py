"""Property-based fuzzing over real HTTP (hypothesis) against the installed plugin under the emulated host.

One plugin process serves one source per format (json, delimited with fields, urlencoded, binary, protobuf with a
small recursive schema, custom via the shipped ``kv:decode``) plus ``/f/raw`` for the raw-HTTP fuzz. What is checked,
for every request:

* the status is one the promise allows: 200, 400 or 413 (a custom decoder whose output is not JSON the host can read
  would get 500, but the shipped ``kv:decode`` fuzzed here must never), and it is the status an independent oracle
  of the documented format rules expects;
* every non-2xx answer is JSON ``{"error": "<text>"}`` naming the problem;
* every 200's ``accepted`` is the oracle's record count, and exactly those records — equal to the oracle's — arrive
  on the format's channel, in order, once; each envelope is JSON Go's ``encoding/json`` reads into
  ``map[string]any`` (valid UTF-8, no lone surrogates, no NaN/Infinity, every number a finite float64);
* nothing of a refused body arrives: each format's run ends with a sentinel that must be the next record.

Requests are pipelined on one keep-alive connection per format, a batch of 50 bodies per hypothesis example, so the
HTTP round trip of a case costs a fraction of a millisecond (generating the structured bodies costs more). The
raw-HTTP fuzz sends hypothesis-built request bytes on fresh connections: the server answers with well-formed HTTP/1.1
JSON answers or closes, within its (1 s) timeouts, never with a 5xx other than 505 for an unsupported version, and
keeps serving.

The per-format case counts and times are printed when the module's plugin stops (with or without ``-s``).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import re
import selectors
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.net import free_port
from httppush_plugin.decoders import _compile_message
from tests.hostemu import DataChannel, HostError, PluginHost, source_config
from tests.support.http import push

# -- the server under test ------------------------------------------------------------------------------------------

MAX_RECORDS = 50  # small, so that httpServerMaxRecords (413) is reached by generated bodies
MAX_BODY = 64 * 1024  # small, so that httpServerMaxBodySize (413) is too
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


# -- what Go's encoding/json accepts --------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is not a finite float64")
    return value


def _float64_int(text: str) -> int:
    value = int(text)
    float(value)  # OverflowError beyond float64
    return value


def go_json_problem(raw: bytes) -> str | None:
    """Why Go's ``json.Unmarshal`` of ``raw`` into an envelope would fail or lose text, or ``None``: the text must be
    valid UTF-8 (no encoded surrogates), JSON without NaN/Infinity, every number a finite float64, no lone surrogate
    escapes, and an object whose ``message`` is an object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte {exc.start}"
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float64_int)
    except (ValueError, OverflowError, RecursionError) as exc:
        return f"not JSON Go reads: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), dict):
        return "not an envelope with an object message"
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"a lone surrogate in {item[:40]!r}"
    return None


@dataclass
class StrictChannel(DataChannel):
    """The host's PULL side, checking every envelope by Go's rules: what Go could not read goes to :attr:`invalid`
    (eKuiper would log "Invalid data format" and drop it) instead of reaching :meth:`take`; records keep their raw
    envelope under ``"raw"``."""

    invalid: list[tuple[bytes, str]] = field(default_factory=list)

    def accept(self, raw: bytes) -> None:
        problem = go_json_problem(raw)
        if problem is not None:
            self.invalid.append((raw[:500], problem))
            return
        envelope = json.loads(raw)
        self.records.put({"message": envelope["message"], "meta": envelope.get("meta"), "raw": raw})

    def drain(self, settle: float = 0.5) -> int:
        """Throw away whatever arrives until nothing has for ``settle`` seconds; how many records that was."""
        count = 0
        while True:
            try:
                self.records.get(timeout=settle)
                count += 1
            except Exception:
                return count


def start_strict(host: PluginHost, rule_id: str, op_id: str, props: dict[str, Any]) -> StrictChannel:
    """``host.start_source`` with a :class:`StrictChannel` on the data channel."""
    channel = StrictChannel(rule_id, op_id, 0)
    control = host.control(rule_id, op_id, 0, source_config(props))
    answer = host.send_command("start", control)
    if answer != "ok":
        channel.close()
        raise HostError(f"start answered {answer!r}")
    host.channels[(rule_id, op_id, 0)] = (channel, control)
    return channel


# -- a pipelining keep-alive client ---------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"{self.status} answer's body is not JSON: {self.body[:300]!r}") from None

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*")


def parse_response(buf: bytes) -> tuple[Response, int] | None:
    """The first whole response in ``buf`` (Content-Length framing) and the bytes it took, or ``None`` if more is
    needed. Anything that is not a well-formed answer raises AssertionError."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 16384:
            raise AssertionError(f"no end of the response head in {buf[:300]!r}")
        return None
    lines = buf[:end].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise AssertionError(f"not an HTTP/1.1 status line: {lines[0][:200]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise AssertionError(f"malformed response header line {line!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    status = int(match.group(1))
    if 100 <= status < 200:
        return Response(status, headers, b""), end + 4
    if "content-length" not in headers:
        raise AssertionError(f"{status} answer without Content-Length: {buf[:end]!r}")
    length = int(headers["content-length"])
    if len(buf) < end + 4 + length:
        return None
    return Response(status, headers, buf[end + 4:end + 4 + length]), end + 4 + length


class Pipeline:
    """One keep-alive connection; :meth:`exchange` sends requests pipelined and returns their answers in order.
    When the server closes the connection (after an answer with ``Connection: close``, e.g. a 413 refused by its
    ``Content-Length``, or an idle timeout between batches), the requests it did not answer are sent again on a new
    connection: an unanswered request on a closed connection was not processed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.connections = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> socket.socket:
        if self.sock is not None:  # closed by the server while idle? then start afresh
            try:
                if self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    self.close()
            except BlockingIOError:
                pass
            except OSError:
                self.close()
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.sock.setblocking(False)
            self.connections += 1
        return self.sock

    def exchange(self, requests: list[bytes], timeout: float = 30.0) -> list[Response]:
        answers: list[Response] = []
        deadline = time.monotonic() + timeout
        fruitless = 0
        while len(answers) < len(requests):
            got = self._round(requests[len(answers):], deadline)
            answers.extend(got)
            if len(answers) < len(requests):
                self.close()
                fruitless = 0 if got else fruitless + 1
                if fruitless > 2:
                    raise AssertionError(f"the server closed {fruitless} fresh connections without answering")
        return answers

    def _round(self, requests: list[bytes], deadline: float) -> list[Response]:
        sock = self._connect()
        out = memoryview(b"".join(requests))
        buf = b""
        answers: list[Response] = []
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while len(answers) < len(requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(requests) - len(answers)} of {len(requests)} pipelined requests "
                                         f"unanswered at the deadline; received {buf[:200]!r}")
                for _, events in sel.select(min(remaining, 1.0)):
                    if events & selectors.EVENT_WRITE and out:
                        try:
                            out = out[sock.send(out[:262144]):]
                        except BlockingIOError:
                            pass
                        except OSError:
                            out = out[:0]  # the server closed; what it answered is still readable
                        if not out:
                            sel.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 20)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            self.close()
                            return answers
                        buf += data
                        while True:
                            parsed = parse_response(buf)
                            if parsed is None:
                                break
                            answer, used = parsed
                            buf = buf[used:]
                            answers.append(answer)
                            if answer.closes:
                                self.close()
                                return answers
            if buf:
                raise AssertionError(f"bytes after the last answer: {buf[:200]!r}")
            return answers
        finally:
            sel.close()


def http_request(path: str, body: bytes, content_type: bytes | None, encoding: bytes | None = None) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (path.encode(), len(body))
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    if encoding is not None:
        head += b"Content-Encoding: " + encoding + b"\r\n"
    return head + b"\r\n" + body


@dataclass(frozen=True)
class Body:
    """A body sent with a ``Content-Encoding`` header (``encoding``; None: no header)."""

    data: bytes
    encoding: bytes | None = None


# -- oracles: the documented format rules, independently ------------------------------------------------------------

@dataclass
class Expect:
    """What the oracle expects for one body: ``status`` and, for 200, the records; for other statuses, words of
    which the error must contain at least one."""

    status: int
    records: list[dict[str, Any]] = field(default_factory=list)
    words: tuple[str, ...] = ()


def _too_large() -> Expect:
    return Expect(413, words=("httpServerMaxBodySize",))


def _count_ok(records: list[dict[str, Any]]) -> Expect | None:
    if len(records) > MAX_RECORDS:
        return Expect(413, words=("httpServerMaxRecords",))
    return None


I64_MIN, U64_MAX = -(2**63), 2**64 - 1
JSON_MAX_DEPTH = 1024  # the documented nesting limit (README: deeper → 400)
JSON_WORDS = ("JSON", "UTF-8", "UTF-16", "UTF-32", "eKuiper")


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside strings (exact for valid JSON)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _json_int(text: str) -> int | float:
    value = int(text)
    if I64_MIN <= value <= U64_MAX:
        return value
    return float(value)  # beyond 64 bits a number is a float64 (README: the host reads float64 anyway)


@contextmanager
def _recursion(limit: int) -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|[^u])")


def _has_lone_surrogate_escape(text: str) -> bool:
    """Whether valid JSON ``text`` has a ``\\uD800``-``\\uDFFF`` escape that is not half of a pair (checked on the
    text, not the parsed value: a later duplicate key may replace the value that held it)."""
    pending = -1  # where a high surrogate's escape ended: its low one must start right there
    for match in _ESCAPE.finditer(text):
        code = int(match.group(1), 16) if match.group(1) else -1
        if pending >= 0:
            if match.start() == pending and 0xDC00 <= code <= 0xDFFF:
                pending = -1
                continue
            return True
        if 0xD800 <= code <= 0xDBFF:
            pending = match.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return True
    return pending >= 0


def _record_depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


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


class Refused(Exception):
    """The oracle's verdict that a JSON text is refused: 400 with one of ``words`` in the error."""

    def __init__(self, *words: str) -> None:
        super().__init__(words)
        self.words = words


def parse_json_text(data: bytes) -> Any:
    """One JSON text by the rules the host can live with (UTF-8, nesting at most 1024, no NaN/Infinity, finite
    float64 numbers, no lone surrogate escapes); raises :class:`Refused`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(*JSON_WORDS) from None
    if json_depth(text) > JSON_MAX_DEPTH:
        raise Refused("nesting", "JSON")
    try:
        with _recursion(JSON_MAX_DEPTH * 3):
            doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_json_int)
    except (ValueError, OverflowError):
        raise Refused(*JSON_WORDS) from None
    if _has_lone_surrogate_escape(text):
        raise Refused(*JSON_WORDS)
    return doc


def _framed(records: list[dict[str, Any]]) -> Expect:
    """After decoding: the record count limit (413), then what framing refuses (nesting orjson cannot write)."""
    too_many = _count_ok(records)
    if too_many:
        return too_many
    if any(_record_depth(record) > ORJSON_MAX_DUMP_DEPTH for record in records):
        return Expect(400, words=("eKuiper",))
    return Expect(200, records)


def oracle_json(body: bytes) -> Expect:
    if len(body) > MAX_BODY:
        return _too_large()
    data = body[3:] if body.startswith(b"\xef\xbb\xbf") else body  # RFC 8259 §8.1: one UTF-8 BOM may be ignored
    try:
        doc = parse_json_text(data)
    except Refused as refused:
        return Expect(400, words=refused.words)
    if isinstance(doc, dict):
        return _framed([doc])
    if isinstance(doc, list) and all(isinstance(item, dict) for item in doc):
        return _framed(doc)
    return Expect(400, words=("JSON",))


NDJSON_WORDS = ("NDJSON", *JSON_WORDS)


def oracle_ndjson(body: bytes) -> Expect:
    """README: one object per line (``\\n`` or ``\\r\\n``), blank lines skipped, a bad line refuses the body."""
    if len(body) > MAX_BODY:
        return _too_large()
    records = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            doc = parse_json_text(line)
        except Refused:
            return Expect(400, words=NDJSON_WORDS)
        if not isinstance(doc, dict):
            return Expect(400, words=("NDJSON",))
        records.append(doc)
    return _framed(records)


ENCODING_WORDS = ("gzip", "deflate", "Content-Encoding")


def inflate(wire: bytes, name: str) -> bytes | Expect:
    """README: gzip (members back to back are one body) or deflate (a zlib stream, or raw deflate), bounded by
    httpServerMaxBodySize once inflated; corrupt or truncated → 400."""
    if name == "deflate":
        if len(wire) < 2:
            return Expect(400, words=ENCODING_WORDS) if wire else b""
        zlib_header = wire[0] & 0x0F == 8 and ((wire[0] << 8) | wire[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    stream = zlib.decompressobj(wbits)
    out = bytearray()
    data = wire
    while data:
        if stream.eof:
            if name == "deflate":
                return Expect(400, words=ENCODING_WORDS)
            stream = zlib.decompressobj(wbits)
        try:
            piece = stream.decompress(data, MAX_BODY - len(out) + 1)
        except zlib.error:
            return Expect(400, words=ENCODING_WORDS)
        out += piece
        if len(out) > MAX_BODY:
            return Expect(413, words=("httpServerMaxBodySize",))
        data = stream.unconsumed_tail or stream.unused_data
    if not stream.eof:
        return Expect(400, words=ENCODING_WORDS)
    return bytes(out)


def oracle_compressed(body: bytes, encoding: bytes | None = None) -> Expect:
    name = (encoding or b"").decode("latin-1").strip().lower()
    if name in ("", "identity"):
        return oracle_json(body)
    if name not in ("gzip", "x-gzip", "deflate"):
        return Expect(415, words=("Content-Encoding",))
    if len(body) > MAX_BODY:
        return _too_large()
    inflated = inflate(body, "deflate" if name == "deflate" else "gzip")
    return inflated if isinstance(inflated, Expect) else oracle_json(inflated)


def oracle_delimited(body: bytes) -> Expect:
    if len(body) > MAX_BODY:
        return _too_large()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Expect(400, words=("UTF-8",))
    records = []
    lines = re.split(r"\r?\n", text)  # a line ends at \n or \r\n only; a final lone \r is data
    for line in lines:
        if line:
            records.append(dict(zip(FIELDS, line.split(","), strict=False)))
    return _count_ok(records) or Expect(200, records)


_HEX = set(b"0123456789abcdefABCDEF")


def _go_unescape(text: bytes) -> str | None:
    """Go's ``url.QueryUnescape``: ``+`` is a space, ``%XY`` a byte; a bad escape → None. The result must be UTF-8
    (the plugin's rule: a record is text), else None."""
    out = bytearray()
    i = 0
    while i < len(text):
        byte = text[i]
        if byte == 0x25:  # %
            pair = text[i + 1:i + 3]
            if len(pair) < 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(0x20 if byte == 0x2B else byte)  # + is a space
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def oracle_urlencoded(body: bytes) -> Expect:
    if len(body) > MAX_BODY:
        return _too_large()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return Expect(400, words=("UTF-8",))
    values: dict[str, list[str]] = {}
    for part in body.split(b"&"):
        if not part:
            continue
        if b";" in part:
            return Expect(400, words=("';'",))
        name, _, value = part.partition(b"=")
        key, val = _go_unescape(name), _go_unescape(value)
        if key is None or val is None:
            return Expect(400, words=("escape", "UTF-8"))
        values.setdefault(key, []).append(val)
    return Expect(200, [{k: v[0] if len(v) == 1 else v for k, v in values.items()}])


def oracle_binary(body: bytes) -> Expect:
    if len(body) > MAX_BODY:
        return _too_large()
    return Expect(200, [{"self": base64.b64encode(body).decode("ascii")}])


class ProtobufOracle:
    def __init__(self, proto: Path) -> None:
        self.cls = _compile_message(proto, proto.stat().st_mtime, "Sample", (proto.parent,))

    def record(self, m: Any) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        out: dict[str, Any] = {
            "s": m.s, "d": finite(m.d), "f": finite(m.f), "i64": m.i64, "u64": m.u64, "s32": m.s32, "b": m.b,
            "raw": base64.b64encode(m.raw).decode("ascii"), "tags": list(m.tags), "kind": m.kind,
            "labels": dict(m.labels), "ds": [finite(x) for x in m.ds], "f64": m.f64,
        }
        if m.HasField("child"):
            out["child"] = self.record(m.child)
        which = m.WhichOneof("choice")
        if which:
            out[which] = getattr(m, which)
        return out

    def __call__(self, body: bytes) -> Expect:
        if len(body) > MAX_BODY:
            return _too_large()
        message = self.cls()
        try:
            message.ParseFromString(body)
        except Exception:
            return Expect(400, words=("fuzz.Sample",))
        return Expect(200, [self.record(message)])


class KvOracle:
    """The shipped ``kv:decode`` run in-process; what it returns must be JSON the host reads (it may never 500)."""

    def __init__(self, module_path: Path) -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("fuzz_kv_oracle", module_path)
        assert spec is not None and spec.loader is not None
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)

    def __call__(self, body: bytes) -> Expect:
        if len(body) > MAX_BODY:
            return _too_large()
        try:
            records = self.module.decode(body)
        except ValueError:
            return Expect(400, words=("kv:decode",))
        too_many = _count_ok(records)
        if too_many:
            return too_many
        try:
            normalised = [json.loads(orjson.dumps(record)) for record in records]
        except orjson.JSONEncodeError as exc:  # the shipped example must never give a client a 500
            raise AssertionError(f"kv:decode returned a value the host can't read for {body[:200]!r}: {exc}") from None
        return Expect(200, normalised)


# -- the module's plugin --------------------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    records: int = 0


@dataclass
class Fuzz:
    host: PluginHost
    port: int
    channels: dict[str, StrictChannel]
    oracles: dict[str, Callable[..., Expect]]
    pipes: dict[str, Pipeline] = field(default_factory=dict)
    tallies: dict[str, Tally] = field(default_factory=dict)

    def run(self, fmt: str, items: list[bytes | Body]) -> None:
        """Pipeline ``items`` to ``fmt``'s endpoint; check every answer against the oracle and the records that
        arrive against the 200s."""
        path = ENDPOINTS[fmt]["datasource"]
        cases = [item if isinstance(item, Body) else Body(item) for item in items]
        type_list = FORMAT_CONTENT_TYPES.get(fmt, CONTENT_TYPES)
        types = [type_list[i % len(type_list)] for i in range(len(cases))]
        pipe = self.pipes.setdefault(fmt, Pipeline(self.port))
        answers = pipe.exchange([http_request(path, case.data, ct, case.encoding)
                                 for case, ct in zip(cases, types, strict=True)])
        tally = self.tallies.setdefault(fmt, Tally())
        tally.cases += len(cases)
        channel = self.channels[fmt]
        expected: list[tuple[dict[str, Any], bytes | None]] = []
        try:
            for case, content_type, answer in zip(cases, types, answers, strict=True):
                tally.statuses[answer.status] = tally.statuses.get(answer.status, 0) + 1
                oracle = self.oracles[fmt]
                expect = oracle(case.data) if case.encoding is None else oracle(case.data, case.encoding)
                check_answer(fmt, case, answer, expect)
                expected.extend((record, content_type) for record in expect.records if answer.status == 200)
            self.check_records(fmt, channel, path, expected)
            tally.records += len(expected)
        except BaseException:
            channel.drain()  # the next example starts from a quiet channel
            raise

    def check_records(self, fmt: str, channel: StrictChannel, path: str,
                      expected: list[tuple[dict[str, Any], bytes | None]]) -> None:
        try:
            got = channel.take(len(expected), timeout=20) if expected else []
        except HostError as exc:
            raise AssertionError(f"{fmt}: {exc}; envelopes Go cannot read: {channel.invalid[:3]}") from None
        for index, ((record, content_type), item) in enumerate(zip(expected, got, strict=True)):
            if item["message"] != record:
                raise AssertionError(f"{fmt}: record {index} of the batch arrived as {item['raw'][:300]!r}, "
                                     f"expected {str(record)[:300]}")
            ct = (content_type or b"").decode("latin-1")[:256]
            meta = {"method": "POST", "path": path, "remoteAddr": "127.0.0.1", "contentType": ct}
            if item["meta"] != meta:
                raise AssertionError(f"{fmt}: record {index}'s meta is {item['meta']}, expected {meta}")
        assert not channel.invalid, f"{fmt}: envelopes Go cannot read arrived: {channel.invalid[:3]}"
        assert not channel.dropped, f"{fmt}: non-object messages arrived: {channel.dropped[:3]}"


#: 415 is the answer to a Content-Encoding the server does not speak (README's table)
ALLOWED = {fmt: {200, 400, 413} for fmt in ENDPOINTS} | {"compressed": {200, 400, 413, 415}}


def check_answer(fmt: str, case: Body, answer: Response, expect: Expect) -> None:
    shown: Any = case.data[:200] if case.encoding is None else (case.encoding, case.data[:200])
    assert answer.status in ALLOWED[fmt], f"{fmt}: {answer.status} for {shown!r}: {answer.body[:300]!r}"
    assert answer.headers.get("content-type") == "application/json", f"{fmt}: {answer}"
    doc = answer.json()
    if answer.status == 200:
        assert answer.status == expect.status, \
            f"{fmt}: 200 {doc} for {shown!r}; the oracle expected {expect.status} ({expect.words})"
        assert doc == {"accepted": len(expect.records), "sources": 1}, f"{fmt}: {doc} for {shown!r}"
        return
    error = doc.get("error") if isinstance(doc, dict) else None
    assert isinstance(error, str) and error, f"{fmt}: {answer.status} without an error text: {doc}"
    assert answer.status == expect.status, \
        f"{fmt}: {answer.status} {error!r} for {shown!r}; the oracle expected {expect.status}"
    assert any(word in error for word in expect.words), \
        f"{fmt}: {answer.status} {error!r} for {shown!r} names none of {expect.words}"


@pytest.fixture(scope="module")
def fuzz(installed: Path, host_python: str, request: pytest.FixtureRequest) -> Iterator[Fuzz]:
    schema_dir = installed.parents[2] / "data" / "schemas" / "protobuf"
    schema_dir.mkdir(parents=True, exist_ok=True)
    proto = schema_dir / "fuzzsample.proto"
    proto.write_text(PROTO)
    port = free_port()
    host = PluginHost(installed, "pyhttppush", host_python,
                      env={"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(port), **SERVER_ENV})
    try:
        channels = {fmt: start_strict(host, f"fuzz{fmt}", f"s{fmt}", props) for fmt, props in ENDPOINTS.items()}
        oracles: dict[str, Callable[..., Expect]] = {
            "json": oracle_json, "delimited": oracle_delimited, "urlencoded": oracle_urlencoded,
            "binary": oracle_binary, "protobuf": ProtobufOracle(proto),
            "custom": KvOracle(installed / "decoders" / "kv.py"),
            "ndjson": oracle_ndjson, "compressed": oracle_compressed,
        }
        state = Fuzz(host, port, channels, oracles)
        yield state
        for pipe in state.pipes.values():
            pipe.close()
        _summary(request, state)
        assert host.alive(), f"the plugin process died; its log:\n{host.log_tail()}"
        log = host.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"the plugin logged a traceback:\n{log[-3000:]}"
    finally:
        host.close()


def _summary(request: pytest.FixtureRequest, state: Fuzz) -> None:
    lines = ["fuzz summary (cases per format over real HTTP, wall time, statuses, records delivered):"]
    for fmt, tally in state.tallies.items():
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses.items()))
        lines.append(f"  {fmt:<13} {tally.cases:>6} cases in {tally.seconds:6.1f} s "
                     f"({tally.seconds / max(tally.cases, 1) * 1000:.2f} ms/case)  statuses {{{statuses}}}  "
                     f"records {tally.records}")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print("\n" + "\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # shown with or without -s
        print("\n" + "\n".join(lines))


SENTINELS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "json": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
    "delimited": (b"end,of,fuzz", {"a": "end", "b": "of", "c": "fuzz"}),
    "urlencoded": (b"sentinel=end", {"sentinel": "end"}),
    "binary": (b"end", {"self": "ZW5k"}),
    "custom": (b"sentinel=end", {"sentinel": "end"}),
    "ndjson": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
    "compressed": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
}


def assert_sentinel_next(state: Fuzz, fmt: str) -> None:
    """One more known good body on a new connection: its record must be the next one on the channel."""
    if fmt == "protobuf":
        oracle = state.oracles["protobuf"]
        assert isinstance(oracle, ProtobufOracle)
        body = oracle.cls(s="end-of-fuzz").SerializeToString()
        record = oracle.record(oracle.cls(s="end-of-fuzz"))
    else:
        body, record = SENTINELS[fmt]
    channel = state.channels[fmt]
    reply = push(state.port, ENDPOINTS[fmt]["datasource"], body)
    assert reply.status == 200, reply
    channel.expect_next(record, timeout=10)
    assert not channel.invalid and not channel.dropped


#: Bodies per example where hypothesis would otherwise run out of room for a whole batch (NDJSON lines of documents).
BATCHES = {"ndjson": 25}


def run_format(state: Fuzz, fmt: str, bodies: st.SearchStrategy[Any]) -> None:
    size = BATCHES.get(fmt, BATCH)
    cases = EXAMPLES * BATCH  # the same number of cases for every format

    @settings(max_examples=-(-cases // size), deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(bodies, min_size=size, max_size=size))
    def batch(items: list[Any]) -> None:
        state.run(fmt, items)

    started = time.monotonic()
    try:
        batch()
    finally:
        state.tallies.setdefault(fmt, Tally()).seconds += time.monotonic() - started
    assert_sentinel_next(state, fmt)
    assert state.tallies[fmt].cases >= cases, state.tallies[fmt]


# -- generators ------------------------------------------------------------------------------------------------------

def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a branch with probability proportional to its weight (``st.one_of`` picks uniformly)."""
    total = sum(weight for weight, _ in choices)

    def pick(ticket: int) -> st.SearchStrategy[Any]:
        for weight, strategy in choices:
            if ticket < weight:
                return strategy
            ticket -= weight
        raise AssertionError("unreachable")

    return st.integers(0, total - 1).flatmap(pick)


def too_large(fill: bytes) -> st.SearchStrategy[bytes]:
    """A body just over httpServerMaxBodySize (413 from its Content-Length, then the connection is closed)."""
    return st.integers(MAX_BODY + 1, MAX_BODY + 4096).map(lambda n: (fill * n)[:n])


def encode_text(text: str, how: str) -> bytes:
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how == "bom2":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
        return text.encode(how, "surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become CESU bytes: invalid UTF-8


ENCODINGS = st.sampled_from(["utf-8"] * 12 + ["bom", "bom2", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                                "utf-32-le", "latin-1"])


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> bytes:
    """A text in some encoding, sometimes cut short, with a byte inserted or garbage appended."""
    data = encode_text(draw(texts), draw(ENCODINGS))
    how = draw(st.integers(0, 9))
    if how == 0 and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == 1:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at:]
    elif how == 2:
        data += draw(st.sampled_from([b",", b"]", b"}", b" x", b"\x00", b"\xff", b"\n\n", b" \t\r\n", b"\xc2\xa0"]))
    return data


# JSON: values with tokens in the odd corners of the grammar and of float64, keys with escapes, deep nesting.

class Raw(str):
    """JSON text inserted as is."""


JSON_NUMBERS = ["0", "-0", "-0.0", "0e0", "1E+2", "1e-400", "4.9e-324", "2.2250738585072014e-308",
                "1.7976931348623157e308", "1.7976931348623159e308", "1e400", "-1e400", "1e309", "9007199254740993",
                "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
                "1" + "0" * 30, "-" + "9" * 25, "1" + "0" * 309, "1" + "0" * 308, "0." + "0" * 400 + "1",
                "123456789012345678901234567890e-10", "01", ".5", "1.", "+1", "0x10", "1e", "--1", "1_000", "NaN",
                "Infinity", "-Infinity", "nan", "true", "null", "tru", "nul"]
JSON_STRINGS = ['"\\ud800"', '"\\udfff"', '"\\ud83d\\ude00"', '"\\ude00\\ud83d"', '"a\\ud800b"', '"\\ud800\\u0041"',
                '"\\uD83D\\uDE00"', '"\\u0000"', '"\\u00e9"', '"\\uFEFF"', '"\\u12"', '"\\x41"', '"\\/"', '"\\q"',
                '"\x01"', '"\x1f"', '"\x7f"', '"\t"', '"é"', '"\u2028\u2029"', '"\ufeff"', '"😀"', '"\\"',
                '"' + "x" * 300 + '"', "'single'"]
JSON_KEYS = st.one_of(st.text(max_size=6), st.sampled_from(JSON_STRINGS).map(Raw))
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.sampled_from(JSON_NUMBERS + JSON_STRINGS).map(Raw),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4),
    max_leaves=12,
)


def to_json(value: Any, spaced: bool) -> str:
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + comma.join(to_json(k if isinstance(k, Raw) else Raw(json.dumps(k, ensure_ascii=spaced)), spaced)
                                + colon + to_json(v, spaced) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + comma.join(to_json(v, spaced) for v in value) + "]"
    return json.dumps(value, ensure_ascii=spaced)


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    spaced = draw(st.booleans())
    shape = draw(st.integers(0, 5))
    if shape <= 2:  # one object
        return to_json(draw(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=5)), spaced)
    if shape <= 4:  # an array of (mostly) objects
        items = draw(st.lists(st.one_of(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=3), JSON_VALUES),
                              max_size=6))
        return to_json(items, spaced)
    return to_json(draw(JSON_VALUES), spaced)  # anything


def many_records(n: int) -> bytes:
    return ("[" + ",".join(f'{{"i":{i}}}' for i in range(n)) + "]").encode()


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """Nesting around orjson's serialisation limit, the 1024 parse limit, and far past it."""
    depth = draw(st.one_of(st.integers(1, 1100), st.sampled_from([ORJSON_MAX_DUMP_DEPTH - 2 + i for i in range(4)]
                                                                 + [1022, 1023, 1024, 1025, 1026, 2000, 5000])))
    kind = draw(st.sampled_from(["arrays-in-record", "objects", "arrays", "mixed", "unclosed"]))
    if kind == "arrays-in-record":  # {"a": [[...]]}: depth+1 in all
        return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "mixed":
        return b'[{"a":' * depth + b"{}" + b"}]" * depth
    return b"[" * depth


CLEAN_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 2.0**53 + 1, 1e22, 1e-7]),
    st.text(max_size=8),
)
CLEAN_VALUES = st.recursive(
    CLEAN_LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                                     max_size=3), max_leaves=10)
CLEAN_JSON = st.tuples(
    st.one_of(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=4),
              st.lists(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=3), max_size=5)),
    st.booleans(),
).map(lambda doc_ascii: json.dumps(doc_ascii[0], ensure_ascii=doc_ascii[1]).encode())

JSON_BODIES = weighted(
    (20, CLEAN_JSON),
    (30, mutated(json_documents())),
    (25, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
    (10, st.binary(max_size=200)),
    (8, deep_json()),
    (4, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 5).map(many_records)),
    (1, too_large(b" ")),
)

# delimited: line endings of every kind, the delimiter, invalid UTF-8, many lines.
DELIMITED_PIECES = st.one_of(
    st.sampled_from(["a", "b", "1", ",", ",,", "\r", "\n", "\r\n", "\n\r", "\r\r\n", "\x0c", "\x0b", "\x1c", "\x85",
                     "\u2028", "é", "\x00", " ", "\t", ";", '"', "\ufeff", "\ud800"]),
    st.text(max_size=4),
)
DELIMITED_BODIES = weighted(
    (40, mutated(st.lists(DELIMITED_PIECES, max_size=30).map("".join))),
    (10, st.binary(max_size=200)),
    (4, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: "\r\n".join(f"{i},x,y,z" for i in range(n)).encode())),
    (1, too_large(b"a,b\n")),
)

# urlencoded: bad and good escapes, escapes to invalid UTF-8, ';', repeated keys.
URLENCODED_PIECES = st.one_of(
    st.sampled_from(["a", "b", "=", "&", "&&", ";", "%", "%2", "%zz", "%g1", "%41", "%C3%A9", "%c3", "%ff", "%ED%A0%80",
                     "%F0%9F%98%80", "%f0%9f", "+", "%2B", "%26", "%3D", "é", "\x00", "%00", "%%", "%e2%82", " ",
                     "%0", "\ud800", "%EF%BB%BF"]),
    st.text(max_size=3),
)
URLENCODED_BODIES = weighted(
    (40, mutated(st.lists(URLENCODED_PIECES, max_size=20).map("".join))),
    (10, st.binary(max_size=200)),
    (1, too_large(b"a=1&")),
)

BINARY_BODIES = weighted(
    (40, st.binary(max_size=2000)),
    (5, st.just(b"")),
    (1, too_large(b"\x00\xff")),
)


# protobuf: messages built at the wire level, valid and not.

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data


def zigzag32(n: int) -> int:
    return (n << 1) ^ (n >> 31)


PB_TEXT = st.one_of(st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=6))


def pb_fields(child: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    import struct

    return st.one_of(
        PB_TEXT.map(lambda b: ld(1, b)),
        st.floats().map(lambda x: key(2, 1) + struct.pack("<d", x)),
        st.floats(width=32).map(lambda x: key(3, 5) + struct.pack("<f", x)),
        st.integers(0, 2**64 - 1).map(lambda n: key(4, 0) + varint(n)),
        st.integers(0, 2**64 - 1).map(lambda n: key(5, 0) + varint(n)),
        st.integers(-(2**31), 2**31 - 1).map(lambda n: key(6, 0) + varint(zigzag32(n) & 0xFFFFFFFF)),
        st.integers(0, 3).map(lambda n: key(7, 0) + varint(n)),
        st.binary(max_size=8).map(lambda b: ld(8, b)),
        st.lists(st.integers(0, 2**64 - 1), max_size=4).map(lambda v: ld(9, b"".join(map(varint, v)))),
        st.integers(0, 2**32 - 1).map(lambda n: key(9, 0) + varint(n)),
        child.map(lambda b: ld(10, b)),
        st.integers(0, 9).map(lambda n: key(11, 0) + varint(n)),
        st.tuples(PB_TEXT, PB_TEXT).map(lambda kv: ld(12, ld(1, kv[0]) + ld(2, kv[1]))),
        PB_TEXT.map(lambda b: ld(13, b)),
        st.integers(0, 2**32 - 1).map(lambda n: key(14, 0) + varint(n)),
        st.lists(st.floats(), max_size=3).map(lambda v: ld(15, b"".join(struct.pack("<d", x) for x in v))),
        st.integers(0, 2**64 - 1).map(lambda n: key(16, 1) + n.to_bytes(8, "little")),
        st.tuples(st.integers(0, 2**29 - 1), st.integers(0, 7), st.binary(max_size=9)).map(
            lambda t: key(t[0], t[1]) + t[2]),  # any field number and wire type, even 0, 6, 7 and groups
        st.binary(min_size=1, max_size=4),  # raw garbage
    )


PB_MESSAGES = st.recursive(st.just(b""), lambda children: st.lists(pb_fields(children), max_size=5).map(b"".join),
                           max_leaves=6)


@st.composite
def pb_deep(draw: st.DrawFn) -> bytes:
    """Messages nested through ``child`` around the protobuf recursion limit (100)."""
    data = b""
    for _ in range(draw(st.integers(90, 130))):
        data = ld(10, data)
    return data


@st.composite
def pb_cut(draw: st.DrawFn) -> bytes:
    data = draw(PB_MESSAGES)
    return data[:draw(st.integers(0, len(data)))] if data else data


PROTOBUF_BODIES = weighted(
    (30, PB_MESSAGES),
    (10, pb_cut()),
    (10, st.binary(max_size=100)),
    (3, pb_deep()),
    (1, too_large(b"\x0a\x00")),
)

# custom (kv): numbers Python reads in odd ways, Unicode whitespace and line breaks, missing keys.
KV_VALUES = st.one_of(
    st.sampled_from(["1", "-1", "1.5", "nan", "inf", "-inf", "1e400", "1_000", "٣", "0x10", "99999999999999999999",
                     "-99999999999999999999", "18446744073709551615", "18446744073709551616", "-9223372036854775808",
                     "-9223372036854775809", "1" * 5000, "True", "", "=", "é", "\ud800", "1e-400"]),
    st.text(max_size=4),
)
KV_PAIRS = st.tuples(st.sampled_from(["a", "temp", "x_y", "é", "", "k=", "=", "\x00"]) | st.text(max_size=3),
                     st.sampled_from(["=", "", "=="]), KV_VALUES).map("".join)
KV_LINES = st.lists(KV_PAIRS, max_size=4).flatmap(
    lambda pairs: st.sampled_from([" ", "\t", "  ", "\x0b", "\x1c", "\u3000", "\xa0"]).map(lambda sep: sep.join(pairs)))
KV_TEXT = st.lists(KV_LINES, max_size=5).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r", "\x85", "\u2028", "\n\n"]).map(lambda sep: sep.join(lines)))
CUSTOM_BODIES = weighted(
    (40, mutated(KV_TEXT)),
    (8, st.binary(max_size=120)),
    (3, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: "\n".join(f"i={i}" for i in range(n)).encode())),
    (1, too_large(b"a=1\n")),
)

# NDJSON: lines of objects (and of everything else), blank lines of every kind, CRLF, a BOM, many lines.
NDJSON_LINES = weighted(
    (10, st.tuples(st.dictionaries(st.text(max_size=5), CLEAN_VALUES, max_size=3), st.booleans()).map(
        lambda t: json.dumps(t[0], ensure_ascii=t[1]).encode())),
    (6, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
    (3, st.sampled_from([b"", b" ", b"\r", b"\t \r", b"\x0b", b"\x0c", b"\xc2\xa0", b"\xef\xbb\xbf", b"[]", b"{}",
                         b"null", b"{", b"}"])),
    (1, st.binary(max_size=20).map(lambda b: b.replace(b"\n", b""))),
    (1, st.sampled_from([ORJSON_MAX_DUMP_DEPTH - 1, ORJSON_MAX_DUMP_DEPTH, 1023, 1024, 1025]).map(
        lambda d: b'{"a":' + b"[" * d + b"]" * d + b"}")),
)
NDJSON_BODIES = weighted(
    (30, st.tuples(st.lists(NDJSON_LINES, min_size=1, max_size=4), st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
                   st.booleans(), st.booleans()).map(
        lambda t: (b"\xef\xbb\xbf" if t[3] else b"") + t[1].join(t[0]) + (t[1] if t[2] else b""))),
    (5, mutated(st.lists(json_documents(), max_size=4).map("\n".join))),
    (5, st.binary(max_size=100)),
    (3, st.integers(MAX_RECORDS - 2, MAX_RECORDS + 3).map(
        lambda n: b"\n".join(b'{"i":%d}' % i for i in range(n)))),
    (1, too_large(b"{}\n")),
)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    stream = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return stream.compress(data) + stream.flush()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": _gzip, "deflate": _zlib, "deflate-raw": _raw_deflate}
#: Content-Encoding values sent, and how the body is compressed for each (None: sent as is).
ENCODING_CHOICES: list[tuple[bytes | None, str | None]] = [
    (b"gzip", "gzip"), (b"gzip", "gzip"), (b"x-gzip", "gzip"), (b"GZip", "gzip"), (b"deflate", "deflate"),
    (b"deflate", "deflate-raw"), (b"identity", None), (None, None), (b"br", None), (b"zstd", "gzip"),
    (b"gzip, gzip", "gzip"), (b"gzip, identity", "gzip"), (b"", None), (b"deflate", "gzip"), (b"gzip", "deflate"),
]


@st.composite
def compressed_bodies(draw: st.DrawFn) -> Body:
    """JSON (mostly valid) compressed as the header says, or not; sometimes cut, flipped, padded or in two gzip
    members; now and then a small body that inflates past httpServerMaxBodySize."""
    data = draw(weighted(
        (12, CLEAN_JSON), (4, json_documents().map(lambda text: text.encode("utf-8", "surrogatepass"))),
        (2, st.binary(max_size=60)),
        (1, st.integers(MAX_BODY - 10, MAX_BODY + 10).map(lambda n: b'{"a":"' + b"x" * (n - 8) + b'"}')),
        (1, st.just(b"[" + b" " * 1_000_000 + b"]")),
    ))
    header, how = draw(st.sampled_from(ENCODING_CHOICES))
    if how is None:
        return Body(data, header)
    if how == "gzip" and len(data) > 1 and draw(st.booleans()):  # two members back to back
        cut = draw(st.integers(1, len(data) - 1))
        wire = _gzip(data[:cut]) + _gzip(data[cut:])
    else:
        wire = COMPRESSORS[how](data)
    damage = draw(st.integers(0, 9))
    if damage == 0:
        wire = wire[:draw(st.integers(0, len(wire)))]
    elif damage == 1 and wire:
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([wire[at] ^ draw(st.integers(1, 255))]) + wire[at + 1:]
    elif damage == 2:
        wire += draw(st.sampled_from([b"\x00", b"\x00" * 8, b"garbage", _gzip(b"")]))
    return Body(wire, header)


STRATEGIES = {"json": JSON_BODIES, "delimited": DELIMITED_BODIES, "urlencoded": URLENCODED_BODIES,
              "binary": BINARY_BODIES, "protobuf": PROTOBUF_BODIES, "custom": CUSTOM_BODIES, "ndjson": NDJSON_BODIES,
              "compressed": compressed_bodies()}


@pytest.mark.parametrize("fmt", list(STRATEGIES))
def test_format_fuzz(fuzz: Fuzz, fmt: str) -> None:
    """At least 10,000 bodies per format over real HTTP: each answer as the oracle says, each 2xx'd record
    delivered once, in order, readable by Go; nothing of a refused body delivered (sentinel)."""
    run_format(fuzz, fmt, STRATEGIES[fmt])


# -- raw HTTP ------------------------------------------------------------------------------------------------------

RAW_METHODS = [b"POST", b"POST", b"POST", b"PUT", b"GET", b"OPTIONS", b"DELETE", b"PATCH", b"CONNECT", b"TRACE",
               b"PRI", b"post", b"P0ST", b"", b"POST POST", b"\x00", b"M-SEARCH", b"PROPFIND", b"SOURCE"]
RAW_TARGETS = [b"/f/raw", b"/f/raw", b"/f/raw?x=1&y", b"/f/raw#frag", b"/f/raw/", b"/f//raw", b"//f/raw", b"/f/./raw",
               b"/f/../f/raw", b"/f%2Fraw", b"/f/r%61w", b"/f/r%61", b"/%zz", b"/%ff", b"/\xff", b"/\xc3\xa9", b"*",
               b"http://127.0.0.1/f/raw", b"https://x/f/raw?y", b"http://[::1", b"f/raw", b"", b"/f/raw\x00",
               b"/f raw", b"/f/raw\t", b"/" + b"a" * 17000, b"/nope", b"/f/json/../raw"]
RAW_VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/1",
                b"", b"http/1.1", b"HTTP/1.1 x", b"HTTP/11", b"HTTP/9.9", b"HTTPS/1.1", b"HTTP/1.1\x00"]
RAW_LENGTHS = [b"-1", b"abc", b" 5", b"5 ", b"+5", b"0x5", b"99999999999999999999", b"5, 5", b"5,6", b"", b"0",
               str(MAX_BODY + 1).encode(), b"1e3"]
RAW_HEADERS = st.one_of(
    st.just(b"Host: 127.0.0.1"),
    st.sampled_from(RAW_LENGTHS).map(lambda v: b"Content-Length: " + v),
    st.integers(0, 200).map(lambda n: b"Content-Length: %d" % n),
    st.sampled_from([b"chunked", b"gzip", b"chunked, gzip", b"gzip, chunked", b"identity", b"Chunked", b"chunked ",
                     b"chunked, chunked", b"xchunked", b""]).map(lambda v: b"Transfer-Encoding: " + v),
    st.sampled_from([b"100-continue", b"100-Continue", b"200-ok", b""]).map(lambda v: b"Expect: " + v),
    st.sampled_from([b"close", b"keep-alive", b"upgrade", b"close, upgrade", b"Keep-Alive, x"]).map(
        lambda v: b"Connection: " + v),
    st.sampled_from([b"websocket", b"h2c", b""]).map(lambda v: b"Upgrade: " + v),
    st.sampled_from([b"gzip", b"x-gzip", b"deflate", b"identity", b"br", b"gzip, gzip", b"", b"\xff"]).map(
        lambda v: b"Content-Encoding: " + v),
    st.sampled_from([b"application/json", b"text/plain; charset=\xe9", b"\x01", b"a" * 300]).map(
        lambda v: b"Content-Type: " + v),
    st.sampled_from([b" folded continuation", b"\tfolded", b"NoColon", b" Leading: space", b"Name : x",
                     b"Bad\x00Name: x", b"X: \x00", b"X: \x7f", b"X: \xff\xfe", b"X-Empty:", b": novalue",
                     b"X-Long: " + b"v" * 17000, b"Authorization: Basic !!!", b"Host: a", b"Host: b"]),
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)).map(lambda kv: kv[0] + b": " + kv[1]),
)
CHUNK_SIZES = st.one_of(st.none(), st.sampled_from([b"ZZ", b"-1", b"FFFFFFFFFFFFFFFFFF", b"0x5", b" 5", b"5 ", b"",
                                                    b"1;", b"0"]))


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
        size = draw(CHUNK_SIZES)
        ext = draw(st.sampled_from([b"", b"", b";a=b", b";", b';a="q"', b";" + b"e" * 100]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
        out += (b"%X" % len(data) if size is None else size) + ext + b"\r\n" + data + end
    last = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"0\r\nX-Trailer: t\r\n\r\n", b"0\r\n", b"", b"0\n\n",
                                 b"00\r\n\r\n"]))
    return out + last


RAW_BODIES = st.one_of(st.just(b'{"raw": 1}'), st.just(b'[{"raw": 1}, {"raw": 2}]'), st.just(b"{bad"),
                       st.binary(max_size=40), st.just(gzip.compress(b'{"raw": 3}', mtime=0)),
                       st.just(zlib.compress(b'[{"raw": 4}]')))


@st.composite
def raw_request(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\n\r"]))
    line = b" ".join([draw(st.sampled_from(RAW_METHODS)), draw(st.sampled_from(RAW_TARGETS)),
                      draw(st.sampled_from(RAW_VERSIONS))])
    headers = draw(st.lists(RAW_HEADERS, max_size=5))
    body = draw(RAW_BODIES)
    framing = draw(st.sampled_from(["length", "length", "chunked", "none", "wrong-length", "over-limit"]))
    if framing == "over-limit":
        headers.append(b"Content-Length: %d" % (MAX_BODY + 1))
    elif framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong-length":
        headers.append(b"Content-Length: %d" % max(0, len(body) + draw(st.integers(-5, 5))))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body())
    return line + eol + b"".join(h + eol for h in draw(st.permutations(headers))) + eol + body


RAW_CASES = st.one_of(
    st.lists(raw_request(), min_size=1, max_size=3).map(b"".join),
    st.tuples(raw_request(), st.floats(0, 1)).map(lambda t: t[0][:int(len(t[0]) * t[1])]),  # cut anywhere
    st.binary(max_size=300),
    st.tuples(raw_request(), st.binary(max_size=40)).map(b"".join),
)
#: Statuses a raw request may get: an answer named in the README's table; 505 only for an unsupported version.
RAW_ALLOWED = {100, 200, 400, 404, 405, 408, 413, 415, 431, 505}


@dataclass
class RawCase:
    data: bytes
    hold: bool  # keep our side open (the server's timeouts must close it), else shut it after sending
    sock: socket.socket | None = None
    received: bytes = b""
    closed_after: float | None = None
    unsent: bytes = b""


def run_raw_cases(port: int, cases: list[RawCase], within: float) -> None:
    """Send every case on its own connection, all at once; read until each is closed or ``within`` passes."""
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    for case in cases:
        case.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        case.sock.setblocking(False)
        case.unsent = case.data
        sel.register(case.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, case)
    open_count = len(cases)
    try:
        while open_count:
            remaining = started + within - time.monotonic()
            if remaining <= 0:
                break
            for selkey, events in sel.select(min(remaining, 0.5)):
                case = selkey.data
                sock = case.sock
                if events & selectors.EVENT_WRITE:
                    try:
                        sent = sock.send(case.unsent) if case.unsent else 0
                        case.unsent = case.unsent[sent:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        case.unsent = b""  # the server closed on us: fine, read what it said
                    if not case.unsent:
                        sel.modify(sock, selectors.EVENT_READ, case)
                        if not case.hold:
                            try:
                                sock.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        case.received += data
                    else:
                        case.closed_after = time.monotonic() - started
                        sel.unregister(sock)
                        open_count -= 1
    finally:
        sel.close()
        for case in cases:
            if case.sock is not None:
                case.sock.close()


def check_raw_case(case: RawCase, statuses: dict[int, int]) -> int:
    """The bytes the server sent are whole HTTP/1.1 JSON answers; returns the records its 200s accepted."""
    buf = case.received
    accepted = 0
    while buf:
        parsed = parse_response(buf)
        assert parsed is not None, f"a cut-off answer {buf[:300]!r} to {case.data[:300]!r}"
        answer, used = parsed
        buf = buf[used:]
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        assert answer.status in RAW_ALLOWED, f"{answer.status} {answer.body[:300]!r} for {case.data[:300]!r}"
        if answer.status == 505:
            assert b"HTTP/" in case.data, case.data[:300]
        if answer.status < 200:
            continue
        assert answer.headers.get("content-type") == "application/json", answer
        doc = answer.json()
        if answer.status == 200:
            assert set(doc) == {"accepted", "sources"} and doc["sources"] == 1, doc
            accepted += doc["accepted"]
        else:
            assert isinstance(doc.get("error"), str) and doc["error"], f"{answer.status} without error: {doc}"
    return accepted


#: How long any connection may live here: each timeout once, the linger after an error answer, the sweep's period.
RAW_BOUND_S = HEADER_TIMEOUT_S + BODY_TIMEOUT_S + IDLE_TIMEOUT_S + LINGER_S + 1.5


def raw_fuzz(fuzz: Fuzz, name: str, examples: int, hold: bool) -> None:
    """``examples`` batches of 40 hypothesis-built raw requests, each batch sent on 40 connections at once."""
    tally = fuzz.tallies.setdefault(name, Tally())
    delivered = [0]
    slowest = [0.0]

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(RAW_CASES, min_size=40, max_size=40))
    def batch(items: list[bytes]) -> None:
        cases = [RawCase(data, hold) for data in items]
        run_raw_cases(fuzz.port, cases, RAW_BOUND_S + 2)
        for case in cases:
            assert case.closed_after is not None, \
                f"the connection was still open after {RAW_BOUND_S + 2:.1f} s: {case.data[:300]!r}"
            assert case.closed_after <= RAW_BOUND_S, \
                f"closed only after {case.closed_after:.1f} s (> {RAW_BOUND_S} s): {case.data[:300]!r}"
            slowest[0] = max(slowest[0], case.closed_after)
            accepted = check_raw_case(case, tally.statuses)
            delivered[0] += accepted
            tally.records += accepted
            tally.cases += 1
        assert fuzz.host.alive(), fuzz.host.log_tail()

    started = time.monotonic()
    channel = fuzz.channels["raw"]
    try:
        batch()
    except BaseException:
        channel.drain()  # what the 200s of the failing run delivered is not for the next test
        raise
    finally:
        tally.seconds += time.monotonic() - started
    channel.take(delivered[0], timeout=20)  # every record a 200 accepted arrived (each checked by Go's rules)
    assert not channel.invalid and not channel.dropped
    reply = push(fuzz.port, "/f/raw", b'{"sentinel": "after-raw"}')  # the server still serves, nothing else came
    assert reply.status == 200, reply
    channel.expect_next({"sentinel": "after-raw"}, timeout=10)
    for fmt, other in fuzz.channels.items():
        assert fmt == "raw" or other.records.empty(), f"raw requests delivered to {fmt}"
    print(f"\n{name}: {tally.cases} connections, {delivered[0]} records accepted and delivered, "
          f"slowest close {slowest[0]:.2f} s")


def test_raw_http_fuzz(fuzz: Fuzz) -> None:
    """Hypothesis-built request bytes (request lines, header sets, chunked framings, garbage, pipelines), each on a
    fresh connection that we shut after sending, 40 at a time: the server answers with whole HTTP/1.1 JSON answers
    or closes, never with a 5xx (505 only for a version it does not speak), closes every connection within its
    timeouts, delivers exactly what its 200s accepted, and serves a normal request after."""
    raw_fuzz(fuzz, "raw-http", int(os.environ.get("HTTPPUSH_FUZZ_RAW_EXAMPLES", "100")), hold=False)


def test_raw_http_fuzz_held_open(fuzz: Fuzz) -> None:
    """The same, but our side stays open: the server's own timeouts (1 s header and body, 2 s idle) must close every
    connection, whatever half-request it holds."""
    raw_fuzz(fuzz, "raw-http-held", int(os.environ.get("HTTPPUSH_FUZZ_HELD_EXAMPLES", "10")), hold=True)
