"""The plugin's life inside a REAL eKuiper 2.4.2: its port follows the rules, start errors, the process killed, the
plugin deleted and reinstalled. One host for the session (``ctx`` in tests/conftest.py, helpers in
tests/realhost_support.py).

These tests kill, delete and reinstall the SHARED plugin, so each one brings it back before it ends: a killed process
is restarted through the host's own recovery path (which is what the test is about), a deleted plugin is reinstalled.
``ctx`` then checks the baseline (plugin installed, one process, status running with no refCount, port closed) and
fails the test in teardown if it is not there. Nothing has to run last: test_realhost_rules.py runs after this module
on the same host.
"""

from __future__ import annotations

import json
import socket
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from harness.realhost import http_post
from tests.realhost_support import (
    PLUGIN,
    Ctx,
    accepts,
    baseline_problems,
    by_tag,
    kill_plugin,
    log_lines,
    plugin_pids,
    port_open,
    uid,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost


# --------------------------------------------------------------------------------------------------------------------
# Port released when no rule uses the plugin
# --------------------------------------------------------------------------------------------------------------------


def test_port_released_when_every_rule_stops(ctx: Ctx) -> None:
    """The shared server lives while some source runs: stop all rules → connection refused (once
    ``httpServerRestartGrace`` is over); start one → it answers.

    Host: ``POST /rules/{id}/stop`` answers before the plugin source is stopped (up to ``portable.recvTimeout``), so
    the port closes a moment later; after a restart the rule's metrics start from 0 again.
    """
    s1, p1 = ctx.stream('FORMAT="json"')
    s2, p2 = ctx.stream('FORMAT="json"')
    r1 = ctx.rule(f"SELECT * FROM {s1}")
    r2 = ctx.rule(f"SELECT * FROM {s2}")
    assert ctx.push(p1, '{"n": 1}').status == 200
    assert ctx.push(p2, '{"n": 2}').status == 200
    ctx.sink.wait_for(2)

    ctx.host.stop_rule(r1)
    wait_until(lambda: r1 not in ctx.host.plugin_status(PLUGIN)["refCount"], 10.0, f"the plugin to stop {r1}'s source")
    vacant = ctx.push(p1, '{"n": 0}')  # r1's endpoint: 503 for httpServerRestartGrace (it may come back) ...
    assert vacant.status == 503 and vacant.headers["Retry-After"] == "1", vacant
    wait_until(lambda: ctx.push(p1, '{"n": 0}').status == 404, 10.0, f"{p1} to answer 404 once the grace is over")
    assert ctx.push(p2, '{"n": 3}').status == 200  # ... and the other rule keeps the server up
    ctx.sink.wait_for(3)  # through the rule before it stops (a stop drops what a rule holds: operations.md's window)
    ctx.host.stop_rule(r2)
    wait_until(lambda: not port_open(ctx.port), 10.0, "the plugin port to close after every rule stopped")
    with pytest.raises(ConnectionRefusedError):
        ctx.push(p1, '{"n": 4}')
    assert ctx.status(r1)["status"] == ctx.status(r2)["status"] == "stopped"
    assert ctx.host.plugin_status(PLUGIN)["refCount"] == {}

    ctx.host.start_rule(r1)
    ctx.wait_started(r1)
    assert port_open(ctx.port)
    assert ctx.push(p1, '{"n": 5}').body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(4)[3] == {"n": 5}
    ctx.host.wait_rule_metric(r1, f"source_{s1}_0_records_in_total", 1)  # reset by the restart
    missing = ctx.push(p2, "{}")
    assert missing.status == 404 and p2 in missing.body["error"]


# --------------------------------------------------------------------------------------------------------------------
# Start errors
# --------------------------------------------------------------------------------------------------------------------


def _wait_stopped_by_error(ctx: Ctx, rule_id: str, *needles: str) -> dict[str, Any]:
    status = wait_until(lambda: (lambda st: st if st["status"] == "stopped by error" else None)(ctx.status(rule_id)),
                        15.0, f"rule {rule_id} to be stopped by error")
    # eKuiper 2.4.2 leaves "message" empty; the plugin's answer is only in the host log
    assert status["message"] == ""
    wait_until(lambda: log_lines(ctx.host, "closing Rule for error: receive error: pyhttppush: ", f"Rule={rule_id}",
                                 *needles), 10.0, f"the host log to show {needles} for {rule_id}")
    return status


def test_start_errors_stop_the_rule_with_the_plugins_message(ctx: Ctx) -> None:
    pid = plugin_pids(ctx.host)

    bad_path, _ = ctx.stream('FORMAT="json"', path="api")
    r = ctx.rule(f"SELECT * FROM {bad_path}", wait=False)
    _wait_stopped_by_error(ctx, r, "DATASOURCE is 'api'; must be the URL path of the endpoint, starting with '/'")

    key = uid("get")
    ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"method": "GET"})
    bad_method, _ = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
    r = ctx.rule(f"SELECT * FROM {bad_method}", wait=False)
    _wait_stopped_by_error(ctx, r, "property 'method' is 'GET'; must be POST or PUT")

    assert not port_open(ctx.port)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", ctx.port))
        blocker.listen()
        s, path = ctx.stream('FORMAT="json"')
        r = ctx.rule(f"SELECT * FROM {s}", wait=False)
        _wait_stopped_by_error(ctx, r, f"cannot listen on http://127.0.0.1:{ctx.port}", "address already in use")
    finally:
        blocker.close()
    assert ctx.host.plugin_status(PLUGIN) == {"refCount": {}, "status": "running", "errMsg": ""}

    # none of this hurt the plugin process; with the port free the same rule starts and ingests
    assert plugin_pids(ctx.host) == pid
    ctx.host.start_rule(r)
    ctx.wait_started(r)
    assert ctx.push(path, '{"ok": 1}').body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"ok": 1}]


