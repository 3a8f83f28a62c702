"""The shared server's settings: one table (:data:`SETTINGS`), and the loader that layers defaults, the plugin's
``etc/kuiper.yaml``, the host's ``etc/kuiper.yaml`` and the environment into a :class:`ServerConfig`.

Each row holds everything there is to know about one setting: its key, its environment variable, its default, its
check and the text that documents it. ``scripts/gen_config.py`` writes the shipped ``etc/kuiper.yaml`` and the table in
``docs/configuration.md`` from it, and a test fails when a committed file is not what it would write.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .layout import host_config_path
from .settingsfile import check_known, read_section, with_origin
from .tlsconfig import CLIENT_AUTH, TLS_KEYS, TLS_SETTING, TLS_TEXT, TlsConfig, tls_setting  # noqa: F401 (read here too)
from .values import seconds, seconds_or_off, switched_off, whole_number

#: Default listen port per source symbol. ``httppush`` keeps the seed's 10081 (hosts without the built-in);
#: ``pyhttppush`` runs beside eKuiper 2.x, whose own data server already holds 10081.
DEFAULT_PORTS: dict[str, int] = {"httppush": 10081, "pyhttppush": 10082}


@dataclass(frozen=True)
class Setting:
    """One server setting. ``check(what, value)`` turns a raw value into the :class:`ServerConfig` field's."""

    name: str
    field: str
    #: the environment variable is ``<SYMBOL>_<env>``, e.g. ``PYHTTPPUSH_SERVER_PORT``
    env: str
    default: Any
    check: Callable[[str, Any], Any]
    text: str
    #: how the documentation shows the default, when not as the value itself
    shown: str = ""


def _address(_what: str, value: Any) -> str:
    return str(value) if value else "0.0.0.0"


def _port(what: str, value: Any) -> int:
    return whole_number(what, value, 0, 65535)


def _positive(what: str, value: Any) -> int:
    return whole_number(what, value, 1)


def _count(what: str, value: Any) -> int:
    """A whole number, or none (``0``, ``off``, ``false``)."""
    return 0 if switched_off(value) else whole_number(what, value, 0)


def _token(what: str, value: Any) -> str:
    if switched_off(value):
        return ""
    if not isinstance(value, str) or len(value) < 16 or any(not 0x21 <= ord(c) < 0x7F for c in value):
        raise ConfigError(f"{what} must be at least 16 printable characters without spaces (e.g. the output of "
                          "`openssl rand -hex 24`), or off")
    return value


def _admin_path(what: str, value: Any) -> str:
    """A path the server answers GET on; ``""``, ``false`` or ``off``: not served."""
    if switched_off(value):
        return ""
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "{" in value:
        raise ConfigError(f"{what} is {value!r}; must be a URL path starting with '/' (e.g. '/healthz'), or off to "
                          "switch it off")
    return value


