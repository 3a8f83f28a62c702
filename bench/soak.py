#!/usr/bin/env python3
"""`make soak`: a real eKuiper with the plugin installed, under a mixed load for a long while, with exact accounting.

One kuiperd (harness/realhost.py) with dist/pyhttppush.zip; a stream per format and concern (bench/soakload.py
STREAMS: json, NDJSON, delimited, urlencoded, binary, protobuf, the custom ``kv`` decoder, basic auth, idempotency),
each read by a rule ``SELECT "<stream>" AS stream FROM s WHERE <it is the sentinel>`` whose ``rest`` sink (a local
receiver) gets only the sentinels. The load (bench/soakload.py): ``--conns`` keep-alive connections drawing from the
mix (every format, gzip bodies, auth, idempotent retries, bad bodies) paced to ``--rate`` requests/s, and ``--slow``
connections that trickle every head and body.

Rate: ``--rate auto`` (the default) first runs the same mix unpaced for ``--calibrate`` seconds and then soaks at half
the requests/s it reached: half of what this machine's plugin, kuiperd and this load generator together manage at
the start, with whatever else runs on the machine then. ``--rate N`` fixes it.

At the end every stream gets one sentinel record; once every sentinel has reached the sink, each rule's
``source_<stream>_0_records_in_total`` must equal exactly the records the clients were answered 2xx for (plus a
503's ``delivered`` records, plus the sentinel): a lost record, or one delivered twice (a replay that was not one),
fails the soak. /proc is sampled every ``--sample`` seconds: RSS, open file descriptors and CPU of the plugin process,
of kuiperd and of this load generator. The soak fails (exit 1) when: any record is lost or doubled; any request gets
no answer, a 5xx other than 503 with Retry-After, a bad request a 2xx or another status than its own, a good one a
4xx; the plugin's /metrics disagree with what the clients got; the plugin's RSS at the end differs from its RSS just
after the warm-up by more than ±5%; its open file descriptors at the end differ from those after the warm-up (medians
of the two windows, by more than 3); or the plugin process changed.

Usage: python bench/soak.py [--duration S] [--rate auto|N] [--conns 32] [--slow 4] [--warmup S] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import soakload as sl  # noqa: E402
from bench.run import find_plugin_pid  # noqa: E402
from harness.net import free_port, wait_port  # noqa: E402
from harness.procstat import cpu_seconds, status_kb  # noqa: E402
from harness.realhost import EkuiperHost, RecordSink, kuiperd_path  # noqa: E402

PLUGIN = "pyhttppush"
RSS_DRIFT = 0.05
FD_SLACK = 3
BIN_SENTINEL = b"soak-sentinel"


@dataclass
class Sample:
    t: float  # seconds since the soak began (after the calibration, which is not sampled)
    plugin_rss_mb: float
    plugin_fds: int
    plugin_cpu_s: float
    host_rss_mb: float
    host_fds: int
    host_cpu_s: float
    requests: int
    records: int
    load_cpu_s: float  # this process: the load generator


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sentinel(stream: str, token: str) -> tuple[bytes, str]:
    """The request carrying one stream's sentinel record, and the WHERE condition only that record meets."""
    path = sl.path_of(stream)
    if stream == "bin":
        return (sl.request(path, BIN_SENTINEL, "application/octet-stream"),
                f'payload = "{base64.b64encode(BIN_SENTINEL).decode()}"')
    if stream == "proto":
        return sl.request(path, sl.reading("sentinel", 0.0, 1), "application/x-protobuf"), 'id = "sentinel"'
    body, ctype = {
        "delim": (f"sentinel,0,{token}", "text/plain"),
        "url": (f"kind=sentinel&tok={token}", "application/x-www-form-urlencoded"),
        "kv": (f"kind=sentinel tok={token}", "text/plain"),
    }.get(stream, (json.dumps({"kind": "sentinel", "tok": token}), "application/json"))
    headers = {"Authorization": sl.AUTH} if stream == "auth" else {}
    return sl.request(path, body.encode(), ctype, headers), 'kind = "sentinel"'


