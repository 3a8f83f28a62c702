#!/usr/bin/env python3
"""Per-core figures for docs/multicore.md: what one request costs the plugin and one record costs eKuiper, in CPU
seconds, through one real eKuiper; and a check that eKuiper's data channel takes several pipes at once.

Part 1, CPU per request and per record. One kuiperd (harness/realhost.py) with dist/pyhttppush.zip; for each case
(json1: one ~200 B JSON record per body; json100: a 100-record JSON array) a stream ``TYPE="pyhttppush"`` and a rule
``SELECT * FROM s`` into eKuiper's ``nop`` sink — the pieces of bench/run.py (its targets ``plugin`` and
``ceiling``). wrk drives ``--conns`` keep-alive connections for ``--duration`` seconds per run, ``--rounds`` times,
alternating cases. For every run: the plugin's CPU seconds (``/proc/<pid>/stat`` utime + stime) ÷ the requests wrk
completed and ÷ the records; kuiperd's CPU seconds ÷ the records its rule counted; wrk's own CPU (the load
generator, ``RUSAGE_CHILDREN``); and how busy the whole machine was (``/proc/stat``), because on a shared machine
other work competes for the same cores. The ceiling run (bench/ceiling.py: pre-framed records written into another
rule's data channel by a sender that costs next to nothing) gives kuiperd's CPU per record with no plugin at all.

Part 2, several pipes on one data channel. A stream ``pipes_<run>`` and a rule ``SELECT pipe, seq FROM …`` into a
local ``rest`` sink. While the plugin delivers ``--pipe-records`` records over HTTP (pipe 0: the plugin's own dial),
two more processes each open a pynng ``Push0`` socket, dial the same rule's channel
``ipc:///tmp/<rule>_<stream>_0.ipc``, wait until both are connected, and send ``--pipe-records`` records each
(``{"pipe": k, "seq": i}`` in an envelope). Every record of every pipe must reach the rule exactly once, in order per
pipe; the script prints how often arrivals switched between pipes (interleaving: the pipes were read at once).

Prints the figures and a summary; ``--json FILE`` writes every run. Exits 1 when the pipes check fails.

Usage: python bench/percore.py [--duration S] [--conns 4] [--rounds 2] [--cases json1,json100]
                               [--pipe-records N] [--zip FILE] [--json FILE] [--no-pipes]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import CASES, PLUGIN, Bench, Target, channel_path  # noqa: E402
from harness.net import free_port  # noqa: E402
from harness.realhost import EkuiperHost, RecordSink, http_request, kuiperd_path  # noqa: E402

#: The targets of bench/run.py measured here: the plugin, and the host's ceiling (no plugin in the path).
KINDS = ("plugin", "ceiling")


@dataclass
class Run:
    case: str
    kind: str
    round: int
    seconds: float  # of load (wrk's, or the ceiling sender's)
    window_s: float  # of the whole measurement: the load, then the rule catching up with it
    requests: int  # wrk's completed requests (0 for the ceiling)
    records: int  # records the rule counted
    plugin_cpu_s: float | None
    kuiperd_cpu_s: float
    client_cpu_s: float  # wrk (plugin runs) or the ceiling sender
    machine_busy: float  # fraction of all cores busy during the run, whoever used them
    cores: int

    @property
    def plugin_us_per_request(self) -> float | None:
        return None if self.plugin_cpu_s is None or not self.requests else self.plugin_cpu_s / self.requests * 1e6

    @property
    def plugin_us_per_record(self) -> float | None:
        """Per record of the requests wrk completed (the rule counts a few more: requests still in flight when wrk
        stops counting complete too)."""
        per_request = self.plugin_us_per_request
        return None if per_request is None else per_request / CASES[self.case].records

    @property
    def kuiperd_us_per_record(self) -> float:
        return self.kuiperd_cpu_s / self.records * 1e6 if self.records else float("nan")

    @property
    def ours_share(self) -> float:
        """The fraction of the machine's cores that plugin, kuiperd and the client used during the run."""
        used = (self.plugin_cpu_s or 0.0) + self.kuiperd_cpu_s + self.client_cpu_s
        return used / (self.window_s * self.cores)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far, from the first line of ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(bench: Bench, case_name: str, kind: str, conns: int, duration: int, rnd: int) -> Run:
    case = CASES[case_name]
    busy0, total0 = machine_ticks()
    child0 = children_cpu()
    start = time.monotonic()
    result = bench.run(Target(kind), case, conns, duration)
    window = time.monotonic() - start
    child = children_cpu() - child0
    busy1, total1 = machine_ticks()
    return Run(case_name, kind, rnd, result.seconds, window, result.requests, result.host_records or 0, result.cpu_s,
               result.host_cpu_s or 0.0, child, (busy1 - busy0) / max(1, total1 - total0), os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------------------
# Part 2: several pipes on one channel
# --------------------------------------------------------------------------------------------------------------------


def _pipe_sender(url: str, pipe: int, count: int, barrier: Any, out: Any) -> None:
    """One extra PUSH peer (its own process, like a worker would be): dial, wait for the others, send ``count``."""
    import pynng

    try:
        with pynng.Push0(send_timeout=30_000) as sock:
            sock.dial(url, block=True)
            barrier.wait(timeout=30)
            for seq in range(count):
                sock.send(json.dumps({"message": {"pipe": pipe, "seq": seq}}).encode())
            # pynng's send returns once nng queued the message: give the queue time to reach the host before close
            time.sleep(1.0)
        out.put((pipe, "ok"))
    except Exception as exc:  # reported by the parent
        out.put((pipe, f"{type(exc).__name__}: {exc}"))


def _http_sender(port: int, path: str, count: int, barrier: Any, out: Any) -> None:
    """Pipe 0: the plugin's own dial, fed over HTTP keep-alive, one record per request."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait(timeout=30)
        for seq in range(count):
            conn.request("POST", path, body=json.dumps({"pipe": 0, "seq": seq}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"record {seq} answered {response.status}")
        conn.close()
        out.put((0, "ok"))
    except Exception as exc:
        out.put((0, f"{type(exc).__name__}: {exc}"))


def check_pipes(check_host: EkuiperHost, port: int, records: int, run_id: str) -> dict[str, Any]:
    """Three pipes at once into one rule's channel (the plugin's and two pynng Push0 sockets in two processes);
    returns the figures and ``problems`` (empty when every record of every pipe arrived once, in order per pipe)."""
    stream, rule = f"pipes_{run_id}", f"pipes_rule_{run_id}"
    url = "ipc://" + channel_path(rule, stream)
    problems: list[str] = []
    with RecordSink() as sink:
        check_host.create_stream(f'CREATE STREAM {stream} () WITH (TYPE="{PLUGIN}", DATASOURCE="/{stream}", '
                                 f'FORMAT="json")')
        # eKuiper drops rows its buffers cannot hold (bufferLength, 1024 by default: "buffer full, drop message"
        # between the sink's encoder and the sink) when the rest sink, one HTTP request per row, falls behind: room
        # for every row, in the rule and in the sink, so that a missing row is the channel's doing
        room = 3 * records + 1024
        action = sink.action()
        action["rest"]["bufferLength"] = room
        check_host.create_rule(rule, f"SELECT pipe, seq FROM {stream}", [action], {"bufferLength": room})
        deadline = time.monotonic() + 30
        while rule not in (check_host.plugin_status(PLUGIN).get("refCount") or {}):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the plugin did not start {rule}: {check_host.plugin_status(PLUGIN)}")
            time.sleep(0.1)
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_http_sender, args=(port, f"/{stream}", records, barrier, out))]
        procs += [ctx.Process(target=_pipe_sender, args=(url, k, records, barrier, out)) for k in (1, 2)]
        started = time.monotonic()
        for proc in procs:
            proc.start()
        outcome = dict(out.get(timeout=300) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
        send_s = time.monotonic() - started
        problems += [f"pipe {k}: {v}" for k, v in sorted(outcome.items()) if v != "ok"]
        expected = 3 * records
        try:
            rows = sink.wait_for(expected, timeout=120)
        except AssertionError:
            rows = sink.records
        # a sentinel through the plugin: whatever else the channel carried (a doubled record) arrives before it
        status, _ = http_request("POST", f"http://127.0.0.1:{port}/{stream}", {"pipe": -1, "seq": 0})
        if status != 200:
            problems.append(f"the sentinel was answered {status}")
        tail = sink.wait_for(len(rows) + 1, timeout=30)[len(rows):] if status == 200 else []
        if tail != [{"pipe": -1, "seq": 0}]:
            problems.append(f"after the {len(rows)} records the next row was {tail!r}, not the sentinel")
        by_pipe: dict[int, list[int]] = {}
        for row in rows:
            by_pipe.setdefault(int(row["pipe"]), []).append(int(row["seq"]))
        for pipe in (0, 1, 2):
            got = by_pipe.get(pipe, [])
            if got != list(range(records)):
                missing = len(set(range(records)) - set(got))
                problems.append(f"pipe {pipe}: {len(got)} rows of {records} ({missing} missing, "
                                f"{'in order' if got == sorted(got) else 'out of order'})")
        switches = sum(1 for a, b in zip(rows, rows[1:], strict=False) if a["pipe"] != b["pipe"])
        status_now = check_host.rule_status(rule)
        check_host.delete_rule(rule)
        check_host.delete_stream(stream)
    if problems:
        problems.append("rule metrics: " + json.dumps({k: v for k, v in status_now.items() if "total" in k or
                                                        "exception" in k}))
    return {"channel": url, "records_per_pipe": records, "arrived": len(rows), "switches": switches,
            "send_s": send_s, "records_in": status_now.get(f"source_{stream}_0_records_in_total"),
            "problems": problems}


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return ""
    med = statistics.median(values)
    return f"{med:,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def _cores(group: list[Run]) -> str:
    """Median cores each process kept busy over the measurement windows: CPU seconds ÷ wall seconds."""
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}"
    plugin = [r.plugin_cpu_s / r.window_s for r in group if r.plugin_cpu_s is not None]
    return " / ".join([med(plugin) if plugin else "–", med([r.kuiperd_cpu_s / r.window_s for r in group]),
                       med([r.client_cpu_s / r.window_s for r in group])])


def report(runs: list[Run], conns: int) -> str:
    lines = [f"| case | target | runs | requests | records | plugin CPU µs/request | plugin CPU µs/record | "
             f"kuiperd CPU µs/record | client CPU µs/record | cores used: plugin / kuiperd / client | "
             f"plugin+kuiperd+client, share of {runs[0].cores} cores | machine busy |", "|" + "---|" * 12]
    summary: dict[str, dict[str, float]] = {}
    for case in dict.fromkeys(r.case for r in runs):
        for kind in KINDS:
            group = [r for r in runs if r.case == case and r.kind == kind]
            if not group:
                continue
            preq = [r.plugin_us_per_request for r in group if r.plugin_us_per_request is not None]
            prec = [r.plugin_us_per_record for r in group if r.plugin_us_per_record is not None]
            kup = [r.kuiperd_us_per_record for r in group]
            cli = [r.client_cpu_s / r.records * 1e6 for r in group if r.records]
            lines.append(
                f"| {case} | {kind} | {len(group)} | {sum(r.requests for r in group):,} | "
                f"{sum(r.records for r in group):,} | {_spread(preq)} | {_spread(prec)} | {_spread(kup)} | "
                f"{_spread(cli)} | {_cores(group)} | {_spread([100 * r.ours_share for r in group])} % | "
                f"{_spread([100 * r.machine_busy for r in group])} % |")
            summary[f"{case}/{kind}"] = {"plugin_req": statistics.median(preq) if preq else 0.0,
                                         "plugin_rec": statistics.median(prec) if prec else 0.0,
                                         "kuiperd_rec": statistics.median(kup)}
    lines += ["", f"Medians over the runs (min–max in brackets); wrk -t1 -c{conns}. Client: wrk for the plugin, "
              "bench/ceiling.py for the ceiling. Machine busy: all cores, whoever used them (/proc/stat)."]
    lines += ["", "What one core each would carry (1 s of CPU ÷ the median cost):", ""]
    for case in dict.fromkeys(r.case for r in runs):
        s = summary.get(f"{case}/plugin")
        if not s or not s["plugin_req"]:
            continue
        p_req, p_rec, k_rec = s["plugin_req"], s["plugin_rec"], s["kuiperd_rec"]
        per_body = CASES[case].records
        lines.append(f"- {case}: one plugin core ≈ {1e6 / p_req:,.0f} requests/s = {1e6 / p_rec:,.0f} records/s; "
                     f"one kuiperd core ≈ {1e6 / k_rec:,.0f} records/s from the plugin's channel; the pair costs "
                     f"{p_rec + k_rec:,.1f} µs per record, so a node whose C cores do only this carries ≈ "
                     f"C × {1e6 / (p_rec + k_rec):,.0f} records/s, with the plugin needing "
                     f"{p_rec / (p_rec + k_rec):.0%} of them (N workers ≈ C × {p_rec / (p_rec + k_rec):.2f}); one "
                     f"worker caps the node at {1e6 / p_rec:,.0f} records/s ({1e6 / p_req:,.0f} bodies of "
                     f"{per_body:.0f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--conns", type=int, default=4, help="wrk's keep-alive connections")
    parser.add_argument("--rounds", type=int, default=2, help="runs per case and target, alternating")
    parser.add_argument("--cases", default="json1,json100", help="comma-separated cases of bench/run.py")
    parser.add_argument("--pipe-records", type=int, default=2000, help="records per pipe in the pipes check")
    parser.add_argument("--no-pipes", action="store_true", help="skip the pipes check")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling runs")
    parser.add_argument("--zip", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    parser.add_argument("--json", type=Path, help="write every run as JSON to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("percore: wrk is not installed (Debian: apt-get install wrk)")
    if not args.zip.is_file():
        raise SystemExit(f"percore: {args.zip} does not exist (`make package`)")
    cases = [CASES[name] for name in args.cases.split(",")]
    kinds = [k for k in KINDS if not (k == "ceiling" and args.no_ceiling)]
    workdir = Path(tempfile.mkdtemp(prefix="httppush-percore-"))
    port = free_port()
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(port),
           "KUIPER__BASIC__LOGLEVEL": "warn"}
    runs: list[Run] = []
    pipes: dict[str, Any] | None = None
    try:
        with EkuiperHost(workdir / "host", extra_env=env) as host:
            host.install_plugin(PLUGIN, args.zip)
            bench = Bench(host, {"plugin": port}, workdir)
            bench.setup([(case, [Target(k) for k in kinds]) for case in cases])
            time.sleep(1)
            for rnd in range(args.rounds):
                for case in cases:
                    for kind in kinds:
                        r = measure(bench, case.name, kind, args.conns, args.duration, rnd)
                        runs.append(r)
                        plugin = (f"plugin {r.plugin_us_per_request:6.1f} µs/req {r.plugin_us_per_record:6.2f} "
                                  f"µs/rec  " if r.plugin_us_per_request is not None else "")
                        print(f"round {rnd + 1} {case.name:8} {kind:8} {r.requests:8,} req {r.records:9,} rec  "
                              f"{plugin}kuiperd {r.kuiperd_us_per_record:5.1f} µs/rec  "
                              f"ours {r.ours_share:4.0%} of {r.cores} cores, machine {r.machine_busy:4.0%}",
                              flush=True)
            if not args.no_pipes:
                pipes = check_pipes(host, port, args.pipe_records, os.urandom(2).hex())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    version = Path(kuiperd_path()).parent.name
    print(f"\nPer-core figures, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"eKuiper {version}, rule SELECT * FROM s → nop sink, {args.duration} s per run\n")
    print(report(runs, args.conns))
    if pipes is not None:
        verdict = "every record of every pipe arrived once, in order per pipe" if not pipes["problems"] else (
            "FAILED: " + "; ".join(pipes["problems"]))
        print(f"\nPipes: 3 pipes at once on {pipes['channel']} (the plugin's over HTTP + 2 pynng Push0 processes), "
              f"{pipes['records_per_pipe']:,} records each: {pipes['arrived']:,} rows at the sink, the arrival "
              f"switched pipes {pipes['switches']:,} times, source records_in {pipes['records_in']}; {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in runs], "pipes": pipes}, indent=1))
    if pipes is not None and pipes["problems"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
