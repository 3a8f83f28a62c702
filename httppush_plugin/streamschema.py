"""Which schema a source checks its records against (``schema.py``), found at each start of the source.

``validation`` (property): ``off`` — none; ``auto`` — only when the stream has ``STRICT_VALIDATION="true"`` (eKuiper
then drops what does not match) and is not binary (eKuiper skips the check for FORMAT="binary"); ``on`` — always.
Where the fields come from:

1. eKuiper's REST API, ``GET /streams/{name}/schema`` (then ``/tables/{name}/schema``): the fields the host's
   preprocessor checks, those of a ``.proto`` (SCHEMAID) included. ``name`` is the start command's ``opId``
   (:func:`stream_of`: a SHARED stream's is not its name). The
   address is the host's ``etc/kuiper.yaml`` ``basic.restIp``/``restPort`` with eKuiper's environment overrides
   (``KUIPER__BASIC__RESTIP``, ``KUIPER__BASIC__RESTPORT``). A stream without fields: nothing to check.
2. When REST cannot be asked (refused, timed out, 401 because ``basic.authentication`` is on): the property
   ``schema``.
3. Neither: the start fails (:class:`ConfigError`) naming both.

``configure()`` runs while eKuiper waits for the start's answer, so the whole look-up is bounded by
:data:`REST_TIMEOUT` seconds; a refused connection is retried within it (at eKuiper's boot the rules are started a
moment before its REST server listens, ``internal/server/server.go``).

Example: ``find_schema(cfg, "s1", plugin_dir)`` → ``Schema(fields=(("t", FieldType("float")),), origin="GET
http://127.0.0.1:9081/streams/s1/schema")``, or ``None`` when nothing is to be checked.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .fieldtypes import from_json_schema
from .layout import host_config_path
from .properties import EndpointConfig
from .schema import Schema

#: seconds the REST look-up may take in all (it runs inside eKuiper's start of the rule)
REST_TIMEOUT = 2.0
#: the largest answer read from eKuiper's REST (a stream's fields are a few KB)
MAX_ANSWER_BYTES = 1 << 20


def host_basic(plugin_dir: Path, environ: Mapping[str, str]) -> tuple[str, bool]:
    """The host's REST base URL and its ``basic.ignoreCase``, from its kuiper.yaml and environment, read as eKuiper
    reads them (``internal/conf/load.go``): keys in any case (it lowercases them), then ``KUIPER__BASIC__<KEY>``
    (the key in any case, the value trimmed; a boolean is what Go's ``strconv.ParseBool`` reads as one)."""
    basic: dict[str, Any] = {}
    path = host_config_path(plugin_dir, environ)
    if path is not None:
        try:
            node = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            node = None
        node = _lowered(node)
        basic = _lowered(node.get("basic"))
    for key, value in environ.items():
        parts = key.split("__")
        if len(parts) == 3 and parts[0] == "KUIPER" and parts[1].lower() == "basic":
            basic[parts[2].lower()] = value.strip()
    ip = str(basic.get("restip") or "127.0.0.1")
    port = str(basic.get("restport") or 9081)
    ignore = basic.get("ignorecase") in (True, "t", "T", "TRUE", "true", "True")
    tls = bool(basic.get("resttls")) or any(key.split("__")[:3] == ["KUIPER", "BASIC", "RESTTLS"]
                                            for key in map(str.upper, environ))
    if ip in ("0.0.0.0", ""):
        ip = "127.0.0.1"
    elif ip == "::":
        ip = "::1"
    host = f"[{ip}]" if ":" in ip else ip
    return f"{'https' if tls else 'http'}://{host}:{port}", ignore


def _lowered(node: Any) -> dict[str, Any]:
    return {str(key).lower(): value for key, value in node.items()} if isinstance(node, dict) else {}


class RestUnavailable(Exception):
    """eKuiper's REST could not be asked; the message says what was tried and why it failed."""


def fetch_fields(base: str, name: str, timeout: float = REST_TIMEOUT) -> tuple[dict[str, Any] | None, str]:
    """The stream's (else the table's) JSON schema, ``{}`` when it declares no fields, ``None`` when neither a stream
    nor a table has that name; and the URL asked. Raises :class:`RestUnavailable`."""
    deadline = time.monotonic() + timeout
    quoted = urllib.parse.quote(name, safe="")
    for kind in ("streams", "tables"):
        url = f"{base}/{kind}/{quoted}/schema"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RestUnavailable(f"GET {url}: no answer within {timeout:g} s")
            try:
                with urllib.request.urlopen(url, timeout=left, context=_unverified(url)) as answer:
                    data = _read_answer(answer, url, deadline, timeout)
                schema = json.loads(data or b"null")
                return (schema if isinstance(schema, dict) else {}), url
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise RestUnavailable(f"GET {url} answered {exc.code} (eKuiper's basic.authentication is on)"
                                          ) from None
                if exc.code in (400, 404):  # eKuiper answers 400 "not found" for an unknown stream
                    break
                raise RestUnavailable(f"GET {url} answered {exc.code}") from None
            except RecursionError:
                raise RestUnavailable(f"GET {url}: the answer is JSON nested too deeply") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ConnectionRefusedError) and deadline - time.monotonic() > 0.2:
                    time.sleep(0.1)  # eKuiper's boot: its rules start before its REST server listens
                    continue
                raise RestUnavailable(f"GET {url}: {reason}") from None
    return None, url


