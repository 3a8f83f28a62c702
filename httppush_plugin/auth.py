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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .credentials import REALM, Authenticator, AuthError, Headers, NotAllowed, header, secret, shape
from .errors import ConfigError
from .jwtauth import JWT_KEYS, JwtAuth
from .signatures import HMAC_KEYS, HmacAuth

__all__ = ["AUTHENTICATORS", "AUTH_TYPES", "AuthError", "Authenticator", "BasicAuth", "BearerAuth", "ClientCertAuth",
           "HmacAuth", "JwtAuth", "describe", "parse_auth"]

AUTH_TYPES = ("none", "basic", "bearer", "hmac", "clientcert", "jwt")


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
    value = header(headers, b"authorization")
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
            raise ConfigError(f"property 'auth.users' is {shape(users)}; type 'basic' needs a mapping of user name "
                              "to password, e.g. {alice: \"<password>\"} (or {alice: {env: ALICE_PASSWORD}})")
        names, digests = [], []
        for name, password in users.items():
            name = str(name)
            if not name or ":" in name:
                raise ConfigError(f"property 'auth.users' has the user name {name!r}; a name must be non-empty and "
                                  "without ':' (RFC 7617)")
            names.append(name)
            digests.append(_digest(name.encode() + b":" + secret(password, f"auth.users.{name}")))
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
            pairs = [(str(name), secret(token, f"auth.tokens.{name}")) for name, token in tokens.items()]
        elif isinstance(tokens, list) and tokens:
            pairs = [(f"token#{index}", secret(token, f"auth.tokens[{index}]")) for index, token in enumerate(tokens)]
        else:
            raise ConfigError(f"property 'auth.tokens' is {shape(tokens)}; type 'bearer' needs a mapping of name to "
                              "token, e.g. {gateway-7: \"<token>\"}, or a list of tokens")
        return cls(tuple(name for name, _ in pairs), tuple(_digest(token) for _, token in pairs))


@dataclass(frozen=True)
class ClientCertAuth(Authenticator):
    """A client certificate verified by the server's TLS (``httpServerTls.cafile``, mutual TLS); the principal is its
    subject's one common name (CN): a subject with several CNs (``CN=alice/CN=admin``) names no one and is refused.
    With ``names`` and/or ``subjects`` only those CNs, or those whole subjects (:func:`subject_text`), are admitted;
    another certificate from the CA gets 403."""

    kind: ClassVar[str] = "clientcert"
    names: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()

    @property
    def challenge(self) -> str:
        # Not a registered scheme either: the credentials belong in the TLS handshake, not in a header.
        return f'ClientCertificate realm="{REALM}"'

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        if not peercert:
            raise AuthError("this endpoint needs a client certificate signed by the server's CA (mutual TLS)")
        subject = peercert.get("subject", ())
        names = [value for rdn in subject for key, value in rdn if key == "commonName"]
        if len(names) != 1:
            raise AuthError("the client certificate's subject has no common name (CN)" if not names else
                            f"the client certificate's subject has {len(names)} common names (CN); one must name the "
                            "client")
        name = str(names[0])
        if (self.names or self.subjects) and name not in self.names and subject_text(subject) not in self.subjects:
            raise NotAllowed("the client certificate is valid, but its subject is not among those this endpoint "
                             "admits (auth.names, auth.subjects)")
        return name

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> ClientCertAuth:
        lists = []
        for key in ("names", "subjects"):
            value = props.get(key) or []
            if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
                example = "[gateway-9]" if key == "names" else '["CN=gateway-9,O=Example"]'
                raise ConfigError(f"property 'auth.{key}' is {value!r}; must be a list of "
                                  f"{'common names' if key == 'names' else 'subjects'}, e.g. {example}")
            lists.append(tuple(item.strip() for item in value))
        return cls(*lists)


#: OpenSSL's short names for the attributes of a subject (``-nameopt RFC2253`` prints these).
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "stateOrProvinceName": "ST", "localityName": "L", "domainComponent": "DC", "userId": "UID",
          "streetAddress": "street"}


def subject_text(subject: Any) -> str:
    """A certificate subject (``getpeercert()["subject"]``) as RFC 4514 text, most specific first, as ``openssl x509
    -noout -subject -nameopt RFC2253`` prints an ASCII one: ``CN=gateway-9,O=httppush tests``."""
    rdns = ["+".join(f"{_SHORT.get(key, key)}={_escape(str(value))}" for key, value in rdn) for rdn in subject]
    return ",".join(reversed(rdns))


def _escape(value: str) -> str:
    out = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    return out[:-1] + "\\ " if out.endswith(" ") and not out.endswith("\\ ") else out


#: ``auth.type`` → its authenticator class (``none`` is the absence of one).
AUTHENTICATORS: dict[str, type[Authenticator]] = {"basic": BasicAuth, "bearer": BearerAuth, "hmac": HmacAuth,
                                  "clientcert": ClientCertAuth, "jwt": JwtAuth}
#: The keys each type takes besides ``type``, lower-cased (as eKuiper passes a yaml file's) → as documented.
_KEYS: dict[str, dict[str, str]] = {"none": {}, "basic": {"users": "users"}, "bearer": {"tokens": "tokens"},
                                    "hmac": HMAC_KEYS, "clientcert": {"names": "names", "subjects": "subjects"},
                                    "jwt": JWT_KEYS}


def parse_auth(value: Any) -> Authenticator | None:
    """The config group's ``auth`` property → its authenticator, ``None`` for none. Raises :class:`ConfigError`
    naming the key; a message never quotes a secret (only names, types and the non-secret settings)."""
    if value in (None, "", {}) or (isinstance(value, str) and value.lower() == "none"):
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"property 'auth' is {shape(value)}; must be a mapping with a 'type' "
                          f"({', '.join(AUTH_TYPES)}), e.g. {{type: basic, users: {{alice: \"<password>\"}}}}")
    value = {str(key).lower(): item for key, item in value.items()}  # keys in any case (a yaml file's: lowered)
    kind = str(value.get("type") or "").lower()
    if kind not in AUTH_TYPES:
        raise ConfigError(f"property 'auth.type' is {value.get('type')!r}; must be one of {', '.join(AUTH_TYPES)}")
    unknown = [key for key in value if key != "type" and key not in _KEYS[kind]]
    if unknown:
        allowed = ", ".join(_KEYS[kind].values()) or "nothing else"
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
        stamped = f", signed time in {auth.timestamp_header} ±{auth.window:g} s" if auth.timestamp_header else ""
        return f"hmac ({auth.algorithm} in {auth.header}{stamped})"
    if isinstance(auth, JwtAuth):
        return f"jwt (issuer {auth.issuer}, keys of {' and '.join(filter(None, (auth.jwks, auth.jwks_url)))})"
    if isinstance(auth, ClientCertAuth) and (auth.names or auth.subjects):
        return f"clientcert ({len(auth.names) + len(auth.subjects)} allowed)"
    return auth.kind


