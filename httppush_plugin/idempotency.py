"""Idempotent retries (property ``idempotency``): a request whose ``Idempotency-Key`` repeats one answered 2xx within
the endpoint's window is not delivered again; it gets the stored answer.

The whole of it lives here: the property, the key stores, and the one call the application makes per request,
:meth:`KeyStore.admit` → the stored answer (a replay), a 409 or 422, or a :class:`Ticket` whose :meth:`Ticket.settle`
records the request's final answer.

One :class:`KeyStore` per endpoint (method + DATASOURCE), kept in :class:`KeyStores` for the life of the plugin
process, so a rule restart (which may stop and start the shared server) does not forget keys; a plugin restart does. A
key is remembered from its request's arrival ("in flight": a second request with it gets 409) until its answer: a 2xx
answer is stored for ``window`` seconds, any other answer forgets the key, so a retry after a 4xx or 503 is handled
afresh. At most ``max_keys`` keys are kept; more evict an answered one (counted in
``httppush_idempotency_evictions_total``); keys in flight are never evicted (there are at most as many as open
connections). Eviction is fair between users (``auth`` principals): the evicted key is the oldest answered one of the
user holding the most keys (the newcomer's own on a tie), so a user never loses keys while it holds no more than any
other — each of N users keeps at least ``max_keys / N``, however many keys another one sends.

A request is "the same" when its method, request target (path with a template's values, and query), Content-Type
(case aside) and body (after Content-Encoding is undone) are; keys are separate per authenticated user. Only the
event-loop thread uses a store.

Example::

    store = KeyStore(IdempotencyConfig(window=300, max_keys=10_000), stats)
    outcome = store.admit(head, user, body)   # None (no key), an Answer (replay), or a Ticket; raises 409/422/400
    ...                                       # deliver, then
    outcome.settle(answer)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .answers import Answer, BadRequest, Conflict, Unprocessable
from .errors import ConfigError
from .metrics import EndpointStats
from .request import RequestHead
from .values import mapping, seconds, switched_off, switched_on, whole_number

#: The longest ``Idempotency-Key`` accepted (characters, visible ASCII).
MAX_KEY_LENGTH = 255
#: Property ``idempotency``: seconds a 2xx answer is remembered for its ``Idempotency-Key``, and how many keys an
#: endpoint remembers at most (each costs about 400 bytes plus its answer, ~60 bytes for a default 200).
DEFAULT_WINDOW_S = 300
DEFAULT_MAX_KEYS = 10_000
_now = time.monotonic


@dataclass(frozen=True)
class IdempotencyConfig:
    """Property ``idempotency``. Example: ``{window: 600, maxKeys: 50000}``; ``true``: the defaults."""

    #: seconds a 2xx answer is remembered for its key
    window: float = DEFAULT_WINDOW_S
    max_keys: int = DEFAULT_MAX_KEYS

    def __str__(self) -> str:
        return f"window {self.window:g} s, maxKeys {self.max_keys}"


def parse_idempotency(value: Any) -> IdempotencyConfig | None:
    """Property ``idempotency``: ``true`` or a mapping ``{window, maxKeys}``; absent, ``false``, ``{}``: off."""
    if switched_on(value):
        return IdempotencyConfig()
    if switched_off(value):
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"property 'idempotency' is {value!r}; must be true or a mapping, e.g. "
                          "{window: 300, maxKeys: 10000}")
    settings = mapping("property 'idempotency'", value, {"window": "window (seconds)", "maxkeys": "maxKeys"},
                       "{window: 300, maxKeys: 10000}")
    return IdempotencyConfig(
        window=seconds("property 'idempotency.window'", settings.get("window", DEFAULT_WINDOW_S)),
        max_keys=whole_number("property 'idempotency.maxKeys'", settings.get("maxkeys", DEFAULT_MAX_KEYS), 1,
                              10_000_000))


class Entry:
    __slots__ = ("fingerprint", "status", "body", "expires")

    def __init__(self, fingerprint: bytes, expires: float) -> None:
        self.fingerprint = fingerprint
        self.status = 0  # 0: in flight
        self.body = b""
        self.expires = expires


class Ticket:
    """A request admitted with its key remembered as in flight: :meth:`settle` with its final answer."""

    __slots__ = ("store", "slot", "entry")

    def __init__(self, store: KeyStore, slot: tuple[str, bytes], entry: Entry) -> None:
        self.store, self.slot, self.entry = store, slot, entry

    def settle(self, answer: Answer) -> None:
        """A 2xx answer is remembered for the window, any other forgets the key."""
        self.store.settle(self.slot, self.entry, answer.status, answer.body)


class KeyStore:
    """The remembered keys of one endpoint."""

    def __init__(self, config: IdempotencyConfig, stats: EndpointStats) -> None:
        self.config = config
        self.stats = stats
        #: every key, soonest to expire first
        self._entries: OrderedDict[tuple[str, bytes], Entry] = OrderedDict()
        #: user → their keys in the same order (fair eviction)
        self._users: dict[str, OrderedDict[bytes, Entry]] = {}

    def __len__(self) -> int:
        self._expire(_now())
        return len(self._entries)

    def admit(self, head: RequestHead, user: str | None, body: bytes, digest: bytes | None = None
              ) -> Answer | Ticket | None:
        """``None`` without an ``Idempotency-Key``; the stored answer (replayed) for a known key and the same
        request; else a :class:`Ticket`. Raises :class:`BadRequest` (malformed key), :class:`Conflict` (409: the key's
        request is in flight) or :class:`Unprocessable` (422: the key was used for another request). ``digest``:
        the request's :func:`fingerprint`, when already computed (off the loop, for a large body)."""
        raw = head.header(b"idempotency-key")
        if raw is None:
            return None
        try:
            key = parse_key(raw)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if digest is None:
            digest = fingerprint(head.method, head.target, head.content_type, body)
        now = _now()
        self._expire(now)
        slot = (user or "", key)
        entry = self._entries.get(slot)
        if entry is None or entry.expires <= now:
            # the window counts from the answer; an in-flight entry lasts at most one window (then a retry goes ahead)
            entry = Entry(digest, now + self.config.window)
            self._put(slot, entry)
            if len(self._entries) > self.config.max_keys:
                self._evict(slot[0])
            return Ticket(self, slot, entry)
        shown = key.decode("ascii")
        if entry.fingerprint == digest and entry.status:
            self.stats.replays += 1
            return Answer(entry.status, entry.body, {"Idempotent-Replayed": "true"})
        self.stats.key_conflicts += 1
        if entry.fingerprint == digest:
            raise Conflict(f"a request with Idempotency-Key {shown!r} is still being handled; retry when it has "
                           "been answered")
        raise Unprocessable(f"Idempotency-Key {shown!r} was used for a different request in the last "
                            f"{self.config.window:g} s (the method, path and query, Content-Type and body must be "
                            "the same); use a new key for a new request")

    def settle(self, slot: tuple[str, bytes], entry: Entry, status: int, body: bytes) -> None:
        if self._entries.get(slot) is not entry:
            return  # evicted, or expired and begun again meanwhile
        if 200 <= status < 300:
            entry.status, entry.body = status, body
            entry.expires = _now() + self.config.window
            self._put(slot, entry)
        else:
            self._drop(slot)

    def _put(self, slot: tuple[str, bytes], entry: Entry) -> None:
        """Remember ``entry`` (anew, or again after its answer) as the newest of all and of its user."""
        self._entries[slot] = entry
        self._entries.move_to_end(slot)
        keys = self._users.get(slot[0])
        if keys is None:
            keys = self._users[slot[0]] = OrderedDict()
        keys[slot[1]] = entry
        keys.move_to_end(slot[1])

    def _drop(self, slot: tuple[str, bytes]) -> None:
        del self._entries[slot]
        keys = self._users[slot[0]]
        del keys[slot[1]]
        if not keys:
            del self._users[slot[0]]

    def _evict(self, newcomer: str) -> None:
        """Forget answered keys until at most ``max_keys`` are left (or only keys in flight): each time the oldest
        answered key of the user holding the most, ``newcomer`` first among equals."""
        users = self._users
        while len(self._entries) > self.config.max_keys:
            most = max(len(keys) for keys in users.values())
            first = newcomer if len(users.get(newcomer, ())) == most else max(users, key=lambda u: len(users[u]))
            user, victim = first, self._oldest_answered(first)
            if victim is None:  # that user's keys are all in flight: the next largest
                for user in sorted(users, key=lambda u: len(users[u]), reverse=True):
                    victim = self._oldest_answered(user)
                    if victim is not None:
                        break
                else:
                    return
            self._drop((user, victim))
            self.stats.evictions += 1

    def _oldest_answered(self, user: str) -> bytes | None:
        return next((key for key, entry in self._users[user].items() if entry.status), None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.expires > now:
                break
            self._drop(slot)


class KeyStores:
    """Every endpoint's :class:`KeyStore`, by (method, path), for the life of the plugin process (beside the metrics):
    a rule restart keeps an endpoint's keys."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], KeyStore] = {}

    def store(self, method: str, path: str, config: IdempotencyConfig, stats: EndpointStats) -> KeyStore:
        store = self._stores.get((method, path))
        if store is None:
            store = self._stores[(method, path)] = KeyStore(config, stats)
        store.config = config  # a restarted rule may have changed window or maxKeys: the keys stay
        return store


def parse_key(raw: bytes) -> bytes:
    """The key from an ``Idempotency-Key`` header: 1–255 visible ASCII characters, or an RFC 8941 string as the IETF
    draft writes it (``"a b"``: quotes dropped, ``\\"`` and ``\\\\`` unescaped, spaces allowed). Raises
    :``ValueError``."""
    key = raw.strip()
    quoted = len(key) >= 2 and key[:1] == b'"' and key[-1:] == b'"'
    if quoted:
        key = _unescape(key[1:-1])
    low = 0x20 if quoted else 0x21
    if not key or len(key) > MAX_KEY_LENGTH or not all(low <= byte <= 0x7E for byte in key):
        raise ValueError(f"header Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (or a quoted "
                     "string of printable ASCII)")
    return key


def _unescape(text: bytes) -> bytes:
    """An RFC 8941 string's content: ``\\`` before ``"`` or ``\\`` escapes it; any other ``\\`` or a bare ``"``
    is malformed (:``ValueError``)."""
    out = bytearray()
    escaped = False
    for byte in text:
        if escaped:
            if byte not in b'"\\':
                raise ValueError("header Idempotency-Key is a quoted string with a backslash before neither '\"' "
                                 "nor '\\'")
            out.append(byte)
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif byte == 0x22:
            raise ValueError("header Idempotency-Key is a quoted string with an unescaped '\"' inside")
        else:
            out.append(byte)
    if escaped:
        raise ValueError("header Idempotency-Key is a quoted string ending in a lone backslash")
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
