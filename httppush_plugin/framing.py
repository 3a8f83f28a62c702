"""The one place where records become bytes for eKuiper.

eKuiper's portable runtime reads one JSON document per message, ``{"message": {...}, "meta": {...}}``, and decodes
it with Go's ``encoding/json`` (``docs/host-behaviour.md`` §4). Every record is serialised here with orjson, never
passed through as the client sent it: orjson's output is always UTF-8 JSON that Go accepts (no NaN, no Infinity, no
lone surrogates), so a record answered 2xx is a record the host can read. A record orjson refuses is the client's
fault for the built-in formats (400) and the decoder's for a custom one (500).

Each message travels in an SP-over-IPC frame, ``01 <length:u64 BE> <body>`` (mangos ``transport/connipc_posix.go``).

Example::

    frames = frame_records([{"t": 1}, {"t": 2}], b'{"path":"/a"}', custom=False)
    frames.data   # b'\\x01\\x00…\\x1d{"message":{"t":1},"meta":{"path":"/a"}}\\x01…'
    frames.count_within(40)   # → whole frames in the first 40 bytes
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import orjson

from .decoders import CustomDecoderFault, DecodeError

_TAG = b"\x01"
_PREFIX = b'{"message":'


class Frames:
    """Framed records, built once and sent to every source that receives the same records."""

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: list[int]) -> None:
        self.data = data
        #: ``ends[i]``: offset just past frame ``i`` in :attr:`data`
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    def count_within(self, nbytes: int) -> int:
        """How many whole frames lie in the first ``nbytes`` bytes."""
        return bisect_right(self.ends, nbytes)


def frame_records(records: Sequence[Any], meta: bytes | None, custom: bool = False) -> Frames:
    """Serialise and frame ``records``; raises :class:`DecodeError` (or :class:`CustomDecoderFault` when
    ``custom``) naming the first record that is not representable as JSON for the host."""
    suffix = b',"meta":' + meta + b"}" if meta is not None else b"}"
    dumps = orjson.dumps
    if len(records) == 1:  # the common body: one record, one frame
        try:
            record = dumps(records[0])
        except orjson.JSONEncodeError:
            pass  # explained below
        else:
            size = len(_PREFIX) + len(record) + len(suffix)
            return Frames(b"".join((_TAG, size.to_bytes(8, "big"), _PREFIX, record, suffix)), [size + 9])
    parts: list[bytes] = []
    ends: list[int] = []
    end = 0
    try:
        for record in records:
            payload = _PREFIX + dumps(record) + suffix
            size = len(payload)
            parts.append(_TAG + size.to_bytes(8, "big") + payload)
            end += size + 9
            ends.append(end)
    except orjson.JSONEncodeError as exc:
        index = len(ends)
        if custom:
            raise CustomDecoderFault(f"the decoder's record {index} is not JSON eKuiper can read: {exc}") from None
        raise DecodeError(f"record {index} cannot be passed to eKuiper: {exc}") from None
    return Frames(parts[0] if len(parts) == 1 else b"".join(parts), ends)
