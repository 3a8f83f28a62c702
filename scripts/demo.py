#!/usr/bin/env python3
"""`make demo`: a real eKuiper with the plugin installed, data pushed with curl, the rules' output shown.

Steps: obtain kuiperd (built once from the Go module proxy, cached), start it in .cache/demo/ on loopback, install
dist/pyhttppush.zip through eKuiper's REST API, create two streams and a rule on each whose output goes to a local
receiver:

* ``demo`` on the literal path /api/data: a JSON object, a JSON array (one record per element, one of them dropped by
  the rule's WHERE) and a body that is not JSON (400, nothing reaches the rule);
* ``telemetry`` on the path template /devices/{id}/telemetry: pushes to /devices/42/telemetry and /devices/7/telemetry
  come out with meta(id) as ``device`` "42" / "7", then an NDJSON body (Content-Type: application/x-ndjson) whose
  three lines become three records.

Each step prints the curl command, the HTTP answer and the records its rule emitted, waiting for exactly those (a
timeout fails the demo with what arrived). Then it keeps running and prints every new result until Ctrl-C (or exits
at once with DEMO_WAIT=0 or without a terminal).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.hostlock import LOCK_PATH  # noqa: E402
from harness.realhost import EkuiperHost, RecordSink, kuiperd_path  # noqa: E402
from httppush_plugin.settings import DEFAULT_PORTS  # noqa: E402

PORT = int(os.environ.get("PYHTTPPUSH_SERVER_PORT", DEFAULT_PORTS["pyhttppush"]))
BASE = f"http://127.0.0.1:{PORT}"
#: Seconds to wait for a rule's records to reach the receiver, and for the plugin to start a rule's source.
WAIT_S = 15.0

JSON = "application/json"
NDJSON = "application/x-ndjson"


@dataclass
class Rule:
    """A stream, the rule reading it and the receiver its results are posted to."""

    name: str
    stream_sql: str
    rule_sql: str
    sink: RecordSink = field(default_factory=RecordSink)
    shown: int = 0  # how many of the sink's records have been printed


@dataclass
class Step:
    """One push: what it shows, the request, the answer expected and the records the rule must emit for it."""

    title: str
    rule: Rule
    path: str
    body: str
    content_type: str = JSON
    status: int = 200
    expect: list[dict[str, Any]] = field(default_factory=list)  # each emitted record must contain these items


class DemoFailed(Exception):
    """Something the demo shows did not happen; the message says what."""


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def curl(path: str, body: str, content_type: str) -> tuple[int, str]:
    """POST ``body`` with curl, print the command and the answer; return (status, answer body)."""
    args = ["-X", "POST", BASE + path, "-H", f"Content-Type: {content_type}", "--data-binary", body]
    print("$ " + shlex.join(["curl", *args]), flush=True)
    proc = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=False)
    answer, _, code = proc.stdout.rpartition("\n")
    if proc.returncode != 0:
        raise DemoFailed(f"curl failed (exit {proc.returncode}): {proc.stderr.strip()}")
    print(f"   HTTP {code} {answer}", flush=True)
    return int(code), answer


def wait_records(rule: Rule, expect: list[dict[str, Any]]) -> list[Any]:
    """Poll the rule's receiver until ``len(expect)`` new records have arrived; check them against ``expect``."""
    want = rule.shown + len(expect)
    deadline = time.monotonic() + WAIT_S
    while len(records := rule.sink.records) < want:
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"rule {rule.name!r} emitted {len(records) - rule.shown} of the {len(expect)} record(s) expected "
                f"within {WAIT_S:.0f}s: {records[rule.shown:]!r}"
            )
        time.sleep(0.05)
    new = records[rule.shown:want]
    rule.shown = want
    for got, wanted in zip(new, expect, strict=True):
        if not isinstance(got, dict) or any(got.get(k) != v for k, v in wanted.items()):
            raise DemoFailed(f"rule {rule.name!r} emitted {got!r}, expected a record with {wanted!r}")
    return new


def run_step(step: Step) -> None:
    print(f"\n-- {step.title}", flush=True)
    status, answer = curl(step.path, step.body, step.content_type)
    if status != step.status:
        raise DemoFailed(f"expected HTTP {step.status}, got {status}: {answer}")
    if not step.expect:
        print(f"   rule {step.rule.name!r} emitted: nothing", flush=True)
        return
    records = wait_records(step.rule, step.expect)
    print(f"   rule {step.rule.name!r} emitted:", flush=True)
    for record in records:
        print("     " + json.dumps(record), flush=True)


def records_in(host: EkuiperHost, rule: Rule) -> Any:
    return host.rule_status(rule.name).get(f"source_{rule.name}_0_records_in_total")


