"""FORMAT="delimited": one record per non-empty line, values split on the delimiter, all strings."""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from .base import Decoder, Record, TooManyRecords, body_text


class DelimitedDecoder(Decoder):
    """One record per non-empty line, values split on the delimiter, all strings.

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

    def decode(self, body: bytes, limit: int | None = None) -> list[Record]:
        records: list[Record] = []
        text = body_text(body, "delimited")
        # More lines than the limit: walk them one at a time and stop at the limit, never holding them all.
        lines = text.split("\n") if limit is None or text.count("\n") < limit else _iter_lines(text)
        pending: str | None = None  # one line behind, to tell the last line (whose "\r" is data) from the others
        for line in lines:
            if pending is not None:
                self._add(records, pending[:-1] if pending.endswith("\r") else pending, limit)
            pending = line
        if pending is not None:
            self._add(records, pending, limit)
        return records

    def _add(self, records: list[Record], line: str, limit: int | None) -> None:
        if not line:
            return
        if limit is not None and len(records) >= limit:
            raise TooManyRecords(limit)
        values = line.split(self.delimiter)
        if self.fields:
            records.append(dict(zip(self.fields, values, strict=False)))
        else:
            records.append({f"col{i}": value for i, value in enumerate(values)})

    def decode_request(self, body: bytes, content_type: str, limit: int | None = None) -> list[Record]:
        return self.decode(body, limit)


def _iter_lines(text: str) -> Iterator[str]:
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1
