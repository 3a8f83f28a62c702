""""Nothing else arrived", checked so that it can fail: with a sentinel record pushed after the body under test.

A sleep-then-look passes whenever the look is too early. Instead the test pushes one more, known good body through
the endpoint under test (its answer must be the endpoint's success status) and requires the NEXT record to be that
body's. Whatever the plugin emitted before — a refused body sent anyway, a second copy from a doubled subscription, a
record it reported undelivered — left on the same channel ahead of the sentinel, so it is read first and fails the
check.

Two places records are read, one function each:

* :func:`assert_sentinel_next_on_channels` — the emulated host's data channels (:class:`tests.hostemu.DataChannel`);
* :func:`assert_sentinel_next_in_sink` — the real host's record sink (:class:`harness.realhost.RecordSink`), where
  the rules' output rows arrive after the rows the test has checked (``seen``), one sentinel row per rule reading the
  endpoint.

Both take ``send``, a function pushing a body and returning the HTTP status (:func:`tests.support.http.sender`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.realhost import RecordSink
    from tests.hostemu import DataChannel

#: A record no test sends for anything else: what :func:`assert_sentinel_next_on_channels` pushes by default.
SENTINEL: dict[str, Any] = {"sentinel": "end-of-test"}


def _push_sentinel(send: Callable[[bytes], int], body: bytes, status: int) -> None:
    got = send(body)
    if got != status:
        raise AssertionError(f"the sentinel push {body[:200]!r} answered HTTP {got}, not {status}")


def assert_sentinel_next_on_channels(send: Callable[[bytes], int], *channels: DataChannel, body: bytes | None = None,
                                     record: dict[str, Any] | None = None, status: int = 200,
                                     timeout: float = 5.0) -> None:
    """Push the sentinel with ``send`` (answered ``status``); the NEXT record each of ``channels`` yields within
    ``timeout`` seconds must be it.

    By default the body is the JSON text of :data:`SENTINEL` and comes back as :data:`SENTINEL`; endpoints of other
    formats pass ``body`` and the ``record`` it decodes to. Example::

        assert push(port, "/j", "[1, 2]").status == 400
        assert_sentinel_next_on_channels(sender(port, "/j"), ch)
    """
    if body is None:
        body, record = json.dumps(SENTINEL).encode(), SENTINEL if record is None else record
    elif record is None:
        raise TypeError("assert_sentinel_next_on_channels: a custom body needs the record it decodes to")
    _push_sentinel(send, body, status)
    for channel in channels:
        channel.expect_next(record, timeout)


def assert_sentinel_next_in_sink(send: Callable[[bytes], int], sink: RecordSink, seen: int, *, copies: int = 1,
                                 record: dict[str, Any] | None = None, body: bytes | str | None = None,
                                 expect: dict[str, Any] | None = None) -> None:
    """Push the sentinel with ``send`` (answered 200); the sink's records right after the ``seen`` ones the test has
    checked must be ``copies`` sentinel rows (one per rule reading the endpoint).

    Rows reach the sink per rule in order, so a stray record (a refused body emitted anyway, a duplicate from a
    doubled subscription) reaches its rule, and the sink, before that rule's sentinel: it lands among the ``copies``
    rows that follow ``seen``.

    Sentinel: by default the JSON object ``record`` (or ``{}``) plus ``"sentinel": "<token>"``, and a sink row counts
    as the sentinel when it carries that token. Streams of other formats pass ``body`` (what to push) and ``expect``
    (the fields every sentinel row must show), e.g. ``body="sentinel=s1", expect={"sentinel": "s1"}``.
    """
    if body is None:
        token = f"s{secrets.token_hex(4)}"
        body = json.dumps({**(record or {}), "sentinel": token})
        expect = {"sentinel": token}
    elif expect is None:
        raise TypeError("assert_sentinel_next_in_sink: a custom body needs the fields to expect")
    _push_sentinel(send, body.encode() if isinstance(body, str) else body, 200)
    after = sink.wait_for(seen + copies)[seen:]
    strays = [row for row in after if any(row.get(key) != value for key, value in expect.items())]
    assert not strays, (f"record(s) the test did not expect arrived before the sentinel {expect}: {strays}; "
                        f"the {copies} record(s) after the {seen} checked: {after}")