def setup(host: EkuiperHost, sink: RecordSink, zip_path: Path, token: str) -> None:
    host.install_plugin(PLUGIN, zip_path)
    host.post("/schemas/protobuf", {"name": "soakreading", "content": sl.PROTO}, expect=(200, 201))
    for name, (definition, group) in sl.STREAMS.items():
        cols, opts = definition.split(" WITH (", 1)
        if group is not None:
            host.put(f"/metadata/sources/{PLUGIN}/confKeys/soak_{name}", group)
            opts = f'CONF_KEY="soak_{name}", {opts}'
        host.create_stream(f'CREATE STREAM soak_{name} {cols} WITH (TYPE="{PLUGIN}", DATASOURCE="{sl.path_of(name)}", '
                           f'{opts})')
        where = sentinel(name, token)[1]
        host.create_rule(f"soak_{name}", f'SELECT "{name}" AS stream FROM soak_{name} WHERE {where}',
                         [sink.action()])
    deadline = time.monotonic() + 60
    rules = {f"soak_{name}" for name in sl.STREAMS}
    while not rules <= set(host.plugin_status(PLUGIN).get("refCount") or {}):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the plugin did not start every soak rule: {host.plugin_status(PLUGIN)}\n"
                               f"{host.log_tail(40)}")
        time.sleep(0.2)


def records_in(host: EkuiperHost, name: str) -> int:
    return int(host.rule_status(f"soak_{name}").get(f"source_soak_{name}_0_records_in_total", 0))


class Soak:
    def __init__(self, args: argparse.Namespace, host: EkuiperHost, port: int) -> None:
        self.args, self.host, self.port = args, host, port
        self.tally = sl.Tally()
        self.kinds = sl.build_kinds()
        self.load = sl.Load(port, self.kinds, self.tally, args.conns, args.slow)
        self.plugin_pid = find_plugin_pid(host)
        assert host.process is not None
        self.host_pid = host.process.pid
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self.calibrated: float | None = None
        self.rate = 0.0
        self.loadavg = os.getloadavg()

    def sample(self) -> Sample:
        s = Sample(time.monotonic() - self.t0, status_kb(self.plugin_pid, "VmRSS") / 1024, open_fds(self.plugin_pid),
                   cpu_seconds(self.plugin_pid), status_kb(self.host_pid, "VmRSS") / 1024, open_fds(self.host_pid),
                   cpu_seconds(self.host_pid), self.tally.requests, self.tally.records, _own_cpu())
        self.samples.append(s)
        return s

    async def _sampler(self) -> None:
        last_print = None
        while True:
            s = self.sample()
            if last_print is None or s.t - last_print.t >= self.args.print_every - 0.01:
                if last_print is not None:
                    dt = s.t - last_print.t
                    print(f"t={s.t:7.0f}s  {(s.requests - last_print.requests) / dt:7,.0f} req/s "
                          f"{(s.records - last_print.records) / dt:8,.0f} records/s  plugin RSS {s.plugin_rss_mb:6.1f} "
                          f"MB, {s.plugin_fds} fds, CPU {(s.plugin_cpu_s - last_print.plugin_cpu_s) / dt:4.0%}  "
                          f"kuiperd RSS {s.host_rss_mb:6.1f} MB, {s.host_fds} fds, CPU "
                          f"{(s.host_cpu_s - last_print.host_cpu_s) / dt:4.0%}  load CPU "
                          f"{(s.load_cpu_s - last_print.load_cpu_s) / dt:4.0%}  problems {self.tally.problem_count}",
                          flush=True)
                last_print = s
            await asyncio.sleep(self.args.sample)

    async def run(self) -> None:
        self.load.start()
        self.t0 = time.monotonic()
        if self.args.rate == "auto":
            self.t0 += self.args.calibrate  # the soak's clock starts after the calibration
            await asyncio.sleep(2.0)  # connections up, first requests through
            before, start = self.tally.requests, time.monotonic()
            await asyncio.sleep(self.args.calibrate - 2.0)
            self.calibrated = (self.tally.requests - before) / (time.monotonic() - start)
            self.rate = self.calibrated / 2
            print(f"calibration: {self.calibrated:,.0f} requests/s unpaced with {self.args.conns} connections; "
                  f"soaking at {self.rate:,.0f} requests/s", flush=True)
        else:
            self.rate = float(self.args.rate)
        self.load.rate = self.rate
        sampler = asyncio.create_task(self._sampler())
        await asyncio.sleep(max(0.0, self.t0 + self.args.duration - time.monotonic()))
        sampler.cancel()
        self.sample()  # the last one under load: connections close as the load stops
        await self.load.stop()

    async def send_sentinels(self, token: str) -> None:
        for name in sl.STREAMS:
            data, _ = sentinel(name, token)
            conn = await sl.connect(self.port)
            kind = sl.Kind(f"sentinel.{name}", name, 0, "ok", 1, [])
            reply = await conn.send(data, 30.0)
            conn.close()
            if not self.tally.answer(kind, reply, 1):
                raise RuntimeError(f"the sentinel of {name} was answered {reply.status}: {reply.body[:300]!r}")


