"""eKuiper's data channel takes several pipes at once: what N plugin workers in one node would rest on
(docs/multicore.md). In a REAL eKuiper 2.4.2 (the session host, ``ctx`` in tests/conftest.py), one rule's channel
``ipc:///tmp/<rule>_<stream>_0.ipc`` — an nng/mangos PULL socket that eKuiper listens on — is written by three pipes
at the same time: the plugin's own (records pushed over HTTP) and two more pynng ``Push0`` sockets dialing the same
path, as two more worker processes would. Every record of every pipe reaches the rule once, in order per pipe, and
nothing else arrives (sentinel). ``bench/percore.py`` does the same with 2,000 records per pipe and two processes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pynng
import pytest

from tests.realhost_support import Ctx
from tests.support.http import sender

pytestmark = pytest.mark.realhost

#: Records per pipe. The three pipes' rows stay below the rest sink's buffer (eKuiper's bufferLength, 1024 rows), which
#: eKuiper would drop rows from ("buffer full") if its one-request-per-row sink fell behind.
PER_PIPE = 300


def test_the_data_channel_takes_three_pipes_at_once(ctx: Ctx) -> None:
    stream, path = ctx.stream('FORMAT="json"')
    rule = ctx.rule(f"SELECT pipe, seq FROM {stream}")
    url = f"ipc:///tmp/{rule}_{stream}_0.ipc"
    push = sender(ctx.port, path)
    sockets = [pynng.Push0(send_timeout=20_000) for _ in range(2)]
    errors: list[str] = []
    try:
        for sock in sockets:
            sock.dial(url, block=True)  # both connected, next to the plugin's pipe, before anything is sent
        assert [len(sock.pipes) for sock in sockets] == [1, 1]
        start = threading.Barrier(3)

        def run(pipe: int, send: Callable[[int], None]) -> Callable[[], None]:
            def go() -> None:
                try:
                    start.wait(timeout=10)
                    for seq in range(PER_PIPE):
                        send(seq)
                except Exception as exc:  # reported below
                    errors.append(f"pipe {pipe}: {exc!r}")
            return go

        def over_http(seq: int) -> None:
            status = push(json.dumps({"pipe": 0, "seq": seq}).encode())
            if status != 200:
                raise AssertionError(f"record {seq} answered {status}")

        def direct(sock: pynng.Push0, pipe: int) -> Callable[[int], None]:
            return lambda seq: sock.send(json.dumps({"message": {"pipe": pipe, "seq": seq}}).encode())

        threads = [threading.Thread(target=run(0, over_http))]
        threads += [threading.Thread(target=run(k + 1, direct(sock, k + 1))) for k, sock in enumerate(sockets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        rows = ctx.sink.wait_for(3 * PER_PIPE, timeout=60)  # before the sockets close: nothing left in their queues
    finally:
        for sock in sockets:
            sock.close()
    for pipe in range(3):
        got = [int(row["seq"]) for row in rows if row.get("pipe") == pipe]
        assert got == list(range(PER_PIPE)), f"pipe {pipe}: {len(got)} rows, {got[:20]}…"
    ctx.assert_sentinel_next_in_sink(path, 3 * PER_PIPE, body=json.dumps({"pipe": -1, "seq": 0}),
                                     expect={"pipe": -1, "seq": 0})