def _read_answer(answer: Any, url: str, deadline: float, timeout: float) -> bytes:
    """The body, at most :data:`MAX_ANSWER_BYTES`, read one receive at a time so that a body sent slowly ends at the
    deadline (each receive waits at most the socket's timeout, which is what was left of it at the request)."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = answer.read1(65536)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise RestUnavailable(f"GET {url}: the answer is over {MAX_ANSWER_BYTES} bytes")
        if time.monotonic() > deadline:
            raise RestUnavailable(f"GET {url}: no whole answer within {timeout:g} s")
        parts.append(chunk)


def _unverified(url: str) -> Any:
    if not url.startswith("https:"):
        return None
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the host's own API on loopback, with whatever certificate it serves
    return context


def stream_of(instance: tuple[str, str, int] | None) -> str | None:
    """The stream (or table) a source instance reads, from its start command's ``(ruleId, opId, instanceId)``: the
    opId, except for a SHARED stream, whose source runs in the rule ``$$subtopo_<stream>`` with the opId
    ``subtopo_<stream>`` (measured on 2.4.0 and 2.4.2)."""
    if instance is None:
        return None
    rule, op = instance[0], instance[1]
    return rule[len(_SUBTOPO):] if rule.startswith(_SUBTOPO) else op


_SUBTOPO = "$$subtopo_"


def find_schema(cfg: EndpointConfig, stream: str | None, plugin_dir: Path,
                environ: Mapping[str, str] | None = None) -> Schema | None:
    """The schema a source's records are checked against, or ``None``; raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    if cfg.validation == "off" or (cfg.validation == "auto" and (not cfg.strict or cfg.format == "binary")):
        return None
    base, ignore_case = host_basic(plugin_dir, env)
    why = "the start command named no stream"
    if stream:
        try:
            found, url = fetch_fields(base, stream)
        except RestUnavailable as exc:
            why = str(exc)
        else:
            if found is None:
                why = f"eKuiper at {base} has no stream or table {stream!r}"
            elif found:
                try:
                    return Schema(from_json_schema(found), ignore_case, f"GET {url}")
                except (ValueError, RecursionError) as exc:
                    why = f"eKuiper's schema of {stream!r} is not understood: {type(exc).__name__}: {exc}"
            elif cfg.schema is None or cfg.validation == "auto":
                return None  # the stream declares no fields: eKuiper checks nothing
    if cfg.schema is not None:
        return Schema(cfg.schema, ignore_case, "property 'schema'")
    raise ConfigError(f"property 'validation' is {cfg.validation!r} and the stream's fields are needed, but "
                      f"eKuiper's REST API cannot be asked ({why}) and the property 'schema' is not set; set "
                      "'schema' to the stream's fields (e.g. \"temperature float, tags array(string)\"), or "
                      "'validation' to off")
