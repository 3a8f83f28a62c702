"""Who may push: one small authenticator per kind, a registry, and the parser of the config group's ``auth`` property.

A route (path + method) has at most one authenticator: every source subscribed to it must agree
(``routing.EndpointTable.add``). The application calls :meth:`Authenticator.admit`: for the header-only kinds
(``basic``, ``bearer``, ``clientcert``) as soon as a request's head is in, so a client without the right credentials
gets its 401 before sending the body; for ``hmac``, which needs the whole body, before decoding.

Secrets are kept as SHA-256 digests (``basic``, ``bearer``) or bytes (``hmac``) that no ``repr``, log line or error
message shows, and every comparison is :func:`hmac.compare_digest` over equal-length digests, against every
configured credential, so that neither the answer's timing nor its text tells which part was wrong.

Example (a config group's property, as eKuiper passes it)::

    parse_auth({"type": "bearer", "tokens": {"gateway-7": "tok-123"}})
    # → BearerAuth(names=('gateway-7',)); a request with "Authorization: Bearer tok-123" is "gateway-7"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .answers import Unauthorized
from .errors import ConfigError
from .request import RequestHead

#: The realm every challenge names (``WWW-Authenticate: Basic realm="httppush"``).
REALM = "httppush"
AUTH_TYPES = ("none", "basic", "bearer", "hmac", "clientcert")
HMAC_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
HMAC_ENCODINGS = ("hex", "base64")
#: GitHub's webhook signature header (https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries)
DEFAULT_HMAC_HEADER = "X-Hub-Signature-256"

Headers = list[tuple[bytes, bytes]]


class AuthError(ValueError):
    """A request's credentials are missing or wrong; the message goes to the client with 401, so it never holds
    anything the client sent or anything configured."""


class Authenticator:
    """Base class: :meth:`authenticate` returns the principal (``meta(user)``) or raises :class:`AuthError`."""

    kind: ClassVar[str] = ""
    #: checked with the whole body (after it is read) instead of as soon as the headers are in
    needs_body: ClassVar[bool] = False

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401 (RFC 9110 §11.6.1: every 401 carries one)."""
        raise NotImplementedError

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        raise NotImplementedError

    def admit(self, head: RequestHead, body: bytes = b"") -> str:
        """The principal this request is (``meta(user)``); raises :class:`~.answers.Unauthorized` (401, with the
        challenge) otherwise. The header-only kinds are admitted from the head, ``hmac`` with the whole body."""
        try:
            return self.authenticate(head.headers, head.peercert, body)
        except AuthError as exc:
            raise Unauthorized(str(exc), self.challenge) from None

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> Authenticator:
        """Build from the ``auth`` mapping (its ``type`` already checked); raises :class:`ConfigError`."""
        raise NotImplementedError


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if len(key) == len(name) and key.lower() == name:
            return value
    return None


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _match(given: bytes, names: tuple[str, ...], digests: tuple[bytes, ...]) -> str | None:
    """The name whose digest equals ``given``'s; every digest is compared, whatever matched before."""
    found = None
    for name, digest in zip(names, digests, strict=True):
        if hmac.compare_digest(given, digest) and found is None:
            found = name
    return found


def _credentials(headers: Headers, scheme: bytes) -> bytes:
    """The credentials after ``Authorization: <scheme> ``; :class:`AuthError` when there are none of that scheme."""
    value = _header(headers, b"authorization")
    if value is None:
        raise AuthError("this endpoint needs credentials: send an 'Authorization' header")
    given_scheme, _, credentials = value.strip().partition(b" ")
    if given_scheme.lower() != scheme.lower():
        raise AuthError(f"this endpoint needs 'Authorization: {scheme.decode()} …'")
    return credentials.strip()


