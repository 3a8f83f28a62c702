"""What the plugin must answer and emit for a given input: the documented format rules, written independently of
the plugin's code (README: formats, limits, HTTP answers), and Go's rules for what eKuiper can read.

* ``oracle_<format>(body)`` → :class:`Expect`: the status, and for 200 the exact records; for a refusal, words of
  which the error text must name one.
* :func:`check_answer`: one answer against the oracle's expectation; :data:`ALLOWED`: the statuses a format may give.
* :func:`go_json_problem`: why Go's ``encoding/json`` could not read an envelope into ``map[string]any`` (eKuiper
  would log "Invalid data format" and drop it), or ``None``.
* :data:`SENTINELS`: each format's known good body and the record it decodes to.
* :func:`check_raw_answers`: what a hypothesis-built raw request may get back.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.fuzz.server import (
    ENDPOINTS,
    FIELDS,
    MAX_BODY,
    MAX_FIELDS,
    MAX_GZIP_MEMBERS,
    MAX_RECORDS,
    ORJSON_MAX_DUMP_DEPTH,
    ZSTD,
    Body,
)
from tests.support.http import Answer, parse_response
from tests.support.protobuf import message_class

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
    if any(len(record) > MAX_FIELDS for record in records):
        return Expect(413, words=("httpServerMaxFields",))
    return None


def _lines_ok(body: bytes) -> Expect | None:
    """README: for line formats httpServerMaxRecords counts lines, blank ones too (a final newline ends a line)."""
    lines = body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
    return Expect(413, words=("httpServerMaxRecords",)) if lines > MAX_RECORDS else None


#: What a blank line of a line format may hold (README: spaces, tabs, a carriage return).
BLANK = b" \t\r"


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
    too_many = _lines_ok(body)
    if too_many:
        return too_many
    records = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip(BLANK):
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
    members = 1
    while data:
        if stream.eof:
            if name == "deflate":
                return Expect(400, words=ENCODING_WORDS)
            members += 1
            if members > MAX_GZIP_MEMBERS:
                return Expect(413, words=("gzip members",))
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


def inflate_zstd(wire: bytes) -> bytes | Expect:
    """docs/formats.md: zstd frames back to back are one body (at most MAX_GZIP_MEMBERS of them), bounded by
    httpServerMaxBodySize once inflated; truncated, corrupt, an empty body or bytes after the last frame → 400."""
    if not wire:
        return Expect(400, words=("zstd",))
    out = bytearray()
    data, frames = wire, 0
    while data:
        frames += 1
        if frames > MAX_GZIP_MEMBERS:
            return Expect(413, words=("zstd frames",))
        stream = ZSTD.ZstdDecompressor()
        try:
            piece = stream.decompress(data, MAX_BODY - len(out) + 1)
        except ZSTD.ZstdError:
            return Expect(400, words=("zstd", "Content-Encoding"))
        out += piece
        if len(out) > MAX_BODY:
            return Expect(413, words=("httpServerMaxBodySize",))
        if not stream.eof:
            return Expect(400, words=("zstd", "Content-Encoding"))
        data = stream.unused_data
    return bytes(out)


def oracle_compressed(body: bytes, encoding: bytes | None = None) -> Expect:
    name = (encoding or b"").decode("latin-1").strip().lower()
    if name in ("", "identity"):
        return oracle_json(body)
    if len(body) > MAX_BODY:  # the Content-Length limit is checked first, whatever the encoding
        return _too_large()
    if name == "zstd" and ZSTD is not None:
        inflated = inflate_zstd(body)
        return inflated if isinstance(inflated, Expect) else oracle_json(inflated)
    if name not in ("gzip", "x-gzip", "deflate"):
        return Expect(415, words=("Content-Encoding",))
    inflated = inflate(body, "deflate" if name == "deflate" else "gzip")
    return inflated if isinstance(inflated, Expect) else oracle_json(inflated)


def oracle_delimited(body: bytes) -> Expect:
    if len(body) > MAX_BODY:
        return _too_large()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Expect(400, words=("UTF-8",))
    too_many = _lines_ok(body)
    if too_many:
        return too_many
    records = []
    lines = re.split(r"\r?\n", text)  # a line ends at \n or \r\n only; a final lone \r is data
    for line in lines:
        if line.strip(BLANK.decode()):
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
    if body.count(b"&") + 1 > MAX_FIELDS:  # README: '&'-separated pairs, empty ones too, count as fields
        return Expect(413, words=("httpServerMaxFields",))
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
        self.cls = message_class(proto, "Sample")

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


# -- the answers ------------------------------------------------------------------------------------------------------

#: 415 is the answer to a Content-Encoding the server does not speak (README's table)
ALLOWED = {fmt: {200, 400, 413} for fmt in ENDPOINTS} | {"compressed": {200, 400, 413, 415}}


def check_answer(fmt: str, case: Body, answer: Answer, expect: Expect) -> None:
    """One answer of the format fuzz: an allowed status, JSON, and what the oracle expected for ``case``."""
    shown: Any = case.data[:200] if case.encoding is None else (case.encoding, case.data[:200])
    assert answer.status in ALLOWED[fmt], f"{fmt}: {answer.status} for {shown!r}: {answer.body[:300]!r}"
    assert answer.header("Content-Type") == "application/json", f"{fmt}: {answer}"
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


#: Each format's sentinel: a known good body and the record it decodes to (protobuf's is built from its schema).
SENTINELS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "json": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
    "delimited": (b"end,of,fuzz", {"a": "end", "b": "of", "c": "fuzz"}),
    "urlencoded": (b"sentinel=end", {"sentinel": "end"}),
    "binary": (b"end", {"self": "ZW5k"}),
    "custom": (b"sentinel=end", {"sentinel": "end"}),
    "ndjson": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
    "compressed": (b'{"sentinel": "end-of-fuzz"}', {"sentinel": "end-of-fuzz"}),
}


#: Statuses a raw request may get: an answer named in the README's table; 505 only for an unsupported version.
RAW_ALLOWED = {100, 200, 400, 404, 405, 408, 413, 415, 431, 505}


def check_raw_answers(sent: bytes, received: bytes, statuses: dict[int, int]) -> int:
    """The bytes the server sent are whole HTTP/1.1 JSON answers; returns the records its 200s accepted."""
    buf = received
    accepted = 0
    while buf:
        parsed = parse_response(buf, strict=True)
        assert parsed is not None, f"a cut-off answer {buf[:300]!r} to {sent[:300]!r}"
        answer, used = parsed
        buf = buf[used:]
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        assert answer.status in RAW_ALLOWED, f"{answer.status} {answer.body[:300]!r} for {sent[:300]!r}"
        if answer.status == 505:
            assert b"HTTP/" in sent, sent[:300]
        if answer.status < 200:
            continue
        assert answer.header("Content-Type") == "application/json", answer
        doc = answer.json()
        if answer.status == 200:
            assert set(doc) == {"accepted", "sources"} and doc["sources"] == 1, doc
            accepted += doc["accepted"]
        else:
            assert isinstance(doc.get("error"), str) and doc["error"], f"{answer.status} without error: {doc}"
    return accepted
