"""FORMAT="json": an object → one record; an array of objects → one record per element (as eKuiper's converter);
with framing ``lines`` (or a request's ``Content-Type: application/x-ndjson``) one object per line (NDJSON, JSON Lines).

Parsed with orjson alone, which already refuses what the host could not read back (docs/host-behaviour.md §4): NaN and
Infinity, numbers outside float64 (``1e400``), lone surrogates (``"\\ud800"``), invalid UTF-8. Integers beyond 64 bits
become floats, as the host reads every number as float64 anyway (§4). Example: ``JsonDecoder().decode(b'{"a": 1e400}')``
raises ``DecodeError("body is not valid JSON: number is infinity when parsed as double: line 1 column 6")``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import orjson

from .base import DecodeError, Decoder, Record, TooManyRecords, body_text

# The deepest nesting of arrays and objects orjson.loads accepts (measured with orjson 3.x: 1024 nested arrays parse,
# 1025 raise "depth limit exceeded"; tests/test_decoders.py keeps this in step with the installed orjson).
MAX_JSON_DEPTH = 1024

_UTF8_BOM = b"\xef\xbb\xbf"

#: Media types that make a request's body NDJSON / JSON Lines (one object per line), whatever ``framing`` says.
NDJSON_MEDIA_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines"})


class JsonDecoder(Decoder):
    """Object → one record; array of objects → one record per element (as eKuiper's json converter). With ``lines``
    (property ``framing: lines``), or for a request whose Content-Type is in :data:`NDJSON_MEDIA_TYPES`: one object
    per line, see :func:`decode_lines`."""

    format = "json"

    def __init__(self, lines: bool = False) -> None:
        self.lines = lines

    @property
    def key(self) -> Hashable:
        return (type(self), self.lines)

    def decode(self, body: bytes) -> list[Record]:
        return decode_lines(body) if self.lines else self._decode_whole(body)

    def decode_request(self, body: bytes, content_type: str, limit: int | None = None) -> list[Record]:
        lines = self.lines
        if not lines and content_type:
            lines = _NDJSON.get(content_type)
            if lines is None:
                lines = _is_ndjson(content_type)
        if lines:
            return decode_lines(body, limit)
        try:  # the common body, inline: one JSON object
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._decode_whole(body)
        return [doc] if type(doc) is dict else self._decode_whole(body, doc)

    def _decode_whole(self, body: bytes, doc: Any = None) -> list[Record]:
        """``doc``: the body already parsed (not an object), when it parsed."""
        if doc is None:
            doc = _parse(body)  # a BOM, or an error to explain
        if type(doc) is dict:
            return [doc]
        if isinstance(doc, list):
            for index, item in enumerate(doc):
                if not isinstance(item, dict):
                    raise DecodeError(
                        f"JSON array element {index} is {_json_kind(item)}; every element must be an object"
                    )
            return doc
        raise DecodeError(f"JSON body is {_json_kind(doc)}; must be an object or an array of objects")


def decode_lines(body: bytes, limit: int | None = None) -> list[Record]:
    """NDJSON / JSON Lines: one object per line, lines ending at ``\n`` or ``\r\n``; blank lines are skipped. One bad
    line refuses the whole body, naming the line. Example: ``decode_lines(b'{"a":1}\r\n\n{"a":2}\n')`` →
    ``[{"a": 1}, {"a": 2}]``; ``decode_lines(b'{"a":1}\n[2]')`` raises ``DecodeError("NDJSON line 2 is an array;
    every line must be an object")``.
    """
    records: list[Record] = []
    append, loads = records.append, orjson.loads
    # JSON text never holds a raw newline (RFC 8259 §7), so splitting on b"\n" cannot cut a value in two; orjson
    # takes the "\r" of a "\r\n" as trailing whitespace.
    for number, line in enumerate(body.split(b"\n"), 1):
        try:
            record = loads(line)
        except orjson.JSONDecodeError as exc:
            if not line.strip():  # a blank line, the one after the last newline included: costs only here
                continue
            if number == 1 and line.startswith(_UTF8_BOM):
                try:
                    record = loads(memoryview(line)[len(_UTF8_BOM):])
                except orjson.JSONDecodeError as again:
                    raise DecodeError(_explain_line(body, line, number, again)) from None
            else:
                raise DecodeError(_explain_line(body, line, number, exc)) from None
        if type(record) is not dict:
            raise DecodeError(f"NDJSON line {number} is {_json_kind(record)}; every line must be an object")
        if limit is not None and len(records) >= limit:
            raise TooManyRecords(limit)
        append(record)
    return records


def _media_type(content_type: str) -> str:
    """``"Application/X-NDJSON; charset=utf-8"`` → ``"application/x-ndjson"``."""
    return content_type.split(";", 1)[0].strip().lower()


#: Content-Type → whether it is NDJSON, for the Content-Types seen (a client sends the same one with every request).
_NDJSON: dict[str, bool] = {}


def _is_ndjson(content_type: str) -> bool:
    known = _NDJSON.get(content_type)
    if known is None:
        known = _media_type(content_type) in NDJSON_MEDIA_TYPES
        if len(_NDJSON) < 256:  # bounded: a client may send a new Content-Type with each request
            _NDJSON[content_type] = known
    return known


def _explain_line(body: bytes, line: bytes, number: int, error: orjson.JSONDecodeError) -> str:
    encoding = _wide_encoding(body) if number == 1 else ""
    if encoding:
        return f"NDJSON body must be UTF-8; it looks like {encoding}"
    reason = error.msg
    if "UTF-8" in reason and "BOM" not in reason:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"NDJSON line {number} is not UTF-8 text: its byte {exc.start} is {line[exc.start]:#04x}"
    if reason.startswith("depth limit exceeded"):
        reason = f"nesting is deeper than {MAX_JSON_DEPTH} levels"
    return f"NDJSON line {number} is not valid JSON: {reason}: column {error.colno}"


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # Everything below runs only for bodies orjson refused, so it costs nothing on the common path.
    if body.startswith(_UTF8_BOM):
        # RFC 8259 §8.1: a parser may ignore a UTF-8 byte order mark; orjson refuses it
        try:
            return orjson.loads(memoryview(body)[len(_UTF8_BOM):])
        except orjson.JSONDecodeError as exc:
            error = exc
    raise DecodeError(_explain(body, error)) from None


def _explain(body: bytes, error: orjson.JSONDecodeError) -> str:
    encoding = _wide_encoding(body)
    if encoding:
        return f"JSON body must be UTF-8; it looks like {encoding}"
    if not body.removeprefix(_UTF8_BOM).strip():
        return "JSON body is empty; must be an object or an array of objects"
    if "UTF-8" in error.msg and "BOM" not in error.msg:
        # orjson says "str is not valid UTF-8: surrogates not allowed" for any bad byte; name the byte instead
        try:
            body_text(body, "JSON")
        except DecodeError as exc:
            return str(exc)
    reason = error.msg
    if reason.startswith("depth limit exceeded"):
        reason = f"nesting is deeper than {MAX_JSON_DEPTH} levels"
    return f"body is not valid JSON: {reason}: line {error.lineno} column {error.colno}"


def _wide_encoding(body: bytes) -> str:
    """``"UTF-16"`` or ``"UTF-32"`` if the body starts with their byte order mark or looks like them, else ``""``.

    JSON text starts with an ASCII character, so NUL bytes among the first four mean a wider encoding (RFC 4627 §3):
    ``00 00 00 xx`` and ``xx 00 00 00`` are UTF-32, ``00 xx`` and ``xx 00`` are UTF-16.
    """
    head = body[:4]
    if head in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return "UTF-32"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16"
    if b"\x00" not in head:
        return ""
    if len(head) == 4 and (head[:3] == b"\x00\x00\x00" or head[1:] == b"\x00\x00\x00"):
        return "UTF-32"
    return "UTF-16"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")
