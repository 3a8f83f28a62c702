"""Helpers for the tests that drive the pyhttppush plugin inside ONE real eKuiper 2.4.2 (kuiperd) per test session:
``tests/test_realhost_formats.py``, ``tests/test_realhost_rules.py`` and ``tests/test_realhost_lifecycle.py``. The
fixtures that use them (``ekuiper``, ``record_sink``, ``plugin_port``, ``ctx``) live in ``tests/conftest.py``.

The host is started and the plugin installed through REST once (install.sh pip-installs: ~17 s). Every test uses its
own streams, rules and URL paths and removes them at the end, waiting until the plugin's shared server has released its
port (it stops with the last source). Around every test the host is held to one BASELINE (:func:`baseline_problems`):
plugin installed, one plugin process, status ``running`` with an empty ``refCount``, plugin port closed. A test that
passes but leaves the host otherwise fails in teardown; after a failed test :func:`restore_baseline` repairs the host so
that one failure does not cascade.

Host behaviours these tests rely on (measured on 2.4.2; docs/host-behaviour.md §7 and the tests for the details):

* ``POST /rules`` answers and ``GET /rules/{id}/status`` says ``"running"`` BEFORE the source has been started: the
  source node connects in a goroutine (internal/topo/node/source_node.go ``Open`` → ``go m.Run``), so the plugin may
  not have received its ``start`` yet. The reliable "endpoint is live" signal is the plugin's
  ``GET /plugins/portables/pyhttppush/status`` → ``refCount[<rule id>]``, which the host increments only once the
  plugin has answered ``ok`` to the start command (``$$subtopo_<stream>`` for a SHARED stream). :meth:`Ctx.rule`
  waits for it.
* ``DELETE /rules/{id}`` (and ``/stop``) answers BEFORE the plugin source is stopped: the host's portable source only
  notices the cancellation when its data-channel ``Recv`` times out (``portable.recvTimeout``, default 5 s). A rule
  re-created at once with the same id and stream collides with the old one on ``/tmp/<rule>_<stream>_0.ipc`` and on
  the endpoint. Hence unique names per test, and a teardown that waits for the port to close. The session shortens
  ``portable.recvTimeout`` to 1 s (``KUIPER__PORTABLE__RECVTIMEOUT``) only to make those waits shorter.
* Rule metrics (``source_<stream>_0_records_in_total``) are reset when a rule is stopped and started again.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import secrets
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.procstat import children
from harness.realhost import EkuiperError, EkuiperHost, RecordSink, http_post
from tests.support.http import Reply, push, sender
from tests.support.sentinel import assert_sentinel_next_in_sink
from tests.support.wait import wait_until

PLUGIN = "pyhttppush"
RUN = secrets.token_hex(2)  # IPC paths in /tmp carry only rule and stream names: keep them unique per session
_names = itertools.count(1)

#: What ``GET /plugins/portables/pyhttppush/status`` says between tests.
IDLE_STATUS = {"refCount": {}, "status": "running", "errMsg": ""}


def realhost_env(plugin_port: int) -> dict[str, str]:
    """The environment of the shared host (inherited by the plugin process)."""
    return {
        "PYHTTPPUSH_SERVER_IP": "127.0.0.1",
        "PYHTTPPUSH_SERVER_PORT": str(plugin_port),
        # deterministic datetime parsing/printing (TIMESTAMP_FORMAT strings, datetime fields in sinks)
        "KUIPER__BASIC__TIMEZONE": "UTC",
        # only to shorten the wait until a deleted rule's plugin source is really stopped (default 5 s)
        "KUIPER__PORTABLE__RECVTIMEOUT": "1s",
    }


def uid(prefix: str) -> str:
    """A fresh stream/table/rule name (also used as the endpoint path)."""
    return f"{prefix}_{RUN}_{next(_names)}"


# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def accepts(url: str, body: Any) -> bool:
    """Whether ``POST url`` with the JSON ``body`` is answered 200 now (False when refused or not served yet): the
    probe to wait on for an endpoint that only appears once its rule runs, e.g. eKuiper's built-in httppush."""
    try:
        return http_post(url, body, timeout=2.0)[0] == 200
    except OSError:
        return False


def plugin_pids(host: EkuiperHost) -> list[int]:
    """PIDs of the plugin processes: children of kuiperd whose command line names ``pyhttppush/main.py``."""
    assert host.process is not None
    found = []
    for pid in children(host.process.pid):
        try:
            if b"pyhttppush/main.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def log_lines(host: EkuiperHost, *needles: str) -> list[str]:
    """Lines of the host's logs (stream.log + kuiperd stdout) containing every needle."""
    lines = []
    for path in host.log_files():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        lines += [line for line in text.splitlines() if all(needle in line for needle in needles)]
    return lines