_LIMIT_503 = "503 with Retry-After: 1 naming this setting"
SETTINGS: tuple[Setting, ...] = (
    Setting("httpServerIp", "ip", "SERVER_IP", "0.0.0.0", _address,
            "Address to listen on. 0.0.0.0 listens on every IPv4 interface; 127.0.0.1 only on loopback."),
    Setting("httpServerPort", "port", "SERVER_PORT", DEFAULT_PORTS["httppush"], _port,
            "TCP port to listen on: 10081 in httppush.zip (the seed's port), 10082 in pyhttppush.zip (eKuiper 2.x "
            "holds 10081 with its own data server).", shown="10082 (pyhttppush), 10081 (httppush)"),
    Setting("httpServerMaxBodySize", "max_body_size", "SERVER_MAX_BODY_SIZE", 10 * 1024 * 1024, _positive,
            "Largest request body in bytes; larger bodies are answered 413. A compressed body (Content-Encoding gzip, "
            "deflate or zstd) must stay within it both as sent and once inflated.", shown="10485760 (10 MiB)"),
    Setting("httpServerReadHeaderTimeout", "read_header_timeout", "SERVER_READ_HEADER_TIMEOUT", 10.0, seconds,
            "Seconds from the first byte of a request to the end of its headers; a slower client is answered 408 and "
            "disconnected. A new connection that sends nothing is closed after this long too.", shown="10"),
    Setting("httpServerReadBodyTimeout", "read_body_timeout", "SERVER_READ_BODY_TIMEOUT", 60.0, seconds,
            "Seconds from the end of the headers to the end of the body; a slower client is answered 408 and "
            "disconnected (60 s carries 10 MiB at about 1.4 Mbit/s).", shown="60"),
    Setting("httpServerIdleTimeout", "idle_timeout", "SERVER_IDLE_TIMEOUT", 60.0, seconds,
            "Seconds a keep-alive connection may sit idle between requests before the server closes it.", shown="60"),
    Setting("httpServerMaxRecords", "max_records", "SERVER_MAX_RECORDS", 100_000, _positive,
            "Most records one body may hold: a JSON array's elements, the list a custom decoder returns; for NDJSON "
            "and delimited bodies, lines, blank ones included (counted before any line is decoded). A body with more "
            "is answered 413 naming this setting and none of its records is delivered; the connection stays open. A "
            "large JSON array is parsed a slice at a time and refused at the slice that passes the limit."),
    Setting("httpServerMaxFields", "max_fields", "SERVER_MAX_FIELDS", 10_000, _positive,
            "Most fields one record may have: a JSON record's keys (not those of objects nested in it), a delimited "
            "line's values (without fields names; with them, values past the last name are dropped), an urlencoded "
            "body's '&'-separated pairs. More is answered 413 naming this setting; the connection stays open."),
    Setting("httpServerMaxValues", "max_values", "SERVER_MAX_VALUES", 1_000_000, _positive,
            "Most values one body may hold, counted before it is parsed: for JSON and NDJSON its ',' and '[' "
            "characters and three per '{' (an object takes about three times a value's memory), those inside "
            "strings included; for delimited bodies without fields names its delimiters and lines. It bounds the "
            "memory a decoded body takes: at most about 90 bytes a value (docs/operations.md), so that one body at "
            "the default limit fits in the default httpServerMaxBuffered. More is answered 413 naming this setting; "
            "the connection stays open."),
    Setting("httpServerMaxRecordValues", "max_record_values", "SERVER_MAX_RECORD_VALUES", 250_000, _positive,
            "Most values one JSON record may hold (a body that is one object, an NDJSON line, an element of an "
            "array), counted as for httpServerMaxValues before the record is parsed. One record is parsed in one call "
            "that holds Python's GIL, during which the server serves no one else: 250,000 values parse in about "
            "30 ms. More is answered 413 naming this setting; the connection stays open."),
    Setting("httpServerMaxConnections", "max_connections", "SERVER_MAX_CONNECTIONS", 1024, _positive,
            "Open connections, every endpoint and the health and metrics paths together. One more is answered "
            f"{_LIMIT_503} as soon as it is accepted, before any request is read, and closed."),
    Setting("httpServerMaxSourceBacklog", "max_source_backlog", "SERVER_MAX_SOURCE_BACKLOG", 16 * 1024 * 1024,
            _positive,
            "Bytes of framed records waiting in the plugin for one source's eKuiper channel (eKuiper reading slower "
            f"than clients push). A request whose records would take a source's backlog over it is answered "
            f"{_LIMIT_503}, its \"delivered\" saying what each source got; the connection stays open. While nothing "
            "is waiting, a request of any size is let in.", shown="16777216 (16 MiB)"),
    Setting("httpServerMaxBuffered", "max_buffered", "SERVER_MAX_BUFFERED", 128 * 1024 * 1024, _positive,
            "Bytes the whole server holds for requests: bodies (inflated, when compressed) from their first byte "
            f"until they are answered, what a body of 16 KiB or more will hold while it is decoded and framed "
            f"(estimated before: 90 bytes a value, plus twice the body), and every source's backlog. A body that "
            f"would take the total over it is answered {_LIMIT_503} (as soon as its Content-Length shows it, before "
            "a 100 Continue, and the connection closed; else while it arrives, or before it is decoded; one whose "
            "decoding alone could never fit, 413). At least httpServerMaxBodySize, else the start fails.",
            shown="134217728 (128 MiB)"),
    Setting("httpServerRestartGrace", "restart_grace", "SERVER_RESTART_GRACE", 2.0, seconds_or_off,
            "Seconds an endpoint whose last source stopped stays known, answering 503 with Retry-After: 1 instead of "
            "404, while the server keeps its port and connections open (when that was the last source): eKuiper "
            "restarts or updates a rule by stopping its source and starting it again a moment later, so its clients "
            "see 503s and no refused or reset connection. After this long with no source the endpoint answers 404, "
            "and with no endpoint left the port is released. 0 or off: at once.", shown="2"),
    Setting("httpServerHealthPath", "health_path", "SERVER_HEALTH_PATH", "/healthz", _admin_path,
            "Path of the health answer, for GET and HEAD, without authentication: 200 {\"status\": \"ok\", "
            "\"endpoints\": [...]} listing every endpoint with its format and its sources (rule, stream, attached, "
            "connected); 503 with \"status\" \"draining\" (the node drains), \"partial\" (some sources are not "
            "attached to eKuiper's channel yet, or an endpoint is vacant during httpServerRestartGrace) or "
            "\"unavailable\" (none is). Other methods get 405 (Allow: GET, HEAD), unless a stream serves POST or "
            "PUT on the same path. \"\", off or false switches it off (in the environment off or false: an empty "
            "variable counts as unset)."),
    Setting("httpServerMetricsPath", "metrics_path", "SERVER_METRICS_PATH", "/metrics", _admin_path,
            "Path of the Prometheus metrics (OpenMetrics when the Accept header asks for it), for GET and HEAD, "
            "without authentication; switched off as httpServerHealthPath. The two paths must differ."),
    Setting("httpServerAdminPath", "admin_path", "SERVER_ADMIN_PATH", "/admin", _admin_path,
            "Path under which the admin actions are answered, for POST: <path>/drain and <path>/undrain "
            "(docs/scaling.md#draining); switched off as httpServerHealthPath."),
    Setting("httpServerAdminToken", "admin_token", "SERVER_ADMIN_TOKEN", "", _token,
            "Bearer token the admin actions require (Authorization: Bearer <token>), at least 16 characters; a wrong "
            "one is answered 401 and counts toward the auth backoff (429). Off (the default): the actions answer "
            "403. Prefer the environment variable to a file.", shown="off"),
    Setting("httpServerDrainGrace", "drain_grace", "SERVER_DRAIN_GRACE", 10.0, seconds_or_off,
            "Seconds a drain lasts before the node counts as drained: health answers 503 \"draining\" from the "
            "start, requests are still served and each answer closes its connection; at the end the idle "
            "connections are closed too. Longer than the balancer takes to see a failed health check (the shipped "
            "HAProxy config: 4 s). A drain's ?grace= overrides it.", shown="10"),
    Setting("httpServerMaxConnectionAge", "max_connection_age", "SERVER_MAX_CONNECTION_AGE", 0.0, seconds_or_off,
            "Seconds a connection may live: past it, its next answer carries Connection: close and the connection "
            "closes after it, so long-lived keep-alive clients and balancers spread over nodes added since. An idle "
            "connection is not closed at its age (a client could be sending on it just then), only after "
            "httpServerIdleTimeout. Off (0, the default): as long as the client keeps it busy.", shown="off"),
    Setting("httpServerMaxConnectionRequests", "max_connection_requests", "SERVER_MAX_CONNECTION_REQUESTS", 0,
            _count,
            "Requests a connection may carry: the answer to the last one carries Connection: close and the "
            "connection closes after it. Off (0, the default): no limit.", shown="off"),
)
_DEFAULTS = {setting.field: setting.default for setting in SETTINGS}