# --------------------------------------------------------------------------------------------------------------------
# The plugin process killed (each test recovers it before it ends)
# --------------------------------------------------------------------------------------------------------------------


def _two_rules_then_kill(ctx: Ctx) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """Two running rules on two paths, one push each, then SIGKILL the plugin; returns ((stream, path, rule) × 2)."""
    made = []
    for tag in ("one", "two"):
        s, path = ctx.stream('FORMAT="json"')
        made.append((s, path, ctx.rule(f'SELECT *, "{tag}" AS rule FROM {s}')))
    for _, path, _ in made:
        assert ctx.push(path, '{"n": 0}').body == {"accepted": 1, "sources": 1}
    ctx.sink.wait_for(2)
    ctx.sink.clear()

    pids = plugin_pids(ctx.host)
    assert len(pids) == 1, pids
    kill_plugin(ctx.host)
    status = wait_until(lambda: (lambda st: st if st["status"] == "error" else None)(ctx.host.plugin_status(PLUGIN)),
                        10.0, "the plugin status to turn to error")
    # Host: notices the exit (plugin status), but the rules stay "running" with no message, and nothing restarts the
    # process by itself; the endpoint is gone (connection refused).
    assert status == {"refCount": {made[0][2]: 1, made[1][2]: 1}, "status": "error", "errMsg": "signal: killed"}
    for _, _, rule_id in made:
        rule_status = ctx.status(rule_id)
        assert (rule_status["status"], rule_status["message"]) == ("running", "")
    assert plugin_pids(ctx.host) == []
    with pytest.raises(ConnectionRefusedError):
        ctx.push(made[0][1], '{"n": 1}')
    return made[0], made[1]


def test_kill_then_rule_restart_restarts_every_rule(ctx: Ctx) -> None:
    """After a SIGKILL, ``POST /rules/{id}/restart`` of one affected rule brings everything back, each rule once.

    Host: the restart first sends ``stop`` to the dead plugin and waits for the control channel's send timeout
    (``portable.sendTimeout``, 5 s), then starts a NEW plugin process (``GetOrStartProcess``: the old one is gone)
    and replays every start command it still holds — the other rule's too, so that rule receives again without being
    touched — and then sends this rule's own start: the restarted rule's source is started TWICE. The plugin replaces
    the first subscription with the second (test_kill_then_rule_restart_delivers_each_push_once), so each push reaches
    each rule once and the port is released when the rules go (the strict teardown of ``ctx``).
    """
    (_, p1, r1), (_, p2, r2) = _two_rules_then_kill(ctx)

    started = time.monotonic()
    ctx.host.post(f"/rules/{r1}/restart")
    restart_seconds = time.monotonic() - started
    ctx.wait_started(r1)
    ctx.wait_endpoint(p1)
    ctx.wait_endpoint(p2)
    assert ctx.host.plugin_status(PLUGIN)["status"] == "running"
    assert len(plugin_pids(ctx.host)) == 1
    assert restart_seconds > 3.0, restart_seconds  # the stop sent to the dead process waits out the send timeout

    # the untouched rule: back through the replay, exactly once
    assert ctx.push(p2, '{"n": 2}').body == {"accepted": 1, "sources": 1}
    # the restarted rule: ingests again, exactly once
    assert ctx.push(p1, '{"n": 1}').body == {"accepted": 1, "sources": 1}
    assert by_tag(ctx.sink.wait_for(2), "rule") == {"one": [{"n": 1}], "two": [{"n": 2}]}
    ctx.assert_sentinel_next_in_sink(p1, 2)
    ctx.assert_sentinel_next_in_sink(p2, 3)


