"""FORMAT="delimited": one record per non-empty line, values split on the delimiter, all strings."""

from __future__ import annotations

from collections.abc import Hashable

from . import Decoder, Record, body_text


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

    def decode(self, body: bytes) -> list[Record]:
        records = []
        names = self.fields
        lines = body_text(body, "delimited").split("\n")
        last = len(lines) - 1
        for index, line in enumerate(lines):
            if index < last and line.endswith("\r"):  # "\r\n" ends the line; a "\r" at the very end is data
                line = line[:-1]
            if not line:
                continue
            values = line.split(self.delimiter)
            if names:
                records.append(dict(zip(names, values, strict=False)))
            else:
                records.append({f"col{i}": value for i, value in enumerate(values)})
        return records
