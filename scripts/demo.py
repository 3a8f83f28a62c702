#!/usr/bin/env python3
"""`make demo`: a real eKuiper with the plugin installed, data pushed with curl, the rule's output shown.

Steps: obtain kuiperd (built once from the Go module proxy, cached), start it in .cache/demo/ on loopback, install
dist/pyhttppush.zip through eKuiper's REST API, create a stream and a rule whose output goes to a local receiver,
push sample bodies with curl, print what the rule produced. Then it keeps running and prints every new result until
Ctrl-C (or exits at once with DEMO_WAIT=0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.realhost import EkuiperHost, RecordSink, kuiperd_path  # noqa: E402
from httppush_plugin.config import DEFAULT_PORTS  # noqa: E402

PORT = int(os.environ.get("PYHTTPPUSH_SERVER_PORT", DEFAULT_PORTS["pyhttppush"]))
URL = f"http://127.0.0.1:{PORT}/api/data"
SAMPLES = [
    ("one JSON object", '{"device": "d1", "temperature": 21.5, "humidity": 40}'),
    ("a JSON array: one record per element", '[{"device": "d2", "temperature": 19.0, "humidity": 55},'
                                             ' {"device": "d3", "temperature": 25.5, "humidity": 38}]'),
    ("a body that is not JSON: refused, nothing reaches the rule", "temperature=21"),
]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def curl(body: str) -> None:
    cmd = ["curl", "-sS", "-w", "  (HTTP %{http_code})\n", "-X", "POST", URL, "-H", "Content-Type: application/json",
           "-d", body]
    print("$ curl -X POST " + URL + " -d '" + body + "'", flush=True)
    subprocess.run(cmd, check=False)


def main() -> None:
    say("eKuiper: obtaining kuiperd (the first run builds it with Go, a few minutes)")
    print(kuiperd_path())
    workdir = ROOT / ".cache" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(PORT)}
    with EkuiperHost(workdir, extra_env=env) as host, RecordSink() as sink:
        say(f"eKuiper is running: REST API {host.rest_url}, root {host.root}")
        say("installing dist/pyhttppush.zip through POST /plugins/portables (install.sh pip-installs its packages)")
        started = time.monotonic()
        host.install_plugin("pyhttppush", ROOT / "dist" / "pyhttppush.zip")
        print(f"installed in {time.monotonic() - started:.1f}s; status: {host.plugin_status('pyhttppush')}")

        # a config group stored through eKuiper's REST API: records carry the client's address for meta(remoteAddr)
        host.put("/metadata/sources/pyhttppush/confKeys/demo", {"meta": ["remoteAddr"]})
        sql = 'CREATE STREAM demo () WITH (TYPE="pyhttppush", DATASOURCE="/api/data", FORMAT="json", CONF_KEY="demo")'
        rule = "SELECT device, temperature, humidity, meta(remoteAddr) AS sender FROM demo WHERE temperature > 20"
        say(f"stream: {sql}\n   rule: {rule}")
        host.create_stream(sql)
        host.create_rule("demo", rule, [sink.action()])
        host.wait_rule_running("demo")
        # "running" comes before the plugin has started the source; the plugin's refCount names the rule once it has
        deadline = time.monotonic() + 30
        while "demo" not in host.plugin_status("pyhttppush").get("refCount", {}) and time.monotonic() < deadline:
            time.sleep(0.1)

        say("pushing sample data")
        for title, body in SAMPLES:
            print(f"-- {title}")
            curl(body)

        say("what the rule produced (temperature > 20)")
        for record in sink.wait_for(2, timeout=10):
            print(json.dumps(record))
        status = host.rule_status("demo")
        print(f"rule metrics: records_in={status.get('source_demo_0_records_in_total')} "
              f"exceptions={status.get('source_demo_0_exceptions_total')}")

        if os.environ.get("DEMO_WAIT", "1") == "0" or not sys.stdin.isatty():
            say("done (DEMO_WAIT=0 or no terminal): eKuiper stopped")
            return
        say(f"push more:  curl -X POST {URL} -d '{{\"device\": \"me\", \"temperature\": 30}}'\n"
            f"   eKuiper REST: curl {host.rest_url}/rules/demo/status\n   stop: Ctrl-C")
        seen = len(sink.records)
        try:
            while True:
                time.sleep(0.5)
                records = sink.records
                for record in records[seen:]:
                    print("rule output:", json.dumps(record), flush=True)
                seen = len(records)
        except KeyboardInterrupt:
            say("stopping eKuiper")


if __name__ == "__main__":
    main()
