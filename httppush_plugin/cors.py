"""CORS for browser clients (property ``cors``): which origins may push, the answer to a preflight, and the headers
every answer of the endpoint carries.

A route with ``cors`` answers ``OPTIONS`` from an allowed ``Origin`` with 204 and ``Access-Control-Allow-*`` (other
origins: 403), and refuses any other request that carries an ``Origin`` it does not allow with 403 before its body
is read: a "simple" request (a form post, ``text/plain``) is sent by the browser without a preflight, so the browser's
check alone would let it be delivered. Its answers to an allowed origin carry ``Access-Control-Allow-Origin: <that
origin>`` (never a literal ``*``), with ``credentials`` ``Access-Control-Allow-Credentials: true``, and the headers a
page may read; every answer carries ``Vary: Origin``. Without ``cors``, ``OPTIONS`` gets 405 and answers carry no CORS
headers. Tested in headless Chromium (``tests/test_browser_cors.py``).

Example: ``parse_cors({"origins": ["https://app.example.com"], "maxAge": 600})`` →
``CorsConfig(origins=("https://app.example.com",), headers=("Content-Type",), max_age=600)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .answers import Answer, Forbidden
from .errors import ConfigError
from .request import RequestHead
from .values import mapping, string_list, switched_off, switched_on

#: The request headers a preflight allows when the group does not list its own.
DEFAULT_CORS_HEADERS = ("Content-Type",)


@dataclass(frozen=True)
class CorsConfig:
    """Property ``cors``. Example: ``{origins: ["https://app.example.com"], headers: [Content-Type, Authorization],
    maxAge: 600}``."""

    origins: tuple[str, ...]
    headers: tuple[str, ...] = DEFAULT_CORS_HEADERS
    #: seconds a browser may cache a preflight's answer; 0: ``Access-Control-Max-Age`` is not sent
    max_age: int = 0
    #: whether pages may send credentials (``fetch(..., {credentials: "include"})``: cookies, HTTP authentication,
    #: TLS client certificates): ``Access-Control-Allow-Credentials: true``; never with ``origins: ["*"]``
    credentials: bool = False

    def __str__(self) -> str:
        return (f"origins {list(self.origins)}, headers {list(self.headers)}, maxAge {self.max_age}, "
                f"credentials {str(self.credentials).lower()}")

    def allows(self, origin: str) -> bool:
        return origin in self.origins or "*" in self.origins

    def admit(self, head: RequestHead) -> None:
        """Raises :class:`Forbidden` for a request from a browser page of an origin not allowed: the browser sends a
        simple request (no preflight) whatever the origin, and would only hide the answer from the page."""
        origin = head.header(b"origin")
        if origin is not None and not self.allows(origin.decode("latin-1")):
            raise Forbidden(f"origin {origin.decode('latin-1')!r} may not push to {head.path} (cors.origins)")

    def decorate(self, headers: dict[str, str], head: RequestHead, exposed: str) -> None:
        """Add the CORS headers of an answer to ``head``; ``exposed``: the answer headers a page may read
        (``Access-Control-Expose-Headers``). ``Vary: Origin`` on every answer, as the others depend on it."""
        headers["Vary"] = "Origin"
        origin = head.header(b"origin")
        if origin is not None and self.allows(origin.decode("latin-1")):
            headers["Access-Control-Allow-Origin"] = origin.decode("latin-1")
            if self.credentials:
                headers["Access-Control-Allow-Credentials"] = "true"
            headers["Access-Control-Expose-Headers"] = exposed


def preflight(head: RequestHead, corsed: dict[str, CorsConfig]) -> Answer:
    """The answer to ``OPTIONS`` on a path whose methods ``corsed`` (method → its ``cors``) serve browsers: 204 with
    ``Access-Control-Allow-*``; raises :class:`Forbidden` for an origin or method that is not allowed."""
    origin = (head.header(b"origin") or b"").decode("latin-1")
    wanted = (head.header(b"access-control-request-method") or b"").decode("latin-1").strip()
    cors = corsed.get(wanted) or next(iter(corsed.values()))
    if not origin or not cors.allows(origin):
        raise Forbidden(f"origin {origin!r} may not push to {head.path} (cors.origins)" if origin else
                        "a CORS preflight needs an 'Origin' header")
    if wanted and wanted not in corsed:
        raise Forbidden(f"method {wanted} is not served to browsers on {head.path}; use {' or '.join(sorted(corsed))}")
    allow = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
             "Access-Control-Allow-Methods": ", ".join(sorted(corsed))}
    if cors.headers:
        allow["Access-Control-Allow-Headers"] = ", ".join(cors.headers)
    if cors.max_age:
        allow["Access-Control-Max-Age"] = str(cors.max_age)
    if cors.credentials:
        allow["Access-Control-Allow-Credentials"] = "true"
    return Answer(204, b"", allow)


def parse_cors(value: Any) -> CorsConfig | None:
    """Property ``cors``; ``{}`` or null: off."""
    if switched_off(value):
        return None
    settings = mapping("property 'cors'", value, {"origins": "origins", "headers": "headers", "maxage": "maxAge",
                                                  "credentials": "credentials"},
                       "{origins: [\"https://app.example.com\"], headers: [Content-Type], maxAge: 600}")
    origins = string_list("property 'cors.origins'", settings.get("origins") or [])
    if not origins:
        raise ConfigError(f"property 'cors' is {value!r}; it needs 'origins', the allowed browser origins "
                          "(e.g. [\"https://app.example.com\"], or [\"*\"] for any)")
    headers = settings.get("headers")
    max_age = settings.get("maxage") or 0
    if isinstance(max_age, bool) or not isinstance(max_age, int | str) or not str(max_age).isdigit():
        raise ConfigError(f"property 'cors.maxAge' is {max_age!r}; must be a whole number of seconds")
    credentials = settings.get("credentials", False)
    if not (switched_on(credentials) or switched_off(credentials)):
        raise ConfigError(f"property 'cors.credentials' is {credentials!r}; must be true or false")
    if switched_on(credentials) and "*" in origins:
        raise ConfigError("property 'cors' has credentials: true with origins [\"*\"]: any web page a user opens could "
                          "push with the user's credentials (cookies, HTTP authentication, client certificates); "
                          "list the origins")
    return CorsConfig(origins=tuple(o.rstrip("/") for o in origins),
                      headers=DEFAULT_CORS_HEADERS if headers is None else tuple(
                          string_list("property 'cors.headers'", headers)),
                      max_age=int(max_age), credentials=switched_on(credentials))