def account(host: EkuiperHost, sink: RecordSink, tally: sl.Tally) -> dict[str, dict[str, int]]:
    """Once every rule has passed its sentinel to the sink (or 120 s have passed), each source's records_in: read
    until every one has reached what the clients counted (at most 30 s more), and once more a second later, so that
    a record counted after the sentinel, i.e. delivered twice, shows too."""
    try:
        rows = sink.wait_for(len(sl.STREAMS), timeout=120)
    except AssertionError:
        rows = sink.records
    seen = sorted(row.get("stream") for row in rows)
    if seen != sorted(sl.STREAMS):
        tally.problem(f"the sink got the sentinels of {seen}, not of every stream {sorted(sl.STREAMS)}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(records_in(host, name) < tally.expected[name] for name in sl.STREAMS):
        time.sleep(0.2)
    time.sleep(1.0)  # nothing may follow a sentinel
    out = {}
    for name in sl.STREAMS:
        expected, read = tally.expected[name], records_in(host, name)
        out[name] = {"accepted": expected, "read": read}
        if read != expected:
            tally.problem(f"stream {name}: the clients were answered 2xx for {expected} records (sentinel "
                          f"included), the host's source read {read}")
    return out


def plugin_counts(port: int, tally: sl.Tally) -> dict[str, dict[str, int]]:
    """The plugin's own ``/metrics`` against what the clients saw: requests by status (the scrape's own 200 left out)
    and records by endpoint (``httppush_records_total``: records of 2xx answers, which the clients counted too)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    by_status: Counter[str] = Counter()
    records: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "httppush_requests_total" and (labels.get("path") or labels.get("status") != "200"):
                by_status[labels["status"]] += int(sample.value)
            elif sample.name == "httppush_records_total":
                records[labels["path"]] += int(sample.value)
    seen: Counter[str] = Counter()
    for (_, status), n in tally.statuses.items():
        if status:
            seen[str(status)] += n
    if by_status != seen:
        tally.problem(f"the plugin counted these answers by status: {dict(sorted(by_status.items()))}; the clients "
                      f"got {dict(sorted(seen.items()))}")
    for name in sl.STREAMS:
        if records[sl.path_of(name)] != tally.accepted[name]:
            tally.problem(f"stream {name}: the plugin counted {records[sl.path_of(name)]} records answered 2xx, "
                          f"the clients {tally.accepted[name]}")
    return {"plugin_statuses": dict(by_status), "client_statuses": dict(seen)}


def window_median(samples: list[Sample], start: float, end: float, attr: str) -> float:
    values = [getattr(s, attr) for s in samples if start <= s.t <= end]
    return statistics.median(values) if values else float("nan")


def checks(samples: list[Sample], duration: float, warmup: float) -> dict[str, float]:
    """RSS drift and FD change of the plugin between the window just after the warm-up and the last one."""
    win = max(15.0, min(120.0, duration / 10))
    last = samples[-1].t
    out = {}
    for attr in ("plugin_rss_mb", "plugin_fds", "host_rss_mb", "host_fds"):
        out[f"{attr}_after_warmup"] = window_median(samples, warmup, warmup + win, attr)
        out[f"{attr}_end"] = window_median(samples, last - win, last, attr)
        after = [getattr(s, attr) for s in samples if s.t >= warmup]
        out[f"{attr}_min"], out[f"{attr}_max"] = min(after), max(after)
    out["plugin_rss_drift"] = out["plugin_rss_mb_end"] / out["plugin_rss_mb_after_warmup"] - 1
    out["host_rss_drift"] = out["host_rss_mb_end"] / out["host_rss_mb_after_warmup"] - 1
    out["window_s"] = win
    return out


def series(samples: list[Sample], every: float) -> list[str]:
    """One line per ``every`` seconds of the soak."""
    lines, last = [], None
    for s in samples:
        if last is not None and s.t - last.t < every - 0.01 and s is not samples[-1]:
            continue
        if last is not None:
            dt = s.t - last.t
            rates = [(s.requests - last.requests) / dt, (s.records - last.records) / dt]
            cpu = [(s.plugin_cpu_s - last.plugin_cpu_s) / dt, (s.host_cpu_s - last.host_cpu_s) / dt,
                   (s.load_cpu_s - last.load_cpu_s) / dt]
            lines.append(f"| {s.t:6.0f} | {rates[0]:7,.0f} | {rates[1]:7,.0f} | {s.plugin_rss_mb:6.1f} | "
                         f"{s.plugin_fds} | {cpu[0]:4.0%} | {s.host_rss_mb:6.1f} | {s.host_fds} | {cpu[1]:4.0%} | "
                         f"{cpu[2]:4.0%} |")
        last = s
    return ["| t s | req/s | records/s | plugin RSS MB | plugin fds | plugin CPU | kuiperd RSS MB | kuiperd fds | "
            "kuiperd CPU | load CPU |", "|---|---|---|---|---|---|---|---|---|---|"] + lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("SOAK_S", 1800)),
                        help="seconds of soak after the calibration (default $SOAK_S or 1800)")
    parser.add_argument("--rate", default=os.environ.get("SOAK_RATE", "auto"),
                        help="requests/s in all, or auto: half of what --calibrate seconds unpaced reach")
    parser.add_argument("--calibrate", type=float, default=12.0, help="seconds of the unpaced calibration")
    parser.add_argument("--conns", type=int, default=32, help="keep-alive connections of the mix")
    parser.add_argument("--slow", type=int, default=4, help="connections that trickle every request")
    parser.add_argument("--warmup", type=float, help="seconds before RSS and FDs are taken as the baseline "
                                                     "(default: a sixth of the duration, 30 to 300)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between /proc samples")
    parser.add_argument("--print-every", type=float, help="seconds between progress lines (default duration/30)")
    parser.add_argument("--zip", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    parser.add_argument("--json", type=Path, help="write the figures and samples to this file")
    args = parser.parse_args()
    if args.rate != "auto" and not args.rate.replace(".", "", 1).isdigit():
        parser.error(f"--rate {args.rate!r}: a number of requests/s or auto")
    warmup = args.warmup if args.warmup is not None else max(30.0, min(300.0, args.duration / 6))
    if warmup >= args.duration * 0.75:
        parser.error(f"--warmup {warmup:g} leaves too little of --duration {args.duration:g}")
    args.print_every = args.print_every or max(10.0, args.duration / 30)
    if not args.zip.is_file():
        raise SystemExit(f"soak: {args.zip} does not exist (`make package`)")
    try:
        import uvloop
    except ImportError:
        uvloop = None

    token = secrets.token_hex(4)
    workdir = Path(tempfile.mkdtemp(prefix="httppush-soak-"))
    port = free_port()
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(port), "KUIPER__BASIC__LOGLEVEL": "warn"}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        with EkuiperHost(workdir / "host", extra_env=env) as host, RecordSink() as sink:
            setup(host, sink, args.zip, token)
            wait_port(port, timeout=10)
            soak = Soak(args, host, port)
            print(f"soak: {args.duration:g} s, {args.conns} connections + {args.slow} slow, rate {args.rate}, warm-up "
                  f"{warmup:g} s; plugin pid {soak.plugin_pid}, kuiperd pid {soak.host_pid}", flush=True)
            runner = uvloop.run if uvloop is not None else asyncio.run
            runner(soak.run())
            runner(soak.send_sentinels(token))
            streams = account(host, sink, soak.tally)
            counted = plugin_counts(port, soak.tally)
            try:
                pid_now = find_plugin_pid(host)
            except RuntimeError:
                pid_now = None
            if pid_now != soak.plugin_pid:
                soak.tally.problem(f"the plugin process changed during the soak: {soak.plugin_pid} → {pid_now}")
            host_log = host.log_tail(20)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report(args, soak, streams, counted, warmup, started, host_log)


def report(args: argparse.Namespace, soak: Soak, streams: dict[str, dict[str, int]],
           counted: dict[str, dict[str, int]], warmup: float, started: str, host_log: str) -> int:
    tally, samples = soak.tally, soak.samples
    figures = checks(samples, args.duration, warmup)
    fail = list(tally.problems)
    if abs(figures["plugin_rss_drift"]) > RSS_DRIFT:
        fail.append(f"plugin RSS drifted {figures['plugin_rss_drift']:+.1%} after the warm-up "
                    f"({figures['plugin_rss_mb_after_warmup']:.1f} → {figures['plugin_rss_mb_end']:.1f} MB)")
    fd_change = figures["plugin_fds_end"] - figures["plugin_fds_after_warmup"]
    if abs(fd_change) > FD_SLACK:
        fail.append(f"plugin open fds changed by {fd_change:+g} after the warm-up "
                    f"({figures['plugin_fds_after_warmup']:g} → {figures['plugin_fds_end']:g})")
    first, last = samples[0], samples[-1]
    span = last.t - first.t
    accepted = sum(v["accepted"] for v in streams.values())
    read = sum(v["read"] for v in streams.values())
    five = tally.count_5xx()
    statuses: dict[str, dict[int, int]] = {}
    for (kind, status), n in sorted(tally.statuses.items()):
        statuses.setdefault(kind, {})[status] = n
    print("\n## Soak " + ("PASSED" if not fail and tally.problem_count == 0 else "FAILED"))
    print(f"Run {started}, {os.cpu_count()} cores, eKuiper {Path(kuiperd_path()).parent.name}; {args.duration:g} s at "
          f"{soak.rate:,.0f} requests/s" + (f" (half of the {soak.calibrated:,.0f} calibrated)" if soak.calibrated
                                           else "") + f", {args.conns} connections + {args.slow} slow; warm-up "
          f"{warmup:g} s, windows {figures['window_s']:g} s. Load average at the start {soak.loadavg[0]:.1f}, "
          f"at the end {os.getloadavg()[0]:.1f} (other work on the machine counts in it).")
    print(f"- requests {tally.requests:,} ({(last.requests - first.requests) / span:,.0f}/s during the soak), records "
          f"accepted {accepted:,} ({(last.records - first.records) / span:,.0f}/s), read by the rules' sources "
          f"{read:,}: {'exact' if accepted == read else 'MISMATCH'}; idempotent replays {tally.replays:,}; "
          f"unanswered {tally.unanswered}; 5xx {dict(five) or 0}")
    for name, v in streams.items():
        print(f"  - {name}: accepted {v['accepted']:,}, read {v['read']:,}")
    requests, records = last.requests - first.requests, last.records - first.records
    cpu = {"plugin_us_per_request": (last.plugin_cpu_s - first.plugin_cpu_s) / requests * 1e6,
           "kuiperd_us_per_record": (last.host_cpu_s - first.host_cpu_s) / records * 1e6,
           "load_us_per_request": (last.load_cpu_s - first.load_cpu_s) / requests * 1e6}
    print(f"- CPU during the soak: plugin {cpu['plugin_us_per_request']:.0f} µs per request, kuiperd "
          f"{cpu['kuiperd_us_per_record']:.0f} µs per record, the load generator {cpu['load_us_per_request']:.0f} µs "
          f"per request")
    print(f"- plugin RSS MB: after warm-up {figures['plugin_rss_mb_after_warmup']:.1f}, end "
          f"{figures['plugin_rss_mb_end']:.1f} ({figures['plugin_rss_drift']:+.1%}), min/max after warm-up "
          f"{figures['plugin_rss_mb_min']:.1f}/{figures['plugin_rss_mb_max']:.1f}; fds after warm-up "
          f"{figures['plugin_fds_after_warmup']:g}, end {figures['plugin_fds_end']:g}, min/max "
          f"{figures['plugin_fds_min']}/{figures['plugin_fds_max']}")
    print(f"- kuiperd RSS MB: after warm-up {figures['host_rss_mb_after_warmup']:.1f}, end "
          f"{figures['host_rss_mb_end']:.1f} ({figures['host_rss_drift']:+.1%}), min/max "
          f"{figures['host_rss_mb_min']:.1f}/{figures['host_rss_mb_max']:.1f}; fds after warm-up "
          f"{figures['host_fds_after_warmup']:g}, end {figures['host_fds_end']:g}, min/max "
          f"{figures['host_fds_min']}/{figures['host_fds_max']} (reported, not checked)")
    print(f"- answers by status, as the plugin counted them: {counted['plugin_statuses']}; as the clients got them: "
          f"{counted['client_statuses']}")
    print("- answers by kind: " + "; ".join(f"{k} {d}" for k, d in statuses.items()))
    print("\n" + "\n".join(series(samples, max(args.sample, args.duration / 15))))
    if fail:
        print(f"\n{tally.problem_count} problem(s) during the load (first {len(tally.problems)} listed) and checks:")
        for line in fail:
            print("  - " + line)
        print("\nkuiperd log tail:\n" + host_log)
    if args.json:
        args.json.write_text(json.dumps({
            "passed": not fail, "problems": fail, "problem_count": tally.problem_count, "rate": soak.rate,
            "loadavg_start": soak.loadavg[0], "loadavg_end": os.getloadavg()[0],
            "calibrated": soak.calibrated, "duration": args.duration, "warmup": warmup, "streams": streams,
            "requests": tally.requests, "replays": tally.replays, "unanswered": tally.unanswered,
            "five_xx": {str(k): v for k, v in five.items()}, "statuses": statuses, **counted, "figures": figures,
            "cpu": cpu, "samples": [asdict(s) for s in samples]}, indent=1))
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
