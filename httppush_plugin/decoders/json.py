"""FORMAT="json": an object → one record; an array of objects → one record per element (as eKuiper's converter);
with framing ``lines`` (or a request's ``Content-Type: application/x-ndjson``) one object per line (NDJSON, JSON Lines).

Parsed with orjson alone, which already refuses what the host could not read back (docs/host-behaviour.md §4): NaN and
Infinity, numbers outside float64 (``1e400``), lone surrogates (``"\\ud800"``), invalid UTF-8. Integers beyond 64 bits
become floats, as the host reads every number as float64 anyway (§4). Example: ``JsonDecoder().decode(b'{"a": 1e400}')``
raises ``DecodeError("body is not valid JSON: number is infinity when parsed as double: line 1 column 6")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from .base import (
    BLANK,
    DecodeError,
    Decoder,
    Limits,
    Record,
    TooManyRecords,
    body_text,
    check_json_values,
    check_lines,
    check_record_values,
    count,
    count_json_values,
    nonblank_lines,
    too_many_fields,
    too_many_record_values,
    top_level_end,
)

# The deepest nesting of arrays and objects orjson.loads accepts (measured with orjson 3.x: 1024 nested arrays parse,
# 1025 raise "depth limit exceeded"; tests/test_decoders.py keeps this in step with the installed orjson).
MAX_JSON_DEPTH = 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_BLANK = BLANK.encode()

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

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[Record]:
        lines = self.lines
        if not lines and content_type:
            lines = _NDJSON.get(content_type)
            if lines is None:
                lines = _is_ndjson(content_type)
        if lines:
            return decode_lines(body, limits)
        if limits is not None and len(body) > _SLICE:
            check_json_values(body, limits)
            doc = _parse_in_slices(body, limits)
            if doc is None:  # not an array: one record, parsed in one call
                check_record_values(body, limits, 0, len(body), "the JSON body")
            return self._decode_whole(body, doc, limits)
        try:  # the common body, inline: one JSON object
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._decode_whole(body, None, limits)
        if type(doc) is dict and (limits is None or len(doc) <= limits.fields):
            return [doc]
        return self._decode_whole(body, doc, limits)

    def _decode_whole(self, body: bytes, doc: Any = None, limits: Limits | None = None) -> list[Record]:
        """``doc``: the body already parsed, when it parsed."""
        if doc is None:
            doc = _parse(body)  # a BOM, or an error to explain
        if type(doc) is dict:
            doc = [doc]
        elif not isinstance(doc, list):
            raise DecodeError(f"JSON body is {_json_kind(doc)}; must be an object or an array of objects")
        elif not _all_objects(doc):
            index = next(index for index, item in enumerate(doc) if type(item) is not dict)
            raise DecodeError(f"JSON array element {index} is {_json_kind(doc[index])}; every element must be an "
                              "object")
        if limits is not None and len(doc) > limits.records:
            raise TooManyRecords(limits.records)
        _check_fields(doc, limits, "JSON record", int)
        return doc


def _all_objects(values: list[Any]) -> bool:
    """Whether every value is a ``dict`` (orjson makes no subclasses): a C loop, not one bytecode per value."""
    return not values or set(map(type, values)) == {dict}


def _check_fields(records: list[Record], limits: Limits | None, what: str, number: Callable[[int], int]) -> None:
    """Refuse the first record with more keys than ``httpServerMaxFields``, named ``what`` and ``number(index)``."""
    if limits is not None and max(map(len, records), default=0) > limits.fields:  # a C loop; the index only then
        fields = limits.fields
        index = next(index for index, record in enumerate(records) if len(record) > fields)
        raise too_many_fields(fields, f"{what} {number(index)}")


#: A JSON body larger than this is parsed a slice of about this many bytes at a time (:func:`_parse_in_slices`).
_SLICE = 128 * 1024
#: Where an object element of an array may end: ``}``, whitespace, ``,``.
_OBJECT_END = re.compile(rb"\}[ \t\r\n]*,")
_WHITESPACE = b" \t\r\n"


def _parse_in_slices(body: bytes, limits: Limits) -> Any:
    """A large JSON array of objects, parsed a slice of elements at a time: the record limit is checked after each
    slice, before the rest is built, and no single ``orjson.loads`` call (which holds the GIL) parses more than
    about :data:`_SLICE` bytes unless one element is larger (and then at most ``httpServerMaxRecordValues`` values).
    ``None`` when the body is not such an array: the caller parses it whole.

    A slice ends at a ``},``; it is an element's end only if ``[`` + slice + ``]`` parses: cut inside a string, the
    slice ends in an unterminated string; cut inside a nested value, its brackets do not balance. The cut is chosen
    by :func:`~.base.top_level_end`, else it is the first ``},`` past :data:`_SLICE` bytes; a slice that does not parse
    is retried twice as long, so the bytes parsed in vain are at most twice the body's."""
    start = len(body) - len(body.removeprefix(_UTF8_BOM).lstrip(_WHITESPACE))
    end = len(body.rstrip(_WHITESPACE))
    if body[start:start + 1] != b"[" or body[end - 1:end] != b"]":
        return None
    loads, search, records = orjson.loads, _OBJECT_END.search, limits.records
    pos, end, size = start + 1, end - 1, _SLICE
    items: list[Any] = []
    while end - pos > size:
        cut = top_level_end(body, pos, pos + size, end) if size == _SLICE else 0
        if cut <= 0:
            found = search(body, pos + size, end)
            if found is None:
                break
            cut = found.start() + 1
        check_record_values(body, limits, pos, cut, f"JSON array element {len(items)}")
        try:
            items += loads(b"[" + body[pos:cut] + b"]")
        except orjson.JSONDecodeError:
            size *= 2
            continue
        if len(items) > records:
            raise TooManyRecords(records)
        pos, size = body.index(b",", cut) + 1, _SLICE
    check_record_values(body, limits, pos, end, f"JSON array element {len(items)}")
    try:
        items += loads(b"[" + body[pos:end] + b"]")
    except orjson.JSONDecodeError as exc:
        raise DecodeError(_explain_at(body, pos, exc)) from None
    return items