def test_kill_then_rule_restart_delivers_each_push_once(ctx: Ctx) -> None:
    """After a SIGKILL, restarting the rule makes the host start a new process, replay the stored start commands and
    then send the restarted rule's own start: the same instance is started twice. The plugin replaces the first
    subscription with the second, so each push is delivered once and the port closes when the rules stop."""
    (_, p1, r1), (_, p2, r2) = _two_rules_then_kill(ctx)
    ctx.host.post(f"/rules/{r1}/restart")
    ctx.wait_started(r1)
    ctx.wait_endpoint(p1)
    # the replayed starts are sent from goroutines: the doubled start must have reached the plugin (it logs the
    # replacement) BEFORE the push, so that the push meets it (if it came later, the check below would pass without
    # testing the replacement)
    wait_until(lambda: log_lines(ctx.host, f"rule {r1} stream", "started again: replacing its previous subscription"),
               10.0, f"the plugin to log the second start of {r1}")
    reply = ctx.push(p1, '{"n": 1}')
    assert reply.body == {"accepted": 1, "sources": 1}
    assert ctx.sink.wait_for(1) == [{"n": 1, "rule": "one"}]
    ctx.assert_sentinel_next_in_sink(p1, 1)  # no second copy from a second subscription
    for rule_id in (r1, r2):
        ctx.host.stop_rule(rule_id)
    wait_until(lambda: not port_open(ctx.port), 10.0, "the port to close after both rules stopped")


def test_kill_then_new_rule_recovers_exactly_once(ctx: Ctx) -> None:
    """The clean recovery path: start ANOTHER rule using the plugin (or create one). The host then starts a new
    process and replays the stored start commands of the running rules, each once: both old rules ingest again with
    no duplicate, and the port is released normally at the end."""
    (_, p1, r1), (_, p2, r2) = _two_rules_then_kill(ctx)
    s3, p3 = ctx.stream('FORMAT="json"')
    ctx.rule(f'SELECT *, "three" AS rule FROM {s3}')
    ctx.wait_endpoint(p1)
    ctx.wait_endpoint(p2)
    assert len(plugin_pids(ctx.host)) == 1
    assert ctx.host.plugin_status(PLUGIN)["status"] == "running"
    for path, n in ((p1, 1), (p2, 2), (p3, 3)):
        assert ctx.push(path, json.dumps({"n": n})).body == {"accepted": 1, "sources": 1}
    records = by_tag(ctx.sink.wait_for(3), "rule")
    assert records == {"one": [{"n": 1}], "two": [{"n": 2}], "three": [{"n": 3}]}
    for seen, path in enumerate((p1, p2, p3), start=3):
        ctx.assert_sentinel_next_in_sink(path, seen)


# --------------------------------------------------------------------------------------------------------------------
# Delete and reinstall (the test ends with the plugin installed again)
# --------------------------------------------------------------------------------------------------------------------


def _builtin_files(root: Path) -> dict[str, bytes | None]:
    files = {}
    for folder in ("etc/sources", "data/sources"):
        for ext in ("yaml", "json"):
            path = root / folder / f"httppush.{ext}"
            files[str(path.relative_to(root))] = path.read_bytes() if path.exists() else None
    return files


def test_delete_and_reinstall_leave_the_builtin_httppush_alone(ctx: Ctx, zips: dict[str, Path]) -> None:
    """``DELETE /plugins/portables/pyhttppush`` removes only pyhttppush's files; eKuiper's built-in httppush source
    (etc/sources/httppush.yaml|json; there is no data/sources/httppush.*) is byte-identical before, in between and
    after a reinstall, and keeps working on the host's data port. A conf key stored through REST survives the
    reinstall (host: kept in its sqlite store, not in the plugin's files)."""
    host = ctx.host
    before = _builtin_files(host.root)
    assert before["etc/sources/httppush.yaml"] is not None and before["etc/sources/httppush.json"] is not None
    key = uid("keep")
    host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}", {"fields": ["k", "v"]})

    host.delete_plugin(PLUGIN)
    assert not (host.plugin_dir / PLUGIN).exists()
    for folder in ("etc/sources", "data/sources"):
        assert not list((host.root / folder).glob(f"{PLUGIN}.*")), folder
    assert _builtin_files(host.root) == before

    s, path = ctx.stream('FORMAT="json"', source_type="httppush")
    r = ctx.rule(f'SELECT *, "builtin" AS src FROM {s}', wait=False)
    host.wait_rule_running(r)

    wait_until(lambda: accepts(host.data_url(path), {"b": 1}), 10.0, "the built-in httppush endpoint", 0.1)
    assert ctx.sink.wait_for(1)[0] == {"b": 1, "src": "builtin"}

    host.install_plugin(PLUGIN, zips["pyhttppush"])
    assert host.plugin_status(PLUGIN)["status"] == "running"
    assert _builtin_files(host.root) == before

    ps, ppath = ctx.stream(f'FORMAT="delimited", CONF_KEY="{key}"')
    ctx.rule(f'SELECT *, "plugin" AS src FROM {ps}')
    assert ctx.push(ppath, "a,1").body == {"accepted": 1, "sources": 1}
    assert http_post(host.data_url(path), {"b": 2})[0] == 200
    records = ctx.sink.wait_for(3)
    assert {"k": "a", "v": "1", "src": "plugin"} in records and {"b": 2, "src": "builtin"} in records


