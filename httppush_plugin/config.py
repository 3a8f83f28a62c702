"""Settings: the shared server's (plugin ``etc/kuiper.yaml``, the host's ``etc/kuiper.yaml``, environment) and each
endpoint's (eKuiper's source config). Pure parsing into frozen dataclasses; every default lives here.

Both parsers raise :class:`ConfigError` with a message naming the key, quoting the value and saying what is
allowed, because that message is what eKuiper shows as the rule's start error.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from .auth import Authenticator

#: Default listen port per source symbol. ``httppush`` keeps the seed's 10081 (hosts without the built-in);
#: ``pyhttppush`` runs beside eKuiper 2.x, whose own data server already holds 10081.
DEFAULT_PORTS: dict[str, int] = {"httppush": 10081, "pyhttppush": 10082}
DEFAULT_IP = "0.0.0.0"
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
DEFAULT_METHOD: Literal["POST"] = "POST"
METHODS = ("POST", "PUT")
FORMATS = ("json", "binary", "delimited", "urlencoded", "protobuf", "custom")
#: Property ``framing`` for FORMAT="json": ``whole`` — the body is one JSON text, an object or an array of objects;
#: ``lines`` — NDJSON / JSON Lines, one object per line. A request whose Content-Type is one of
#: ``decoders.json.NDJSON_MEDIA_TYPES`` (``application/x-ndjson``, …) is read as lines whatever the property says.
FRAMINGS = ("whole", "lines")
DEFAULT_FRAMING: Literal["whole"] = "whole"
DEFAULT_SEND_TIMEOUT_MS = 1000
#: Seconds: from a request's first byte to the end of its headers / from there to the end of its body / how long a
#: keep-alive connection may sit idle between requests.
DEFAULT_READ_HEADER_TIMEOUT_S = 10.0
DEFAULT_READ_BODY_TIMEOUT_S = 60.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
#: Records one body may hold (a JSON array's elements, delimited lines, a custom decoder's list).
DEFAULT_MAX_RECORDS = 100_000
#: Open connections; one more is answered 503 and closed.
DEFAULT_MAX_CONNECTIONS = 1024
#: Framed bytes waiting for one source's host channel (eKuiper reading slower than clients push); over it, 503.
DEFAULT_MAX_SOURCE_BACKLOG = 16 * 1024 * 1024
#: Bytes the whole server holds for requests: bodies being received and decoded plus every source's backlog.
DEFAULT_MAX_BUFFERED = 128 * 1024 * 1024
#: What a record's envelope may carry in ``meta`` (readable with ``meta(<name>)`` in SQL), and what it carries unless
#: the config group's ``meta`` property says otherwise. ``user`` is the authenticated principal (``auth``), absent
#: from records of an endpoint without authentication.
#: ``remoteAddr`` follows ``X-Forwarded-For`` / ``Forwarded`` when the peer is in ``trustedProxies``; ``requestId`` is
#: the client's ``X-Request-Id`` or a generated one, echoed in the answer.
META_FIELDS = ("method", "path", "remoteAddr", "contentType", "user", "requestId")
#: None by default: eKuiper decodes every record's meta again, and all four request facts cost it 8% of its records/s
#: for single records and 20% for 100-record bodies (bench/README.md, --meta-variants); only what is asked for is sent.
DEFAULT_META: tuple[str, ...] = ()
#: Property ``successStatus``: what a request whose records were all delivered is answered (204 has no body).
SUCCESS_STATUSES = (200, 201, 202, 204)
#: Property ``cors``: the request headers a preflight allows when the group does not list its own.
DEFAULT_CORS_HEADERS = ("Content-Type",)
#: Property ``idempotency``: seconds a 2xx answer is remembered for its ``Idempotency-Key``, and how many keys an
#: endpoint remembers at most (each costs about 400 bytes plus its answer, ~60 bytes for a default 200).
DEFAULT_IDEMPOTENCY_WINDOW_S = 300
DEFAULT_IDEMPOTENCY_MAX_KEYS = 10_000
#: Paths of the shared server's health and metrics answers (GET); ``""`` switches one off.
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_METRICS_PATH = "/metrics"
#: ``httpServerTls.clientAuth``: whether the TLS handshake asks for a client certificate signed by ``cafile``.
CLIENT_AUTH = ("none", "optional", "required")

Method = Literal["POST", "PUT"]
Framing = Literal["whole", "lines"]
ClientAuth = Literal["none", "optional", "required"]


class ConfigError(ValueError):
    """A setting is missing or has a value we cannot use."""


@dataclass(frozen=True)
class TlsConfig:
    certfile: str
    keyfile: str
    #: CA certificate(s), PEM, that client certificates must be signed by (mutual TLS)
    cafile: str = ""
    client_auth: ClientAuth = "none"


@dataclass(frozen=True)
class ServerConfig:
    """The shared HTTP server: one per plugin process."""

    ip: str = DEFAULT_IP
    port: int = DEFAULT_PORTS["httppush"]
    tls: TlsConfig | None = None
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT_S
    read_body_timeout: float = DEFAULT_READ_BODY_TIMEOUT_S
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
    max_records: int = DEFAULT_MAX_RECORDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_source_backlog: int = DEFAULT_MAX_SOURCE_BACKLOG
    max_buffered: int = DEFAULT_MAX_BUFFERED
    health_path: str = DEFAULT_HEALTH_PATH
    metrics_path: str = DEFAULT_METRICS_PATH

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{host}:{self.port}"


def env_prefix(symbol: str) -> str:
    """Environment variables are ``<SYMBOL>_…`` (``PYHTTPPUSH_SERVER_PORT``): never ``KUIPER__…``, which the
    plugin inherits from the host and which mean the host's own settings."""
    return symbol.upper() + "_"


