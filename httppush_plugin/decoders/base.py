"""What every decoder shares: the :class:`Decoder` base class, the errors a body can cause, the :class:`Limits` a body
is decoded within, and two helpers.

A decoder turns one body into records (each a ``dict``) or raises :class:`DecodeError` (400) naming the problem;
:class:`OverLimit` (413) when the body holds more than one of its :class:`Limits` (:class:`TooManyRecords`:
``httpServerMaxRecords``); :class:`CustomDecoderFault` (500) when a user's decoder breaks its contract.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from itertools import compress, repeat
from pathlib import Path
from typing import Any, NamedTuple

from ..answers import BadRequest, ServerFault, TooLarge
from ..errors import ConfigError

Record = dict[str, Any]


class DecodeError(BadRequest, ValueError):
    """The body cannot be turned into records; the message names the problem and goes to the client (HTTP 400)."""


class OverLimit(DecodeError):
    """The body holds more of something than a setting allows (HTTP 413); the message names the setting."""

    status = TooLarge.status


class TooManyRecords(OverLimit):
    """The body holds more records than ``httpServerMaxRecords`` (HTTP 413). Raised before the records are built
    where the body shows it (its line count, a JSON array's element count as it is parsed slice by slice), so that
    memory stays bounded by the limit, not the body."""

    def __init__(self, limit: int, what: str = "records") -> None:
        super().__init__(f"body has more than {limit} {what}; the limit is {limit} (httpServerMaxRecords)")


class Limits(NamedTuple):
    """What one body may hold, from the server settings (``settings.py`` documents each)."""

    #: records (``httpServerMaxRecords``); for line formats, lines, blank ones included
    records: int = 100_000
    #: fields of one record (``httpServerMaxFields``): a JSON object's keys, a delimited line's values, form pairs
    fields: int = 10_000
    #: values in one body (``httpServerMaxValues``), counted before it is parsed (``json.count_json_values``)
    values: int = 2_000_000
    #: values in one JSON record (``httpServerMaxRecordValues``), counted before it is parsed
    record_values: int = 250_000


def too_many_fields(limit: int, where: str) -> OverLimit:
    return OverLimit(f"{where} has more than {limit} fields; the limit is {limit} (httpServerMaxFields)")


def too_many_values(count: int, limit: int, how: str) -> OverLimit:
    return OverLimit(f"body holds up to {count} values ({how}); the limit is {limit} (httpServerMaxValues)")


def too_many_record_values(count: int, limit: int, what: str) -> OverLimit:
    return OverLimit(f"{what} holds up to {count} values (counted as its ',' and '[' characters and three per '{{', "
                     f"strings included); one record may hold {limit} (httpServerMaxRecordValues)")


class CustomDecoderFault(ServerFault, RuntimeError):
    """The user's decoder broke its contract: a server-side fault (HTTP 500), not the client's."""


#: Bytes a decoded value takes at most, as counted by :meth:`Decoder.values_bound` (measured: 52–90 bytes,
#: docs/operations.md "What one body costs").
VALUE_BYTES = 90


def held_bound(decoders: list[Decoder], body: bytes, limits: Limits) -> int:
    """The bytes decoding ``body`` with each of ``decoders`` and framing the records will hold at most: one
    decoder's records at a time (the largest :meth:`Decoder.values_bound`, :data:`VALUE_BYTES` each, and no more
    than ``httpServerMaxValues``: the decoders refuse a body over it before building anything), and every decoder's
    frames, about twice the body each."""
    values = max([decoder.values_bound(body) for decoder in decoders], default=0)
    return min(values, limits.values) * VALUE_BYTES + 2 * len(body) * len(decoders)


class Decoder:
    """Base class: ``decode`` turns one body into records or raises :class:`DecodeError`."""

    format: str = ""

    @property
    def key(self) -> Hashable:
        """Equal keys mean equal output for every body (used to decode once per distinct decoder)."""
        return (type(self), self.format)

    def decode(self, body: bytes) -> list[Record]:
        raise NotImplementedError

    def values_bound(self, body: bytes) -> int:
        """An upper bound of the values decoding ``body`` builds, counted without decoding it: what the records of a
        body are expected to hold in memory is this times :data:`VALUE_BYTES` (JSON's count by default)."""
        return count_json_values(body)

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[Record]:
        """:meth:`decode`, told the request's ``Content-Type``: for formats that read a body by its media type
        (``application/x-ndjson`` makes :class:`JsonDecoder` read one object per line), and the body's ``limits``,
        which the built-in decoders check before building what they count (:class:`OverLimit`, 413). A decoder that
        does not check the record limit itself has its records counted by the caller."""
        return self.decode(body)


def body_text(body: bytes, what: str) -> str:
    """The body as UTF-8 text, or a :class:`DecodeError` naming the first bad byte."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} body is not UTF-8 text: byte {exc.start} is {body[exc.start]:#04x}") from None


def find_file(name: str, dirs: Iterable[Path], setting: str, value: str) -> tuple[Path, float]:
    """The first ``<dir>/<name>`` that is a file, resolved, with its mtime; ``name`` must already be a plain name.

    The resolved file must lie inside one of ``dirs`` (resolved too): a symlink that leads out is refused, e.g.
    ``decoders/kv.py -> /etc/passwd`` gives a :class:`ConfigError`.
    """
    folders = list(dirs)
    roots = [folder.resolve() for folder in folders]
    for folder in folders:
        candidate = folder / name
        if not candidate.is_file():
            continue
        resolved = candidate.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise ConfigError(f"{setting} is {value!r}, but {candidate} leads to {resolved}, outside the search "
                              f"folders; the file must lie inside one of: {', '.join(map(str, folders))}")
        return resolved, resolved.stat().st_mtime
    raise ConfigError(f"{setting} is {value!r}, but no {name} was found in: {', '.join(map(str, folders))}")


def count_json_values(body: bytes, start: int = 0, end: int | None = None) -> int:
    """An upper bound of the values (and keys) in ``body[start:end]``, counted at C speed without parsing: every
    value but the first of its array or object follows a ``,``, and each array or object starts with ``[`` or
    ``{``. Such characters inside strings count too: the bound is never below the truth. An object counts as three
    values: a dict of one to five keys takes 184 bytes, about three times what a value in a list does, so that the
    count bounds memory (measured: at most ~90 bytes a counted value, docs/operations.md)."""
    return (count(body, b",", start, end) + 3 * count(body, b"{", start, end) + count(body, b"[", start, end)
            + 1)


def check_json_values(body: bytes, limits: Limits) -> int:
    """Refuse a JSON body that may hold more than ``httpServerMaxValues`` values (:func:`count_json_values`) before
    parsing it; returns the count, or 0 for a body no longer than the limit (it cannot exceed it: not counted)."""
    if len(body) <= limits.values:
        return 0
    values = count_json_values(body)
    if values > limits.values:
        raise too_many_values(values, limits.values,
                              "counted as its ',' and '[' characters and three per '{', strings included")
    return values


def check_record_values(body: bytes, limits: Limits, start: int, end: int, what: str) -> None:
    """Refuse a record (``body[start:end]``, or a part of it) that may hold more than ``httpServerMaxRecordValues``
    values, before it is parsed: one record is parsed by one ``orjson.loads`` call, which holds the GIL throughout."""
    if end - start > limits.record_values:
        values = count_json_values(body, start, end)
        if values > limits.record_values:
            raise too_many_record_values(values, limits.record_values, what)


#: Candidate ends :func:`top_level_end` looks at, at most, for one slice.
_CANDIDATES = 64


def top_level_end(body: bytes, pos: int, near: int, end: int) -> int:
    """Just past the ``}`` of a ``},`` at or after the last one before ``near`` where the brackets opened since
    ``pos`` all close (counted at C speed, as if no string held one: a wrong guess fails to parse and is dropped);
    0 if none is found among :data:`_CANDIDATES`. Nested arrays of objects hold ``},`` too: this skips theirs."""
    cut = body.rfind(b"},", pos, near)
    if cut < 0:
        return 0
    depth = _depth(body, pos, cut + 1)
    for _ in range(_CANDIDATES):
        if depth == 0:
            return cut + 1
        following = body.find(b"},", cut + 1, end)
        if following < 0:
            return 0
        depth += _depth(body, cut + 1, following + 1)
        cut = following
    return 0


def _depth(body: bytes, start: int, end: int) -> int:
    return (body.count(b"{", start, end) + body.count(b"[", start, end) - body.count(b"}", start, end)
            - body.count(b"]", start, end))


#: What a blank line may hold: JSON's whitespace (RFC 8259 §2) less the newline lines are split on.
BLANK = " \t\r"
_BLANK_BYTES = BLANK.encode()


#: Bytes (or characters) one C call looks through at most in :func:`count`: about a millisecond's work.
COUNT_STEP = 1024 * 1024


def count(body: Any, needle: Any, start: int = 0, end: int | None = None) -> int:
    """``body.count(needle, start, end)`` for ``bytes`` or ``str``, a :data:`COUNT_STEP` at a time so that a thread
    counting a 10 MiB body lets go of the GIL between steps (one call would hold it for the whole body). A needle
    longer than one character is counted in one call: steps could split an occurrence."""
    end = len(body) if end is None else end
    if end - start <= COUNT_STEP or len(needle) != 1:
        return body.count(needle, start, end)  # type: ignore[no-any-return]
    return sum([body.count(needle, at, min(at + COUNT_STEP, end)) for at in range(start, end, COUNT_STEP)])


def count_lines(body: bytes | str) -> int:
    """Lines in ``body``, blank ones included (a final newline ends the last line, it starts no new one)."""
    newline = "\n" if isinstance(body, str) else b"\n"
    return count(body, newline) + (1 if body and not body.endswith(newline) else 0)  # type: ignore[arg-type]


def check_lines(body: bytes | str, limits: Limits | None) -> None:
    """Refuse a line-format body with more lines than ``httpServerMaxRecords``, counted at C speed before any line
    is split off: blank lines count too, so that a body of nothing but newlines costs one count, not a loop."""
    if limits is not None and count_lines(body) > limits.records:
        raise TooManyRecords(limits.records, "lines (blank ones count too)")


def nonblank_lines(body: Any) -> list[Any]:
    """The lines of ``body`` (``bytes`` or ``str``) that hold more than :data:`BLANK` characters, each without the
    ``"\\r"`` of a ``"\\r\\n"`` ending — the last line keeps its ``"\\r"``: only a line ending is taken off.
    Example: ``nonblank_lines(b"a\\r\\n \\t\\n\\nb\\r")`` → ``[b"a", b"b\\r"]``.

    The lines are split, tested and filtered by C loops (``split``, ``map``, ``compress``), so a blank line costs no
    Python bytecode; a :data:`COUNT_STEP` of the body at a time, so that a thread lets go of the GIL between steps."""
    newline = b"\n" if type(body) is bytes else "\n"
    size = len(body)
    if size <= COUNT_STEP:
        return _nonblank(body)
    lines: list[Any] = []
    start = 0
    while start < size:
        end = body.find(newline, start + COUNT_STEP) + 1 or size  # a step ends with a line
        lines += _nonblank(body[start:end])
        start = end
    return lines


def _nonblank(body: Any) -> list[Any]:
    kind = type(body)
    newline, blank, cr = (b"\n", _BLANK_BYTES, b"\r") if kind is bytes else ("\n", BLANK, "\r")
    head, sep, last = body.rpartition(newline)
    lines = list(map(kind.removesuffix, head.split(newline), repeat(cr))) if sep else []
    lines = list(compress(lines, map(kind.strip, lines, repeat(blank))))
    if last.strip(blank):
        lines.append(last)
    return lines
