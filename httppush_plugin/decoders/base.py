"""What every decoder shares: the :class:`Decoder` base class, the errors a body can cause, and two helpers.

A decoder turns one body into records (each a ``dict``) or raises :class:`DecodeError` (400) naming the problem;
:class:`TooManyRecords` (413) when the body holds more than ``httpServerMaxRecords``; :class:`CustomDecoderFault` (500)
when a user's decoder breaks its contract.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from ..answers import BadRequest, ServerFault, TooLarge
from ..errors import ConfigError

Record = dict[str, Any]


class DecodeError(BadRequest, ValueError):
    """The body cannot be turned into records; the message names the problem and goes to the client (HTTP 400)."""


class TooManyRecords(DecodeError):
    """The body holds more records than ``httpServerMaxRecords`` (HTTP 413). Decoders that build records one at a
    time raise it as soon as they pass the limit, so that memory stays bounded by the limit, not the body."""

    status = TooLarge.status

    def __init__(self, limit: int) -> None:
        super().__init__(f"body has more than {limit} records; the limit is {limit} (httpServerMaxRecords)")


class CustomDecoderFault(ServerFault, RuntimeError):
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
