"""One small decoder per FORMAT, and a registry.

A plugin source gets no decoding from eKuiper (it is a tuple source, see ``host-contract.md`` §5): the body arrives
here as bytes and leaves as a list of records, each a JSON-ready ``dict``. A decoder is resolved once per source at
configure time; sources whose settings are equal share one decoder (``Decoder.key``), so a body is decoded once per
distinct decoder, however many sources subscribe to the endpoint.

Example: ``DelimitedDecoder(";", ("id", "t")).decode(b"1;20\\n2;21")`` → ``[{"id": "1", "t": "20"},
{"id": "2", "t": "21"}]``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from .config import ConfigError, EndpointConfig

Record = dict[str, Any]


class DecodeError(ValueError):
    """The body cannot be turned into records; the message names the problem and goes to the client (HTTP 4xx)."""


class CustomDecoderFault(RuntimeError):
    """The user's decoder broke its contract: a server-side fault (HTTP 500), not the client's."""


class Decoder:
    """Base class: ``decode`` turns one body into records or raises :class:`DecodeError`."""

    format: str = ""

    @property
    def key(self) -> Hashable:
        """Equal keys mean equal output for every body (used to decode once per distinct decoder)."""
        return (type(self), self.format)

    def decode(self, body: bytes) -> list[Record]:
        raise NotImplementedError

    def messages(self, body: bytes, records: list[Record]) -> list[bytes]:
        """Each record as JSON text, ready for the host envelope."""
        try:
            return [orjson.dumps(record) for record in records]
        except TypeError as exc:
            raise CustomDecoderFault(f"{self.format} decoder produced a value that is not JSON: {exc}") from None


@dataclass(frozen=True)
class SearchPaths:
    """Where schema and decoder files are looked up. The plugin lives in ``<host>/plugins/portable/<name>/``."""

    plugin_dir: Path

    @property
    def host_root(self) -> Path:
        return self.plugin_dir.parents[2] if len(self.plugin_dir.parents) > 2 else self.plugin_dir

    def protobuf_dirs(self) -> list[Path]:
        # eKuiper's own protobuf converter imports from etc/ then data/ (internal/converter/protobuf/converter.go)
        return [
            self.host_root / "etc" / "schemas" / "protobuf",
            self.host_root / "data" / "schemas" / "protobuf",
            self.plugin_dir / "schemas" / "protobuf",
        ]

    def decoder_dirs(self, environ: dict[str, str] | None = None) -> list[Path]:
        env = os.environ if environ is None else environ
        extra = [Path(p) for p in env.get("HTTPPUSH_DECODERS_PATH", "").split(os.pathsep) if p]
        return [*extra, self.plugin_dir / "decoders"]


# ---------------------------------------------------------------------------------------------------------- json


def _big_int(text: str) -> int | float:
    # orjson stops at 64 bits; the host reads every number as float64 anyway (host-contract §4)
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(value)


def _no_constant(name: str) -> Any:
    raise DecodeError(f"body is not valid JSON: {name} is not a JSON number")


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body, parse_int=_big_int, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError(f"body is not valid JSON: {fast_error}") from None


class JsonDecoder(Decoder):
    """Object → one record; array of objects → one record per element (as eKuiper's json converter)."""

    format = "json"

    def messages(self, body: bytes, records: list[Record]) -> list[bytes]:
        # an object body already is the message's JSON text: no need to serialise it again
        if len(records) == 1 and body.lstrip()[:1] == b"{":
            return [body]
        return super().messages(body, records)

    def decode(self, body: bytes) -> list[Record]:
        doc = _parse_json(body)
        if isinstance(doc, dict):
            return [doc]
        if isinstance(doc, list):
            for index, item in enumerate(doc):
                if not isinstance(item, dict):
                    raise DecodeError(
                        f"JSON array element {index} is {_json_kind(item)}; every element must be an object"
                    )
            return doc
        raise DecodeError(f"JSON body is {_json_kind(doc)}; must be an object or an array of objects")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


# -------------------------------------------------------------------------------------------------------- binary


class BinaryDecoder(Decoder):
    """``{"self": <base64 of the body>}``: the host channel carries JSON only, which can't hold bytes.

    eKuiper (2.4.2) moves ``self`` into the stream's single BYTEA field as that text, and does not decode it even with
    STRICT_VALIDATION (it skips validation for binary streams): a rule gets the bytes with ``decode(field, "base64")``.
    """

    format = "binary"

    def decode(self, body: bytes) -> list[Record]:
        return [{"self": base64.b64encode(body).decode("ascii")}]


# ------------------------------------------------------------------------------------------------------ delimited


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} body is not UTF-8 text: byte {exc.start} is {body[exc.start]:#04x}") from None


class DelimitedDecoder(Decoder):
    """One record per non-empty line, values split on the delimiter, all strings.

    Names come from ``fields``; without them ``col0``, ``col1``, …; values past the last name are dropped (as
    eKuiper's converter does). Unlike eKuiper's converter, which splits the whole body and so glues the last value
    of a line to the first of the next, every line is its own record.
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
        for line in _text(body, "delimited").splitlines():
            if not line:
                continue
            values = line.split(self.delimiter)
            if names:
                records.append(dict(zip(names, values)))
            else:
                records.append({f"col{i}": value for i, value in enumerate(values)})
        return records


# ----------------------------------------------------------------------------------------------------- urlencoded

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlencodedDecoder(Decoder):
    """Like Go's ``url.ParseQuery`` (eKuiper's converter): a single value → string, a repeated key → list.

    ``;`` separators and malformed ``%`` escapes are errors there and here.
    """

    format = "urlencoded"

    def decode(self, body: bytes) -> list[Record]:
        text = _text(body, "urlencoded")
        values: dict[str, list[str]] = {}
        for part in text.split("&"):
            if not part:
                continue
            if ";" in part:
                raise DecodeError(f"urlencoded body has ';' in {part[:64]!r}; pairs must be separated by '&'")
            name, _, value = part.partition("=")
            values.setdefault(self._unescape(name), []).append(self._unescape(value))
        return [{k: v[0] if len(v) == 1 else v for k, v in values.items()}]

    @staticmethod
    def _unescape(text: str) -> str:
        bad = _BAD_ESCAPE.search(text)
        if bad:
            raise DecodeError(f"urlencoded body has a malformed escape {text[bad.start():bad.start() + 3]!r}")
        raw = unquote_to_bytes(text.replace("+", " "))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"urlencoded value {text[:64]!r} does not decode to UTF-8 text") from None


# ------------------------------------------------------------------------------------------------------- protobuf


class ProtobufDecoder(Decoder):
    """SCHEMAID ``"<file>.<Message>"``: ``<file>.proto`` from the host's ``etc/`` or ``data/schemas/protobuf`` (REST
    ``POST /schemas/protobuf`` writes the latter) or the plugin's own ``schemas/protobuf``.

    Output as eKuiper's converter: every declared field under its proto name (unset scalars at their defaults; oneof
    members and message fields only when set), integers and enums as numbers, bytes as base64, nested messages as
    objects, repeated fields as lists, wrapper types unwrapped. Better than eKuiper: map fields become objects
    (eKuiper drops them). Compiled with the ``grpcio-tools`` package; no ``protoc`` binary is needed.
    """

    format = "protobuf"

    def __init__(self, schema_id: str, paths: SearchPaths) -> None:
        self.schema_id = schema_id
        file_id, _, message = schema_id.partition(".")
        proto_file, mtime = _find_file(f"{file_id}.proto", paths.protobuf_dirs(), "SCHEMAID", schema_id)
        self.message_class = _compile_message(proto_file, mtime, message, tuple(paths.protobuf_dirs()))
        self._to_record = _message_converter(self.message_class.DESCRIPTOR)

    @property
    def key(self) -> Hashable:
        return (type(self), self.message_class)

    def decode(self, body: bytes) -> list[Record]:
        from google.protobuf.message import DecodeError as ProtoDecodeError

        message = self.message_class()
        try:
            message.ParseFromString(body)
        except (ProtoDecodeError, RuntimeError, ValueError) as exc:
            name = self.message_class.DESCRIPTOR.full_name
            raise DecodeError(f"body is not a valid protobuf {name}: {exc}") from None
        return [self._to_record(message)]


def _find_file(name: str, dirs: Iterable[Path], setting: str, value: str) -> tuple[Path, float]:
    searched = []
    for folder in dirs:
        candidate = folder / name
        if candidate.is_file():
            return candidate, candidate.stat().st_mtime
        searched.append(str(folder))
    raise ConfigError(f"{setting} is {value!r}, but no {name} was found in: {', '.join(searched)}")


_compile_lock = threading.Lock()
_compiled: dict[tuple[Path, float, str], Any] = {}


def _compile_message(proto_file: Path, mtime: float, message: str, include_dirs: tuple[Path, ...]) -> Any:
    """Compile ``proto_file`` (cached by path and mtime) and return the generated class of ``message``."""
    with _compile_lock:
        cache_key = (proto_file, mtime, message)
        if cache_key not in _compiled:
            _compiled[cache_key] = _compile_uncached(proto_file, message, include_dirs)
        return _compiled[cache_key]


def _compile_uncached(proto_file: Path, message: str, include_dirs: tuple[Path, ...]) -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    try:
        import grpc_tools
    except ImportError:
        raise ConfigError("FORMAT=\"protobuf\" needs the Python package grpcio-tools; reinstall the plugin") from None
    with tempfile.TemporaryDirectory(prefix="httppush-proto-") as tmp:
        out = Path(tmp) / "set.pb"
        includes = [f"-I{d}" for d in (proto_file.parent, *include_dirs) if d.is_dir()]
        # A child process, because protoc reports errors on the C++ side's stderr, which we want in the message.
        # It execs at once, so nng's fork-unsafety (host-contract §9) does not apply.
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", *includes, "--include_imports",
             f"--descriptor_set_out={out}", str(proto_file)],
            capture_output=True, text=True, timeout=60,
            env={"PYTHONPATH": str(Path(grpc_tools.__file__).parents[1]), "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().replace(str(proto_file.parent) + "/", "")
            raise ConfigError(f"cannot compile {proto_file.name}: {detail}")
        file_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    package = ""
    for file_proto in file_set.file:
        pool.Add(file_proto)
        if file_proto.name == proto_file.name:
            package = file_proto.package
    for full_name in (message, f"{package}.{message}" if package else ""):
        if not full_name:
            continue
        try:
            return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
        except KeyError:
            continue
    raise ConfigError(f"message type {message!r} not found in {proto_file}")


_WRAPPERS = {
    f"google.protobuf.{name}Value" for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool",
                                                "String", "Bytes")
}


def _message_converter(descriptor: Any) -> Callable[[Any], Record]:
    """Build, once per message type, a function turning a message into a record."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    converters: list[tuple[str, bool, Callable[[Any], Any]]] = []
    for field in descriptor.fields:
        name = field.name
        only_when_set = field.containing_oneof is not None or (
            field.type == FD.TYPE_MESSAGE and not _is_repeated(field)
        )
        converters.append((name, only_when_set, _field_converter(field)))

    def convert(message: Any) -> Record:
        record: Record = {}
        for name, only_when_set, fn in converters:
            if only_when_set and not message.HasField(name):
                continue
            record[name] = fn(getattr(message, name))
        return record

    return convert


