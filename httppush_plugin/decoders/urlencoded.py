"""FORMAT="urlencoded": one record from a form body, like Go's ``url.ParseQuery`` (eKuiper's converter)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from .base import DecodeError, Decoder, Limits, Record, body_text, count, too_many_fields

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlencodedDecoder(Decoder):
    """Like Go's ``url.ParseQuery`` (eKuiper's converter): a single value → string, a repeated key → list.

    ``;`` separators and malformed ``%`` escapes are errors there and here. Example:
    ``UrlencodedDecoder().decode(b"a=1&a=2&b=x+y")`` → ``[{"a": ["1", "2"], "b": "x y"}]``.
    """

    format = "urlencoded"

    def decode(self, body: bytes, limits: Limits | None = None) -> list[Record]:
        text = body_text(body, "urlencoded")
        if limits is not None:  # every '&' starts one more pair: counted before any is split off
            pairs = count(text, "&") + 1
            if pairs > limits.fields:
                raise too_many_fields(limits.fields, f"the urlencoded body (up to {pairs} '&'-separated pairs)")
        values: dict[str, Any] = {}
        repeated: set[str] = set()  # names whose value is a list already (a list per name would cost 88 bytes each)
        unescape = self._unescape
        for part in text.split("&"):
            if not part:
                continue
            if ";" in part:
                raise DecodeError(f"urlencoded body has ';' in {part[:64]!r}; pairs must be separated by '&'")
            name, _, value = part.partition("=")
            name, value = unescape(name), unescape(value)
            if name not in values:
                values[name] = value
            elif name in repeated:
                values[name].append(value)
            else:
                values[name] = [values[name], value]
                repeated.add(name)
        return [values]

    def decode_request(self, body: bytes, content_type: str, limits: Limits | None = None) -> list[Record]:
        return self.decode(body, limits)

    def values_bound(self, body: bytes) -> int:
        return 2 * (count(body, b"&") + 1)  # a key and a value per pair

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
