"""Idempotent retries: a request whose ``Idempotency-Key`` repeats one answered 2xx within the endpoint's window is
not delivered again; it gets the stored answer.

One :class:`KeyStore` per endpoint (method + DATASOURCE), kept for the life of the plugin process, so a rule restart
(which may stop and start the shared server) does not forget keys; a plugin restart does. A key is remembered from
its request's arrival ("in flight": a second request with it gets 409) until its answer: a 2xx answer is stored for
``window`` seconds, any other answer forgets the key, so a retry after a 4xx or 503 is handled afresh. At most
``max_keys`` keys are kept; more evict the oldest (counted in ``httppush_idempotency_evictions_total``).

A request is "the same" when its method, path (with a template's values), Content-Type and body (after
Content-Encoding is undone) are; keys are separate per authenticated user. Only the event-loop thread uses a store.

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
        while len(self._entries) > self.config.max_keys:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
        return entry

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
    """The key from an ``Idempotency-Key`` header: 1–255 visible ASCII characters, or an RFC 8941 string
    (``"..."``, as the IETF draft writes it; the quotes are dropped). Raises :class:`BadKey`."""
    key = raw.strip()
    if len(key) >= 2 and key[:1] == b'"' and key[-1:] == b'"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_LENGTH or not all(0x21 <= byte <= 0x7E for byte in key):
        raise BadKey(f"header Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters")
    return key


def fingerprint(method: str, path: str, content_type: str, body: bytes) -> bytes:
    """What makes two requests with one key "the same request" (``body`` as decoded from its Content-Encoding)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), content_type.encode("latin-1")):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(body)
    return digest.digest()