def _is_repeated(field: Any) -> bool:
    # protobuf ≥ 5 deprecates `label` in favour of `is_repeated`
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return field.label == field.LABEL_REPEATED


def _field_converter(field: Any) -> Callable[[Any], Any]:
    from google.protobuf.descriptor import FieldDescriptor as FD

    if field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        value_fn = _single_converter(value_field)
        return lambda m: {str(k): value_fn(v) for k, v in m.items()}
    single = _single_converter(field)
    if _is_repeated(field):
        return lambda values: [single(v) for v in values]
    return single


def _single_converter(field: Any) -> Callable[[Any], Any]:
    from google.protobuf.descriptor import FieldDescriptor as FD

    if field.type == FD.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode("ascii")
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        # JSON has no NaN/Infinity and the host cannot read them: they arrive as null
        return lambda v: v if math.isfinite(v) else None
    if field.type == FD.TYPE_MESSAGE:
        if field.message_type.full_name in _WRAPPERS:
            inner = _single_converter(field.message_type.fields_by_name["value"])
            return lambda m: inner(m.value)
        nested: list[Callable[[Any], Record]] = []  # built on first use: message types may be recursive

        def convert_nested(m: Any) -> Record:
            if not nested:
                nested.append(_message_converter(field.message_type))
            return nested[0](m)

        return convert_nested
    return lambda v: v  # ints, enums (as numbers), bools, strings


