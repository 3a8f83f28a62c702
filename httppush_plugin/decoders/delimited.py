"""FORMAT="delimited": one record per non-blank line, values split on the delimiter, all strings."""

from __future__ import annotations

from collections.abc import Hashable
from itertools import repeat
from typing import Any

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
        return self._values(body, self.delimiter.encode())

    def _values(self, body: Any, delimiter: Any) -> int:
        """An upper bound of the values the body's records hold: every delimiter starts one more, and every line holds
        one; with names, a line holds no more than there are names (values past the last are never split off)."""
        lines = count_lines(body)
        values = count(body, delimiter) + lines
        return min(values, lines * len(self.fields)) if self.fields else values

    def decode(self, body: bytes, limits: Limits | None = None) -> list[Record]:
        text = body_text(body, "delimited")
        fields, delimiter = self.fields, self.delimiter
        if limits is not None:
            check_lines(text, limits)
            values = self._values(text, delimiter)
            if values > limits.values:
                raise too_many_values(values, limits.values, "counted as its delimiters and lines, at most as many "
                                      "a line as there are fields names")
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
    global _NAMES
    names = _NAMES
    if len(names) < count:  # a new list, bound at once: a worker thread and the loop may both be here
        names = _NAMES = names + [f"col{i}" for i in range(len(names), count)]
    return names if len(names) == count else names[:count]
