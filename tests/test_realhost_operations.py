"""Operations under load in a REAL eKuiper 2.4.2: traffic keeps flowing (4 keep-alive clients, one record per
request, tests/support/load.py) through each operation, then a sentinel; every record answered 2xx is looked for in
the rule's sink output.

What each test holds the plugin to (docs/operations.md, "Operations under load"):

* clients see only 2xx, 503 with ``Retry-After``, or — where the plugin process itself goes away (reinstall, kuiperd
  restart, kill) — a refused or reset connection; a rule restart, a rule update and a stream dropped and recreated
  show no connection error at all (``httpServerRestartGrace`` keeps the port and the connections open);
* no record reaches the rule twice, and none that was answered 503 or 404;
* a record answered 2xx is lost only inside the window a stopping rule leaves: what eKuiper had taken into its data
  channel but not read when it stopped reading (it closes the channel, then sends ``stop``; it acknowledges nothing),
  and what the rule's operators still held. Such records were sent just before the plugin saw the channel close: at
  most :data:`WINDOW_MS` before the first answer that was not 2xx (or, when every client was between two requests
  during the gap, before the operation's last REST call returned);
* where the rule does not stop (the plugin reinstalled; killed, with the recovery after eKuiper has read what the dead
  process wrote) nothing answered 2xx is lost.

Each test prints its figures (run with ``-s``). They share the session's kuiperd (``ctx``, tests/conftest.py); the
kuiperd restart brings it back on the same root and ports.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.realhost_support import PLUGIN, Ctx, kill_plugin, plugin_pids, uid
from tests.support.load import Accounting, Load, account
from tests.support.wait import wait_until

pytestmark = pytest.mark.realhost

#: Requests answered 2xx before and after the operation (about a second of traffic each at ~360 requests/s).
BEFORE, AFTER = 300, 300
#: The loss window's bound: a lost record's request was sent at most this long before the plugin answered anything
#: but 2xx (it saw eKuiper close the channel). Measured: 6–45 ms (docs/operations.md); the margin is for a loaded
#: 2-core machine, where eKuiper falls further behind its channel and its sink.
WINDOW_MS = 250.0
#: Connection errors a client may see when the plugin process goes away.
PROCESS_GONE = {"ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected", "BrokenPipeError",
                "BadStatusLine"}


def _action(ctx: Ctx) -> dict[str, Any]:
    """The rule's sink: rows in batches (a JSON array per request), so that the sink keeps up with the traffic. With
    one request per row (``sendSingle``) it fell 150–250 rows behind at ~360 rows/s, and a rule that stops drops the
    rows its operators still hold: those losses are eKuiper's, whatever the source, and would hide the channel's."""
    return {"rest": {**ctx.sink.action()["rest"], "sendSingle": False, "batchSize": 100, "lingerInterval": 10}}


def _rows(ctx: Ctx) -> list[dict[str, Any]]:
    """The sink's rows in order: a batch is a JSON array of the rule's results, each one row or a list of rows."""
    rows: list[dict[str, Any]] = []

    def add(item: Any) -> None:
        if isinstance(item, list):
            for element in item:
                add(element)
        else:
            rows.append(item)

    add(ctx.sink.records)
    return rows


def _sink_until_sentinel(ctx: Ctx, path: str) -> list[dict[str, Any]]:
    token = f"s{secrets.token_hex(4)}"
    reply = ctx.push(path, f'{{"sentinel": "{token}"}}')
    assert reply.status == 200, reply
    rows = wait_until(lambda: (lambda rows: rows if any(r.get("sentinel") == token for r in rows) else None)(
        _rows(ctx)), 30.0, "the sentinel in the sink")
    index = next(i for i, row in enumerate(rows) if row.get("sentinel") == token)
    return rows[:index]


def _under_load(ctx: Ctx, path: str, operation: Callable[[Load], None], name: str, *,
                process_goes: bool = False, resume_timeout: float = 60.0) -> Accounting:
    with Load(ctx.port, path) as load:
        start = time.monotonic()
        wait_until(lambda: load.ok_since(start) >= BEFORE, 30.0, "traffic to flow before the operation")
        began = time.monotonic()
        lag = load.ok_since(0.0) - len(_rows(ctx))  # rows answered 2xx, not yet out of the rule's sink
        operation(load)
        done = time.monotonic()
        wait_until(lambda: load.ok_since(done) >= AFTER, resume_timeout,
                   lambda: f"2xx answers again after {name} (outcomes since: "
                           f"{sorted({str(o.status or o.error) for o in load.outcomes if o.sent >= done})})")
    rows = _sink_until_sentinel(ctx, path)
    result = account(load.outcomes, rows, done)
    print(f"\n{result.line(name)}; the operation took {(done - began) * 1000:.0f} ms; the sink was {lag} rows behind")
    assert not result.duplicates, f"records delivered twice: {result.duplicates[:10]}"
    assert not result.strays, f"records delivered that were answered neither 2xx nor a connection error: " \
                              f"{result.strays[:10]}"
    assert not result.no_retry_after, f"503 without Retry-After: {result.no_retry_after[:5]}"
    allowed = {"200", "503"} | (PROCESS_GONE if process_goes else set())
    assert set(result.statuses) <= allowed, result.statuses
    assert result.window_ms <= WINDOW_MS, (
        f"{len(result.lost)} records answered 2xx were lost, the first sent {result.window_ms:.1f} ms before the "
        f"first answer that was not 2xx: {result.lost[:10]}")
    return result


def _rule(ctx: Ctx) -> tuple[str, str, str]:
    s, path = ctx.stream('FORMAT="json"')
    rule_id = uid("r")
    ctx.host.create_rule(rule_id, f"SELECT * FROM {s}", [_action(ctx)])
    ctx.rules.append(rule_id)
    ctx.wait_started(rule_id)
    return s, path, rule_id


def test_rule_restart_under_load(ctx: Ctx) -> None:
    _, path, rule_id = _rule(ctx)
    _under_load(ctx, path, lambda _: ctx.host.post(f"/rules/{rule_id}/restart"), "rule restart")


def test_rule_update_under_load(ctx: Ctx) -> None:
    s, path, rule_id = _rule(ctx)
    update = {"id": rule_id, "sql": f"SELECT *, 2 AS version FROM {s}", "actions": [_action(ctx)]}
    _under_load(ctx, path, lambda _: ctx.host.put(f"/rules/{rule_id}", update), "rule update")
    assert _rows(ctx)[-1].get("version") == 2  # the sentinel went through the updated rule


def test_stream_dropped_and_recreated_under_load(ctx: Ctx) -> None:
    """Stop the rule, drop its stream (``?force=true``: the stopped rule still refers to it), create it again (the same
    definition), start the rule. Before the drop, once the plugin has stopped the source, the stopped rule's metrics
    say how many records its source read: the 2xx'd records lost split into those eKuiper never read from its channel
    and those it read but dropped inside the rule as it stopped."""
    s, path, rule_id = _rule(ctx)
    read: list[int] = []
    restarted: list[float] = []

    def recreate(_: Load) -> None:
        ctx.host.stop_rule(rule_id)
        wait_until(lambda: rule_id not in ctx.host.plugin_status(PLUGIN)["refCount"], 10.0, "the source to stop")
        read.append(ctx.host.rule_status(rule_id)[f"source_{s}_0_records_in_total"])
        ctx.host.delete(f"/streams/{s}?force=true")
        ctx.host.create_stream(f'CREATE STREAM {s} () WITH (TYPE="{PLUGIN}", DATASOURCE="{path}", FORMAT="json")')
        restarted.append(time.monotonic())
        ctx.host.start_rule(rule_id)

    result = _under_load(ctx, path, recreate, "stream dropped and recreated")
    # between the stop and the start nothing is answered 2xx (the channel is closed, then the endpoint vacant)
    before = [o for o in result.outcomes if o.status == 200 and o.done < restarted[0]]
    lost_before = sum(1 for o in result.lost if o.done < restarted[0])
    never_read, dropped_in_rule = len(before) - read[0], read[0] - (len(before) - lost_before)
    print(f"of the {len(before)} records answered 2xx before the stop, the rule's source read {read[0]}: "
          f"{never_read} never read from the channel, {dropped_in_rule} read and dropped inside the rule")
    assert never_read >= 0 and dropped_in_rule >= 0, (len(before), read, lost_before)
    assert lost_before == len(result.lost)  # nothing answered 2xx after the start was lost


def test_plugin_reinstalled_under_load(ctx: Ctx, zips: dict[str, Path]) -> None:
    """``PUT /plugins/portables/pyhttppush`` (an upgrade to the same zip): the host kills the process, installs the
    files, starts a new process and replays the running rules' starts; its data channels stay open throughout."""
    _, path, _ = _rule(ctx)
    before = plugin_pids(ctx.host)
    result = _under_load(ctx, path, lambda _: ctx.host.update_plugin(PLUGIN, zips["pyhttppush"]),
                         "plugin reinstalled", process_goes=True)
    assert plugin_pids(ctx.host) != before
    assert not result.lost, f"the rule ran on, yet records answered 2xx were lost: {result.lost[:10]}"