#: eKuiper's deb/rpm packages are built with ``LoadFileType=absolute``: plugins in ``/var/lib/kuiper/plugins``, the
#: host's own settings in ``/etc/kuiper`` (``internal/conf/path.go`` ``AbsoluteMapping``).
ABSOLUTE_HOST_ROOT = Path("/var/lib/kuiper")
ABSOLUTE_HOST_CONFIG = Path("/etc/kuiper/kuiper.yaml")


def host_root(plugin_dir: Path) -> Path:
    """eKuiper installs a portable plugin into ``<host root>/plugins/portable/<name>/``."""
    return plugin_dir.parents[2] if len(plugin_dir.parents) > 2 else plugin_dir


def host_config_path(plugin_dir: Path, environ: Mapping[str, str]) -> Path | None:
    """The host's own ``etc/kuiper.yaml``, the one kuiperd reads, or ``None`` if there is none to be found.

    The first that exists of: ``$KuiperBaseKey/etc/kuiper.yaml`` (kuiperd's base folder when that variable is set; the
    plugin inherits kuiperd's environment), ``<host root>/etc/kuiper.yaml`` (relative layout, kuiperd run from the
    host root: release tarballs, the Docker images), ``/etc/kuiper/kuiper.yaml`` for plugins in
    ``/var/lib/kuiper/plugins`` (the deb/rpm layout). Installing, upgrading or deleting a plugin never writes it.
    """
    own = plugin_dir / "etc" / "kuiper.yaml"
    candidates = [Path(environ["KuiperBaseKey"]) / "etc" / "kuiper.yaml"] if environ.get("KuiperBaseKey") else []
    candidates.append(host_root(plugin_dir) / "etc" / "kuiper.yaml")
    if host_root(plugin_dir) == ABSOLUTE_HOST_ROOT:
        candidates.append(ABSOLUTE_HOST_CONFIG)
    return next((path for path in candidates if path != own and path.is_file()), None)


