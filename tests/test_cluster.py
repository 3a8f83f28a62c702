"""Three real eKuiper nodes behind a real HAProxy (deploy/haproxy/haproxy.cfg, unchanged), results in a real mosquitto
(issue 15; docs/scaling.md). ``make cluster`` runs it; ``-s`` shows the figures.

Every node has the same config group, streams and rules: ``/devices/{id}/telemetry`` (HAProxy hashes on the path)
and ``/ingest`` with ``X-Device-Id`` (it hashes on the header), each into eKuiper's built-in ``mqtt`` sink. Devices
push numbered records through HAProxy, one request at a time per device, each with an ``Idempotency-Key``, retrying
a 502/503/504/409 or a failed connection with the same key, and note which node answered (``X-Served-By``). Midway
one node is killed (SIGKILL of kuiperd and its plugin); later another is drained, its plugin upgraded through REST
and undrained (a rolling upgrade). A sentinel per device ends the traffic, then one per live node and stream.

At the broker, exactly:
- every record answered 2xx arrived, except records the killed node answered in the moments before its kill (what
  its eKuiper held dies with it): each such loss is counted, attributed to the killed node and answered at most
  ``LOSS_WINDOW_S`` (tests/support/cluster_accounting.py) before it died;
- each device's records arrive in order within each node's stretch;
- a record arrives twice only where the kill made it possible: an attempt the killed node took but never answered
  (HAProxy's 502), retried with the same key on another node (keys are per node);
- nothing arrives that was never sent;
- the kill's failed attempts all name the killed node (``X-Served-By`` on HAProxy's 502) or no node (a connection
  closed without an answer), and after the devices recovered from it, through the whole drain-upgrade-undrain
  cycle, clients see no 5xx and no failed connection at all.
HAProxy must take the killed node out within its checks' documented time (inter x fall, read from the config) plus
:data:`DETECT_MARGIN_S`, and the drained node out before its drain grace ends.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import PLUGIN, Cluster, Node, cluster_workdir, require_tools
from harness.wait import wait_until
from tests.support.cluster_accounting import Attempt, account

pytestmark = [pytest.mark.realhost, pytest.mark.cluster]

#: Devices per stream (hashed on the path, hashed on the header) and client threads (several devices each).
DEVICES_PER_KIND = 12
CLIENTS = 6
#: Requests per second over all clients, paced: enough to keep every node busy, light enough that three kuiperds,
#: three plugins, HAProxy and mosquitto keep up on 2 shared cores (the rule buffers, and so a kill's loss, stay small).
RATE = 400.0
#: Added to the checks' inter x fall for the balancer's reaction on a loaded machine.
DETECT_MARGIN_S = 3.0
#: Statuses a device retries with the same key: HAProxy's 502/504 (a node died mid-request) and 503 (no node, or the
#: plugin's own 503 while a source is vacant), 409 (the same key still in progress on that node).
RETRY_STATUSES = {409, 502, 503, 504}
RETRY_PAUSE_S = 0.2
GIVE_UP_S = 120.0
RUN = secrets.token_hex(3)

STREAMS = (
    ('CREATE STREAM tele () WITH (TYPE="pyhttppush", DATASOURCE="/devices/{id}/telemetry", FORMAT="json", '
     'CONF_KEY="cluster")', "by_path", "SELECT meta(id) AS device, * FROM tele"),
    ('CREATE STREAM ingest () WITH (TYPE="pyhttppush", DATASOURCE="/ingest", FORMAT="json", CONF_KEY="cluster")',
     "by_header", "SELECT meta(`x-device-id`) AS device, * FROM ingest"),
)


def _target(device: str) -> tuple[str, dict[str, str]]:
    """The device's path and headers: ``p…`` devices name themselves in the path, ``h…`` in X-Device-Id."""
    if device.startswith("p"):
        return f"/devices/{device}/telemetry", {}
    return "/ingest", {"X-Device-Id": device}