def _explain_at(body: bytes, pos: int, error: orjson.JSONDecodeError) -> str:
    """:func:`_explain` for an error in ``"[" + body[pos:…]``, placed in the whole body."""
    if "UTF-8" in error.msg:
        return _explain(body, error)  # names the first bad byte of the whole body
    line = count(body, b"\n", 0, pos) + error.lineno
    column = error.colno
    if error.lineno == 1:  # on the line the slice starts in: the part before it, less the "[" put in front
        line_start = body.rfind(b"\n", 0, pos) + 1
        column += len(body[line_start:pos].decode("utf-8", "replace")) - 1
    return _explain(body, error, line, column)


def decode_lines(body: bytes, limits: Limits | None = None) -> list[Record]:
    """NDJSON / JSON Lines: one object per line, lines ending at ``\n`` or ``\r\n``; blank lines (nothing but spaces,
    tabs, ``\r``) are skipped. One bad line refuses the whole body, naming the line. With ``limits``, a body of more
    lines than the record limit (blank ones count too) or of more values than the value limit is refused before any
    line is parsed. Example: ``decode_lines(b'{"a":1}\r\n\n{"a":2}\n')`` → ``[{"a": 1}, {"a": 2}]``;
    ``decode_lines(b'{"a":1}\n[2]')`` raises ``DecodeError("NDJSON line 2 is an array; every line must be an
    object")``.
    """
    if limits is not None:
        check_lines(body, limits)
        check_json_values(body, limits)
    # JSON text never holds a raw newline (RFC 8259 §7), so splitting on b"\n" cannot cut a value in two.
    lines = nonblank_lines(body)
    if limits is not None and max(map(len, lines), default=0) > limits.record_values:
        for index, line in enumerate(lines):
            if len(line) > limits.record_values:  # a line no longer than the limit cannot hold more
                values = count_json_values(line)
                if values > limits.record_values:
                    raise too_many_record_values(values, limits.record_values,
                                                 f"NDJSON line {_line_number(body, index)}")
    loads = orjson.loads
    records: list[Any] = []
    try:  # C loops of _LINES_STEP lines: a thread lets go of the GIL between them (within one it cannot)
        for start in range(0, len(lines), _LINES_STEP):
            records += map(loads, lines[start:start + _LINES_STEP])
    except orjson.JSONDecodeError:
        records = _decode_lines_slowly(body, lines)
    if not _all_objects(records):
        index = next(index for index, record in enumerate(records) if type(record) is not dict)
        raise DecodeError(f"NDJSON line {_line_number(body, index)} is {_json_kind(records[index])}; every line must "
                          "be an object")
    _check_fields(records, limits, "NDJSON line", lambda index: _line_number(body, index))
    return records


#: Lines parsed by one C loop in :func:`decode_lines` (of at most 1 ms of work each, unless lines are long).
_LINES_STEP = 2048


def _decode_lines_slowly(body: bytes, lines: list[bytes]) -> list[Any]:
    """A line failed to parse: parse again line by line, to let a BOM pass on the first line and name the bad one."""
    records = []
    for index, line in enumerate(lines):
        try:
            records.append(orjson.loads(line))
            continue
        except orjson.JSONDecodeError as exc:
            error = exc
        number = _line_number(body, index)
        if number == 1 and line.startswith(_UTF8_BOM):
            try:
                records.append(orjson.loads(memoryview(line)[len(_UTF8_BOM):]))
                continue
            except orjson.JSONDecodeError as exc:
                error = exc
        raise DecodeError(_explain_line(body, line, number, error)) from None
    return records


def _line_number(body: bytes, index: int) -> int:
    """The number (from 1) of the ``index``-th non-blank line: for error messages only, so a Python loop is fine (the
    body's lines are at most the record limit)."""
    for number, line in enumerate(body.split(b"\n"), 1):
        if line.strip(_BLANK):
            if index == 0:
                return number
            index -= 1
    return 0


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


def _explain(body: bytes, error: orjson.JSONDecodeError, line: int = 0, column: int = 0) -> str:
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
    return f"body is not valid JSON: {reason}: line {line or error.lineno} column {column or error.colno}"


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
