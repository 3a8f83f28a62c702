"""What every authenticator shares (``auth.py`` has the kinds and the ``auth`` property, ``signatures.py`` the HMAC
kind): the :class:`Authenticator` base, :class:`AuthError`, and the helpers that read a header, a secret (``{env:
NAME}``) or describe a configured value without showing it.

Example: ``secret("s3cret", "auth.secret")`` → ``b"s3cret"``; ``shape({"a": 1})`` → ``"a mapping"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from .answers import Forbidden, Unauthorized
from .errors import ConfigError
from .request import RequestHead

#: The realm every challenge names (``WWW-Authenticate: Basic realm="httppush"``).
REALM = "httppush"

Headers = list[tuple[bytes, bytes]]


class AuthError(ValueError):
    """A request's credentials are missing or wrong; the message goes to the client with 401, so it never holds
    anything configured (nor a secret the client sent).

    ``challenge``: this refusal's own ``WWW-Authenticate`` (``Bearer error="invalid_token", …``), else the kind's;
    ``counted``: whether the auth backoff counts it (a key set being fetched again is not the client's guess)."""

    def __init__(self, message: str, challenge: str = "", counted: bool = True) -> None:
        super().__init__(message)
        self.challenge, self.counted = challenge, counted


class NotAllowed(AuthError):
    """The credentials are valid, but this endpoint does not admit whom they name (403)."""


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

    def verify(self, head: RequestHead, body: bytes) -> str:
        """:meth:`authenticate` with what a kind needs of the request (``hmac`` signs its method and target too)."""
        return self.authenticate(head.headers, head.peercert, body)

    def admit(self, head: RequestHead, body: bytes = b"") -> str:
        """The principal this request is (``meta(user)``); raises :class:`~.answers.Unauthorized` (401, with the
        challenge) otherwise, or :class:`~.answers.Forbidden` (403) for valid credentials this endpoint does not
        admit. The header-only kinds are admitted from the head, ``hmac`` with the whole body."""
        try:
            return self.verify(head, body)
        except NotAllowed as exc:
            raise Forbidden(str(exc)) from None
        except AuthError as exc:
            refused = Unauthorized(str(exc), exc.challenge or self.challenge)
            refused.counted = exc.counted
            raise refused from None

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> Authenticator:
        """Build from the ``auth`` mapping (its ``type`` already checked, keys lower-cased); raises
        :class:`ConfigError`."""
        raise NotImplementedError


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in headers:
        if len(key) == len(name) and key.lower() == name:
            return value
    return None


def secret(value: Any, key: str) -> bytes:
    """A secret: a string, or ``{env: NAME}`` to read it from the plugin's environment (inherited from eKuiper)."""
    if isinstance(value, Mapping) and set(value) == {"env"}:
        name = str(value["env"])
        found = os.environ.get(name, "")
        if not found:
            raise ConfigError(f"property '{key}' reads the environment variable {name!r}, which is not set (or "
                              "empty) in the plugin's environment, inherited from eKuiper's")
        return found.encode()
    if not isinstance(value, str):
        raise ConfigError(f"property '{key}' is {shape(value)}; a secret must be a string (quote it in yaml) or "
                          "{env: NAME}")
    if not value:
        raise ConfigError(f"property '{key}' is empty; a secret must not be")
    return value.encode()


def shape(value: Any) -> str:
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