def metric(status: dict[str, Any], suffix: str) -> Any:
    """The one metric whose name ends with ``suffix`` (operator numbering differs between rule shapes)."""
    matches = [value for key, value in status.items() if key.endswith(suffix)]
    assert len(matches) == 1, f"{len(matches)} metrics end with {suffix!r}: {sorted(status)}"
    return matches[0]


def epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)  # 3.10: no "Z"


def by_tag(records: list[dict[str, Any]], tag: str = "mode") -> dict[str, list[dict[str, Any]]]:
    """Records of several rules (each selecting a constant ``tag``) grouped by that constant, tag removed."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        record = dict(record)
        grouped.setdefault(record.pop(tag), []).append(record)
    return grouped


def kill_plugin(host: EkuiperHost) -> None:
    """SIGKILL every plugin process (as a crash would); the host restarts none until some rule starts."""
    for pid in plugin_pids(host):
        os.kill(pid, signal.SIGKILL)


def _delete_quietly(delete: Callable[[], Any]) -> None:
    try:
        delete()
    except EkuiperError as exc:
        if exc.status != 404 and "not found" not in exc.body.lower():
            raise


# --------------------------------------------------------------------------------------------------------------------
# The baseline every test starts from and must leave behind
# --------------------------------------------------------------------------------------------------------------------


def _installed(host: EkuiperHost) -> bool:
    return any(entry.get("name") == PLUGIN for entry in host.get("/plugins/portables") or [])


def baseline_problems(host: EkuiperHost, port: int) -> list[str]:
    """How the shared host differs from the state every test starts from (empty list: none)."""
    if not _installed(host):
        return [f"plugin {PLUGIN} is not installed"]
    problems = []
    status = host.plugin_status(PLUGIN)
    if status != IDLE_STATUS:
        problems.append(f"plugin status is {status}, not {IDLE_STATUS}")
    pids = plugin_pids(host)
    if len(pids) != 1:
        problems.append(f"{len(pids)} plugin processes ({pids}), not 1")
    if port_open(port):
        problems.append(f"the plugin port {port} is open with no rule")
    return problems


def restore_baseline(host: EkuiperHost, port: int, zip_path: Path) -> None:
    """Bring the host back to the baseline after a test that failed half-way (no-op when it is there already).

    In order: reinstall a deleted plugin; kill a plugin process that kept sources (port open, refCount not empty);
    start the plugin process again through a throw-away rule (the host starts a dead plugin only for a rule); as the
    last resort restart kuiperd (2.x starts installed plugins at boot and forgets stored start commands).
    """
    if not baseline_problems(host, port):
        return
    if not _installed(host):
        host.install_plugin(PLUGIN, zip_path)
    status = host.plugin_status(PLUGIN)
    if port_open(port) or status["refCount"]:
        kill_plugin(host)
        wait_until(lambda: not port_open(port), 10.0, "the port to close after killing the plugin")
    if host.plugin_status(PLUGIN)["status"] != "running" or not plugin_pids(host):
        _revive_with_a_rule(host, port)
    if baseline_problems(host, port):
        host.restart()
        wait_until(lambda: not baseline_problems(host, port), 30.0, "the plugin to run again after a host restart")


def _revive_with_a_rule(host: EkuiperHost, port: int) -> None:
    stream, rule = uid("revive_s"), uid("revive_r")
    host.create_stream(f'CREATE STREAM {stream} () WITH (TYPE="{PLUGIN}", DATASOURCE="/{stream}", FORMAT="json")')
    try:
        host.create_rule(rule, f"SELECT * FROM {stream}", [{"nop": {}}])
        try:
            wait_until(lambda: host.plugin_status(PLUGIN)["refCount"].get(rule), 30.0, f"refCount[{rule}]")
        finally:
            _delete_quietly(lambda: host.delete_rule(rule))
    finally:
        _delete_quietly(lambda: host.delete_stream(stream))
    wait_until(lambda: not port_open(port) and not host.plugin_status(PLUGIN)["refCount"], 15.0,
               "the throw-away rule's source to stop")


# --------------------------------------------------------------------------------------------------------------------
# Per test
# --------------------------------------------------------------------------------------------------------------------


class Ctx:
    """What one test creates on the shared host, and its removal."""

    def __init__(self, host: EkuiperHost, sink: RecordSink, port: int) -> None:
        self.host = host
        self.sink = sink
        self.port = port
        self.rules: list[str] = []
        self.streams: list[str] = []
        self.tables: list[str] = []

    # -- creation ---------------------------------------------------------------------------------------------

    def stream(self, options: str = "", schema: str = "()", *, path: str | None = None, name: str | None = None,
               source_type: str = PLUGIN) -> tuple[str, str]:
        """``CREATE STREAM <name> <schema> WITH (TYPE, DATASOURCE=<path>, <options>)``; returns (name, path)."""
        name = name or uid("s")
        path = path or f"/{name}"
        extra = f", {options}" if options else ""
        self.host.create_stream(
            f'CREATE STREAM {name} {schema} WITH (TYPE="{source_type}", DATASOURCE="{path}"{extra})')
        self.streams.append(name)
        return name, path

    def table(self, options: str, schema: str) -> tuple[str, str]:
        name = uid("t")
        path = f"/{name}"
        self.host.create_table(f'CREATE TABLE {name} {schema} WITH (TYPE="{PLUGIN}", DATASOURCE="{path}", {options})')
        self.tables.append(name)
        return name, path

    def rule(self, sql: str, *, sources: int = 1, options: dict[str, Any] | None = None, ref_key: str | None = None,
             wait: bool = True) -> str:
        """Create a rule sending to the sink; by default wait until its ``sources`` plugin sources are started."""
        rule_id = uid("r")
        self.host.create_rule(rule_id, sql, [self.sink.action()], options)
        self.rules.append(rule_id)
        if wait:
            self.wait_started(rule_id, sources, ref_key)
        return rule_id

    def wait_started(self, rule_id: str, sources: int = 1, ref_key: str | None = None, timeout: float = 30.0) -> None:
        """``running`` is not enough (the source starts asynchronously): wait for the plugin's refCount."""
        self.host.wait_rule_running(rule_id)
        key = ref_key or rule_id
        try:
            wait_until(lambda: self.host.plugin_status(PLUGIN)["refCount"].get(key, 0) >= sources, timeout,
                       f"refCount[{key}] >= {sources}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; plugin status {self.host.plugin_status(PLUGIN)}; rule status "
                                 f"{self.host.rule_status(rule_id)}\n{self.host.log_tail(40)}") from None

    def wait_endpoint(self, path: str, timeout: float = 20.0) -> None:
        """Side-effect free probe: a GET on a registered POST/PUT path answers 405 (404 / refused otherwise)."""
        def registered() -> bool:
            try:
                return push(self.port, path, b"", method="GET", timeout=2.0).status == 405
            except OSError:
                return False

        wait_until(registered, timeout, f"endpoint {path} registered in the plugin")

    # -- use ----------------------------------------------------------------------------------------------------

    def push(self, path: str, body: bytes | str, method: str = "POST") -> Reply:
        return push(self.port, path, body, method=method)

    def status(self, rule_id: str) -> dict[str, Any]:
        return self.host.rule_status(rule_id)

    def assert_sentinel_next_in_sink(self, path: str, seen: int, *, copies: int = 1,
                                     record: dict[str, Any] | None = None, body: str | bytes | None = None,
                                     expect: dict[str, Any] | None = None, method: str = "POST") -> None:
        """"Nothing else arrived" on ``path``: :func:`tests.support.sentinel.assert_sentinel_next_in_sink` with this
        test's sink and port (``copies``: one sentinel row per rule reading ``path``)."""
        assert_sentinel_next_in_sink(sender(self.port, path, method=method), self.sink, seen, copies=copies,
                                     record=record, body=body, expect=expect)

    # -- removal ------------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete what the test made and wait until the plugin has stopped its sources and released its port."""
        for rule_id in self.rules:
            _delete_quietly(lambda r=rule_id: self.host.delete_rule(r))
        for name in self.streams:
            _delete_quietly(lambda n=name: self.host.delete_stream(n))
        for name in self.tables:
            _delete_quietly(lambda n=name: self.host.delete_table(n))
        ours = set(self.rules) | {f"$$subtopo_{name}" for name in self.streams + self.tables}

        def released() -> bool:
            if port_open(self.port):
                return False
            status = self.host.plugin_status(PLUGIN)
            return status["status"] != "running" or not (ours & set(status["refCount"]))

        try:
            # normally well under 2 s (portable.recvTimeout is 1 s here)
            wait_until(released, 15.0, "the plugin to stop this test's sources and release its port", 0.1)
        except AssertionError:
            status = self.host.plugin_status(PLUGIN)
            kill_plugin(self.host)  # the next test starts from the baseline again (restore_baseline)
            raise AssertionError(
                f"the plugin kept its port {self.port} open or the host kept this test's sources in refCount after "
                f"the rules were deleted: plugin status {status}") from None


def check_template_meta_id(ctx: Ctx) -> str:
    """A stream on ``/<name>/{id}/telemetry`` and a rule ``SELECT meta(id) AS id, *``: two devices' pushes reach it
    with their segment as ``id``. Shared by the suite and the other-release smoke; returns ``<name>``."""
    name = uid("tpl")
    s, _ = ctx.stream('FORMAT="json"', path=f"/{name}/{{id}}/telemetry", name=name)
    ctx.rule(f"SELECT meta(id) AS id, * FROM {s}")
    for device, value in (("42", 1), ("gw-7", 2)):
        assert ctx.push(f"/{name}/{device}/telemetry", json.dumps({"v": value})).body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(2) == [{"id": "42", "v": 1}, {"id": "gw-7", "v": 2}]
    return name
