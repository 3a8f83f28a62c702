"""Each endpoint's settings: the config-group properties (one table, :data:`PROPERTIES`) and the stream's options,
checked into an :class:`EndpointConfig`.

A row holds what the plugin needs of one property: its default, its check and its UI control; the words that document
it, and eKuiper's UI label and hint in English and Chinese, are in ``properties_text.py``. ``scripts/gen_config.py``
writes the default group of ``etc/sources/httppush.yaml``, the ``properties`` of ``etc/sources/httppush.json`` and the
table in ``docs/configuration.md`` from both; a test fails when a committed file is not what it would write. The checks
live with what they configure (``auth.py``, ``cors.py``, ``idempotency.py``, ``meta.py``); every one raises
:class:`~.errors.ConfigError` naming the property, because that message is what eKuiper shows as the rule's start error.

Example: ``EndpointConfig.from_props({"datasource": "/api/data", "method": "put"})`` →
``EndpointConfig(path="/api/data", method="PUT", format="json", …)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .auth import Authenticator, parse_auth
from .cors import CorsConfig, parse_cors
from .errors import ConfigError
from .fieldtypes import Fields, parse_fields
from .headers import ResponseHeaders, parse_response_headers
from .idempotency import IdempotencyConfig, parse_idempotency
from .meta import (
    META_FIELDS,
    PROXY_HEADERS,
    Network,
    check_reserved,
    parse_meta,
    parse_meta_headers,
    parse_meta_query,
    parse_proxy_header,
    parse_trusted_proxies,
)
from .ratelimit import RateLimit, parse_rate_limit

METHODS = ("POST", "PUT")
FORMATS = ("json", "binary", "delimited", "urlencoded", "protobuf", "custom")
#: ``framing`` for FORMAT="json": ``whole`` — one JSON text, an object or an array of objects; ``lines`` — NDJSON.
FRAMINGS = ("whole", "lines")
#: ``successStatus``: what a request whose records were all delivered is answered (204 has no body).
SUCCESS_STATUSES = (200, 201, 202, 204)
#: ``validation``: check records against the stream's schema at the edge (422) — ``auto``: when the stream has
#: STRICT_VALIDATION, ``on``: always, ``off``: never (docs/validation.md)
VALIDATIONS = ("auto", "on", "off")
Method = Literal["POST", "PUT"]
Framing = Literal["whole", "lines"]


@dataclass(frozen=True)
class Property:
    """One config-group property. ``check(value)`` turns the raw value (yaml, REST or the stream's EXTRA) into the
    :class:`EndpointConfig` field's. Its words (documentation, UI label and hint) are ``properties_text.TEXTS[name]``:
    only the generated files need them."""

    name: str
    field: str
    #: the value of the shipped default group (what an unset property means)
    default: Any
    check: Callable[[Any], Any]
    #: eKuiper's UI: the control and the value type of ``sources/<symbol>.json`` (``internal/meta/sourceMeta.go``)
    control: str = "text"
    type: str = "string"
    values: tuple[Any, ...] = ()


def _choice(name: str, allowed: tuple[str, ...], default: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value or default)
        chosen = text.upper() if name == "method" else text.lower()
        if chosen not in allowed:
            raise ConfigError(f"property '{name}' is {value!r}; must be {' or '.join(allowed)}")
        return chosen

    return check


def _fields(value: Any) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"property 'fields' is {value!r}; must be a list of column names")
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"property 'fields' is {value!r}; every column name must be a non-empty string")
    return tuple(items)


def _success_status(value: Any) -> int:
    if value in (None, ""):
        return 200
    try:
        status = int(value)
    except (TypeError, ValueError):
        status = -1
    if status not in SUCCESS_STATUSES or isinstance(value, bool):
        raise ConfigError(f"property 'successStatus' is {value!r}; must be one of "
                          f"{', '.join(map(str, SUCCESS_STATUSES))}")
    return status


PROPERTIES: tuple[Property, ...] = (
    Property("method", "method", "POST", _choice("method", METHODS, "POST"), "select", values=METHODS),
    Property("fields", "fields", [], _fields, "list", "list_string"),
    Property("decoder", "decoder", "", lambda value: str(value or "")),
    Property("framing", "framing", "whole", _choice("framing", FRAMINGS, "whole"), "select", values=FRAMINGS),
    Property("meta", "meta", [], parse_meta, "list", "list_string", values=META_FIELDS),
    Property("auth", "auth", {}, parse_auth, "list", "object"),
    Property("successStatus", "success_status", 200, _success_status, "select", "int", values=SUCCESS_STATUSES),
    Property("cors", "cors", {}, parse_cors, "list", "object"),
    Property("metaHeaders", "meta_headers", [], parse_meta_headers, "list", "list_string"),
    Property("metaQuery", "meta_query", [], parse_meta_query, "list", "list_string"),
    Property("trustedProxies", "trusted_proxies", [], parse_trusted_proxies, "list", "list_string"),
    Property("proxyHeader", "proxy_header", PROXY_HEADERS[0], parse_proxy_header, "select", values=PROXY_HEADERS),
    Property("idempotency", "idempotency", {}, parse_idempotency, "list", "object"),
    Property("rateLimit", "rate_limit", {}, parse_rate_limit, "list", "object"),
    Property("responseHeaders", "response_headers", {}, parse_response_headers, "list", "object"),
    Property("validation", "validation", "auto", _choice("validation", VALIDATIONS, "auto"), "select",
             values=VALIDATIONS),
    Property("schema", "schema", "", lambda value: parse_fields(value) if value not in (None, "", {}) else None),
)
_DEFAULTS = {prop.field: prop.check(prop.default) for prop in PROPERTIES}


@dataclass(frozen=True)
class EndpointConfig:
    """One source instance: where it listens and how it decodes.

    Built from the ``config`` map eKuiper 2.x sends with every start command: the yaml ``default`` group overlaid
    by the CONF_KEY group, then the stream options (``datasource``, ``format``, ``schemaId``, ``delimiter``, …).
    """

    path: str
    method: Method = _DEFAULTS["method"]
    format: str = "json"
    delimiter: str = ","
    fields: tuple[str, ...] = _DEFAULTS["fields"]
    schema_id: str = ""
    decoder: str = _DEFAULTS["decoder"]
    meta: tuple[str, ...] = _DEFAULTS["meta"]
    framing: Framing = _DEFAULTS["framing"]
    auth: Authenticator | None = _DEFAULTS["auth"]
    success_status: int = _DEFAULTS["success_status"]
    cors: CorsConfig | None = _DEFAULTS["cors"]
    meta_headers: tuple[str, ...] = _DEFAULTS["meta_headers"]
    meta_query: bool | tuple[str, ...] = _DEFAULTS["meta_query"]
    trusted_proxies: tuple[Network, ...] = _DEFAULTS["trusted_proxies"]
    proxy_header: str = _DEFAULTS["proxy_header"]
    idempotency: IdempotencyConfig | None = _DEFAULTS["idempotency"]
    rate_limit: RateLimit | None = _DEFAULTS["rate_limit"]
    response_headers: ResponseHeaders = _DEFAULTS["response_headers"]
    validation: str = _DEFAULTS["validation"]
    schema: Fields | None = _DEFAULTS["schema"]
    #: the stream's STRICT_VALIDATION option
    strict: bool = False

    @classmethod
    def from_props(cls, props: Mapping[str, Any], datasource: str = "") -> EndpointConfig:
        """Check the properties and the stream options. A property that is absent has its default; ``meta`` that is
        present but null means none (see :func:`~.meta.parse_meta`)."""
        path = str(props.get("datasource") or datasource or "")
        if not path.startswith("/"):
            raise ConfigError(
                f"DATASOURCE is {path!r}; must be the URL path of the endpoint, starting with '/' (e.g. '/api/data')"
            )
        values = {prop.field: prop.check(props[prop.name]) if prop.name in props else _DEFAULTS[prop.field]
                  for prop in PROPERTIES}
        check_reserved(path, values["meta_headers"], values["meta_query"])
        limit, auth = values["rate_limit"], values["auth"]
        if limit is not None and limit.by == "user" and (auth is None or auth.needs_body):
            raise ConfigError(f"property 'rateLimit.by' is user, but 'auth' is {auth.kind if auth else 'none'}; by "
                              "user needs an auth checked from the request's head (basic, bearer, jwt, clientcert): "
                              "use by: address")
        fmt = str(props.get("format") or "json").lower()
        schema_id = str(props.get("schemaId") or "")
        if values["decoder"]:
            fmt = "custom"  # a config-group decoder overrides FORMAT: eKuiper 2.x rejects FORMAT="custom"
        elif fmt == "custom":
            values["decoder"] = _custom_ref_from_schema_id(schema_id)
        if fmt not in FORMATS:
            raise ConfigError(f"FORMAT is {fmt!r}; must be one of {', '.join(FORMATS)}")
        if values["framing"] != "whole" and fmt != "json":
            raise ConfigError(f"property 'framing' is {props.get('framing')!r}, but FORMAT is {fmt!r}; framing lines "
                              "(NDJSON) is for FORMAT=\"json\"")
        if fmt == "protobuf" and "." not in schema_id.strip("."):
            raise ConfigError(
                f"SCHEMAID is {schema_id!r}; FORMAT=\"protobuf\" needs \"<file>.<Message>\" (e.g. \"sensor.Reading\")"
            )
        return cls(path=path, format=fmt, delimiter=str(props.get("delimiter") or ","), schema_id=schema_id,
                   strict=props.get("strictValidation") in (True, "true", "True"), **values)


def _custom_ref_from_schema_id(schema_id: str) -> str:
    """eKuiper 1.x style ``FORMAT="custom", SCHEMAID="<module>.<function>"`` → ``"<module>:<function>"``."""
    module, _, attr = schema_id.rpartition(".")
    if not module or not attr:
        raise ConfigError(
            f"SCHEMAID is {schema_id!r}; FORMAT=\"custom\" needs \"<module>.<function>\" (e.g. \"kv.decode\"), "
            "or set the property 'decoder' to \"<module>:<function>\""
        )
    return f"{module}:{attr}"
