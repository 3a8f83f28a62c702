"""Idempotent retries: a request whose ``Idempotency-Key`` repeats one answered 2xx within the endpoint's window is
not delivered again; it gets the stored answer.

One :class:`KeyStore` per endpoint (method + DATASOURCE), kept for the life of the plugin process, so a rule restart
(which may stop and start the shared server) does not forget keys; a plugin restart does. A key is remembered from
its request's arrival ("in flight": a second request with it gets 409) until its answer: a 2xx answer is stored for
``window`` seconds, any other answer forgets the key, so a retry after a 4xx or 503 is handled afresh. At most
``max_keys`` keys are kept; more evict the oldest answered ones (counted in ``httppush_idempotency_evictions_total``);
keys in flight are never evicted (there are at most as many as open connections).

A request is "the same" when its method, request target (path with a template's values, and query), Content-Type
(case aside) and body (after Content-Encoding is undone) are; keys are separate per authenticated user. Only the
event-loop thread uses a store.

Example::

    store = KeyStore(IdempotencyConfig(window=300, max_keys=10_000), stats)
    outcome = store.begin(b"k1", "", fingerprint)   # an Entry: go on, deliver, then store.settle(entry, answer)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from .config import IdempotencyConfig
from .metrics import EndpointStats

#: The longest ``Idempotency-Key`` accepted (characters, visible ASCII).
MAX_KEY_LENGTH = 255
_now = time.monotonic


class BadKey(Exception):
    """The client's key is unusable (400)."""


class Entry:
    __slots__ = ("fingerprint", "status", "body", "expires")

    def __init__(self, fingerprint: bytes, expires: float) -> None:
        self.fingerprint = fingerprint
        self.status = 0  # 0: in flight
        self.body = b""
        self.expires = expires


class KeyStore:
    def __init__(self, config: IdempotencyConfig, stats: EndpointStats) -> None:
        self.config = config
        self.stats = stats
        self._entries: OrderedDict[tuple[str, bytes], Entry] = OrderedDict()

    def __len__(self) -> int:
        self._expire(_now())
        return len(self._entries)

    def begin(self, key: bytes, user: str, fingerprint: bytes) -> Entry | tuple[str, Entry]:
        """A new :class:`Entry` (in flight) when ``key`` is not remembered; else ``("replay" | "conflict" |
        "in flight", entry)``."""
        now = _now()
        self._expire(now)
        slot = (user, key)
        entry = self._entries.get(slot)
        if entry is not None and entry.expires > now:
            if entry.fingerprint != fingerprint:
                return "conflict", entry
            return ("replay" if entry.status else "in flight"), entry
        # the window counts from the answer; an in-flight entry lasts at most one window (then a retry goes ahead)
        entry = Entry(fingerprint, now + self.config.window)
        self._entries[slot] = entry
        self._entries.move_to_end(slot)
        if len(self._entries) > self.config.max_keys:
            self._evict()
        return entry

    def _evict(self) -> None:
        """Forget the oldest answered keys until at most ``max_keys`` are left, or only keys in flight."""
        entries = self._entries
        excess = len(entries) - self.config.max_keys
        victims = []
        for slot, entry in entries.items():
            if len(victims) == excess:
                break
            if entry.status:
                victims.append(slot)
        for slot in victims:
            del entries[slot]
        self.stats.evictions += len(victims)

    def settle(self, key: bytes, user: str, entry: Entry, status: int, body: bytes) -> None:
        """The answer to the request that began ``entry``: a 2xx is remembered for the window, the rest forgets."""
        slot = (user, key)
        if self._entries.get(slot) is not entry:
            return  # evicted, or expired and begun again meanwhile
        if 200 <= status < 300:
            entry.status, entry.body = status, body
            entry.expires = _now() + self.config.window
            self._entries.move_to_end(slot)
        else:
            del self._entries[slot]

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.expires > now:
                break
            del entries[slot]


def parse_key(raw: bytes) -> bytes:
    """The key from an ``Idempotency-Key`` header: 1–255 visible ASCII characters, or an RFC 8941 string as the IETF
    draft writes it (``"a b"``: quotes dropped, ``\\"`` and ``\\\\`` unescaped, spaces allowed). Raises
    :class:`BadKey`."""
    key = raw.strip()
    quoted = len(key) >= 2 and key[:1] == b'"' and key[-1:] == b'"'
    if quoted:
        key = _unescape(key[1:-1])
    low = 0x20 if quoted else 0x21
    if not key or len(key) > MAX_KEY_LENGTH or not all(low <= byte <= 0x7E for byte in key):
        raise BadKey(f"header Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (or a quoted "
                     "string of printable ASCII)")
    return key


def _unescape(text: bytes) -> bytes:
    """An RFC 8941 string's content: ``\\`` before ``"`` or ``\\`` escapes it; any other ``\\`` or a bare ``"``
    is malformed (:class:`BadKey`)."""
    out = bytearray()
    escaped = False
    for byte in text:
        if escaped:
            if byte not in b'"\\':
                raise BadKey("header Idempotency-Key is a quoted string with a backslash before neither '\"' nor '\\'")
            out.append(byte)
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif byte == 0x22:
            raise BadKey("header Idempotency-Key is a quoted string with an unescaped '\"' inside")
        else:
            out.append(byte)
    if escaped:
        raise BadKey("header Idempotency-Key is a quoted string ending in a lone backslash")
    return bytes(out)


def fingerprint(method: str, target: bytes, content_type: str, body: bytes) -> bytes:
    """What makes two requests with one key "the same request": ``target`` is the request target as sent (path and
    query), ``body`` as decoded from its Content-Encoding."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (method.encode(), target, content_type.strip().lower().encode("latin-1")):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(body)
    return digest.digest()
