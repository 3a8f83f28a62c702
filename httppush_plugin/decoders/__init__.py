"""One small decoder per FORMAT, and a registry.

A plugin source gets no decoding from eKuiper (it is a tuple source, ``docs/host-behaviour.md`` §5): the body arrives
here as bytes and leaves as a list of records, each a ``dict``; turning records into host frames is ``framing.py``'s
job. A decoder is resolved once per source at configure time; sources whose settings are equal share one decoder
(``Decoder.key``), so a body is decoded once per distinct decoder, however many sources subscribe to the endpoint.

Example: ``DelimitedDecoder(";", ("id", "t")).decode(b"1;20\\n2;21")`` → ``[{"id": "1", "t": "20"},
{"id": "2", "t": "21"}]``.

The base class and the errors live in ``base.py``, each format in its own module, and the registry here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ..layout import SearchPaths
from ..properties import EndpointConfig
from .base import (
    VALUE_BYTES,
    CustomDecoderFault,
    DecodeError,
    Decoder,
    Limits,
    OverLimit,
    Record,
    TooManyRecords,
    body_text,
    find_file,
    held_bound,
)
from .binary import BinaryDecoder
from .custom import CustomDecoder
from .delimited import DelimitedDecoder
from .json import MAX_JSON_DEPTH, NDJSON_MEDIA_TYPES, JsonDecoder
from .protobuf import ProtobufDecoder, _compile_message
from .urlencoded import UrlencodedDecoder

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
    "Limits",
    "OverLimit",
    "ProtobufDecoder",
    "Record",
    "SearchPaths",
    "TooManyRecords",
    "UrlencodedDecoder",
    "VALUE_BYTES",
    "_compile_message",
    "body_text",
    "build_decoder",
    "find_file",
    "held_bound",
]