def wait_host_lock() -> None:
    """Say so when another eKuiper host (a test run) holds the machine's host lock: the demo waits for it."""
    with open(LOCK_PATH, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another eKuiper host (a test run?) holds {LOCK_PATH}: waiting until it is free (up to 15 min)")
        # closing the file drops our probe's lock; EkuiperHost takes the lock itself


def demo(host: EkuiperHost, demo_rule: Rule, telemetry: Rule) -> None:
    say("installing dist/pyhttppush.zip through POST /plugins/portables (install.sh pip-installs its packages)")
    started = time.monotonic()
    host.install_plugin("pyhttppush", ROOT / "dist" / "pyhttppush.zip")
    print(f"installed in {time.monotonic() - started:.1f}s; status: {host.plugin_status('pyhttppush')}")

    # a config group stored through eKuiper's REST API: records carry the client's address for meta(remoteAddr)
    say("config group 'demo' (PUT /metadata/sources/pyhttppush/confKeys/demo): {\"meta\": [\"remoteAddr\"]}")
    host.put("/metadata/sources/pyhttppush/confKeys/demo", {"meta": ["remoteAddr"]})
    for rule in (demo_rule, telemetry):
        say(f"stream: {rule.stream_sql}\n   rule {rule.name!r}: {rule.rule_sql}")
        host.create_stream(rule.stream_sql)
        host.create_rule(rule.name, rule.rule_sql, [rule.sink.action()])
    for rule in (demo_rule, telemetry):
        host.wait_rule_running(rule.name)
    # "running" comes before the plugin has started the source; the plugin's refCount names the rule once it has
    deadline = time.monotonic() + WAIT_S
    while not {demo_rule.name, telemetry.name} <= set(host.plugin_status("pyhttppush").get("refCount", {})):
        if time.monotonic() > deadline:
            raise DemoFailed(f"the plugin did not start the rules' sources within {WAIT_S:.0f}s: "
                             f"{host.plugin_status('pyhttppush')}")
        time.sleep(0.1)

    say("stream 'demo' on the literal path /api/data (its rule keeps temperature > 20)")
    for step in (
        Step("one JSON object: one record", demo_rule, "/api/data",
             '{"device": "d1", "temperature": 21.5, "humidity": 40}',
             expect=[{"device": "d1", "temperature": 21.5, "humidity": 40}]),
        Step("a JSON array: one record per element; d2 (19.0) is dropped by the rule's WHERE", demo_rule, "/api/data",
             '[{"device": "d2", "temperature": 19.0, "humidity": 55},'
             ' {"device": "d3", "temperature": 25.5, "humidity": 38}]',
             expect=[{"device": "d3", "temperature": 25.5, "humidity": 38}]),
    ):
        run_step(step)
    host.wait_rule_metric(demo_rule.name, f"source_{demo_rule.name}_0_records_in_total", 3, timeout=WAIT_S)
    run_step(Step("a body that is not JSON: refused with 400, nothing of it reaches the rule", demo_rule,
                        "/api/data", "temperature=21", status=400))
    print(f"   the rule's source has read {records_in(host, demo_rule)} records: 1 + 2, none from the refused body "
          f"(GET /rules/demo/status)")

    say("stream 'telemetry' on the path template /devices/{id}/telemetry: meta(id) is the device's segment")
    for step in (
        Step("device 42", telemetry, "/devices/42/telemetry", '{"temperature": 22.5}',
             expect=[{"device": "42", "temperature": 22.5}]),
        Step("device 7", telemetry, "/devices/7/telemetry", '{"temperature": 17.5}',
             expect=[{"device": "7", "temperature": 17.5}]),
        Step("NDJSON (Content-Type: application/x-ndjson): one record per line, all from device 7", telemetry,
             "/devices/7/telemetry", '{"temperature": 18.4}\n{"temperature": 18.9}\n{"temperature": 19.3}\n',
             content_type=NDJSON,
             expect=[{"device": "7", "temperature": t} for t in (18.4, 18.9, 19.3)]),
    ):
        run_step(step)


def follow(host: EkuiperHost, rules: tuple[Rule, ...]) -> None:
    """Print every new result of the rules until Ctrl-C."""
    say(f"push more:  curl -X POST {BASE}/devices/me/telemetry -d '{{\"temperature\": 30}}'\n"
        f"            curl -X POST {BASE}/api/data -d '{{\"device\": \"me\", \"temperature\": 30}}'\n"
        f"   eKuiper REST: curl {host.rest_url}/rules/telemetry/status\n   stop: Ctrl-C")
    try:
        while True:
            time.sleep(0.5)
            for rule in rules:
                records = rule.sink.records
                for record in records[rule.shown:]:
                    print(f"rule {rule.name!r}:", json.dumps(record), flush=True)
                rule.shown = len(records)
    except KeyboardInterrupt:
        say("stopping eKuiper")


def main() -> int:
    say("eKuiper: obtaining kuiperd (the first run builds it with Go, a few minutes)")
    print(kuiperd_path())
    workdir = ROOT / ".cache" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(PORT)}
    demo_rule = Rule(
        "demo",
        'CREATE STREAM demo () WITH (TYPE="pyhttppush", DATASOURCE="/api/data", FORMAT="json", CONF_KEY="demo")',
        "SELECT device, temperature, humidity, meta(remoteAddr) AS sender FROM demo WHERE temperature > 20",
    )
    telemetry = Rule(
        "telemetry",
        'CREATE STREAM telemetry () WITH (TYPE="pyhttppush", DATASOURCE="/devices/{id}/telemetry", FORMAT="json")',
        "SELECT meta(id) AS device, temperature FROM telemetry",
    )
    wait_host_lock()
    try:
        with EkuiperHost(workdir, extra_env=env) as host:
            started = time.monotonic()
            say(f"eKuiper is running: REST API {host.rest_url}, root {host.root}")
            try:
                demo(host, demo_rule, telemetry)
            except DemoFailed as exc:
                print(f"\nkuiperd logs (last lines):\n{host.log_tail(15)}\n\nDEMO FAILED: {exc}", file=sys.stderr)
                return 1
            say(f"all shown {time.monotonic() - started:.1f}s after eKuiper answered (plugin install included)")
            if os.environ.get("DEMO_WAIT", "1") == "0" or not sys.stdin.isatty():
                say("done (DEMO_WAIT=0 or no terminal): eKuiper stopped")
                return 0
            follow(host, (demo_rule, telemetry))
    finally:
        for rule in (demo_rule, telemetry):  # the receivers started with the Rules
            rule.sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
