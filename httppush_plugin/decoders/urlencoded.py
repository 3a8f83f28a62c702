"""FORMAT="urlencoded": one record from a form body, like Go's ``url.ParseQuery`` (eKuiper's converter)."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from .base import DecodeError, Decoder, Record, body_text

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlencodedDecoder(Decoder):
    """Like Go's ``url.ParseQuery`` (eKuiper's converter): a single value → string, a repeated key → list.

    ``;`` separators and malformed ``%`` escapes are errors there and here. Example:
    ``UrlencodedDecoder().decode(b"a=1&a=2&b=x+y")`` → ``[{"a": ["1", "2"], "b": "x y"}]``.
    """

    format = "urlencoded"

    def decode(self, body: bytes) -> list[Record]:
        text = body_text(body, "urlencoded")
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
