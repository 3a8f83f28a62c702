"""The stream's schema, checked at the edge: a record eKuiper's STRICT_VALIDATION would drop gets 422 instead of 2xx.

What the host does (eKuiper 2.4.0 and 2.4.2 alike, ``internal/topo/operator/field_processor.go`` with the casts of
``pkg/cast/cast.go`` and ``pkg/cast/time.go``; the fields it checks are chosen in
``internal/topo/planner/dataSourcePlan.go``), for a record whose numbers are all float64 (it decodes our JSON):

=========  ==============================================  ===============================================
type       passes (converted by the host)                  dropped
=========  ==============================================  ===============================================
bigint     a number (a fraction truncated)                 string, boolean, null, object, array
float      a number                                        string, boolean, null, object, array
boolean    true, false                                     anything else
string     a string                                        anything else
datetime   a number (epoch ms); a string (parsed by the    "", boolean, null, object, array
           host: not checked here, but "" never parses)
bytea      a string (base64 decoded, else its UTF-8)       anything else
array      null; an array whose elements pass as items     anything else
struct     inside an array: null, an object (or its JSON   anything else
           text) whose every declared field passes
=========  ==============================================  ===============================================

A declared field that is missing is dropped ("field x is not found"); fields not declared pass. A *top-level* struct
field is not checked at all by a rule that does not read it with ``->`` (the planner prunes it, ``SELECT *``
included), so it is not checked here either. The host checks the fields the rule reads (``SELECT *``: all); the edge
checks every declared field, as for ``SELECT *``. Values are never changed here: the host converts them as before.

Example: ``Schema(parse_fields("b bigint, tags array(string)")).check([{"b": "7", "tags": []}])`` raises
:class:`SchemaMismatch` (422) naming record 0, field ``b``, expected ``bigint``, got a string.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from .answers import Unprocessable
from .decoders import Decoder, Limits, Record, TooManyRecords
from .fieldtypes import Fields, FieldType

#: failures named in one 422 body; the rest are counted
MAX_NAMED = 10

# ---------------------------------------------------------------------------------------------------------------------
# The check: one small function per field, compiled once per source
# ---------------------------------------------------------------------------------------------------------------------

_MISSING = object()
#: what a test finds wrong: (where inside the field, e.g. ``"[2].z"``; the type expected there; what was found)
Problem = tuple[str, str, str]
#: a test: None when the host accepts the value (or converts it, or does not look at it)
Test = Callable[[Any], Problem | None]


def _kind(value: Any) -> str:
    """What JSON makes of a value (``orjson`` writes what the host reads); ``""`` for what the built-in decoders never
    make (a custom decoder's are checked as the JSON they are sent as, :class:`CheckedDecoder`): left to the host."""
    if value is _MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return ""


#: per scalar type: the JSON kinds the host accepts
_ACCEPTS = {"bigint": {"number"}, "float": {"number"}, "boolean": {"boolean"}, "string": {"string"},
            "datetime": {"number", "string"}, "bytea": {"string"}}
#: per scalar type: the Python types of :data:`_ACCEPTS` (the fast path: one ``type(v) in`` test)
_FAST = {"bigint": (int, float), "float": (int, float), "boolean": (bool,), "string": (str,),
         "datetime": (int, float, str), "bytea": (str,)}
#: a datetime's string is parsed by the host (jinzhu/now, the stream's TIMESTAMP_FORMAT first), which fails for the
#: empty string whatever the format (no Go layout but "" parses it, and eKuiper never tries ""): refused here; any
#: other string is left to the host
_EMPTY_REFUSED = {"datetime"}


def _scalar(kind: str) -> Test:
    fast, accepts = frozenset(_FAST[kind]), _ACCEPTS[kind]

    empty_refused = kind in _EMPTY_REFUSED

    def test(value: Any) -> Problem | None:
        if type(value) in fast:
            return ("", kind, "empty string") if empty_refused and value == "" else None
        found = _kind(value)
        return None if not found or found in accepts else ("", kind, found)

    return test


def _array(ftype: FieldType, ignore_case: bool) -> Test:
    assert ftype.items is not None
    item, expected = _test(ftype.items, ignore_case), str(ftype)

    def test(value: Any) -> Problem | None:
        if value is None:
            return None
        if type(value) is not list and not isinstance(value, list | tuple):
            found = _kind(value)
            return ("", expected, found) if found else None
        for index, element in enumerate(value):
            problem = item(element)
            if problem is not None:
                return (f"[{index}]{problem[0]}", problem[1], problem[2])
        return None

    return test


def _struct(ftype: FieldType, ignore_case: bool) -> Test:
    tests, expected = tuple((name, _test(sub, ignore_case)) for name, sub in ftype.fields), str(ftype)

    def test(value: Any) -> Problem | None:
        if value is None:
            return None
        if type(value) is str:  # the host parses a JSON object's text (Go's json.Unmarshal: "null" is no fields)
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return ("", expected, "string (not JSON)")
            if value is None:
                value = {}
            elif not isinstance(value, dict):
                return ("", expected, f"string (JSON {_kind(value)})")
        elif not isinstance(value, Mapping):
            found = _kind(value)
            return ("", expected, found) if found else None
        for name, field in tests:
            problem = field(_get(value, name, ignore_case))
            if problem is not None:
                return (f".{name}{problem[0]}", problem[1], problem[2])
        return None

    return test


def _test(ftype: FieldType, ignore_case: bool) -> Test:
    if ftype.optional:  # a DEFAULT: the host fills in a missing value, and checks one that is there
        test = _test(replace(ftype, optional=False), ignore_case)
        return lambda value: None if value is _MISSING else test(value)
    if ftype.kind not in _FAST and ftype.kind not in ("array", "struct"):  # "any": a type eKuiper added later
        return lambda value: ("", "a value", "missing") if value is _MISSING else None
    if ftype.kind == "array":
        return _array(ftype, ignore_case)
    if ftype.kind == "struct":
        return _struct(ftype, ignore_case)
    return _scalar(ftype.kind)


def _get(record: Mapping[str, Any], name: str, ignore_case: bool) -> Any:
    """The field as eKuiper's ``Message.Value`` finds it: as written, else (``basic.ignoreCase``) in any case."""
    value = record.get(name, _MISSING)
    if value is _MISSING and ignore_case:
        folded = name.lower()
        for key, candidate in record.items():
            if isinstance(key, str) and key.lower() == folded:
                return candidate
    return value


class SchemaMismatch(Unprocessable):
    """Records the stream's schema would make eKuiper drop (HTTP 422); nothing of the body is delivered."""


@dataclass(frozen=True)
class Schema:
    """A stream's fields, compiled: :meth:`check` raises :class:`SchemaMismatch` for a body with a failing record."""

    fields: Fields
    #: eKuiper's ``basic.ignoreCase``: a field missing as written is looked up case-insensitively
    ignore_case: bool = False
    #: where the fields came from, for the log and the 422's message (``"GET http://…/streams/s/schema"``)
    origin: str = ""

    def __post_init__(self) -> None:
        # a top-level struct is pruned by the host's planner unless the rule reads it with ``->``: never checked.
        # Per field: (name, the value types that pass at once, for an array of scalars the element types that pass at
        # once, the full test) — the full test runs only for what the fast path does not pass at once.
        checked = tuple((name, _fast_types(ftype), _fast_items(ftype), _test(ftype, self.ignore_case),
                         ftype.kind in _EMPTY_REFUSED)
                        for name, ftype in self.fields if ftype.kind != "struct")
        object.__setattr__(self, "_checked", checked)

    @property
    def key(self) -> Hashable:
        return (self.fields, self.ignore_case)

    def check(self, records: Sequence[Record]) -> None:
        """Raise :class:`SchemaMismatch` naming every failing value (the first :data:`MAX_NAMED`) of ``records``.

        A fast scan passes what its value's type (an array: its elements' types) alone shows to pass; what is left,
        rare, gets the field's full test."""
        missing = _MISSING
        suspects: list[tuple[int, str, Test]] | None = None
        index = 0
        for record in records:
            get = record.get
            for name, fast, items, test, empty_refused in self._checked:  # type: ignore[attr-defined]
                value = get(name, missing)
                kind = type(value)
                if kind in fast and not (empty_refused and value == ""):
                    continue
                if kind is list and items is not None:
                    for element in value:
                        if type(element) not in items:
                            break
                    else:
                        continue
                if suspects is None:
                    suspects = []
                suspects.append((index, name, test))
            index += 1
        if suspects is not None:
            self._explain(records, suspects)

    def _explain(self, records: Sequence[Record], suspects: list[tuple[int, str, Test]]) -> None:
        failures: list[dict[str, Any]] = []
        count = 0
        for index, name, test in suspects:
            problem = test(_get(records[index], name, self.ignore_case))
            if problem is None:
                continue
            count += 1
            if len(failures) < MAX_NAMED:
                failures.append({"record": index, "field": name + problem[0], "expected": problem[1],
                                 "found": problem[2]})
        if count:
            named = "; ".join(f"record {f['record']} field '{f['field']}': expected {f['expected']}, found "
                              f"{f['found']}" for f in failures)
            more = count - len(failures)
            raise SchemaMismatch(f"{count} value(s) do not match the stream's schema, which eKuiper checks "
                                 f"(STRICT_VALIDATION) and would drop: {named}"
                                 + (f"; and {more} more" if more else ""), failures=failures, more=more)


def _fast_types(ftype: FieldType) -> frozenset[type]:
    return frozenset(_FAST[ftype.kind]) if ftype.kind in _FAST else frozenset((type(None),))


def _fast_items(ftype: FieldType) -> frozenset[type] | None:
    items = ftype.items
    if ftype.kind != "array" or items is None or items.kind not in _FAST:
        return None
    # an array of datetimes: a string element gets the full test (an empty one is refused)
    return frozenset(_FAST[items.kind]) - ({str} if items.kind in _EMPTY_REFUSED else set())


class CheckedDecoder(Decoder):
    """A decoder whose records are checked against a :class:`Schema`: the app decodes through it like any other, and
    sources with equal decoders and equal schemas still share one decoding (:attr:`key`)."""

    def __init__(self, inner: Decoder, schema: Schema) -> None:
        self.inner, self.schema = inner, schema
        self.format = inner.format

    @property
    def key(self) -> Hashable:
        return (self.inner.key, self.schema.key)

    def decode(self, body: bytes) -> list[Record]:
        records = self.inner.decode(body)
        self._check(records)
        return records

    def _check(self, records: list[Record]) -> None:
        if self.format != "custom":
            self.schema.check(records)
            return
        # a user's function may return what JSON has no word for: NaN or infinity (orjson writes null), a datetime,
        # UUID or enum (a string, a number): checked as the host will read them, the JSON the records are sent as
        try:
            sent = orjson.loads(orjson.dumps(records))
        except orjson.JSONEncodeError:
            return  # not sendable at all: the framing refuses it (500, the decoder's fault)
        self.schema.check(sent)

    def values_bound(self, body: bytes) -> int:
        return self.inner.values_bound(body)

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[Record]:
        records = self.inner.decode_request(body, content_type, limits)
        if limits is not None and len(records) > limits.records:  # a custom decoder's list: refused before checking
            raise TooManyRecords(limits.records)
        self._check(records)
        return records

    def __getattr__(self, name: str) -> Any:  # what a format's decoder has of its own
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
