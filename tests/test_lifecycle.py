"""The plugin process's life under the emulated host: nothing outlives what the host thinks exists.

* the host goes away → the process exits and frees the port (the SDK alone would run on forever);
* a start that fails after ``configure()`` subscribed → the endpoint is not left subscribed;
* a start repeated for one instance → the replaced source's thread and SDK socket are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.net import wait_port_closed
from tests.hostemu import PluginHost
from tests.support.http import push
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


def test_start_failing_after_configure_leaves_nothing_subscribed(host: PluginHost, server_port: int) -> None:
    # No data channel listens for this instance: the SDK's own dial fails (after ~5 s) once configure() has
    # subscribed the endpoint, and the start is answered with an error.
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
