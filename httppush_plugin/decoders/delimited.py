"""FORMAT="delimited": one record per non-blank line, values split on the delimiter, all strings."""

from __future__ import annotations

from collections.abc import Hashable
from itertools import repeat

from .base import (
    Decoder,
    Limits,
    Record,
    body_text,
    check_lines,
    count,
    count_lines,
    nonblank_lines,
    too_many_fields,
    too_many_values,
)


class DelimitedDecoder(Decoder):
    """One record per non-blank line (a line of nothing but spaces, tabs and ``\\r`` is skipped), values split on the
    delimiter, all strings.

    Names come from ``fields``; without them ``col0``, ``col1``, …; values past the last name are dropped (as
    eKuiper's converter does). Unlike eKuiper's converter, which splits the whole body and so glues the last value
    of a line to the first of the next, every line is its own record. Lines end at ``\\n`` or ``\\r\\n`` only: any
    other character, a lone ``\\r`` included, stays in the value (``str.splitlines()`` would also split on ``\\x0c``,
    ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028``, …). Example: ``DelimitedDecoder(",").decode(b"a,b\\r\\nc\\x0c,d")`` →
    ``[{"col0": "a", "col1": "b"}, {"col0": "c\\x0c", "col1": "d"}]``.
    """

    format = "delimited"

    def __init__(self, delimiter: str = ",", fields: tuple[str, ...] = ()) -> None:
        self.delimiter = delimiter
        self.fields = fields

    @property
    def key(self) -> Hashable:
        return (type(self), self.delimiter, self.fields)

    def values_bound(self, body: bytes) -> int:
        return count(body, self.delimiter.encode()) + count_lines(body) + 1

    def decode(self, body: bytes, limits: Limits | None = None) -> list[Record]:
        text = body_text(body, "delimited")
        fields, delimiter = self.fields, self.delimiter
        if limits is not None:
            check_lines(text, limits)
            # values: every delimiter starts one more, and every line holds one; with names, values past the last
            # name are never split off, so only lines with more values than names could count more than that
            values = count(text, delimiter) + count_lines(text)
            if values > limits.values and not fields:
                raise too_many_values(values, limits.values, "counted as its delimiters and lines")
        lines = nonblank_lines(text)
        if fields:
            # values past the last name are dropped unsplit: maxsplit leaves them in one piece that zip ignores
            most = len(fields)
            return [dict(zip(fields, line.split(delimiter, most), strict=False)) for line in lines]
        most = limits.fields if limits is not None else -1
        names = _names(max(map(str.count, lines, repeat(delimiter)), default=0) + 1, most)
        return [dict(zip(names, line.split(delimiter), strict=False)) for line in lines]

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[Record]:
        return self.decode(body, limits)


_NAMES: list[str] = []


def _names(count: int, limit: int) -> list[str]:
    """``col0``, ``col1``, …: ``count`` names, made once and shared by every record (not one string per value);
    raises :class:`OverLimit` past ``limit`` (``httpServerMaxFields``) unless it is -1."""
    if limit >= 0 and count > limit:
        raise too_many_fields(limit, "a delimited line")
    if len(_NAMES) < count:
        _NAMES.extend(f"col{i}" for i in range(len(_NAMES), count))
    return _NAMES if len(_NAMES) == count else _NAMES[:count]