@dataclass(frozen=True)
class BasicAuth(Authenticator):
    """``Authorization: Basic base64(user:password)`` (RFC 7617) against a list of users."""

    kind: ClassVar[str] = "basic"
    names: tuple[str, ...]
    #: sha256("<user>:<password>") per user, in the order of :attr:`names`
    digests: tuple[bytes, ...] = field(repr=False)

    @property
    def challenge(self) -> str:
        return f'Basic realm="{REALM}", charset="UTF-8"'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        try:
            pair = base64.b64decode(_credentials(headers, b"Basic"), validate=True)
        except binascii.Error:
            raise AuthError("the Basic credentials are not base64 of 'user:password'") from None
        # user and password are compared as one digest: the timing tells nothing about which of them was wrong
        user = _match(_digest(pair), self.names, self.digests)
        if user is None:
            raise AuthError("wrong user name or password")
        return user

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> BasicAuth:
        users = props.get("users")
        if not isinstance(users, Mapping) or not users:
            raise ConfigError(f"property 'auth.users' is {_shape(users)}; type 'basic' needs a mapping of user name "
                              "to password, e.g. {alice: \"<password>\"} (or {alice: {env: ALICE_PASSWORD}})")
        names, digests = [], []
        for name, secret in users.items():
            name = str(name)
            if not name or ":" in name:
                raise ConfigError(f"property 'auth.users' has the user name {name!r}; a name must be non-empty and "
                                  "without ':' (RFC 7617)")
            names.append(name)
            digests.append(_digest(name.encode() + b":" + _secret(secret, f"auth.users.{name}")))
        return cls(tuple(names), tuple(digests))


@dataclass(frozen=True)
class BearerAuth(Authenticator):
    """``Authorization: Bearer <token>`` (RFC 6750) against a list of tokens, each naming a principal."""

    kind: ClassVar[str] = "bearer"
    names: tuple[str, ...]
    digests: tuple[bytes, ...] = field(repr=False)

    @property
    def challenge(self) -> str:
        return f'Bearer realm="{REALM}"'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        name = _match(_digest(_credentials(headers, b"Bearer")), self.names, self.digests)
        if name is None:
            raise AuthError("wrong bearer token")
        return name

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> BearerAuth:
        # Principal → token, never token → principal: eKuiper lowercases every key of a yaml file's groups
        # (internal/conf/load.go normalize), which would change a token that is a key.
        tokens = props.get("tokens")
        if isinstance(tokens, Mapping) and tokens:
            pairs = [(str(name), _secret(token, f"auth.tokens.{name}")) for name, token in tokens.items()]
        elif isinstance(tokens, list) and tokens:
            pairs = [(f"token#{index}", _secret(token, f"auth.tokens[{index}]")) for index, token in enumerate(tokens)]
        else:
            raise ConfigError(f"property 'auth.tokens' is {_shape(tokens)}; type 'bearer' needs a mapping of name to "
                              "token, e.g. {gateway-7: \"<token>\"}, or a list of tokens")
        return cls(tuple(name for name, _ in pairs), tuple(_digest(token) for _, token in pairs))


@dataclass(frozen=True)
class HmacAuth(Authenticator):
    """A signature of the raw body in a header, as webhooks send it: GitHub's ``X-Hub-Signature-256:
    sha256=<hex HMAC-SHA256 of the body>`` by default. The principal is ``hmac``."""

    kind: ClassVar[str] = "hmac"
    needs_body: ClassVar[bool] = True
    header: str
    algorithm: str
    prefix: str
    encoding: str
    secret: bytes = field(repr=False)

    @property
    def challenge(self) -> str:
        # Not a registered scheme: RFC 9110 wants a challenge in every 401, and this one says what is expected.
        return f'HMAC realm="{REALM}", header="{self.header}", algorithm="{self.algorithm}"'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        given = _header(headers, self.header.lower().encode("latin-1"))
        if given is None:
            raise AuthError(f"this endpoint needs the body's signature in the header '{self.header}'")
        mac = hmac.new(self.secret, body, self.algorithm).digest()
        signature = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        expected = (self.prefix + signature).encode()
        given = given.strip()
        if self.encoding == "hex":  # hex digits in either case
            expected, given = expected.lower(), given.lower()
        if not hmac.compare_digest(given, expected):
            raise AuthError(f"the signature in '{self.header}' does not match the body")
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
        header = str(props.get("header") or DEFAULT_HMAC_HEADER)
        if not header.isascii() or not header.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"property 'auth.header' is {header!r}; must be an HTTP header name, e.g. "
                              f"{DEFAULT_HMAC_HEADER!r}")
        prefix = props.get("prefix")  # GitHub's "sha256=" for hex; none for base64 (as Shopify sends it)
        prefix = (f"{algorithm}=" if encoding == "hex" else "") if prefix is None else str(prefix)
        if "secret" not in props:
            raise ConfigError("property 'auth' of type 'hmac' needs 'secret': the shared secret, or {env: NAME}")
        return cls(header, algorithm, prefix, encoding, _secret(props["secret"], "auth.secret"))


