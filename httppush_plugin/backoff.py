"""Failed authentication backs off, per client: after :data:`MAX_FAILURES` refused credentials (401 or 403) from one
client address within :data:`WINDOW_S` seconds, that client's requests to any endpoint with ``auth`` are answered 429
with ``Retry-After`` — without checking their credentials — until the window (counted from its first failure) ends.

The client address is the peer's, or behind a proxy listed in the route's ``trustedProxies`` the one
``meta(remoteAddr)`` gives (``routing.Route.client``), so one client behind a load balancer does not lock out the
others. A success does not clear the count: a client holding one valid credential cannot reset it between guesses at
another. At most :data:`MAX_PEERS` clients are remembered, the least recently failing forgotten first, so memory is
bounded however many addresses a client sends from. Only the event-loop thread uses it.

Example::

    backoff = AuthBackoff()
    user = backoff.admit(auth, head, "198.51.100.7")          # the principal; raises 401/403, or 429 when backed off
    user = await backoff.admit_off(auth, head, "198.51.100.7", body, offload.run)   # the same, in a worker thread
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from .answers import HttpError, TooManyRequests
from .credentials import Authenticator
from .request import RequestHead

#: Refused credentials from one client address within :data:`WINDOW_S` seconds before it gets 429.
MAX_FAILURES = 10
#: Seconds a client's failures are counted for, from its first one; its 429s end with it.
WINDOW_S = 60.0
#: Clients whose failures are remembered at most (each costs about 200 bytes).
MAX_PEERS = 10_000
_now = time.monotonic


class AuthBackoff:
    """The failure counts of every client address, server-wide."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_S, max_peers: int = MAX_PEERS
                 ) -> None:
        self.max_failures, self.window, self.max_peers = max_failures, window, max_peers
        #: client address → [failures, when the first of them was], least recently failing first
        self._peers: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    def admit(self, auth: Authenticator, head: RequestHead, peer: str, body: bytes | None = None) -> str | None:
        """The principal ``auth`` admits; raises :class:`~.answers.TooManyRequests` (429) for a client that failed
        too often, else what ``auth.admit`` raises (counted). ``body`` ``None``: the request's head only — a kind that
        signs the body is then only checked for backing off, and ``None`` returned."""
        self.check(peer)
        if body is None and auth.needs_body:
            return None
        try:
            return auth.admit(head, body or b"")
        except HttpError as exc:
            if getattr(exc, "counted", True):
                self.failed(peer)
            raise

    async def admit_off(self, auth: Authenticator, head: RequestHead, peer: str, body: bytes,
                        run: Callable[..., Awaitable[str]]) -> str:
        """:meth:`admit` with the check itself run by ``run`` (a worker thread, for a large body)."""
        self.check(peer)
        try:
            return await run(auth.admit, head, body)
        except HttpError as exc:
            if getattr(exc, "counted", True):
                self.failed(peer)
            raise

    def check(self, peer: str) -> None:
        entry = self._peers.get(peer)
        if entry is None:
            return
        left = entry[1] + self.window - _now()
        if left <= 0:
            del self._peers[peer]
        elif entry[0] >= self.max_failures:
            wait = max(1, math.ceil(left))
            raise TooManyRequests(f"{int(entry[0])} failed authentications from this client within "
                                  f"{self.window:g} s; credentials are not checked for {wait} s more", wait)

    def failed(self, peer: str) -> None:
        now = _now()
        entry = self._peers.get(peer)
        if entry is None or entry[1] + self.window <= now:
            self._peers[peer] = [1, now]
        else:
            entry[0] += 1
        self._peers.move_to_end(peer)
        if len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
