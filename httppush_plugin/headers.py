"""Fixed response headers (property ``responseHeaders``): added to every answer of an endpoint — successes, errors,
its 401s and 429s, and the CORS preflight of its path — never one the protocol owns.

A name the server itself writes or decides (framing, connection management, authentication challenges, CORS, the
request id, ``Retry-After``, …: :data:`PROTOCOL_OWNED`) is refused at start with a :class:`ConfigError` naming it, as
is a name that is not an RFC 9110 token or a value with a control character (CR and LF included: no header
injection), so an endpoint's headers can never override or smuggle a protocol header.

Example: ``parse_response_headers({"X-Frame-Options": "DENY", "Cache-Control": "no-store"})`` →
``(("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"))``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError
from .values import switched_off

#: Names (lower case) whose values the server writes or decides; ``access-control-`` and ``proxy-`` are prefixes.
PROTOCOL_OWNED = frozenset((
    "content-length", "transfer-encoding", "connection", "keep-alive", "date", "content-type", "content-encoding",
    "upgrade", "trailer", "te", "x-request-id", "retry-after", "www-authenticate", "vary", "allow",
    "idempotent-replayed", "server", "host", "expect", "content-range", "accept-ranges", "authentication-info",
))
_OWNED_PREFIXES = ("access-control-", "proxy-")
#: RFC 9110 §5.6.2 token: a header name
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 §5.5 field value: visible ASCII, spaces and tabs inside (obs-text refused: it is read as latin-1 anyway)
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")
#: At most this many headers, each value at most this long: the answer of every request carries them.
MAX_HEADERS, MAX_VALUE = 32, 1024

ResponseHeaders = tuple[tuple[str, str], ...]


def parse_response_headers(value: Any) -> ResponseHeaders:
    """Property ``responseHeaders``: a mapping of header name to value; ``{}`` or null: none."""
    if switched_off(value):
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"property 'responseHeaders' is {value!r}; must be a mapping of header name to value, e.g. "
                          "{X-Frame-Options: DENY, Cache-Control: no-store}")
    if len(value) > MAX_HEADERS:
        raise ConfigError(f"property 'responseHeaders' has {len(value)} headers; at most {MAX_HEADERS}")
    seen: dict[str, str] = {}
    pairs = []
    for name, text in value.items():
        name = str(name)
        lower = name.lower()
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"property 'responseHeaders' has the header name {name!r}; a name is letters, digits "
                              "and !#$%&'*+-.^_`|~ only (RFC 9110 token)")
        if lower in PROTOCOL_OWNED or lower.startswith(_OWNED_PREFIXES):
            raise ConfigError(f"property 'responseHeaders' has the header {name!r}, which the server writes itself "
                              "(framing, connection, authentication, CORS, request id or Retry-After); it cannot be "
                              "set or overridden")
        if lower in seen:
            raise ConfigError(f"property 'responseHeaders' has the header {name!r} twice ({seen[lower]!r}); names are "
                              "case-insensitive")
        if isinstance(text, int | float) and not isinstance(text, bool):  # yaml: max-age=600 is text, 600 a number
            text = str(text)
        if not isinstance(text, str) or len(text) > MAX_VALUE or not _VALUE.fullmatch(text):
            raise ConfigError(f"property 'responseHeaders.{name}' is {text!r}; a value must be 1 to {MAX_VALUE} "
                              "visible ASCII characters (spaces inside allowed; no CR, LF or other control "
                              "characters)")
        seen[lower] = name
        pairs.append((name, text))
    return tuple(pairs)