@dataclass(frozen=True)
class ClientCertAuth(Authenticator):
    """A client certificate verified by the server's TLS (``httpServerTls.cafile``, mutual TLS); the principal is its
    subject's common name (CN)."""

    kind: ClassVar[str] = "clientcert"

    @property
    def challenge(self) -> str:
        # Not a registered scheme either: the credentials belong in the TLS handshake, not in a header.
        return f'ClientCertificate realm="{REALM}"'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        if not peercert:
            raise AuthError("this endpoint needs a client certificate signed by the server's CA (mutual TLS)")
        names = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]
        if not names:
            raise AuthError("the client certificate's subject has no common name (CN)")
        return str(names[-1])

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> ClientCertAuth:
        return cls()


#: ``auth.type`` → its authenticator class (``none`` is the absence of one).
AUTHENTICATORS: dict[str, type[Authenticator]] = {"basic": BasicAuth, "bearer": BearerAuth, "hmac": HmacAuth,
                                  "clientcert": ClientCertAuth}
#: The keys each type takes besides ``type``.
_KEYS = {"none": (), "basic": ("users",), "bearer": ("tokens",),
         "hmac": ("secret", "header", "algorithm", "prefix", "encoding"), "clientcert": ()}


def parse_auth(value: Any) -> Authenticator | None:
    """The config group's ``auth`` property → its authenticator, ``None`` for none. Raises :class:`ConfigError`
    naming the key; a message never quotes a secret (only names, types and the non-secret settings)."""
    if value in (None, "", {}) or (isinstance(value, str) and value.lower() == "none"):
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"property 'auth' is {_shape(value)}; must be a mapping with a 'type' "
                          f"({', '.join(AUTH_TYPES)}), e.g. {{type: basic, users: {{alice: \"<password>\"}}}}")
    kind = str(value.get("type") or "").lower()
    if kind not in AUTH_TYPES:
        raise ConfigError(f"property 'auth.type' is {value.get('type')!r}; must be one of {', '.join(AUTH_TYPES)}")
    unknown = [str(key) for key in value if key != "type" and key not in _KEYS[kind]]
    if unknown:
        allowed = ", ".join(_KEYS[kind]) or "nothing else"
        raise ConfigError(f"property 'auth' has the key {unknown[0]!r}, unknown for type '{kind}'; it takes {allowed}")
    if kind == "none":
        return None
    return AUTHENTICATORS[kind].from_props(value)


def describe(auth: Authenticator | None) -> str:
    """A description of ``auth`` for messages, without secrets: ``basic (2 users)``."""
    if auth is None:
        return "none"
    if isinstance(auth, BasicAuth | BearerAuth):  # no names: a token mistaken for a name must not show up here
        count = len(auth.names)
        return f"{auth.kind} ({count} {'user' if auth.kind == 'basic' else 'token'}{'s' if count != 1 else ''})"
    if isinstance(auth, HmacAuth):
        return f"hmac ({auth.algorithm} in {auth.header})"
    return auth.kind


def _secret(value: Any, key: str) -> bytes:
    """A secret: a string, or ``{env: NAME}`` to read it from the plugin's environment (inherited from eKuiper)."""
    if isinstance(value, Mapping) and set(value) == {"env"}:
        name = str(value["env"])
        secret = os.environ.get(name, "")
        if not secret:
            raise ConfigError(f"property '{key}' reads the environment variable {name!r}, which is not set (or "
                              "empty) in the plugin's environment, inherited from eKuiper's")
        return secret.encode()
    if not isinstance(value, str):
        raise ConfigError(f"property '{key}' is {_shape(value)}; a secret must be a string (quote it in yaml) or "
                          "{env: NAME}")
    if not value:
        raise ConfigError(f"property '{key}' is empty; a secret must not be")
    return value.encode()


def _shape(value: Any) -> str:
    """What a value is, without showing it (it may be a secret)."""
    if value is None:
        return "missing"
    if isinstance(value, Mapping):
        return "an empty mapping" if not value else "a mapping"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"
