"""FORMAT="binary": the whole body as one record, ``{"self": <base64 of the body>}``."""

from __future__ import annotations

import base64

from .base import Decoder, Record


class BinaryDecoder(Decoder):
    """``{"self": <base64 of the body>}``: the host channel carries JSON only, which can't hold bytes.

    eKuiper (2.4.2) moves ``self`` into the stream's single BYTEA field as that text, and does not decode it even with
    STRICT_VALIDATION (it skips validation for binary streams): a rule gets the bytes with ``decode(field, "base64")``.
    Example: ``BinaryDecoder().decode(b"\\x00\\xff")`` → ``[{"self": "AP8="}]``.
    """

    format = "binary"

    def values_bound(self, body: bytes) -> int:
        return 1

    def decode(self, body: bytes) -> list[Record]:
        return [{"self": base64.b64encode(body).decode("ascii")}]
