"""``auth: {type: hmac}``: a signature in a header, as webhooks send one, in two modes.

- **Body only** (the default, as GitHub sends it): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.
- **Timestamped** (with ``timestampHeader``, as Slack and Stripe sign): the sender puts the Unix time in that header
  and signs the canonical string ``<timestamp> LF <METHOD> LF <request target> LF <body>`` (:func:`canonical`): the
  method and the request target as in the request line (path and query, exactly as sent), the body's raw bytes. A
  request whose timestamp is more than ``window`` seconds from the plugin's clock is refused (401, saying so), so a
  captured request cannot be replayed later, nor against another path or method.

The secret is kept as bytes that no ``repr``, log line or message shows; the comparison is
:func:`hmac.compare_digest`. The principal (``meta(user)``) is ``hmac``.

Example: ``HmacAuth.from_props({"secret": "s", "timestampheader": "X-Timestamp"})`` admits a ``POST /hook`` whose
``X-Hub-Signature-256`` is ``sha256=`` + hex HMAC-SHA256 of ``b"1733212800\\nPOST\\n/hook\\n" + body``.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .credentials import REALM, Authenticator, AuthError, Headers, header, secret
from .errors import ConfigError
from .request import RequestHead
from .values import seconds

HMAC_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
HMAC_ENCODINGS = ("hex", "base64")
#: GitHub's webhook signature header (https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries)
DEFAULT_HMAC_HEADER = "X-Hub-Signature-256"
#: ``auth.window``: how far (seconds, either way) a signed timestamp may be from the plugin's clock.
DEFAULT_WINDOW_S = 300
#: The keys ``auth`` of type ``hmac`` takes, lower-cased (eKuiper lowercases a yaml file's keys) → as documented.
HMAC_KEYS = {"secret": "secret", "header": "header", "algorithm": "algorithm", "prefix": "prefix",
             "encoding": "encoding", "timestampheader": "timestampHeader", "window": "window"}
_clock = time.time


def canonical(timestamp: bytes, method: str, target: bytes, body: bytes) -> bytes:
    """What a timestamped signature signs: ``<timestamp>\\n<METHOD>\\n<request target>\\n<body>``."""
    return b"\n".join((timestamp, method.encode("latin-1"), target, body))


@dataclass(frozen=True)
class HmacAuth(Authenticator):
    """A signature of the raw body (or, with ``timestamp_header``, of :func:`canonical`) in ``header``."""

    kind: ClassVar[str] = "hmac"
    needs_body: ClassVar[bool] = True
    header: str
    algorithm: str
    prefix: str
    encoding: str
    secret: bytes = field(repr=False)
    #: the header with the signed Unix time; empty: body-only signatures
    timestamp_header: str = ""
    window: float = DEFAULT_WINDOW_S

    @property
    def challenge(self) -> str:
        # Not a registered scheme: RFC 9110 wants a challenge in every 401, and this one says what is expected.
        stamped = f', timestamp="{self.timestamp_header}"' if self.timestamp_header else ""
        return f'HMAC realm="{REALM}", header="{self.header}", algorithm="{self.algorithm}"{stamped}'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        if self.timestamp_header:
            raise AuthError("a timestamped signature needs the request's method and target: use verify()")
        return self._check(headers, body, body)

    def verify(self, head: RequestHead, body: bytes) -> str:
        if not self.timestamp_header:
            return self._check(head.headers, body, body)
        stamp = header(head.headers, self.timestamp_header.lower().encode("latin-1"))
        if stamp is None:
            raise AuthError(f"this endpoint needs the signature's Unix time in the header '{self.timestamp_header}'")
        stamp = stamp.strip()
        if not stamp.isdigit() or len(stamp) > 12:
            raise AuthError(f"the header '{self.timestamp_header}' must be the Unix time in whole seconds")
        user = self._check(head.headers, canonical(stamp, head.method, head.target, body), body)
        off = int(stamp) - _clock()
        if abs(off) > self.window:
            raise AuthError(f"the signed time in '{self.timestamp_header}' is {abs(off):.0f} s "
                            f"{'behind' if off < 0 else 'ahead of'} the server's clock; this endpoint accepts at most "
                            f"{self.window:g} s (a replayed or delayed request): sign again with the current time")
        return user

    def _check(self, headers: Headers, signed: bytes, body: bytes) -> str:
        given = header(headers, self.header.lower().encode("latin-1"))
        if given is None:
            raise AuthError(f"this endpoint needs the {'request' if self.timestamp_header else 'body'}'s signature "
                            f"in the header '{self.header}'")
        mac = hmac.new(self.secret, signed, self.algorithm).digest()
        signature = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        expected = (self.prefix + signature).encode()
        given = given.strip()
        if self.encoding == "hex":  # hex digits in either case
            expected, given = expected.lower(), given.lower()
        if not hmac.compare_digest(given, expected):
            what = "the timestamp, method, path and body" if self.timestamp_header else "the body"
            raise AuthError(f"the signature in '{self.header}' does not match {what}")
        return "hmac"

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> HmacAuth:
        algorithm = str(props.get("algorithm") or "sha256").lower()
        if algorithm not in HMAC_ALGORITHMS:
            raise ConfigError(f"property 'auth.algorithm' is {props.get('algorithm')!r}; must be one of "
                              f"{', '.join(HMAC_ALGORITHMS)}")
        encoding = str(props.get("encoding") or "hex").lower()
        if encoding not in HMAC_ENCODINGS:
            raise ConfigError(f"property 'auth.encoding' is {props.get('encoding')!r}; must be hex or base64")
        name = _header_name("auth.header", props.get("header") or DEFAULT_HMAC_HEADER)
        stamped = _header_name("auth.timestampHeader", props["timestampheader"]) \
            if props.get("timestampheader") else ""
        if "window" in props and not stamped:
            raise ConfigError("property 'auth.window' is set, but 'auth.timestampHeader' is not: the window is how "
                              "far a signed timestamp may be from the clock; name the header that carries it")
        window = seconds("property 'auth.window'", props.get("window") or DEFAULT_WINDOW_S)
        prefix = props.get("prefix")  # GitHub's "sha256=" for hex; none for base64 (as Shopify sends it)
        prefix = (f"{algorithm}=" if encoding == "hex" else "") if prefix is None else str(prefix)
        if "secret" not in props:
            raise ConfigError("property 'auth' of type 'hmac' needs 'secret': the shared secret, or {env: NAME}")
        return cls(name, algorithm, prefix, encoding, secret(props["secret"], "auth.secret"), stamped, window)


def _header_name(key: str, value: Any) -> str:
    name = str(value)
    if not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"property '{key}' is {name!r}; must be an HTTP header name, e.g. "
                          f"{DEFAULT_HMAC_HEADER!r}")
    return name
