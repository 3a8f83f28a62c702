"""The setting ``httpServerTls``: its keys (one table, read by settings.py and scripts/gen_config.py), the
:class:`TlsConfig` it becomes, and its checks. What the server does with it is certificates.py's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .values import seconds_or_off

#: ``httpServerTls.clientAuth``: whether the TLS handshake asks for a client certificate signed by ``cafile``.
CLIENT_AUTH = ("none", "optional", "required")
ClientAuth = Literal["none", "optional", "required"]
#: ``httpServerTls.reloadInterval``'s default, in seconds: see its text in :data:`TLS_KEYS`.
RELOAD_INTERVAL = 60.0

#: The keys of the mapping setting ``httpServerTls``: (key, environment variable suffix, example, text).
TLS_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("certfile", "TLS_CERTFILE", "/var/https-server.crt",
     "PEM certificate (chain) to serve HTTPS with; with keyfile, both or neither."),
    ("keyfile", "TLS_KEYFILE", "/var/https-server.key", "PEM private key of certfile."),
    ("cafile", "TLS_CAFILE", "/var/clients-ca.crt",
     "Mutual TLS: the PEM CA certificate(s) client certificates must be signed by; a missing or unreadable one fails "
     "the start."),
    ("clientAuth", "TLS_CLIENT_AUTH", "required",
     "none, optional or required (the default once cafile is set). required: a client without such a certificate "
     "fails the TLS handshake, on every endpoint. optional: a certificate sent must be valid; endpoints whose config "
     "group has auth: {type: clientcert} answer 401 without one, the others serve such clients too. The "
     "certificate's subject CN is then meta(user). Under Python 3.13+ the check is strict (RFC 5280): the CA needs "
     "basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign."),
    # issue 16: certificate reload without a restart
    ("reloadInterval", "TLS_RELOAD_INTERVAL", "60",
     "Seconds between looks at certfile, keyfile and cafile (their size, time and inode; the content when those "
     "changed). A changed set is loaded whole and checked (certificate and key match, the CA parses) before new "
     "handshakes use it; open connections keep theirs, and no rule restarts. A set that fails (e.g. a certificate "
     "renewed before its key) is logged, counted (httppush_tls_reload_failing in /metrics) and the set in use is "
     "kept until the files change again. Default 60: renewals come days before expiry, and a look costs three "
     "stat() calls. 0 (or off): read once, at the server's start."),
)
TLS_SETTING = "httpServerTls"
TLS_TEXT = ("Serve HTTPS instead of HTTP: a mapping of the keys below. In the files it is one setting (a higher "
            "file's mapping replaces a lower one's); the environment overrides its keys one by one.")


@dataclass(frozen=True)
class TlsConfig:
    certfile: str
    keyfile: str
    cafile: str = ""
    client_auth: ClientAuth = "none"
    #: seconds between looks at the files for a new set; 0: never (see certificates.py)
    reload_interval: float = RELOAD_INTERVAL


def tls_setting(tls: dict[str, Any]) -> TlsConfig | None:
    """``httpServerTls`` (with the environment's keys applied) checked: None when it names no file."""
    certfile, keyfile = tls.get("certfile") or "", tls.get("keyfile") or ""
    cafile = str(tls.get("cafile") or "")
    if not certfile and not keyfile and not cafile:
        return None
    if not certfile or not keyfile:
        raise ConfigError(f"setting '{TLS_SETTING}' needs both 'certfile' and 'keyfile'")
    # a CA file alone means client certificates are wanted: required unless said otherwise
    value = tls.get("clientAuth") or ("required" if cafile else "none")
    client_auth = str(value).lower()
    if client_auth not in CLIENT_AUTH:
        raise ConfigError(f"setting '{TLS_SETTING}.clientAuth' is {value!r}; must be none, optional or required")
    if client_auth != "none" and not cafile:
        raise ConfigError(f"setting '{TLS_SETTING}.clientAuth' is {client_auth!r}; it needs 'cafile', the CA "
                          "certificate(s) that client certificates must be signed by")
    return TlsConfig(certfile=str(certfile), keyfile=str(keyfile), cafile=cafile,
                     client_auth=client_auth,  # type: ignore[arg-type]
                     reload_interval=seconds_or_off(f"setting '{TLS_SETTING}.reloadInterval'",
                                                    tls.get("reloadInterval", RELOAD_INTERVAL)))


