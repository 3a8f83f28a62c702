#!/usr/bin/env python3
"""`make bench`: our plugin against eKuiper's built-in httppush, through one real eKuiper, in one invocation.

Targets, run alternately (a, b, c, a, b, c, …) so that drift on the machine hits all of them alike:
  (a) plugin  — a stream TYPE="pyhttppush", rule `SELECT * FROM s`, eKuiper's `nop` sink;
  (b) builtin — eKuiper's own `httppush` source on the host's data server, the same rule and sink;
  (c) floor   — bench/floor.py, the cheapest aiohttp server that reads the body and answers 200.
Load: wrk (Debian package `wrk`) over loopback, one thread, N connections.

For every run: requests/s; records/s as counted by the host (`records_in` of the rule's source) and the records the
clients had accepted (2xx answers × records per body); p50/p99 latency; the plugin process's peak RSS and CPU
seconds. Ratios a/b and a/c per case. Prints a markdown table; `--write` also stores it in bench/README.md.

Usage: python bench/run.py [--duration S] [--conns 1,32] [--cases json1,json100,delim100,bin64k] [--rounds N]
                           [--smoke] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.net import free_port, wait_port  # noqa: E402
from harness.procstat import cpu_seconds, find_pid, peak_rss_mb, reset_peak_rss, status_kb  # noqa: E402
from harness.realhost import EkuiperHost, kuiperd_path  # noqa: E402

PLUGIN = "pyhttppush"
PROJECT_IN = re.compile(r"^op_\d+_project_0_records_in_total$")


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    body: bytes
    records: int  # records per body, as our plugin decodes it
    content_type: str
    stream_def: str  # columns and WITH options shared by (a) and (b)
    builtin_records: int | None = None  # when the built-in decodes the body into another number of records


def _cases() -> dict[str, Case]:
    one = {"device": "sensor-0042", "site": "plant-7/line-3", "temperature": 21.53, "humidity": 40.2,
           "pressure": 1013.25, "status": "ok", "ts": 1718000000000, "seq": 123456, "tags": ["a", "b"]}
    json1 = json.dumps(one).encode()
    json100 = json.dumps([{**one, "seq": i} for i in range(100)]).encode()
    delim100 = "\n".join(f"sensor-{i:04d},21.5,40.2,1013.25,ok" for i in range(100)).encode()
    bin64k = bytes(range(256)) * 256
    return {c.name: c for c in (
        Case("json1", f"1-record JSON ({len(json1)} B)", json1, 1, "application/json", '() WITH (FORMAT="json"'),
        Case("json100", f"100-record JSON array ({len(json100) // 1024} KiB)", json100, 100, "application/json",
             '() WITH (FORMAT="json"'),
        Case("delim100", f"100-line delimited ({len(delim100) // 1024} KiB)", delim100, 100, "text/plain",
             '() WITH (FORMAT="delimited"', builtin_records=1),
        Case("bin64k", "64 KiB binary", bin64k, 1, "application/octet-stream", '(self BYTEA) WITH (FORMAT="binary"'),
    )}


CASES = _cases()
TARGETS = ("plugin", "builtin", "floor")

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
local f = io.open("%(body_path)s", "rb")
wrk.body = f:read("*all")
f:close()
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Result:
    case: str
    conns: int
    target: str
    rps: float
    accepted: int  # records in 2xx-answered bodies
    host_records: int | None  # records the host counted (None for the floor)
    p50_ms: float
    p99_ms: float
    seconds: float
    read_by_source: int | None = None  # plugin only: records eKuiper's source node read from our channel
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    errors: int = 0

    @property
    def records_per_s(self) -> float:
        count = self.host_records if self.host_records is not None else self.accepted
        return count / self.seconds


@dataclass
class Bench:
    host: EkuiperHost
    plugin_port: int
    floor_port: int
    workdir: Path
    plugin_pid: int = 0
    scripts: dict[str, Path] = field(default_factory=dict)

    def url(self, target: str, case: Case) -> str:
        port = {"plugin": self.plugin_port, "builtin": self.host.data_port, "floor": self.floor_port}[target]
        return f"http://127.0.0.1:{port}/{case.name}"

    def setup(self) -> None:
        for case in CASES.values():
            body_path = self.workdir / f"{case.name}.body"
            body_path.write_bytes(case.body)
            script = self.workdir / f"{case.name}.lua"
            script.write_text(WRK_SCRIPT % {"content_type": case.content_type, "body_path": body_path})
            self.scripts[case.name] = script
            for target, type_ in (("plugin", PLUGIN), ("builtin", "httppush")):
                stream = f"{target}_{case.name}"
                cols, opts = case.stream_def.split(" WITH (", 1)
                self.host.create_stream(f'CREATE STREAM {stream} {cols} WITH (TYPE="{type_}", '
                                        f'DATASOURCE="/{case.name}", {opts})')
                self.host.create_rule(stream, f"SELECT * FROM {stream}", [{"nop": {}}])
                self.host.wait_rule_running(stream)
        self.plugin_pid = find_plugin_pid(self.host)

    def host_count(self, target: str, case: Case) -> int:
        """Records that entered the rule's projection. Not the source's records_in: the built-in's source counts
        bodies (its decoder splits them after the source node), ours counts records."""
        status = self.host.rule_status(f"{target}_{case.name}")
        return sum(int(v) for k, v in status.items() if PROJECT_IN.match(k))

    def source_count(self, target: str, case: Case) -> int:
        stream = f"{target}_{case.name}"
        return int(self.host.rule_status(stream).get(f"source_{stream}_0_records_in_total", 0))

    def settle(self, target: str, case: Case, expected: int, timeout: float = 15.0) -> int:
        """Wait until the host's count reaches ``expected`` or stops moving."""
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = self.host_count(target, case)
            if count >= expected:
                return count
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                return count
            time.sleep(0.1)
        return last

    def run(self, target: str, case: Case, conns: int, duration: int, profile: Path | None = None) -> Result:
        before = self.host_count(target, case) if target != "floor" else 0
        read_before = self.source_count(target, case) if target == "plugin" else 0
        spy = None
        if profile is not None and target == "plugin":
            out = profile / f"{case.name}-c{conns}.folded"
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(self.plugin_pid), "--duration", str(duration),
                                    "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_before = cpu_seconds(self.plugin_pid)
        reset_peak_rss(self.plugin_pid)
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", str(self.scripts[case.name]),
               self.url(target, case)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if spy is not None:
            spy.wait(timeout=60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary: {out.stdout}\n{out.stderr}")
        stats = json.loads(line.split(" ", 1)[1])
        seconds = stats["duration_us"] / 1e6
        ok_requests = stats["requests"] - stats["status_errors"]
        records = (case.builtin_records or case.records) if target == "builtin" else case.records
        accepted = ok_requests * records
        host_records = None
        if target != "floor":
            host_records = self.settle(target, case, before + accepted) - before
        result = Result(case.name, conns, target, stats["requests"] / seconds, accepted, host_records,
                        stats["p50_us"] / 1000, stats["p99_us"] / 1000, seconds,
                        errors=stats["status_errors"] + stats["socket_errors"])
        if target == "plugin":
            result.read_by_source = self.source_count(target, case) - read_before
            result.cpu_s = cpu_seconds(self.plugin_pid) - cpu_before
            result.peak_rss_mb = peak_rss_mb(self.plugin_pid)
        return result


def find_plugin_pid(host: EkuiperHost) -> int:
    pid = find_pid(f"{PLUGIN}/main.py".encode())
    if pid is None:
        raise RuntimeError("plugin process not found")
    return pid


def median_results(results: list[Result]) -> dict[tuple[str, int, str], Result]:
    """One row per (case, conns, target): the run with the median requests/s (keeps each row self-consistent)."""
    groups: dict[tuple[str, int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.case, r.conns, r.target), []).append(r)
    out = {}
    for key, runs in groups.items():
        runs.sort(key=lambda r: r.rps)
        out[key] = runs[(len(runs) - 1) // 2]
        out[key].host_records = None if key[2] == "floor" else sum(r.host_records or 0 for r in runs)
        if key[2] == "plugin":
            out[key].read_by_source = sum(r.read_by_source or 0 for r in runs)
        out[key].accepted = sum(r.accepted for r in runs)
        out[key].seconds = sum(r.seconds for r in runs) if key[2] != "floor" else out[key].seconds
    return out


def table(results: list[Result], idle_rss: float, header: str) -> str:
    rows = median_results(results)
    lines = [header, "",
             "| case | conns | target | req/s | records/s (host) | host ≥ accepted | p50 ms | p99 ms | plugin CPU s "
             "| plugin peak RSS MB | a/b req/s | a/b records/s | a/c req/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (case, conns, target), r in sorted(rows.items(), key=lambda kv: (list(CASES).index(kv[0][0]), kv[0][1],
                                                                          TARGETS.index(kv[0][2]))):
        a, b, c = (rows.get((case, conns, t)) for t in TARGETS)
        ratios = ["", "", ""]
        if target == "plugin" and a and b and c:
            ratios = [f"{a.rps / b.rps:.2f}", f"{a.records_per_s / b.records_per_s:.2f}" if b.records_per_s else "∞",
                      f"{a.rps / c.rps:.2f}"]
        # host > accepted is no loss: wrk stops counting at the deadline while the last requests still complete
        lost = "" if r.host_records is None else ("yes" if r.host_records >= r.accepted else
                                                   f"**no: {r.host_records} of {r.accepted}**")
        if r.read_by_source is not None and r.host_records is not None and r.host_records < r.accepted:
            lost += (f" (the host's source read {r.read_by_source}: "
                     f"{'it dropped the rest in its rule buffers' if r.read_by_source >= r.accepted else 'lost'})")
        lines.append(
            f"| {CASES[case].title} | {conns} | {target} | {r.rps:,.0f} | "
            f"{'' if r.host_records is None else f'{r.records_per_s:,.0f}'} | {lost} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {'' if r.cpu_s is None else f'{r.cpu_s:.1f}'} | "
            f"{'' if r.peak_rss_mb is None else f'{r.peak_rss_mb:.0f}'} | {' | '.join(ratios)} |")
    lines += ["", f"Plugin RSS idle (after setup, before load): {idle_rss:.0f} MB. Rows are the median-req/s run of "
              "each cell; host and accepted counts are summed over all its runs."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="httppush benchmark (see bench/README.md)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--conns", default="1,32", help="comma-separated connection counts")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, json1 at 1 connection, one round")
    parser.add_argument("--write", action="store_true", help="store the table in bench/README.md")
    parser.add_argument("--json", type=Path, help="also write every run as JSON to this file")
    parser.add_argument("--profile", type=Path, help="py-spy flame graphs of the plugin's runs into this folder")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.conns, args.cases, args.rounds = 1, "1", "json1", 1
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk; or `make tools`)")
    cases = [CASES[name] for name in args.cases.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    conns = [int(c) for c in args.conns.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="httppush-bench-"))
    plugin_port, floor_port = free_port(), free_port()
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(plugin_port),
           "KUIPER__BASIC__LOGLEVEL": "warn"}
    floor = subprocess.Popen([sys.executable, str(ROOT / "bench" / "floor.py"), str(floor_port)],
                             stdout=subprocess.DEVNULL)
    results: list[Result] = []
    try:
        with EkuiperHost(workdir / "host", extra_env=env) as host:
            host.install_plugin(PLUGIN, ROOT / "dist" / f"{PLUGIN}.zip")
            bench = Bench(host, plugin_port, floor_port, workdir)
            bench.setup()
            wait_port(floor_port)
            time.sleep(1)
            idle_rss = status_kb(bench.plugin_pid, "VmRSS") / 1024
            for rnd in range(args.rounds):
                for case in cases:
                    for c in conns:
                        for target in TARGETS:
                            r = bench.run(target, case, c, args.duration, args.profile if rnd == 0 else None)
                            results.append(r)
                            print(f"round {rnd + 1}/{args.rounds} {case.name:8} c={c:<3} {target:7} "
                                  f"{r.rps:9,.0f} req/s  p99 {r.p99_ms:7.2f} ms  host {r.host_records} / accepted "
                                  f"{r.accepted}", flush=True)
    finally:
        floor.kill()
        floor.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    version = Path(kuiperd_path()).parent.name  # .cache/ekuiper/<version>/kuiperd, unless KUIPERD was given
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} "
              f"cores, Python {platform.python_version()}, eKuiper {version}; wrk -t1, {args.duration:g} s "
              f"per run, {args.rounds} round(s). a = pyhttppush plugin, b = eKuiper's built-in httppush, c = floor.")
    text = table(results, idle_rss, header)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if args.write:
        readme = ROOT / "bench" / "README.md"
        marker = "<!-- results -->"
        doc = readme.read_text()
        head = doc.split(marker)[0] if marker in doc else doc + "\n"
        readme.write_text(f"{head}{marker}\n{text}\n")


if __name__ == "__main__":
    main()