def test_host_settings_survive_a_reinstall(ctx: Ctx, zips: dict[str, Path]) -> None:
    """Server settings in the HOST's etc/kuiper.yaml, ``source: {pyhttppush: {httpServerPort: …}}``, hold across
    ``DELETE`` + ``POST /plugins/portables``, which replaces the plugin folder and with it the plugin's own
    etc/kuiper.yaml (a user's edit there is lost). kuiperd boots with the nested key (``cast.MapToStruct`` ignores
    keys its ``SourceConf`` lacks), keeps serving on its own data port (``KUIPER__SOURCE__HTTPSERVERPORT``) and never
    writes the file.

    The environment outranks the host's file, and the session's kuiperd (whose environment the plugin inherits) sets
    ``PYHTTPPUSH_SERVER_PORT``: the test restarts kuiperd without it, and at the end with it and the original
    kuiper.yaml again."""
    host = ctx.host
    host_yaml = host.root / "etc" / "kuiper.yaml"
    original = host_yaml.read_text()
    assert original.count("\nsource:\n") == 1
    port, lost = free_port(), free_port()
    edited = original.replace("\nsource:\n", f"\nsource:\n  {PLUGIN}:\n    httpServerPort: {port}\n", 1)
    own = host.plugin_dir / PLUGIN / "etc" / "kuiper.yaml"
    shipped = zipfile.ZipFile(zips["pyhttppush"]).read("etc/kuiper.yaml")
    env_port = host.extra_env.pop("PYHTTPPUSH_SERVER_PORT")
    try:
        host_yaml.write_text(edited)
        host.restart()
        wait_until(lambda: host.plugin_status(PLUGIN)["status"] == "running", 30.0, "the plugin to run after boot")
        s, path = ctx.stream('FORMAT="json"', source_type="httppush")  # the built-in, on the host's data port
        r = ctx.rule(f'SELECT *, "builtin" AS src FROM {s}', wait=False)
        host.wait_rule_running(r)
        wait_until(lambda: accepts(host.data_url(path), {"probe": 1}), 10.0, "the built-in httppush endpoint", 0.1)
        assert ctx.sink.wait_for(1) == [{"probe": 1, "src": "builtin"}]
        ctx.sink.clear()

        # a user's edit of the plugin's own file: the host's file outranks it now, and the reinstall drops it
        assert own.read_bytes() == shipped
        own.write_text(own.read_text().replace("httpServerPort: 10082", f"httpServerPort: {lost}") + "# mine\n")
        assert f"httpServerPort: {lost}" in own.read_text()
        host.delete_plugin(PLUGIN)
        assert not own.exists()
        host.install_plugin(PLUGIN, zips["pyhttppush"])
        assert own.read_bytes() == shipped
        assert host_yaml.read_text() == edited  # install and delete leave the host's file alone

        moved = Ctx(host, ctx.sink, port)
        try:
            ps, ppath = moved.stream('FORMAT="json"')
            moved.rule(f'SELECT *, "plugin" AS src FROM {ps}')
            assert moved.push(ppath, '{"n": 1}').body == {"accepted": 1, "sources": 1}
            assert http_post(host.data_url(path), {"b": 1})[0] == 200
            records = ctx.sink.wait_for(2)
            assert {"n": 1, "src": "plugin"} in records and {"b": 1, "src": "builtin"} in records
            assert not port_open(ctx.port) and not port_open(lost)
        finally:
            moved.cleanup()
    finally:
        host_yaml.write_text(original)
        host.extra_env["PYHTTPPUSH_SERVER_PORT"] = env_port
        host.restart()
        wait_until(lambda: not baseline_problems(host, ctx.port), 30.0, "the plugin to run again after the restart")