@dataclass(frozen=True)
class ServerConfig:
    """The shared HTTP server: one per plugin process. Defaults are :data:`SETTINGS`'."""

    ip: str = _DEFAULTS["ip"]
    port: int = _DEFAULTS["port"]
    tls: TlsConfig | None = None
    max_body_size: int = _DEFAULTS["max_body_size"]
    read_header_timeout: float = _DEFAULTS["read_header_timeout"]
    read_body_timeout: float = _DEFAULTS["read_body_timeout"]
    idle_timeout: float = _DEFAULTS["idle_timeout"]
    max_records: int = _DEFAULTS["max_records"]
    max_fields: int = _DEFAULTS["max_fields"]
    max_values: int = _DEFAULTS["max_values"]
    max_record_values: int = _DEFAULTS["max_record_values"]
    max_connections: int = _DEFAULTS["max_connections"]
    max_source_backlog: int = _DEFAULTS["max_source_backlog"]
    max_buffered: int = _DEFAULTS["max_buffered"]
    health_path: str = _DEFAULTS["health_path"]
    metrics_path: str = _DEFAULTS["metrics_path"]
    restart_grace: float = _DEFAULTS["restart_grace"]
    admin_path: str = _DEFAULTS["admin_path"]
    admin_token: str = field(default=_DEFAULTS["admin_token"], repr=False)
    drain_grace: float = _DEFAULTS["drain_grace"]
    max_connection_age: float = _DEFAULTS["max_connection_age"]
    max_connection_requests: int = _DEFAULTS["max_connection_requests"]

    @property
    def admin_actions(self) -> dict[str, str]:
        """The admin actions' paths (none when httpServerAdminPath is off): ``{"/admin/drain": "drain", …}``."""
        base = self.admin_path.rstrip("/")
        return {f"{base}/{action}": action for action in ("drain", "undrain")} if self.admin_path else {}

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


