"""What each record carries in ``meta`` (readable in SQL with ``meta(<name>)``): the request facts a config group asks
for (``meta``), copied headers (``metaHeaders``) and query parameters (``metaQuery``), a path template's variables, and
the client's address behind trusted proxies (``trustedProxies``). The four properties are checked here too.

Client text is clipped to :data:`MAX_META_TEXT` characters per value, and the whole ``meta`` of a record to
:data:`MAX_META_BYTES` of JSON (431 beyond): what a client repeats in every record stays small.

Example: ``build(MetaSpec(("path",)), head)`` → ``b'{"path":"/api/data"}'``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .answers import HeadersTooLarge
from .errors import ConfigError
from .request import RequestHead
from .values import string_list, switched_off, switched_on

#: What ``meta`` may list. ``user`` is the authenticated principal (``auth``), absent without auth; ``remoteAddr``
#: follows ``X-Forwarded-For`` (or ``Forwarded``: ``proxyHeader``) when the peer is in ``trustedProxies``;
#: ``requestId`` is the client's ``X-Request-Id`` or a generated one, echoed in the answer.
META_FIELDS = ("method", "path", "remoteAddr", "contentType", "user", "requestId")
#: Longest text copied from a request into ``meta`` (per value, per record).
MAX_META_TEXT = 256
#: Largest ``meta`` of one record, as JSON: a request whose configured metadata is larger is refused with 431, not
#: cut, so that a rule never sees part of what it was configured to get.
MAX_META_BYTES = 4096
#: A path template's variable: ``{name}`` filling a whole segment (``routing.Template``).
TEMPLATE_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: ``proxyHeader``: the header trusted proxies name the client in; ``Forwarded`` (RFC 7239) only when chosen.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def clip(text: str) -> str:
    """Client-supplied text for ``meta``, cut to :data:`MAX_META_TEXT` characters."""
    return text if len(text) <= MAX_META_TEXT else text[:MAX_META_TEXT]


@dataclass(frozen=True)
class MetaSpec:
    """What the records of one group carry in ``meta``. Equal specs give equal meta for one request."""

    fields: tuple[str, ...]
    #: a path template's variables for a request path (``Template.params``)
    variables: Callable[[str], dict[str, str]] | None = None
    #: ``metaHeaders`` as one pattern over lower-cased header names
    headers: re.Pattern[str] | None = None
    #: ``metaQuery``: ``True`` for every parameter, or the names
    query: bool | tuple[str, ...] = ()
    proxies: tuple[Network, ...] = ()
    #: ``proxyHeader``, lower-cased: where trusted proxies name the client
    proxy_header: bytes = b"x-forwarded-for"
    #: lower-cased names no header or query parameter may fill (:func:`reserved_names`)
    reserved: frozenset[str] = frozenset()


def meta_spec(fields: tuple[str, ...], header_globs: tuple[str, ...], query: bool | tuple[str, ...],
              proxies: tuple[Network, ...], variables: Callable[[str], dict[str, str]] | None,
              proxy_header: str = PROXY_HEADERS[0], path: str = "") -> MetaSpec | None:
    """``None`` when records carry no meta (the default: no work per request). ``path``: the DATASOURCE, whose
    template variables are reserved like the facts."""
    if not fields and variables is None and not header_globs and not query:
        return None
    headers = re.compile("|".join(fnmatch.translate(glob) for glob in header_globs)) if header_globs else None
    return MetaSpec(fields, variables, headers, query, proxies, proxy_header.lower().encode("latin-1"),
                    frozenset(name.lower() for name in reserved_names(path)))


def reserved_names(path: str) -> tuple[str, ...]:
    """The meta names only the plugin fills: the facts of :data:`META_FIELDS` (whether ``meta`` lists them or not)
    and the variables of the path template ``path``. No header or query parameter is ever copied to one of them,
    compared case-insensitively (``X-User`` is not one; ``User`` and ``REMOTEADDR`` are)."""
    return META_FIELDS + tuple(TEMPLATE_VARIABLE.findall(path))


def check_reserved(path: str, header_globs: tuple[str, ...], query: bool | tuple[str, ...]) -> None:
    """Refuse (:class:`ConfigError`) a template variable named like a request fact (``/d/{user}``: the path would
    name the user), and a ``metaHeaders`` or ``metaQuery`` name that is a reserved one (globs and ``metaQuery: true``
    are not refused: they skip reserved names per request)."""
    facts = {name.lower(): name for name in META_FIELDS}
    for variable in TEMPLATE_VARIABLE.findall(path):
        if variable.lower() in facts:
            raise ConfigError(f"DATASOURCE is {path!r}; its template variable {{{variable}}} would fill the same meta "
                              f"name as the request fact meta({facts[variable.lower()]}), which only the plugin "
                              "fills: a client would choose it in the path; rename the variable (e.g. {device})")
    reserved = {name.lower(): name for name in reserved_names(path)}
    named = [("metaHeaders", glob) for glob in header_globs if not any(c in glob for c in "*?[")]
    named += [("metaQuery", name) for name in query] if query is not True else []
    for prop, name in named:
        other = reserved.get(name.lower())
        if other is None:
            continue
        side = (f"the path template's variable {{{other}}} (DATASOURCE {path!r})" if other not in META_FIELDS else
                f"the request fact meta({other}), which only the plugin fills")
        raise ConfigError(f"property '{prop}' has {name!r}, which would fill the same meta name as {side}; a client "
                          f"must not be able to set it: remove {name!r} from '{prop}'")


def request_id(head: RequestHead) -> str:
    """The request's id: its ``X-Request-Id`` when that is visible ASCII (clipped), else a new random one."""
    given = head.header(b"x-request-id")
    text = given.decode("latin-1") if given else ""
    return clip(text) if text and text.isascii() and text.isprintable() else uuid.uuid4().hex