# --------------------------------------------------------------------------------------------------------- custom


class CustomDecoder(Decoder):
    """A user's function ``decode(body: bytes) -> dict | list[dict]`` named ``"<module>:<function>"``, loaded from
    ``<module>.py`` in ``$HTTPPUSH_DECODERS_PATH`` or the plugin's ``decoders/`` folder.

    It may raise ``ValueError`` to reject a body: the client gets 400 with its message.
    """

    format = "custom"

    def __init__(self, ref: str, paths: SearchPaths) -> None:
        module_name, sep, attr = ref.partition(":")
        if not sep or not module_name or not attr or not module_name.isidentifier():
            raise ConfigError(f"property 'decoder' is {ref!r}; must be \"<module>:<function>\" (e.g. \"kv:decode\")")
        path, mtime = _find_file(f"{module_name}.py", paths.decoder_dirs(), "property 'decoder'", ref)
        module = _load_module(path, mtime)
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"property 'decoder' is {ref!r}, but {path} has no function {attr!r}")
        self.ref = ref
        self.fn: Callable[[bytes], Any] = fn

    @property
    def key(self) -> Hashable:
        return (type(self), self.fn)

    def decode(self, body: bytes) -> list[Record]:
        try:
            result = self.fn(body)
        except ValueError as exc:
            raise DecodeError(f"decoder {self.ref!r} rejected the body: {exc}") from None
        if isinstance(result, dict):
            return [result]
        if isinstance(result, list) and all(isinstance(item, dict) for item in result):
            return result
        raise CustomDecoderFault(f"decoder {self.ref!r} returned {type(result).__name__}; must be a dict or a "
                                 "list of dicts")


