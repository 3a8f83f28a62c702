"""eKuiper's field types, as a stream declares them: :class:`FieldType`, read from eKuiper's REST answer
(:func:`from_json_schema`) or from the property ``schema`` (:func:`parse_fields`, eKuiper's own CREATE STREAM text).
``schema.py`` checks records against them.

Example: ``parse_fields("t float, tags array(string)")`` →
``(("t", FieldType("float")), ("tags", FieldType("array", items=FieldType("string"))))``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError

SCALARS = ("bigint", "float", "string", "boolean", "datetime", "bytea")
#: the deepest nesting of arrays and structs read (deeper is refused: parsing and checking recurse once per level)
MAX_DEPTH = 100

@dataclass(frozen=True)
class FieldType:
    """One declared type: a scalar, ``array`` of ``items``, or ``struct`` of ``fields``."""

    kind: str
    items: FieldType | None = None
    fields: tuple[tuple[str, FieldType], ...] = ()
    #: the field has a DEFAULT (eKuiper after 2.4, ``"default"`` in its REST answer): the host fills it in when it
    #: is missing, so it may be missing
    optional: bool = False

    def __str__(self) -> str:
        if self.kind == "array":
            return f"array({self.items})"
        if self.kind == "struct":
            return "struct(" + ", ".join(f"{name} {ftype}" for name, ftype in self.fields) + ")"
        return self.kind


Fields = tuple[tuple[str, FieldType], ...]

# ---------------------------------------------------------------------------------------------------------------------
# Where a schema comes from: eKuiper's REST (GET /streams/{name}/schema) or the property ``schema``
# ---------------------------------------------------------------------------------------------------------------------


def from_json_schema(schema: Mapping[str, Any]) -> Fields:
    """eKuiper's ``GET /streams/{name}/schema`` answer (``ast.JsonStreamField`` by name: ``{"type": "array",
    "items": {...}}``, ``{"type": "struct", "properties": {...}}``) → fields, in name order."""

    def one(node: Any, where: str, depth: int = 1) -> FieldType:
        if depth > MAX_DEPTH:
            raise ValueError(f"{where[:60]}...: nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, Mapping):
            raise ValueError(f"{where[:60]}: {repr(node)[:60]} is not a field type")
        kind = node.get("type")
        if node.get("default") is not None:
            return replace(one({**node, "default": None}, where, depth), optional=True)
        if kind in SCALARS:
            return FieldType(kind)
        if kind == "array":
            return FieldType("array", items=one(node.get("items"), f"{where}[]", depth + 1))
        if kind == "struct":
            props = node.get("properties") or {}
            if not isinstance(props, Mapping):
                raise ValueError(f"{where[:60]}: the properties {repr(props)[:60]} are not a mapping")
            return FieldType("struct", fields=tuple((k, one(v, f"{where}.{k}", depth + 1))
                                                    for k, v in sorted(props.items())))
        return FieldType("any")  # a type this plugin does not know (a later eKuiper's): left to the host

    # a schemaless stream's entry names fields its rules read, without a type (null): eKuiper checks none of them
    return tuple((name, one(node, name)) for name, node in sorted(schema.items())
                 if not (node is None or isinstance(node, Mapping) and not node.get("type")))


_TOKEN = re.compile(r"\s*(?:(`[^`]+`|[A-Za-z_][\w]*)|([(),]))")


def parse_fields(value: Any, prop: str = "schema") -> Fields:
    """The property ``schema``: eKuiper's own field text (``"temperature float, tags array(string), pos struct(x
    bigint, y bigint)"``, type names in any case, as in CREATE STREAM), or a mapping of field name → that type text
    or a nested mapping (a struct). Raises :class:`ConfigError` naming the property."""
    try:
        if isinstance(value, str):
            return _Parser(value).fields(end=True)
        if isinstance(value, Mapping):
            return _from_mapping(value)
    except ValueError as exc:
        raise ConfigError(f"property '{prop}' is {value!r}; {exc}") from None
    raise ConfigError(f"property '{prop}' is {value!r}; must be a mapping of field name to eKuiper type "
                      "(e.g. {temperature: float, tags: \"array(string)\"}) or the fields as in CREATE STREAM")


def _from_mapping(value: Mapping[Any, Any], depth: int = 1) -> Fields:
    if depth > MAX_DEPTH:
        raise ValueError(f"structs nested deeper than {MAX_DEPTH} levels")
    out = []
    for name, text in value.items():
        if isinstance(text, Mapping):
            out.append((str(name), FieldType("struct", fields=_from_mapping(text, depth + 1))))
        elif isinstance(text, str):
            parser = _Parser(text, depth - 1)
            out.append((str(name), parser.type()))
            parser.end()
        else:
            raise ValueError(f"field {name!r} has type {text!r}; a type is text such as 'bigint' or 'array(float)'")
    if not out:
        raise ValueError("no fields")
    return tuple(out)


class _Parser:
    def __init__(self, text: str, depth: int = 0) -> None:
        self.text, self.pos, self.depth = text, 0, depth

    def _next(self) -> str:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            rest = self.text[self.pos:].strip()
            if not rest:
                return ""
            raise ValueError(f"unexpected {rest[:20]!r} at offset {self.pos}")
        self.pos = match.end()
        return match.group(1) or match.group(2)

    def _peek(self) -> str:
        pos = self.pos
        token = self._next()
        self.pos = pos
        return token

    def _expect(self, token: str) -> None:
        found = self._next()
        if found != token:
            raise ValueError(f"expected {token!r} at offset {self.pos}, found {found or 'the end'!r}")

    def end(self) -> None:
        if self._peek():
            raise ValueError(f"unexpected {self.text[self.pos:].strip()[:20]!r} at offset {self.pos}")

    def type(self) -> FieldType:
        name = self._next().lower()
        if name in SCALARS:
            return FieldType(name)
        if name in ("array", "struct"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ValueError(f"arrays and structs nested deeper than {MAX_DEPTH} levels at offset {self.pos}")
            self._expect("(")
            ftype = FieldType("array", items=self.type()) if name == "array" else FieldType("struct",
                                                                                             fields=self.fields())
            self._expect(")")
            self.depth -= 1
            return ftype
        raise ValueError(f"unknown type {name or 'nothing'!r}; the types are {', '.join(SCALARS)}, array(T), "
                         "struct(name T, ...)")

    def fields(self, end: bool = False) -> Fields:
        out = []
        while True:
            name = self._next()
            if not name or name in "(),":
                raise ValueError(f"expected a field name at offset {self.pos}")
            out.append((name.strip("`"), self.type()))
            if self._peek() != ",":
                break
            self._next()
        if end:
            self.end()
        return tuple(out)