def load_server_config(
    plugin_dir: Path, symbol: str, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The shared server's settings. Each comes from the highest of these layers that sets it:

    1. the defaults here;
    2. ``<plugin_dir>/etc/kuiper.yaml``, section ``source:`` (shipped; a reinstall or upgrade replaces it);
    3. the HOST's ``etc/kuiper.yaml`` (:func:`host_config_path`), section ``source.<symbol>``, e.g.
       ``source: {pyhttppush: {httpServerPort: 10090}}``: untouched by plugin installs, so settings there survive;
    4. the environment, ``<SYMBOL>_…``. Example: ``PYHTTPPUSH_SERVER_PORT=9000`` moves the pyhttppush server to 9000.

    ``httpServerTls`` is one setting in the files (a higher file's mapping replaces a lower one's); the environment
    overrides its keys one by one. A bad value's error names the file and key, or the variable, it came from.
    """
    environ = os.environ if environ is None else environ
    where: dict[str, str] = {}  # setting -> the file and key, or the variable, it came from (for error messages)
    section = _settings_file(plugin_dir / "etc" / "kuiper.yaml", ("source",), where)
    host_path = host_config_path(plugin_dir, environ)
    host_section = _settings_file(host_path, ("source", symbol), where) if host_path else {}

    prefix = env_prefix(symbol)
    env_names = {key: prefix + var for key, var in (
        ("httpServerIp", "SERVER_IP"),
        ("httpServerPort", "SERVER_PORT"),
        ("httpServerMaxBodySize", "SERVER_MAX_BODY_SIZE"),
        ("httpServerReadHeaderTimeout", "SERVER_READ_HEADER_TIMEOUT"),
        ("httpServerReadBodyTimeout", "SERVER_READ_BODY_TIMEOUT"),
        ("httpServerIdleTimeout", "SERVER_IDLE_TIMEOUT"),
        ("httpServerMaxRecords", "SERVER_MAX_RECORDS"),
        ("httpServerMaxConnections", "SERVER_MAX_CONNECTIONS"),
        ("httpServerMaxSourceBacklog", "SERVER_MAX_SOURCE_BACKLOG"),
        ("httpServerMaxBuffered", "SERVER_MAX_BUFFERED"),
        ("httpServerHealthPath", "SERVER_HEALTH_PATH"),
        ("httpServerMetricsPath", "SERVER_METRICS_PATH"),
    )}
    if host_path is not None:
        _check_known(host_section, [*env_names, "httpServerTls"], host_path, f"source.{symbol}")
    section.update(host_section)
    for key, name in env_names.items():
        if environ.get(name) not in (None, ""):
            section[key] = environ[name]
            where[key] = f"environment variable {name}"
    if not isinstance(section.get("httpServerTls") or {}, dict):
        raise ConfigError(_with_origin(f"setting 'httpServerTls' is {section['httpServerTls']!r}; must be a mapping "
                                       "with 'certfile' and 'keyfile'", where))
    tls = dict(section.get("httpServerTls") or {})
    for key, var in (("certfile", "TLS_CERTFILE"), ("keyfile", "TLS_KEYFILE"), ("cafile", "TLS_CAFILE"),
                     ("clientAuth", "TLS_CLIENT_AUTH")):
        if environ.get(prefix + var):
            tls[key] = environ[prefix + var]
            where[f"httpServerTls.{key}"] = f"environment variable {prefix + var}"
    try:
        return _server_config(section, tls, symbol)
    except ConfigError as exc:
        raise ConfigError(_with_origin(str(exc), where)) from None


def _server_config(section: Mapping[str, Any], tls: dict[str, Any], symbol: str) -> ServerConfig:
    """Check the merged settings (``tls``: ``httpServerTls`` with the environment's keys applied)."""
    ip = str(section.get("httpServerIp") or DEFAULT_IP)
    port = _int_setting("httpServerPort", section.get("httpServerPort", DEFAULT_PORTS.get(symbol, 10081)), 0, 65535)
    max_body = _int_setting("httpServerMaxBodySize", section.get("httpServerMaxBodySize", DEFAULT_MAX_BODY_SIZE), 1)
    health = _path_setting("httpServerHealthPath", section.get("httpServerHealthPath", DEFAULT_HEALTH_PATH))
    metrics = _path_setting("httpServerMetricsPath", section.get("httpServerMetricsPath", DEFAULT_METRICS_PATH))
    if health and health == metrics:
        raise ConfigError(f"setting 'httpServerMetricsPath' is {metrics!r}, the same as httpServerHealthPath; give "
                          "them different paths (or switch one off: off)")
    max_buffered = _int_setting("httpServerMaxBuffered", section.get("httpServerMaxBuffered", DEFAULT_MAX_BUFFERED), 1)
    if max_buffered < max_body:
        raise ConfigError(f"setting 'httpServerMaxBuffered' is {max_buffered}, less than httpServerMaxBodySize "
                          f"({max_body}): a body of a size between the two could never be received; make it at least "
                          "as large")
    return ServerConfig(
        ip=ip, port=port, tls=_tls_setting(tls), max_body_size=max_body,
        read_header_timeout=_seconds_setting("httpServerReadHeaderTimeout",
                                             section.get("httpServerReadHeaderTimeout", DEFAULT_READ_HEADER_TIMEOUT_S)),
        read_body_timeout=_seconds_setting("httpServerReadBodyTimeout",
                                           section.get("httpServerReadBodyTimeout", DEFAULT_READ_BODY_TIMEOUT_S)),
        idle_timeout=_seconds_setting("httpServerIdleTimeout",
                                      section.get("httpServerIdleTimeout", DEFAULT_IDLE_TIMEOUT_S)),
        max_records=_int_setting("httpServerMaxRecords", section.get("httpServerMaxRecords", DEFAULT_MAX_RECORDS), 1),
        max_connections=_int_setting("httpServerMaxConnections",
                                     section.get("httpServerMaxConnections", DEFAULT_MAX_CONNECTIONS), 1),
        max_source_backlog=_int_setting("httpServerMaxSourceBacklog",
                                        section.get("httpServerMaxSourceBacklog", DEFAULT_MAX_SOURCE_BACKLOG), 1),
        max_buffered=max_buffered,
        health_path=health,
        metrics_path=metrics,
    )


def _settings_file(path: Path, keys: tuple[str, ...], where: dict[str, str]) -> dict[str, Any]:
    """The mapping under ``keys`` (``("source",)``, ``("source", "pyhttppush")``) of the yaml file ``path``; ``{}``
    when the file or a key is absent. Notes in ``where`` the file and key each setting comes from."""
    if not path.is_file():
        return {}
    try:
        node: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(node, dict) or not isinstance(node.get(keys[0]) or {}, dict):
        raise ConfigError(f"{path}: expected a mapping with a '{keys[0]}:' section")
    for depth, key in enumerate(keys):
        node = node.get(key)
        if node is None:
            return {}
        if not isinstance(node, dict):
            dotted = ".".join(keys[: depth + 1])
            raise ConfigError(f"{path}, key '{dotted}' is {node!r}; must be a mapping of settings, e.g. "
                              f"{{httpServerPort: 10090}}")
    dotted = ".".join(keys)
    where.update({str(key): f"{path}, key '{dotted}.{key}'" for key in node})
    return dict(node)


def _check_known(section: Mapping[Any, Any], known: list[str], path: Path, dotted: str) -> None:
    """Refuse a key of the host's ``source.<symbol>`` that is no setting: that section is the plugin's alone, and a
    misspelt setting would otherwise do nothing at all. Keys are case-sensitive: the file is read as written."""
    for key in section:
        if key not in known:
            near = [name for name in known if name.lower() == str(key).lower()]
            hint = f"did you mean '{near[0]}'?" if near else f"the settings are {', '.join(known)}"
            raise ConfigError(f"{path}, key '{dotted}.{key}' is not a setting of this plugin; {hint}")


def _with_origin(message: str, where: Mapping[str, str]) -> str:
    """``message`` (``setting '<key>' …``) followed by where that key's value came from, if not a default."""
    if not message.startswith("setting '"):
        return message
    key = message.split("'", 2)[1]
    parent = key.split(".", 1)[0]
    origins = [where[key]] if key in where else [where[parent]] if parent in where else []
    origins += [origin for name, origin in where.items() if name.startswith(key + ".")]
    origins = list(dict.fromkeys(origins))
    return f"{message} (from {'; '.join(origins)})" if origins else message


def _path_setting(key: str, value: Any) -> str:
    """A path the server answers GET on; ``""``, ``false`` or ``off``: not served."""
    if value in (None, False, "") or (isinstance(value, str) and value.lower() in ("off", "false")):
        return ""
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "{" in value:
        raise ConfigError(f"setting '{key}' is {value!r}; must be a URL path starting with '/' (e.g. '/healthz'), "
                          "or off to switch it off")
    return value


def _seconds_setting(key: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{key}' is {value!r}; must be a number of seconds (e.g. 10 or 0.5)") from None
    if not 0 < seconds <= 86400:
        raise ConfigError(f"setting '{key}' is {value!r}; must be more than 0 and at most 86400 seconds")
    return seconds


def _int_setting(key: str, value: Any, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{key}' is {value!r}; must be a whole number") from None
    if number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"setting '{key}' is {number}; must be {bound}")
    return number


def _tls_setting(tls: dict[str, Any]) -> TlsConfig | None:
    certfile, keyfile = tls.get("certfile") or "", tls.get("keyfile") or ""
    cafile = str(tls.get("cafile") or "")
    if not certfile and not keyfile and not cafile:
        return None
    if not certfile or not keyfile:
        raise ConfigError("setting 'httpServerTls' needs both 'certfile' and 'keyfile'")
    # a CA file alone means client certificates are wanted: required unless said otherwise
    value = tls.get("clientAuth") or ("required" if cafile else "none")
    client_auth = str(value).lower()
    if client_auth not in CLIENT_AUTH:
        raise ConfigError(f"setting 'httpServerTls.clientAuth' is {value!r}; must be none, optional or required")
    if client_auth != "none" and not cafile:
        raise ConfigError(f"setting 'httpServerTls.clientAuth' is {client_auth!r}; it needs 'cafile', the CA "
                          "certificate(s) that client certificates must be signed by")
    return TlsConfig(certfile=str(certfile), keyfile=str(keyfile), cafile=cafile,
                     client_auth=client_auth)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CorsConfig:
    """Property ``cors``: which browser origins may push, and what a preflight allows them.

    Example: ``{origins: ["https://app.example.com"], headers: [Content-Type, Authorization], maxAge: 600}``."""

    origins: tuple[str, ...]
    headers: tuple[str, ...] = DEFAULT_CORS_HEADERS
    #: seconds a browser may cache a preflight's answer; 0: ``Access-Control-Max-Age`` is not sent
    max_age: int = 0

    def __str__(self) -> str:
        return f"origins {list(self.origins)}, headers {list(self.headers)}, maxAge {self.max_age}"

    def allows(self, origin: str) -> bool:
        return origin in self.origins or "*" in self.origins


@dataclass(frozen=True)
class IdempotencyConfig:
    """Property ``idempotency``. Example: ``{window: 600, maxKeys: 50000}``; ``true``: the defaults."""

    #: seconds a 2xx answer is remembered for its key
    window: float = DEFAULT_IDEMPOTENCY_WINDOW_S
    max_keys: int = DEFAULT_IDEMPOTENCY_MAX_KEYS

    def __str__(self) -> str:
        return f"window {self.window:g} s, maxKeys {self.max_keys}"


@dataclass(frozen=True)
class EndpointConfig:
    """One source instance: where it listens and how it decodes.

    Built from the ``config`` map eKuiper 2.x sends with every start command: the yaml ``default`` group overlaid
    by the CONF_KEY group, then the stream options (``datasource``, ``format``, ``schemaId``, ``delimiter``, …).
    """

    path: str
    method: Method = DEFAULT_METHOD
    format: str = "json"
    delimiter: str = ","
    fields: tuple[str, ...] = ()
    schema_id: str = ""
    decoder: str = ""
    meta: tuple[str, ...] = DEFAULT_META
    #: FORMAT="json": the body is one JSON text (``whole``) or one object per line (``lines``)
    framing: Framing = DEFAULT_FRAMING
    #: who may push (property ``auth``); ``None``: anyone
    auth: Authenticator | None = None
    #: the status of a request whose records were all delivered (property ``successStatus``)
    success_status: int = 200
    #: browser origins allowed to push (property ``cors``); ``None``: no CORS, ``OPTIONS`` gets 405
    cors: CorsConfig | None = None
    #: request headers copied into meta, lower-cased ``*`` globs (property ``metaHeaders``)
    meta_headers: tuple[str, ...] = ()
    #: query parameters copied into meta (property ``metaQuery``): ``True`` for all, or their names
    meta_query: bool | tuple[str, ...] = ()
    #: peers whose ``X-Forwarded-For`` / ``Forwarded`` name the client (property ``trustedProxies``)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: ``Idempotency-Key`` handling (property ``idempotency``); ``None``: the header is ignored
    idempotency: IdempotencyConfig | None = None

    @classmethod
    def from_props(cls, props: Mapping[str, Any], datasource: str = "") -> EndpointConfig:
        from .auth import parse_auth  # here: auth.py imports ConfigError from this module

        path = str(props.get("datasource") or datasource or "")
        if not path.startswith("/"):
            raise ConfigError(
                f"DATASOURCE is {path!r}; must be the URL path of the endpoint, starting with '/' (e.g. '/api/data')"
            )
        method = str(props.get("method") or DEFAULT_METHOD).upper()
        if method not in METHODS:
            raise ConfigError(f"property 'method' is {props.get('method')!r}; must be POST or PUT")
        fmt = str(props.get("format") or "json").lower()
        decoder = str(props.get("decoder") or "")
        schema_id = str(props.get("schemaId") or "")
        if decoder:
            fmt = "custom"  # a config-group decoder overrides FORMAT: eKuiper 2.x rejects FORMAT="custom"
        elif fmt == "custom":
            decoder = _custom_ref_from_schema_id(schema_id)
        if fmt not in FORMATS:
            raise ConfigError(f"FORMAT is {fmt!r}; must be one of {', '.join(FORMATS)}")
        framing = str(props.get("framing") or DEFAULT_FRAMING).lower()
        if framing not in FRAMINGS:
            raise ConfigError(f"property 'framing' is {props.get('framing')!r}; must be whole or lines")
        if framing != DEFAULT_FRAMING and fmt != "json":
            raise ConfigError(f"property 'framing' is {props.get('framing')!r}, but FORMAT is {fmt!r}; framing lines "
                              "(NDJSON) is for FORMAT=\"json\"")
        if fmt == "protobuf" and "." not in schema_id.strip("."):
            raise ConfigError(
                f"SCHEMAID is {schema_id!r}; FORMAT=\"protobuf\" needs \"<file>.<Message>\" (e.g. \"sensor.Reading\")"
            )
        return cls(
            path=path,
            method=method,  # type: ignore[arg-type]
            format=fmt,
            delimiter=str(props.get("delimiter") or ","),
            fields=_fields_setting(props.get("fields")),
            schema_id=schema_id,
            decoder=decoder,
            meta=_meta_setting(props["meta"]) if "meta" in props else DEFAULT_META,
            framing=framing,  # type: ignore[arg-type]
            auth=parse_auth(props.get("auth")),
            success_status=_success_status_setting(props.get("successStatus")),
            cors=_cors_setting(props.get("cors")),
            meta_headers=tuple(dict.fromkeys(name.lower() for name in _string_list(
                "metaHeaders", props.get("metaHeaders") or []))),
            meta_query=_meta_query_setting(props.get("metaQuery")),
            trusted_proxies=_trusted_proxies_setting(props.get("trustedProxies")),
            idempotency=_idempotency_setting(props.get("idempotency")),
        )


def _custom_ref_from_schema_id(schema_id: str) -> str:
    """eKuiper 1.x style ``FORMAT="custom", SCHEMAID="<module>.<function>"`` → ``"<module>:<function>"``."""
    module, _, attr = schema_id.rpartition(".")
    if not module or not attr:
        raise ConfigError(
            f"SCHEMAID is {schema_id!r}; FORMAT=\"custom\" needs \"<module>.<function>\" (e.g. \"kv.decode\"), "
            "or set the property 'decoder' to \"<module>:<function>\""
        )
    return f"{module}:{attr}"


def _fields_setting(value: Any) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"property 'fields' is {value!r}; must be a list of column names")
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"property 'fields' is {value!r}; every column name must be a non-empty string")
    return tuple(items)


def _meta_setting(value: Any) -> tuple[str, ...]:
    """Property ``meta``: which request facts each record carries; ``[]``, ``""`` or null: none. (A ``[]`` stored
    through eKuiper's REST API arrives as null: the host keeps conf keys gob-encoded, which drops empty lists.)"""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"property 'meta' is {value!r}; must be a list of names from {', '.join(META_FIELDS)}")
    unknown = [item for item in items if item not in META_FIELDS]
    if unknown:
        raise ConfigError(f"property 'meta' has {unknown[0]!r}; allowed names are {', '.join(META_FIELDS)}")
    return tuple(dict.fromkeys(items))


