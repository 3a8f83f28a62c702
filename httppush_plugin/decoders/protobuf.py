"""FORMAT="protobuf": one record per message, SCHEMAID ``"<file>.<Message>"``, compiled in-process from ``.proto``."""

from __future__ import annotations

import base64
import math
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..layout import SearchPaths
from .base import DecodeError, Decoder, Record, find_file

# The file part of SCHEMAID names a file directly inside a schema folder: no path separators, no "..", no dot files
_FILE_ID = re.compile(r"[A-Za-z0-9_-]+")


class ProtobufDecoder(Decoder):
    """SCHEMAID ``"<file>.<Message>"``: ``<file>.proto`` from the host's ``etc/`` or ``data/schemas/protobuf`` (REST
    ``POST /schemas/protobuf`` writes the latter) or the plugin's own ``schemas/protobuf``.

    Output as eKuiper's converter: every declared field under its proto name (unset scalars at their defaults; oneof
    members and message fields only when set), integers and enums as numbers, bytes as base64, nested messages as
    objects, repeated fields as lists, wrapper types unwrapped. Better than eKuiper: map fields become objects
    (eKuiper drops them). Compiled with the ``grpcio-tools`` package; no ``protoc`` binary is needed.
    Example: SCHEMAID ``"point.Point"`` reads ``point.proto`` and decodes each body as message ``Point``.
    """

    format = "protobuf"

    def __init__(self, schema_id: str, paths: SearchPaths) -> None:
        self.schema_id = schema_id
        file_id, _, message = schema_id.partition(".")
        if not _FILE_ID.fullmatch(file_id) or not message:
            raise ConfigError(f"SCHEMAID is {schema_id!r}; must be \"<file>.<Message>\" where <file> is a plain file "
                              "name of letters, digits, '_' and '-' (no '/', '\\', '..' or leading dot), e.g. "
                              "\"point.Point\" for point.proto")
        dirs = paths.protobuf_dirs()
        proto_file, mtime = find_file(f"{file_id}.proto", dirs, "SCHEMAID", schema_id)
        self.message_class = _compile_message(proto_file, mtime, message, tuple(dirs))
        self._to_record = _message_converter(self.message_class.DESCRIPTOR)

    @property
    def key(self) -> Hashable:
        return (type(self), self.message_class)

    def values_bound(self, body: bytes) -> int:
        return len(body)  # every field takes a byte at least (a packed repeated varint)

    def decode(self, body: bytes) -> list[Record]:
        from google.protobuf.message import DecodeError as ProtoDecodeError

        message = self.message_class()
        try:
            message.ParseFromString(body)
        except (ProtoDecodeError, RuntimeError, ValueError) as exc:
            name = self.message_class.DESCRIPTOR.full_name
            raise DecodeError(f"body is not a valid protobuf {name}: {exc}") from None
        try:
            return [self._to_record(message)]
        except _NotUtf8 as exc:  # proto2 parses text fields without checking them
            name = self.message_class.DESCRIPTOR.full_name
            raise DecodeError(f"protobuf {name} field {exc.field!r} holds text that is not UTF-8") from None


class _NotUtf8(ValueError):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def _text(field_name: str) -> Callable[[Any], str]:
    """A string field's value; proto2 hands over bytes (or fails to) when the wire text is not UTF-8."""

    def convert(value: Any) -> str:
        if type(value) is not str:
            raise _NotUtf8(field_name)
        return value

    return convert


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
        # It execs at once, so nng's fork-unsafety (docs/host-behaviour.md §8) does not apply.
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
        key_type = field.message_type.fields_by_name["key"].type
        key_fn: Callable[[Any], str] = (_text(field.name) if key_type == FD.TYPE_STRING else
                                        (lambda k: "true" if k else "false") if key_type == FD.TYPE_BOOL else str)

        def convert_map(m: Any) -> dict[str, Any]:
            try:
                return {key_fn(k): value_fn(v) for k, v in m.items()}
            except (UnicodeDecodeError, _NotUtf8):
                raise _NotUtf8(field.name) from None

        return convert_map
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
    if field.type == FD.TYPE_STRING:
        return _text(field.name)
    return lambda v: v  # ints, enums (as numbers), bools
