"""Steady traffic through an operation, and its exact accounting (tests/test_realhost_operations.py).

:class:`Load` runs a few keep-alive clients, each POSTing one numbered JSON record per request (``{"c": client,
"n": number}``) as fast as they are answered, and remembers every request's outcome: status, ``Retry-After``, or the
connection error. A client that gets anything but 2xx waits :data:`BACKOFF_S` (shorter than ``Retry-After`` on
purpose: the gap is measured to that resolution) and goes on with the next number; after a connection error it
opens a new connection.

:func:`account` compares the outcomes with the records the rule's sink received before a sentinel: every record
answered 2xx must be there once, except those in the loss window (answered 2xx, then lost because eKuiper stopped
reading its channel), which it reports with their timing.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: How long a client waits after an answer that is not 2xx, or a connection error, before its next request.
BACKOFF_S = 0.02


@dataclass(frozen=True)
class Outcome:
    client: int
    n: int
    sent: float  # time.monotonic() when the request was sent
    done: float  # ... when its answer (or error) came
    status: int | None  # None: a connection error
    retry_after: str | None = None
    error: str = ""  # the exception's class name


class Load:
    """``clients`` threads pushing to ``http://127.0.0.1:port/path`` until :meth:`stop`."""

    def __init__(self, port: int, path: str, clients: int = 4) -> None:
        self.port, self.path = port, path
        self.outcomes: list[Outcome] = []  # appended by the client threads (list.append is atomic)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def ok_since(self, since: float) -> int:
        """Requests sent at or after ``since`` and answered 2xx."""
        return sum(1 for o in list(self.outcomes) if o.sent >= since and o.status is not None and o.status < 300)

    def _run(self, client: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                conn.request("POST", self.path, body=json.dumps({"c": client, "n": n}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                outcome = Outcome(client, n, sent, time.monotonic(), response.status,
                                  response.getheader("Retry-After"))
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = Outcome(client, n, sent, time.monotonic(), None, error=type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            self.outcomes.append(outcome)
            if outcome.status is None or outcome.status >= 300:
                time.sleep(BACKOFF_S)  # time passing is the point: a client backing off
        if conn is not None:
            conn.close()


@dataclass
class Accounting:
    ok: int  # records answered 2xx
    lost: list[Outcome]  # answered 2xx, never reached the sink
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", "ConnectionRefusedError", …
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    strays: list[Outcome] = field(default_factory=list)  # reached the sink, answered neither 2xx nor an error
    no_retry_after: list[Outcome] = field(default_factory=list)  # 503s without Retry-After
    gap_ms: float = 0.0  # from the first answer that was not 2xx to the last one
    window_ms: float = 0.0  # from the first lost 2xx's request to the first answer that was not 2xx (or the op's end)
    outcomes: list[Outcome] = field(default_factory=list)

    def line(self, name: str) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"{name}: {self.ok} answered 2xx, {len(self.lost)} of them lost (window {self.window_ms:.1f} ms); "
                f"clients saw {statuses} over {self.gap_ms:.0f} ms")


def account(outcomes: list[Outcome], rows: list[dict[str, Any]], operation_end: float) -> Accounting:
    """``rows``: what the sink received before the sentinel (each with ``c`` and ``n``); ``operation_end``: when the
    operation's last call returned, the window's end when no client met anything but 2xx (a gap between requests)."""
    delivered = Counter((row["c"], row["n"]) for row in rows)
    by_key = {(o.client, o.n): o for o in outcomes}
    ok = [o for o in outcomes if o.status is not None and o.status < 300]
    bad = sorted((o for o in outcomes if o.status is None or o.status >= 300), key=lambda o: o.done)
    result = Accounting(ok=len(ok), lost=[o for o in ok if (o.client, o.n) not in delivered], outcomes=outcomes)
    result.statuses.update(str(o.status) if o.status is not None else o.error for o in outcomes)
    result.duplicates = [key for key, count in delivered.items() if count > 1]
    for key in delivered:  # a record that reached the rule must have been answered 2xx, or met a connection error
        o = by_key.get(key)
        if o is None or (o.status is not None and o.status >= 300):
            result.strays.append(o or Outcome(key[0], key[1], 0.0, 0.0, None, error="never sent"))
    result.no_retry_after = [o for o in outcomes if o.status == 503 and not o.retry_after]
    if bad:
        result.gap_ms = (bad[-1].done - bad[0].done) * 1000
    if result.lost:
        first_lost = min(o.sent for o in result.lost)
        until = bad[0].done if bad else operation_end
        result.window_ms = max(0.0, (until - first_lost) * 1000)
    return result
