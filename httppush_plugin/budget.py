"""The server-wide bound on bytes held for requests.

Bodies being received and decoded, and framed records waiting for a slow host channel, all count against one
:class:`Budget` (``httpServerMaxBuffered``). A request that would take it over the limit is answered 503 with
``Retry-After``: memory stays bounded however many clients push at once and however slow eKuiper reads.

Example::

    budget = Budget(128 * 1024 * 1024)
    if not budget.take(len(chunk)):
        ...  # answer 503
    budget.give(len(chunk))  # when the bytes are gone
"""

from __future__ import annotations

from .answers import TooLarge, Unavailable


class Budget:
    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, nbytes: int) -> bool:
        """Count ``nbytes`` as held, unless that would go over the limit (then nothing is counted)."""
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more could be taken now (nothing is counted)."""
        return self.used + nbytes <= self.limit

    def reserve(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` for ``what``, or refuse it: 413 when it could never fit, 503 (retry later) when it does
        not fit now."""
        if nbytes > self.limit:
            raise TooLarge(f"{what} would hold about {nbytes} bytes, more than httpServerMaxBuffered ({self.limit})")
        if not self.take(nbytes):
            raise self.full()

    def full(self) -> Unavailable:
        """The 503 (retry later) for bytes that do not fit now."""
        return Unavailable(f"the server holds {self.used} bytes for requests already, its limit "
                           "(httpServerMaxBuffered); retry later")

    def force(self, nbytes: int) -> None:
        """Count ``nbytes`` that are held already, limit or not (e.g. frames of a request that was let in)."""
        self.used += nbytes

    def give(self, nbytes: int) -> None:
        self.used -= nbytes