def test_kuiperd_restarted_under_load(ctx: Ctx) -> None:
    """kuiperd stopped (SIGTERM) and started again on the same root: it starts the plugin and the rule at boot."""
    _, path, _ = _rule(ctx)
    _under_load(ctx, path, lambda _: ctx.host.restart(), "kuiperd stopped and started", process_goes=True)


def test_plugin_killed_under_load(ctx: Ctx) -> None:
    """SIGKILL, then the recovery eKuiper offers: restarting a rule that uses the plugin (the host waits out its
    control send timeout on the dead process, starts a new one and replays every stored start)."""
    _, path, rule_id = _rule(ctx)

    def kill_and_recover(load: Load) -> None:
        kill_plugin(ctx.host)
        wait_until(lambda: ctx.host.plugin_status(PLUGIN)["status"] == "error", 10.0, "the host to see the kill")
        # the rule runs on and reads what the dead process wrote: every record answered 2xx reaches the sink before
        # the recovery (a rule restart, which would drop whatever the rule still held)
        answered = {(o.client, o.n) for o in list(load.outcomes) if o.status == 200}
        wait_until(lambda: answered <= {(row.get("c"), row.get("n")) for row in _rows(ctx)}, 15.0,
                   lambda: f"the {len(answered)} records answered 2xx before the kill to reach the sink")
        ctx.host.post(f"/rules/{rule_id}/restart")

    result = _under_load(ctx, path, kill_and_recover, "plugin process killed", process_goes=True)
    assert not result.lost, f"records answered 2xx were lost: {result.lost[:10]}"
