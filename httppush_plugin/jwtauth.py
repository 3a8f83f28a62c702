"""``auth: {type: jwt}``: ``Authorization: Bearer <JWT>`` verified against public keys (``jwks.py``: a JWKS file
and/or URL), checked as soon as a request's head is in, like ``bearer``. The token's ``sub`` is the principal
(``meta(user)``). The token itself is verified by PyJWT; what is allowed is decided here, before PyJWT is asked:

- only asymmetric algorithms (:data:`ALGORITHMS`), those the group lists in ``algorithms``: ``none`` and the HMAC
  ones (``HS256`` …) are refused at start — a shared secret belongs in ``type: bearer`` or ``hmac``, and a public key
  must never be usable as an HMAC secret (algorithm confusion);
- the token's ``alg`` must be listed, fit its key's type (RSA: ``RS*``/``PS*``, EC: ``ES*`` of the key's curve, OKP:
  ``EdDSA``) and equal the key's own ``alg`` when the JWK names one;
- ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``iss`` must equal ``issuer``, ``aud`` name one of
  ``audience`` (RFC 8725 §3.8–3.9: a token minted for another service or by another issuer is refused); ``exp``,
  ``nbf`` and ``iat`` are checked with ``leeway`` seconds of clock skew.

A refused token gets 401 with ``WWW-Authenticate: Bearer realm="httppush", error="invalid_token",
error_description="…"`` (RFC 6750 §3) naming the problem; a request without a token gets the bare challenge. Every
refusal is counted by the auth backoff, except an unknown ``kid`` while the key set is being fetched again (a key
rotation the plugin has not seen yet is not the client's guess).

Example: ``JwtAuth.from_props({"jwks": "/etc/jwks.json", "issuer": "https://idp", "audience": "ingest"})``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .credentials import REALM, Authenticator, AuthError, Headers, header, shape
from .errors import ConfigError
from .jwks import MAX_KEYS, KeySet
from .values import seconds, string_list

#: What ``algorithms`` may list: public-key signatures only.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_LEEWAY_S = 30
DEFAULT_REFRESH_S = 300
#: The algorithm families each key type (``kty``) signs with, and the curve of each ``ES*``.
_FAMILIES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
#: The keys ``auth`` of type ``jwt`` takes, lower-cased (eKuiper lowercases a yaml file's keys) → as documented.
JWT_KEYS = {"jwks": "jwks", "jwksurl": "jwksUrl", "jwksrefresh": "jwksRefresh", "issuer": "issuer",
            "audience": "audience", "algorithms": "algorithms", "leeway": "leeway"}
#: The longest token read (PyJWT checks base64url characters one by one in Python: a cap bounds that work).
MAX_TOKEN_BYTES = 8192
#: A compact JWS: three base64url segments (checked with one regular expression before PyJWT is asked).
_COMPACT = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: What an ``error_description`` may hold (RFC 6750 §3: printable ASCII without ``"`` and ``\\``).
_UNQUOTABLE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_clock = time.time


def _token(headers: Headers) -> bytes:
    value = header(headers, b"authorization")
    if value is None:
        raise AuthError("this endpoint needs a JSON Web Token: send 'Authorization: Bearer <token>'")
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        raise AuthError("this endpoint needs 'Authorization: Bearer <token>' with a JSON Web Token")
    return token.strip()


def _header(token: bytes) -> dict[str, Any]:
    """The JOSE header of a compact token (:data:`_COMPACT`), unverified; :class:`AuthError` when it is not JSON."""
    segment = token[:token.index(b".")]
    try:
        head = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # deeply nested arrays: json's recursion limit
        head = None
    if not isinstance(head, dict):
        raise AuthError("the token is not a JWT: its header is not a base64url JSON object",
                        f'Bearer realm="{REALM}", error="invalid_token", error_description="the token is not a JWT"')
    return head


@dataclass(frozen=True)
class JwtAuth(Authenticator):
    """A JWT signed by a key of :attr:`keyset`, for :attr:`audience`, from :attr:`issuer`."""

    kind: ClassVar[str] = "jwt"
    issuer: str
    audience: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = DEFAULT_LEEWAY_S
    jwks: str = ""
    jwks_url: str = ""
    refresh: float = DEFAULT_REFRESH_S
    keyset: KeySet | None = field(default=None, compare=False, repr=False)
    #: (key set version, kid, alg) → the key PyJWT verifies with
    _prepared: dict[tuple[int, str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def challenge(self) -> str:
        return f'Bearer realm="{REALM}"'

    def refuse(self, description: str, counted: bool = True) -> AuthError:
        text = _UNQUOTABLE.sub("?", description)
        return AuthError(description, f'Bearer realm="{REALM}", error="invalid_token", error_description="{text}"',
                         counted)

    def authenticate(self, headers: Headers, peercert: dict[str, Any] | None, body: bytes = b"") -> str:
        import jwt  # imported by from_props already (jwks.py), in the thread of the start command

        token = _token(headers)
        keyset = self.keyset
        assert keyset is not None  # set by from_props
        keyset.tick()
        if len(token) > MAX_TOKEN_BYTES:
            raise self.refuse(f"the token is over {MAX_TOKEN_BYTES} bytes")
        if not _COMPACT.fullmatch(token):
            raise self.refuse("the token is not a JWT (base64url header.payload.signature)")
        head = _header(token)  # PyJWT reads the whole token for it, in Python: only the first segment is needed
        alg, kid = head.get("alg"), head.get("kid") or ""
        if alg not in self.algorithms:
            raise self.refuse(f"the token's alg {str(alg)[:20]!r} is not allowed here; allowed: "
                              f"{', '.join(self.algorithms)}")
        if not isinstance(kid, str):
            raise self.refuse("the token's kid is not a string")
        jwk = keyset.key(kid)
        if jwk is None:
            fetching = keyset.fetch_soon()
            shown = f"kid {kid[:64]!r}" if kid else "no kid"
            raise self.refuse(f"the token has {shown}, which names no key of the key set" + (
                "; the key set is being fetched again: retry in a moment" if fetching else ""), counted=not fetching)
        key = self._key(keyset.version, kid, str(alg), jwk)
        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], audience=list(self.audience), issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise self.refuse(f"the token expired {self._ago(token)} (leeway {self.leeway:g} s)") from None
        except jwt.ImmatureSignatureError:
            raise self.refuse(f"the token is not valid yet (nbf or iat in the future; leeway {self.leeway:g} s)"
                              ) from None
        except jwt.InvalidAudienceError:
            raise self.refuse(f"the token's audience (aud) is not {' or '.join(self.audience)}") from None
        except jwt.InvalidIssuerError:
            raise self.refuse(f"the token's issuer (iss) is not {self.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise self.refuse(f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise self.refuse(f"the token's signature does not verify with the key {kid or '(no kid)'}") from None
        except jwt.PyJWTError as exc:
            raise self.refuse(f"the token is not valid: {str(exc)[:200]}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise self.refuse("the token's subject (sub) is empty or not a string")
        return subject

    def _ago(self, token: bytes) -> str:
        """How long ago an expired token (its signature verified) expired."""
        import jwt

        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return f"{_clock() - exp:.0f} s ago" if isinstance(exp, int | float) else "already"

    def _key(self, version: int, kid: str, alg: str, jwk: dict[str, Any]) -> Any:
        import jwt

        prepared = self._prepared.get((version, kid, alg))
        if prepared is not None:
            return prepared
        kty, named = jwk.get("kty"), jwk.get("alg")
        if named and named != alg:
            raise self.refuse(f"the token's alg {alg} is not its key's ({named})")
        if not alg.startswith(_FAMILIES.get(str(kty), ())) or (kty == "EC" and jwk.get("crv") != _CURVES[alg]):
            raise self.refuse(f"the token's alg {alg} does not fit its key (kty {kty}, crv {jwk.get('crv')})")
        try:
            prepared = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise self.refuse(f"the key {kid or '(no kid)'} cannot verify {alg}: {exc}") from None
        if len(self._prepared) > 4 * MAX_KEYS:  # old versions' keys
            self._prepared.clear()
        self._prepared[(version, kid, alg)] = prepared
        return prepared

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> JwtAuth:
        file, url = str(props.get("jwks") or ""), str(props.get("jwksurl") or "")
        if not file and not url:
            raise ConfigError("property 'auth' of type 'jwt' needs 'jwks' (the path of a JSON Web Key Set file) "
                              "and/or 'jwksUrl' (where to fetch one)")
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ConfigError(f"property 'auth.jwksUrl' is {url!r}; must be an http:// or https:// URL")
        issuer = props.get("issuer")
        if not isinstance(issuer, str) or not issuer.strip():
            raise ConfigError(f"property 'auth.issuer' is {shape(issuer)}; type 'jwt' needs the issuer every token's "
                              "'iss' must equal, e.g. \"https://login.example.com/\"")
        audience = props.get("audience")
        if not audience or not isinstance(audience, str | list):
            raise ConfigError(f"property 'auth.audience' is {shape(audience)}; type 'jwt' needs the audience (or "
                              "list of them) a token's 'aud' must name, e.g. \"ekuiper-ingest\"")
        audiences = tuple(string_list("property 'auth.audience'", [audience] if isinstance(audience, str) else
                                      audience))
        algorithms = tuple(_algorithm(name) for name in string_list(
            "property 'auth.algorithms'", props.get("algorithms") or list(DEFAULT_ALGORITHMS)))
        leeway = props.get("leeway", DEFAULT_LEEWAY_S)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or not 0 <= leeway <= 3600:
            raise ConfigError(f"property 'auth.leeway' is {leeway!r}; must be 0 to 3600 seconds of clock skew")
        refresh = seconds("property 'auth.jwksRefresh'", props.get("jwksrefresh", DEFAULT_REFRESH_S))
        if refresh < 1:  # tokens with made-up kids could otherwise keep the key set's server fetched without pause
            raise ConfigError(f"property 'auth.jwksRefresh' is {refresh:g}; must be at least 1 second")
        keyset = KeySet(file, url, refresh)
        return cls(issuer.strip(), audiences, algorithms, float(leeway), file, url, refresh, keyset)


def _algorithm(name: str) -> str:
    for known in ALGORITHMS:
        if name.lower() == known.lower():
            return known
    if name.lower() == "none":
        raise ConfigError("property 'auth.algorithms' lists none: an unsigned token is never accepted")
    if name.upper().startswith("HS"):
        raise ConfigError(f"property 'auth.algorithms' lists {name}: HMAC-signed tokens need a shared secret, which "
                          "type 'jwt' does not take (a public key must never serve as one); use type bearer or hmac "
                          f"for shared secrets, or one of {', '.join(ALGORITHMS)}")
    raise ConfigError(f"property 'auth.algorithms' lists {name!r}; must be among {', '.join(ALGORITHMS)}")
