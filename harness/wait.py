"""The one way a test waits: for observable state, with a deadline.

A sleep before an assertion passes or fails with the machine's load (the state may come later than the sleep, or the
sleep hides that it never needed to pass); a poll of the state itself ends as soon as it holds and says what it waited
for when it does not. A sleep stays in a test only where time passing IS the stimulus (a window expiring, a client
obeying Retry-After, a slow client), with a comment saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float, what: str | Callable[[], str],
               interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; after ``timeout`` seconds raise
    :class:`AssertionError` naming ``what`` (a text, or a function giving one at that moment: the state last seen).

    ``check`` runs at least once, and once more after the deadline has passed, so a slow machine never fails a wait
    whose condition holds by the time it is looked at. Example::

        wait_until(lambda: gauge(port, "httppush_buffered_bytes") >= 600, 5.0, "the holder's bytes to be counted")
    """
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= deadline
        result = check()
        if result:
            return result
        if late:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)
