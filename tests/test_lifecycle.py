"""The plugin process's life under the emulated host: nothing outlives what the host thinks exists.

* the host goes away → the process exits and frees the port (the SDK alone would run on forever);
* a start that fails after ``configure()`` subscribed → the endpoint is not left subscribed;
* a start repeated for one instance → the replaced source's thread and SDK socket are gone;
* a source stopped and started again (a rule restart) → its clients' keep-alive connections stay open, the gap is
  answered 503 with Retry-After, and the port is released only once ``httpServerRestartGrace`` is over.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path

from harness.net import wait_port_closed
from tests.hostemu import PluginHost
from tests.support.http import push, sender
from tests.support.sentinel import assert_sentinel_next_on_channels
from tests.support.wait import wait_until


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_host_closing_the_control_channel_ends_the_process(make_host: Callable[..., PluginHost],
                                                           server_port: int) -> None:
    host = make_host(server_port, may_exit=True)  # the process is to end here
    ch = host.start_source("r1", "s1", {"datasource": "/gone"})
    assert push(server_port, "/gone", "{}").status == 200
    ch.close()
    host.socket.close()  # eKuiper's end of the control channel goes, as when kuiperd dies
    try:
        host.process.wait(timeout=5)
    finally:
        host.channels.clear()
    assert host.process.returncode == 0
    assert wait_port_closed(server_port, timeout=1), "the orphaned process still holds the port"
    log = host.log_tail(20)
    assert "eKuiper closed the plugin's control channel; exiting" in log
    assert "Traceback" not in log
    host.socket = _Closed()  # the fixture's teardown closes it again


class _Closed:
    def close(self) -> None:
        pass


def test_start_failing_after_configure_leaves_nothing_subscribed(make_host: Callable[..., PluginHost],
                                                                 server_port: int) -> None:
    # No data channel listens for this instance: the SDK's own dial fails (after ~5 s) once configure() has
    # subscribed the endpoint, and the start is answered with an error. A source that never served leaves no
    # vacancy: the port goes at once, whatever httpServerRestartGrace says.
    host = make_host(server_port, PYHTTPPUSH_SERVER_RESTART_GRACE="30")
    answer = host.send_command("start", host.control("r9", "s9", 0, {"datasource": "/orphan", "format": "json"}))
    assert answer != "ok"
    assert wait_port_closed(server_port), "a failed start left its endpoint subscribed and the server open"
    assert host.alive()


def test_repeated_starts_leave_no_thread_behind(host: PluginHost, server_port: int) -> None:
    ch = host.start_source("r1", "s1", {"datasource": "/again"})
    _, control = host.channels[("r1", "s1", 0)]
    assert push(server_port, "/again", '{"n": 0}').status == 200
    assert ch.messages(1) == [{"n": 0}]
    before = _threads(host.process.pid)
    for _ in range(5):
        assert host.send_command("start", control) == "ok"
    assert push(server_port, "/again", '{"n": 1}').status == 200
    assert ch.messages(1) == [{"n": 1}]
    wait_until(lambda: _threads(host.process.pid) <= before + 1, 5.0,
               lambda: f"the replaced sources' open() threads to end ({_threads(host.process.pid)} threads, "
                       f"{before} before the five starts)")
    host.stop_source(ch)  # the SDK still knows the instance: stop reaches it and the port is released
    assert wait_port_closed(server_port)
    assert "not found" not in host.log_tail(40)


def _post(conn: http.client.HTTPConnection, path: str, record: dict[str, int]) -> tuple[int, str | None]:
    conn.request("POST", path, body=json.dumps(record))
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


def test_restart_keeps_the_port_and_connections_open(make_host: Callable[..., PluginHost], server_port: int) -> None:
    """As eKuiper restarts a rule: the data channel closes, ``stop``, then a new channel and ``start``. One keep-alive
    connection is used throughout: it is never reset, the gap gets 503 + Retry-After (never 404), the records
    answered 200 are exactly the ones the channels got, and the port goes only ``httpServerRestartGrace`` after the
    last stop."""
    host = make_host(server_port, PYHTTPPUSH_SERVER_RESTART_GRACE="1.5")
    props = {"datasource": "/restart"}
    ch = host.start_source("r1", "s1", props)
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=10)
    try:
        assert _post(conn, "/restart", {"n": 0}) == (200, None)
        _, control = host.channels[("r1", "s1", 0)]
        ch.close()  # eKuiper closes the data channel first ...
        answers = [_post(conn, "/restart", {"n": n}) for n in (1, 2)]
        assert host.send_command("stop", control) == "ok"  # ... then tells the plugin
        answers += [_post(conn, "/restart", {"n": n}) for n in (3, 4)]
        assert answers == [(503, "1")] * 4, answers
        again = host.start_source("r1", "s1", props)
        assert _post(conn, "/restart", {"n": 5}) == (200, None)  # the same connection, never reset
        assert ch.messages(1) == [{"n": 0}] and again.messages(1) == [{"n": 5}]
        assert_sentinel_next_on_channels(sender(server_port, "/restart"), again)
        host.stop_source(again)
        stopped = time.monotonic()
        assert _post(conn, "/restart", {"n": 6}) == (503, "1")
        assert wait_port_closed(server_port, timeout=10), "the port stayed open after the grace"
        waited = time.monotonic() - stopped
        assert waited >= 1.4, f"the port closed {waited:.2f} s after the last stop, within the grace of 1.5 s"
    finally:
        conn.close()