def load_server_config(plugin_dir: Path, symbol: str, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The shared server's settings. Each comes from the highest of these layers that sets it:

    1. the defaults (:data:`SETTINGS`);
    2. ``<plugin_dir>/etc/kuiper.yaml``, section ``source:`` (shipped; a reinstall or upgrade replaces it);
    3. the HOST's ``etc/kuiper.yaml`` (:func:`~.layout.host_config_path`), section ``source.<symbol>``, e.g.
       ``source: {pyhttppush: {httpServerPort: 10090}}``: untouched by plugin installs, so settings there survive;
    4. the environment, ``<SYMBOL>_…``. Example: ``PYHTTPPUSH_SERVER_PORT=9000`` moves the pyhttppush server to 9000.

    ``httpServerTls`` is one setting in the files (a higher file's mapping replaces a lower one's); the environment
    overrides its keys one by one. A bad value's error names the file and key, or the variable, it came from.
    """
    environ = os.environ if environ is None else environ
    where: dict[str, str] = {}  # setting -> the file and key, or the variable, it came from (for error messages)
    section = read_section(plugin_dir / "etc" / "kuiper.yaml", ("source",), where)
    host_path = host_config_path(plugin_dir, environ)
    if host_path is not None:
        host_section = read_section(host_path, ("source", symbol), where)
        check_known(host_section, [*(s.name for s in SETTINGS), TLS_SETTING], host_path, f"source.{symbol}")
        section.update(host_section)
    prefix = env_prefix(symbol)
    for setting in SETTINGS:
        name = prefix + setting.env
        if environ.get(name) not in (None, ""):
            section[setting.name] = environ[name]
            where[setting.name] = f"environment variable {name}"
    tls = section.get(TLS_SETTING) or {}
    if not isinstance(tls, dict):
        raise ConfigError(with_origin(f"setting '{TLS_SETTING}' is {tls!r}; must be a mapping with 'certfile' and "
                                       "'keyfile'", where))
    tls = dict(tls)
    for key, env, _, _ in TLS_KEYS:
        if environ.get(prefix + env):
            tls[key] = environ[prefix + env]
            where[f"{TLS_SETTING}.{key}"] = f"environment variable {prefix + env}"
    try:
        return _server_config(section, tls, symbol)
    except ConfigError as exc:
        raise ConfigError(with_origin(str(exc), where)) from None


def _server_config(section: Mapping[str, Any], tls: dict[str, Any], symbol: str) -> ServerConfig:
    """Check the merged settings (``tls``: ``httpServerTls`` with the environment's keys applied)."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        default = DEFAULT_PORTS.get(symbol, setting.default) if setting.field == "port" else setting.default
        values[setting.field] = setting.check(f"setting '{setting.name}'", section.get(setting.name, default))
    if values["health_path"] and values["health_path"] == values["metrics_path"]:
        raise ConfigError(f"setting 'httpServerMetricsPath' is {values['metrics_path']!r}, the same as "
                          "httpServerHealthPath; give them different paths (or switch one off: off)")
    if values["max_buffered"] < values["max_body_size"]:
        raise ConfigError(f"setting 'httpServerMaxBuffered' is {values['max_buffered']}, less than "
                          f"httpServerMaxBodySize ({values['max_body_size']}): a body of a size between the two could "
                          "never be received; make it at least as large")
    config = ServerConfig(tls=tls_setting(tls), **values)
    if {config.health_path, config.metrics_path} & set(config.admin_actions):
        raise ConfigError(f"setting 'httpServerAdminPath' is {config.admin_path!r}: its actions "
                          f"{sorted(config.admin_actions)} take the health or metrics path; give them different paths")
    return config