def _success_status_setting(value: Any) -> int:
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


def _string_list(key: str, value: Any) -> list[str]:
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise ConfigError(f"property '{key}' is {value!r}; must be a list of non-empty strings")
    return items


def _cors_setting(value: Any) -> CorsConfig | None:
    """Property ``cors``; ``{}`` or null: off. eKuiper lowercases the nested keys of its yaml files (``maxage``)."""
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"property 'cors' is {value!r}; must be a mapping, e.g. "
                          "{origins: [\"https://app.example.com\"], headers: [Content-Type], maxAge: 600}")
    known = {"origins": "origins", "headers": "headers", "maxage": "maxAge"}
    for key in value:
        if str(key).lower() not in known:
            raise ConfigError(f"property 'cors' has key {key!r}; allowed keys are origins, headers and maxAge")
    settings = {str(key).lower(): item for key, item in value.items()}
    origins = _string_list("cors.origins", settings.get("origins") or [])
    if not origins:
        raise ConfigError(f"property 'cors' is {value!r}; it needs 'origins', the allowed browser origins "
                          "(e.g. [\"https://app.example.com\"], or [\"*\"] for any)")
    headers = settings.get("headers")
    max_age = settings.get("maxage") or 0
    if isinstance(max_age, bool) or not isinstance(max_age, int | str) or not str(max_age).isdigit():
        raise ConfigError(f"property 'cors.maxAge' is {max_age!r}; must be a whole number of seconds")
    return CorsConfig(origins=tuple(o.rstrip("/") for o in origins),
                      headers=DEFAULT_CORS_HEADERS if headers is None else tuple(_string_list("cors.headers", headers)),
                      max_age=int(max_age))