_modules_lock = threading.Lock()
_modules: dict[tuple[Path, float], Any] = {}


def _load_module(path: Path, mtime: float) -> Any:
    with _modules_lock:
        if (path, mtime) not in _modules:
            spec = importlib.util.spec_from_file_location(f"httppush_decoders.{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot load decoder module {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # the user's module failed to import: say so at start
                raise ConfigError(f"decoder module {path} failed to load: {type(exc).__name__}: {exc}") from exc
            _modules[(path, mtime)] = module
        return _modules[(path, mtime)]


# ------------------------------------------------------------------------------------------------------- registry

DECODERS: dict[str, Callable[[EndpointConfig, SearchPaths], Decoder]] = {
    "json": lambda cfg, paths: JsonDecoder(),
    "binary": lambda cfg, paths: BinaryDecoder(),
    "delimited": lambda cfg, paths: DelimitedDecoder(cfg.delimiter, cfg.fields),
    "urlencoded": lambda cfg, paths: UrlencodedDecoder(),
    "protobuf": lambda cfg, paths: ProtobufDecoder(cfg.schema_id, paths),
    "custom": lambda cfg, paths: CustomDecoder(cfg.decoder, paths),
}


def build_decoder(cfg: EndpointConfig, paths: SearchPaths) -> Decoder:
    """Resolve the decoder for one source; raises :class:`ConfigError` for anything a start should fail on."""
    try:
        factory = DECODERS[cfg.format]
    except KeyError:
        raise ConfigError(f"FORMAT is {cfg.format!r}; must be one of {', '.join(DECODERS)}") from None
    return factory(cfg, paths)