def build(spec: MetaSpec, head: RequestHead, user: str | None = None, rid: str = "") -> bytes:
    """The JSON of one record's ``meta`` (``rid``: the request id, when ``spec`` asks for it). Precedence, lowest
    first: query parameters, headers, template variables, request facts."""
    meta: dict[str, Any] = {}
    if spec.query:
        meta.update(_query(head.target, spec.query, spec.reserved))
    if spec.headers is not None:
        copied: set[str] = set()
        for raw_name, raw_value in head.headers:
            name = raw_name.decode("latin-1").lower()
            if spec.headers.match(name) and name not in spec.reserved:
                value = raw_value.decode("latin-1")
                meta[name] = clip(f"{meta[name]}, {value}" if name in copied else value)  # repeated: joined
                copied.add(name)
    if spec.variables is not None:  # the template's variables: client text, clipped like the rest
        meta.update((name, clip(value)) for name, value in spec.variables(head.path).items())
    if spec.fields:
        values = {"method": head.method, "path": head.path, "remoteAddr": head.remote,
                  "contentType": clip(head.content_type), "requestId": rid}
        if user is not None:  # absent without auth
            values["user"] = clip(user)
        if spec.proxies:
            values["remoteAddr"] = client_address(head, spec.proxies, spec.proxy_header)
        meta.update((name, values[name]) for name in spec.fields if name in values)
    data = orjson.dumps(meta)
    if len(data) > MAX_META_BYTES:
        raise HeadersTooLarge(f"the request's metadata for each record is {len(data)} bytes of JSON; the limit is "
                              f"{MAX_META_BYTES} (metaHeaders, metaQuery): send fewer or shorter headers or parameters")
    return data


def _query(target: bytes, wanted: bool | tuple[str, ...], reserved: frozenset[str]) -> dict[str, Any]:
    """``metaQuery``: parameters of the request target's query, clipped; a repeated one becomes a list; a reserved
    name (any case) is not taken."""
    start = target.find(b"?")
    if start < 0:
        return {}
    params: dict[str, Any] = {}
    for name, value in parse_qsl(target[start + 1:].decode("latin-1"), keep_blank_values=True):
        if (wanted is not True and name not in wanted) or name.lower() in reserved:
            continue
        name, value = clip(name), clip(value)
        if name not in params:
            params[name] = value
        elif isinstance(params[name], list):
            params[name].append(value)
        else:
            params[name] = [params[name], value]
    return params


def client_address(head: RequestHead, proxies: tuple[Network, ...], header: bytes = b"x-forwarded-for") -> str:
    """The client's address: the peer, or — when the peer is a trusted proxy — the rightmost address of ``header``
    (``x-forwarded-for``, or ``forwarded``: RFC 7239 ``for=``) that is not a trusted proxy. Every line of the header
    counts, in order, as one list (a proxy may append its own line after a client's): the walk goes from the nearest
    hop back while the hop is a trusted proxy. A hop that is not an address (``unknown``, a name, garbage) stops it:
    the last trusted hop is then all we know."""
    address = head.remote
    if not proxies or not _trusted(address, proxies):
        return address
    size = len(header)
    text = ",".join([value.decode("latin-1") for key, value in head.headers
                     if len(key) == size and key.lower() == header])
    hops = text.split(",")
    for hop in reversed(hops):
        try:
            hop = str(ipaddress.ip_address(_forwarded_for(hop) if header == b"forwarded" else hop.strip()))
        except ValueError:
            break
        address = hop
        if not _trusted(hop, proxies):
            break
    return address


def _forwarded_for(element: str) -> str:
    """The address of one ``Forwarded`` element's ``for=`` (RFC 7239): quotes, brackets and port removed."""
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for":
            value = value.strip().strip('"')
            if value.startswith("["):
                return value[1:value.find("]")] if "]" in value else ""
            return value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return ""


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


# -- the properties ---------------------------------------------------------------------------------------------


def parse_meta(value: Any) -> tuple[str, ...]:
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


def parse_meta_headers(value: Any) -> tuple[str, ...]:
    """Property ``metaHeaders``: header names or ``*`` globs, lower-cased."""
    return tuple(dict.fromkeys(name.lower() for name in string_list("property 'metaHeaders'", value or [])))


def parse_meta_query(value: Any) -> bool | tuple[str, ...]:
    """Property ``metaQuery``: ``true`` (every query parameter), ``false``/``[]`` (none) or a list of names."""
    if switched_on(value):
        return True
    if switched_off(value):
        return ()
    return tuple(dict.fromkeys(string_list("property 'metaQuery'", value)))


def parse_trusted_proxies(value: Any) -> tuple[Network, ...]:
    networks = []
    for item in string_list("property 'trustedProxies'", value or []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"property 'trustedProxies' has {item!r}; must be IP addresses or CIDR networks, "
                              "e.g. [10.0.0.0/8, \"::1\"]") from None
    return tuple(networks)


def parse_proxy_header(value: Any) -> str:
    """Property ``proxyHeader``: ``X-Forwarded-For`` (the default) or ``Forwarded``, in any case."""
    text = str(value or PROXY_HEADERS[0]).strip()
    for name in PROXY_HEADERS:
        if text.lower() == name.lower():
            return name
    raise ConfigError(f"property 'proxyHeader' is {value!r}; must be {' or '.join(PROXY_HEADERS)}")
