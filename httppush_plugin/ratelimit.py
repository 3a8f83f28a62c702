"""Per-client rate limits (property ``rateLimit``): a token bucket per client of an endpoint, checked as soon as a
request's head is in, before its body is read and (``by: address``) before its credentials are checked.

Each client's bucket holds at most ``burst`` tokens and refills at ``rate`` tokens a second; a request takes one. A
request that finds less than one gets 429 with ``Retry-After``: the whole seconds until a token is there (at least 1).
The unit is the request, not the record: a limit checked before the body is read cannot know its records, and a
body's records are already bounded (``httpServerMaxRecords``).

The client is its address (``by: address``: the peer's, or behind ``trustedProxies`` the one ``meta(remoteAddr)``
gives) or the principal ``auth`` admitted (``by: user``; needs an auth checked from the head, not ``hmac``).

Memory is bounded: an endpoint keeps at most ``maxClients`` buckets (:data:`MAX_CLIENTS` by default, about 300 bytes
each). A full bucket is the same as no bucket, so when the table is full a new client's bucket replaces a full one
(of the :data:`SCAN` least recently used); when none of those is full — every client in the table was active within
the last ``burst / rate`` seconds — the new client shares one overflow bucket with every other client not in the
table. A client rotating through addresses so gets at most ``maxClients + 1`` buckets' worth, ``(maxClients + 1) ×
rate`` requests a second, and while it holds the table new clients share the overflow bucket with it.

The buckets of an endpoint outlive its rules (``routing.EndpointTable``): restarting a rule gives no one a fresh
burst; changing the limit starts afresh. Only the event-loop thread uses them.

Example::

    buckets = Buckets(parse_rate_limit({"rate": 10, "burst": 20}))
    buckets.take("198.51.100.7")      # fine 20 times at once, then 429 with Retry-After: 1
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .answers import TooManyRequests
from .errors import ConfigError
from .metrics import EndpointStats
from .values import mapping, switched_off, whole_number

#: Buckets an endpoint keeps at most by default (``rateLimit.maxClients``).
MAX_CLIENTS = 10_000
#: How many of the least recently used buckets a new client's may replace (the first full one).
SCAN = 16
BY = ("address", "user")
_now = time.monotonic


@dataclass(frozen=True)
class RateLimit:
    """Property ``rateLimit``. Example: ``{rate: 100, burst: 200, by: address}``."""

    #: requests a second, per client
    rate: float
    #: requests a client may send at once (the bucket's size)
    burst: int
    by: str = "address"
    max_clients: int = MAX_CLIENTS

    def __str__(self) -> str:
        return f"{self.rate:g}/s, burst {self.burst}, by {self.by}, maxClients {self.max_clients}"


def parse_rate_limit(value: Any) -> RateLimit | None:
    """Property ``rateLimit``; ``{}`` or null: off. ``burst`` defaults to ``rate`` (at least 1)."""
    if switched_off(value):
        return None
    settings = mapping("property 'rateLimit'", value, {"rate": "rate", "burst": "burst", "by": "by",
                                                        "maxclients": "maxClients"},
                       "{rate: 100, burst: 200, by: address}")
    rate = settings.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float | str):
        raise ConfigError(f"property 'rateLimit.rate' is {rate!r}; must be the requests a second each client may "
                          "send, e.g. 100 or 0.5")
    try:
        number = float(rate)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1_000_000 or math.isnan(number):
        raise ConfigError(f"property 'rateLimit.rate' is {rate!r}; must be more than 0 and at most 1000000 requests "
                          "a second")
    burst = whole_number("property 'rateLimit.burst'", settings.get("burst", max(1, math.ceil(number))), 1,
                         10_000_000)
    by = str(settings.get("by") or "address").lower()
    if by not in BY:
        raise ConfigError(f"property 'rateLimit.by' is {settings.get('by')!r}; must be address or user")
    clients = whole_number("property 'rateLimit.maxClients'", settings.get("maxclients", MAX_CLIENTS), 1, 1_000_000)
    return RateLimit(number, burst, by, clients)


class Buckets:
    """One endpoint's buckets: client → ``[tokens, when they were counted]``, least recently used first."""

    def __init__(self, limit: RateLimit, stats: EndpointStats | None = None) -> None:
        self.limit = limit
        self.by_user = limit.by == "user"
        self.stats = stats if stats is not None else EndpointStats("", "")
        self.stats.rate_clients = 0
        self._table: OrderedDict[str, list[float]] = OrderedDict()
        #: shared by every client not in the table while it is full of active clients
        self._overflow = [float(limit.burst), _now()]

    def __len__(self) -> int:
        return len(self._table)

    def take(self, client: str) -> None:
        """One token of ``client``'s bucket; raises :class:`~.answers.TooManyRequests` (429) when it has none."""
        limit, table, now = self.limit, self._table, _now()
        bucket = table.get(client)
        shared = False
        if bucket is not None:
            table.move_to_end(client)
        elif len(table) < limit.max_clients or self._evict(now):
            bucket = table[client] = [float(limit.burst), now]
            self.stats.rate_clients = len(table)
        else:
            bucket, shared = self._overflow, True
        tokens = min(float(limit.burst), bucket[0] + (now - bucket[1]) * limit.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        self.stats.rate_limited += 1
        wait = max(1, math.ceil((1.0 - tokens) / limit.rate))
        who = "user" if self.by_user else "client address"
        shared_text = (f"; the endpoint tracks {limit.max_clients} clients, all active, so this one shares a bucket "
                       "with every client beyond them") if shared else ""
        raise TooManyRequests(f"rate limit reached: this endpoint admits {limit.rate:g} requests a second per {who} "
                              f"(burst {limit.burst}; rateLimit){shared_text}; retry in {wait} s", wait)

    def _evict(self, now: float) -> bool:
        """Forget a full bucket among the :data:`SCAN` least recently used; ``False`` when none of them is full."""
        limit, table = self.limit, self._table
        for scanned, (client, (tokens, when)) in enumerate(table.items()):
            if scanned >= SCAN:
                break
            if tokens + (now - when) * limit.rate >= limit.burst:
                del table[client]
                return True
        return False