def _meta_query_setting(value: Any) -> bool | tuple[str, ...]:
    """Property ``metaQuery``: ``true`` (every query parameter), ``false``/``[]`` (none) or a list of names."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return True
    if value in (None, False, "", []) or (isinstance(value, str) and value.lower() == "false"):
        return ()
    return tuple(dict.fromkeys(_string_list("metaQuery", value)))


def _trusted_proxies_setting(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _string_list("trustedProxies", value or []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"property 'trustedProxies' has {item!r}; must be IP addresses or CIDR networks, "
                              "e.g. [10.0.0.0/8, \"::1\"]") from None
    return tuple(networks)


def _idempotency_setting(value: Any) -> IdempotencyConfig | None:
    """Property ``idempotency``: ``true`` or a mapping ``{window, maxKeys}``; absent, ``false``, ``{}``: off. eKuiper
    lowercases the nested keys of its yaml files (``maxkeys``)."""
    if value in (None, False, "", {}) or (isinstance(value, str) and value.lower() == "false"):
        return None
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return IdempotencyConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"property 'idempotency' is {value!r}; must be true or a mapping, e.g. "
                          "{window: 300, maxKeys: 10000}")
    settings = {str(key).lower(): item for key, item in value.items()}
    for key in value:
        if str(key).lower() not in ("window", "maxkeys"):
            raise ConfigError(f"property 'idempotency' has key {key!r}; allowed keys are window (seconds) and maxKeys")
    try:
        window = _seconds_setting("idempotency.window", settings.get("window", DEFAULT_IDEMPOTENCY_WINDOW_S))
        max_keys = _int_setting("idempotency.maxKeys", settings.get("maxkeys", DEFAULT_IDEMPOTENCY_MAX_KEYS), 1,
                                10_000_000)
    except ConfigError as exc:  # the checks speak of server settings; this one is a config group's property
        raise ConfigError(str(exc).replace("setting '", "property '", 1)) from None
    return IdempotencyConfig(window=window, max_keys=max_keys)