class Devices:
    """The devices: :data:`CLIENTS` threads with a keep-alive connection each to the balancer, each sending for its
    devices in rounds (record n of each, then n + 1), one request at a time, at :data:`RATE` in all. Leaving the
    ``with`` block ends the round and sends each device's sentinel (its last number + 1, ``"end": true``)."""

    def __init__(self, port: int, devices: list[str]) -> None:
        self.port = port
        self.devices = devices
        self.attempts: list[Attempt] = []
        self.ok: dict[tuple[str, int], Attempt] = {}
        self.last: dict[str, int] = {}
        self.fatal: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(devices[i::CLIENTS],), name=f"client{i}",
                                          daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> Devices:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # the test failed inside the block: no sentinels, no retries, just stop
            self.fatal.append(f"stopped by {exc_type.__name__}")
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_S + 30)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not finish"

    def ok_count(self, node: str, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for a in self.ok.values() if a.served_by == node and a.sent >= since)

    def answered_since(self, since: float) -> set[str]:
        """Devices with a 2xx to a request sent at or after ``since``."""
        with self._lock:
            return {a.device for a in self.ok.values() if a.sent >= since}

    def _run(self, devices: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        interval = CLIENTS / RATE
        next_at = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set() and not self.fatal:
                n += 1
                for device in devices:
                    conn = self._deliver(conn, device, n, {"n": n})
                    # pacing the load, not waiting for a state; after a stall (a retry's pause) no burst to catch up
                    next_at = max(next_at + interval, time.monotonic() - interval)
                    time.sleep(max(0.0, next_at - time.monotonic()))
            for device in devices:
                if self.fatal:
                    break
                self.last[device] = n + 1
                conn = self._deliver(conn, device, n + 1, {"n": n + 1, "end": True})
        finally:
            conn.close()

    def _deliver(self, conn: http.client.HTTPConnection, device: str, n: int,
                 record: dict[str, Any]) -> http.client.HTTPConnection:
        path, headers = _target(device)
        headers = {**headers, "Content-Type": "application/json", "Idempotency-Key": f"{RUN}-{device}-{n}"}
        body = json.dumps(record).encode()
        give_up = time.monotonic() + GIVE_UP_S
        while True:
            sent = time.monotonic()
            status = error = served_by = None
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                status, served_by = response.status, response.getheader("X-Served-By")
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            attempt = Attempt(device, n, sent, time.monotonic(), status, error, served_by)
            with self._lock:
                self.attempts.append(attempt)
                if status is not None and 200 <= status < 300:
                    self.ok[(device, n)] = attempt
                    return conn
            if status is not None and status not in RETRY_STATUSES:
                self.fatal.append(f"{device} #{n}: {status} from {served_by}")
                return conn
            if self.fatal:  # another device failed the run, or the test stopped it
                return conn
            if time.monotonic() > give_up:
                self.fatal.append(f"{device} #{n}: no 2xx within {GIVE_UP_S}s, last {status or error}")
                return conn
            time.sleep(RETRY_PAUSE_S)  # a client's pause before its retry


def _define(node: Node, cluster: Cluster) -> None:
    """The fleet's definitions, the same on every node: the config group (idempotency on, the device header in
    meta), the two streams and their rules into the mqtt sink."""
    host = node.host
    host.put(f"/metadata/sources/{PLUGIN}/confKeys/cluster", {"idempotency": True, "metaHeaders": ["X-Device-Id"]})
    for stream, rule_id, sql in STREAMS:
        host.create_stream(stream)
        host.create_rule(rule_id, sql, [cluster.sink_action()])
    wait_until(lambda: all(node.ref_count().get(rule_id) for _, rule_id, _ in STREAMS), 60.0,
             lambda: f"both sources started on {node.name}: {node.ref_count()}")


def _health(node: Node) -> dict[str, Any]:
    answer = node.health()
    return {"code": None} if answer is None else {"code": answer[0], **answer[1]}


def _drain_upgrade_undrain(cluster: Cluster, node: Node, token: str, zip_path: Path, load: Devices,
                           marks: dict[str, float]) -> None:
    """The rolling upgrade of one node: drain, wait until HAProxy took it out and the grace is over, upgrade the
    plugin through REST, wait for it to come back (still draining), undrain, wait until HAProxy put it back."""
    balancer = cluster.balancer
    assert balancer is not None
    marks["drain"] = time.monotonic()
    hidden = balancer.counters(node.name)
    status, body = node.admin("drain", token, "persist=true")  # kept across the upgrade's new plugin process
    assert status == 200 and body.get("status") == "draining" and body.get("persisted") is True, (status, body)
    grace = float(body["graceS"])
    marks["out"] = cluster.wait_states({node.name: "DOWN"}, grace + 30.0)
    assert marks["out"] - marks["drain"] < grace, (
        f"HAProxy took {node.name} out {marks['out'] - marks['drain']:.1f} s after the drain, not within its "
        f"{grace} s grace: requests would meet closed connections")
    wait_until(lambda: _health(node).get("drained") is True, grace + 30.0,
             lambda: f"{node.name} drained (health: {_health(node)})")
    before = node.plugin_pids()
    marks["upgrade"] = time.monotonic()
    node.host.update_plugin(PLUGIN, zip_path)
    wait_until(lambda: (node.plugin_pids() not in ([], before) and _health(node).get("status") == "draining"
                      and all(node.ref_count().get(rule_id) for _, rule_id, _ in STREAMS)), 120.0,
             lambda: f"{node.name}'s new plugin up, draining, sources started (health {_health(node)}, "
                     f"refCount {node.ref_count()})")
    marks["upgraded"] = time.monotonic()
    assert balancer.servers()[node.name] == "DOWN"
    status, body = node.admin("undrain", token)
    assert status == 200, (status, body)
    marks["back"] = cluster.wait_states({node.name: "UP"}, 60.0)
    wait_until(lambda: load.ok_count(node.name, marks["back"]) >= 50, 60.0,
             f"{node.name} to serve again after the undrain")
    # no connection to the node failed in the cycle, not even one HAProxy hid from clients by retrying elsewhere
    assert balancer.counters(node.name) == hidden, (hidden, balancer.counters(node.name))


def _sentinels_at_broker(cluster: Cluster, load: Devices, live: list[Node]) -> list[dict[str, Any]]:
    """Wait for every device's sentinel, then send one per live node and stream straight to the node and wait for
    those: each proves that node's rule pipeline delivered everything it took before. Returns the messages before
    the node sentinels."""
    assert cluster.subscriber is not None
    wanted = {(device, last) for device, last in load.last.items()}
    wait_until(lambda: wanted <= {(m.get("device"), m.get("n")) for m in cluster.subscriber.messages()}, 90.0,
             lambda: f"every device's sentinel at the broker; missing "
                     f"{sorted(wanted - {(m.get('device'), m.get('n')) for m in cluster.subscriber.messages()})}")
    probes = set()
    for node in live:
        for kind in ("p", "h"):
            device = f"{kind}probe-{node.name}"
            path, headers = _target(device)
            conn = http.client.HTTPConnection(node.address, node.plugin_port, timeout=30)
            conn.request("POST", path, json.dumps({"n": 0, "probe_end": True}), {**headers,
                         "Content-Type": "application/json"})
            assert conn.getresponse().status == 200
            conn.close()
            probes.add(device)
    wait_until(lambda: probes <= {m.get("device") for m in cluster.subscriber.messages()}, 60.0,
             "the live nodes' sentinels at the broker")
    return [m for m in cluster.subscriber.messages() if "probe_end" not in m]


def test_cluster_kill_and_rolling_upgrade(zips: dict[str, Path]) -> None:
    require_tools()
    began = time.monotonic()
    workdir = cluster_workdir()
    token = secrets.token_hex(16)
    marks: dict[str, float] = {}
    passed = False
    try:
        with Cluster(workdir, zips["pyhttppush"], env={"PYHTTPPUSH_SERVER_ADMIN_TOKEN": token}) as cluster:
            assert cluster.balancer is not None
            started = time.monotonic() - began
            cluster.parallel(lambda node: _define(node, cluster))
            names = [node.name for node in cluster.nodes]
            cluster.wait_states({name: "UP" for name in names}, 60.0)
            victim, drained, keeper = cluster.nodes
            for method, path in (("POST", "/admin/drain"), ("POST", "/%61dmin/drain"), ("GET", "/%6Detrics"),
                                 ("GET", "/metrics")):  # operators' paths, never through the balancer
                conn = http.client.HTTPConnection("127.0.0.1", cluster.balancer.port, timeout=10)
                conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
                assert conn.getresponse().status == 403, (method, path)
                conn.close()
            assert all(_health(node).get("status") == "ok" for node in cluster.nodes)  # none drained through it
            checks = cluster.balancer.check_params()
            documented = checks["inter"] * checks["fall"]
            devices = [f"{kind}{i:02d}" for kind in ("p", "h") for i in range(DEVICES_PER_KIND)]
            with Devices(cluster.balancer.port, devices) as load:
                wait_until(lambda: all(load.ok_count(name) >= 100 for name in names) or load.fatal, 90.0,
                         lambda: f"every node to serve ({ {n: load.ok_count(n) for n in names} })")
                assert not load.fatal, load.fatal
                # -- the kill: SIGKILL of kuiperd and its plugin, by PID
                marks["signal"] = time.monotonic()
                killed = victim.kill()
                marks["kill"] = time.monotonic()  # every process of the node dead
                kill_wall = time.time()
                marks["down"] = cluster.wait_states({victim.name: "DOWN"}, documented + 30.0)
                # the devices recovered: every one has a 2xx for a request sent after HAProxy took the node out
                wait_until(lambda: load.answered_since(marks["down"]) >= set(devices) or load.fatal, 60.0,
                         lambda: f"every device answered after the kill "
                                 f"({len(load.answered_since(marks['down']))}/{len(devices)})")
                marks["calm"] = time.monotonic()
                assert not load.fatal, load.fatal
                # -- the rolling upgrade of another node
                _drain_upgrade_undrain(cluster, drained, token, zips["pyhttppush"], load, marks)
            assert not load.fatal, load.fatal
            messages = _sentinels_at_broker(cluster, load, [drained, keeper])
            stats = cluster.balancer.stats()
            result = account(load.attempts, [(m.get("device"), m.get("n")) for m in messages], victim.name, marks)
            reaction = marks["down"] - marks["kill"]
            dying_ms = (marks["kill"] - marks["signal"]) * 1000
            print(f"\ncluster: {len(cluster.nodes)} nodes up in {started:.0f} s (kuiperd started, plugin installed on "
                  f"each at once); killed {victim.name} (pids {killed}, dead {dying_ms:.0f} ms after the SIGKILLs); "
                  f"HAProxy marked it DOWN after {reaction:.1f} s "
                  f"(checks: inter {checks['inter']:g} s x fall {checks['fall']:g} = {documented:g} s)")
            print(f"drained {drained.name}: out of HAProxy after {marks['out'] - marks['drain']:.1f} s, upgrade "
                  f"(PUT /plugins/portables/{PLUGIN}) {marks['upgraded'] - marks['upgrade']:.0f} s, back UP "
                  f"{marks['back'] - marks['upgraded']:.1f} s after the undrain")
            print(result.report())
            for a in result.kill_failures[:10]:
                print(f"  kill window: {a.device}#{a.n} {a.status or a.error} from {a.served_by}, sent "
                      f"{(a.sent - marks['kill']) * 1000:+.0f} ms, done {(a.done - marks['kill']) * 1000:+.0f} ms "
                      f"from {victim.name}'s death at {time.strftime('%H:%M:%S', time.gmtime(kill_wall))}"
                      f".{int(kill_wall * 1000) % 1000:03d} UTC")
            print(f"HAProxy retries/redispatches: {_retries(stats)}; test duration {time.monotonic() - began:.0f} s")
            abnormal = cluster.balancer.abnormal_log_lines()
            print(f"HAProxy log lines with a termination state other than ---- ({len(abnormal)}):\n  "
                  + "\n  ".join(abnormal[:20]))
            result.check()
            assert reaction <= documented + DETECT_MARGIN_S, (
                f"HAProxy took {reaction:.1f} s to mark the killed node DOWN; documented {documented:g} s "
                f"(+{DETECT_MARGIN_S:g} s margin)")
            passed = True
    finally:
        if passed and not os.environ.get("HTTPPUSH_CLUSTER_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\ncluster test: logs kept in {workdir}")


def _retries(rows: list[dict[str, str]]) -> str:
    return ", ".join(f"{r['pxname']} {r['wretr'] or 0}/{r['wredis'] or 0}" for r in rows if r["svname"] == "BACKEND")
