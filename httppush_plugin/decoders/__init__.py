"""One small decoder per FORMAT, and a registry.

A plugin source gets no decoding from eKuiper (it is a tuple source, ``docs/host-behaviour.md`` §5): the body arrives
here as bytes and leaves as a list of records, each a ``dict``; turning records into host frames is ``framing.py``'s
job. A decoder is resolved once per source at configure time; sources whose settings are equal share one decoder
(``Decoder.key``), so a body is decoded once per distinct decoder, however many sources subscribe to the endpoint.

Example: ``DelimitedDecoder(";", ("id", "t")).decode(b"1;20\\n2;21")`` → ``[{"id": "1", "t": "20"},
{"id": "2", "t": "21"}]``.

The base class lives here and each format in its own module; the format modules import the base from this package,
so their imports come after it, at the bottom of this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, EndpointConfig, host_root

Record = dict[str, Any]


class DecodeError(ValueError):
    """The body cannot be turned into records; the message names the problem and goes to the client (HTTP 4xx)."""


class TooManyRecords(DecodeError):
    """The body holds more records than ``httpServerMaxRecords`` (HTTP 413). Decoders that build records one at a
    time raise it as soon as they pass the limit, so that memory stays bounded by the limit, not the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body has more than {limit} records; the limit is {limit} (httpServerMaxRecords)")


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

    def decode_request(self, body: bytes, content_type: str, limit: int | None = None) -> list[Record]:
        """:meth:`decode`, told the request's ``Content-Type``: for formats that read a body by its media type
        (``application/x-ndjson`` makes :class:`JsonDecoder` read one object per line), and the record ``limit``,
        which decoders that build records one by one enforce as they go (:class:`TooManyRecords`)."""
        return self.decode(body)


@dataclass(frozen=True)
class SearchPaths:
    """Where schema and decoder files are looked up. The plugin lives in ``<host>/plugins/portable/<name>/``."""

    plugin_dir: Path

    @property
    def host_root(self) -> Path:
        return host_root(self.plugin_dir)

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


# The format modules subclass Decoder, so they are imported once it exists.
from .binary import BinaryDecoder  # noqa: E402
from .custom import CustomDecoder  # noqa: E402
from .delimited import DelimitedDecoder  # noqa: E402
from .json import MAX_JSON_DEPTH, NDJSON_MEDIA_TYPES, JsonDecoder  # noqa: E402
from .protobuf import ProtobufDecoder, _compile_message  # noqa: E402
from .urlencoded import UrlencodedDecoder  # noqa: E402

DECODERS: dict[str, Callable[[EndpointConfig, SearchPaths], Decoder]] = {
    "json": lambda cfg, paths: JsonDecoder(lines=cfg.framing == "lines"),
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


__all__ = [
    "DECODERS",
    "MAX_JSON_DEPTH",
    "NDJSON_MEDIA_TYPES",
    "BinaryDecoder",
    "CustomDecoder",
    "CustomDecoderFault",
    "DecodeError",
    "Decoder",
    "DelimitedDecoder",
    "JsonDecoder",
    "ProtobufDecoder",
    "Record",
    "SearchPaths",
    "UrlencodedDecoder",
    "_compile_message",
    "body_text",
    "build_decoder",
    "find_file",
]
