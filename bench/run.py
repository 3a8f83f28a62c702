#!/usr/bin/env python3
"""`make bench`: our plugin against eKuiper's built-in httppush, against the Python floor of the same job and against
the host's own ceiling, through one real eKuiper, in one invocation.

Targets, run alternately (a, a', b, c, d, a, a', b, c, d, …) so that drift on the machine hits all of them alike:
  (a)  plugin      — a stream TYPE="pyhttppush", rule `SELECT * FROM s`, eKuiper's `nop` sink;
  (a') plugin@base — only with --baseline-zip: another build of the plugin (an older commit's zip), installed beside
                     (a) under the name pyhttppushbase (the zip is rewritten: eKuiper installs one plugin per name),
                     on its own port and streams, same rule and sink; a/a' shows what a change did, in one run;
  (b)  builtin     — eKuiper's own `httppush` source on the host's data server, the same rule and sink;
  (c)  floor       — bench/floor.py: a bare httptools protocol that does the plugin's job in the least Python
                     (parse, orjson decode and encode, the plugin's framing, frames to a drain process coalesced per
                     loop iteration, one write per answer), without eKuiper: how far above Python's floor (a) is;
  (d)  ceiling     — bench/ceiling.py writes pre-framed records (the envelopes (a) sends) straight into the data
                     channel of another pyhttppush stream's rule, the same rule and sink: what eKuiper takes from any
                     portable source.
Load for a–c: wrk (Debian package `wrk`) over loopback, one thread, N connections; d is one sender whatever N is.
`--meta-variants` adds, for json1 and json100, plugin streams whose config group sets `meta` (all four fields, none,
only the path) and ceiling runs with the matching envelopes.

For every run: requests/s; records/s as counted by the host (records that entered the rule's projection) and the
records the clients had accepted (2xx answers × records per body; for d, the records written); p50/p99 latency; the
CPU seconds, CPU µs per request and peak RSS of the process that serves the HTTP requests (the plugin's for a and a',
the floor's for c; the built-in's server is kuiperd itself, in the eKuiper CPU column); kuiperd's CPU per record.
Ratios a/b, a/c (requests/s and CPU per request), a/d, and a/a' with a baseline. Prints a markdown table; `--write`
also stores it in bench/README.md.

Usage: python bench/run.py [--duration S] [--conns 1,32] [--extra-cells json1:256]
                           [--cases json1,json100,delim100,bin64k] [--rounds N] [--meta-variants]
                           [--baseline-zip FILE] [--floor-mode coalesced|per-request|none] [--zip FILE]
                           [--json FILE] [--profile DIR] [--smoke] [--write]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.net import free_port, wait_port  # noqa: E402
from harness.procstat import cpu_seconds, peak_rss_mb, reset_peak_rss, status_kb  # noqa: E402
from harness.realhost import EkuiperHost, RecordSink, http_request, kuiperd_path  # noqa: E402

PLUGIN = "pyhttppush"
#: The name and source symbol the --baseline-zip is installed under: eKuiper keeps one plugin per name, and the
#: plugin reads its settings from <SYMBOL>_… variables (httppush_plugin/settings.py env_prefix), so (a') gets its own
#: port through PYHTTPPUSHBASE_SERVER_PORT and its own streams (TYPE="pyhttppushbase").
BASE_PLUGIN = "pyhttppushbase"
PROJECT_IN = re.compile(r"^op_\d+_project_0_records_in_total$")
CEILING = ROOT / "bench" / "ceiling.py"
FLOOR = ROOT / "bench" / "floor.py"
FLOOR_MODES = ("coalesced", "per-request", "none")

#: What the plugin can put into each record's envelope `meta` (config-group property `meta`).
META_FIELDS = ("method", "path", "remoteAddr", "contentType")
#: --meta-variants: name → the `meta` property of the config group (`[]`: the envelope has no `meta` key).
META_VARIANTS: dict[str, list[str]] = {"all": list(META_FIELDS), "none": [], "path": ["path"]}
#: The plugin's meta without a `meta` property (httppush_plugin/properties.py: meta defaults to none), so the
#: envelope the plain ceiling sends: the plain rows of (a) and (d) carry the same bytes per record.
DEFAULT_META = "none"
META_CASES = ("json1", "json100")
#: In the order they run; "base" is (a'), the --baseline-zip plugin, labelled plugin@base.
KINDS = ("plugin", "base", "builtin", "floor", "ceiling")
LABELS = {"base": "plugin@base"}
#: Targets whose HTTP server is a process of its own, whose CPU and memory are measured.
SERVED = ("plugin", "base", "floor")
#: Targets that are a pyhttppush stream (or its data channel), whose source's records_in is read.
PORTABLE = ("plugin", "base", "ceiling")


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    body: bytes
    records: int  # records per body, as our plugin decodes it
    content_type: str
    stream_def: str  # columns and WITH options shared by (a), (b) and (d)
    messages: tuple[bytes, ...]  # the records' JSON as the plugin puts them into the envelope ((d) sends these)
    builtin_records: int | None = None  # when the built-in decodes the body into another number of records


def _cases() -> dict[str, Case]:
    one = {"device": "sensor-0042", "site": "plant-7/line-3", "temperature": 21.53, "humidity": 40.2,
           "pressure": 1013.25, "status": "ok", "ts": 1718000000000, "seq": 123456, "tags": ["a", "b"]}
    many = [{**one, "seq": i} for i in range(100)]
    lines = [f"sensor-{i:04d},21.5,40.2,1013.25,ok" for i in range(100)]
    json1 = json.dumps(one).encode()
    json100 = json.dumps(many).encode()
    delim100 = "\n".join(lines).encode()
    bin64k = bytes(range(256)) * 256
    return {c.name: c for c in (
        # the plugin serialises every record compactly (httppush_plugin/framing.py), as _compact does here
        Case("json1", f"1-record JSON ({len(json1)} B)", json1, 1, "application/json", '() WITH (FORMAT="json"',
             (_compact(one),)),
        Case("json100", f"100-record JSON array ({len(json100) // 1024} KiB)", json100, 100, "application/json",
             '() WITH (FORMAT="json"', tuple(_compact(r) for r in many)),
        Case("delim100", f"100-line delimited ({len(delim100) // 1024} KiB)", delim100, 100, "text/plain",
             '() WITH (FORMAT="delimited"',
             tuple(_compact({f"col{i}": v for i, v in enumerate(line.split(","))}) for line in lines),
             builtin_records=1),
        Case("bin64k", "64 KiB binary", bin64k, 1, "application/octet-stream", '(self BYTEA) WITH (FORMAT="binary"',
             (_compact({"self": base64.b64encode(bin64k).decode("ascii")}),)),
    )}


CASES = _cases()


@dataclass(frozen=True)
class Target:
    """One thing measured: ``kind`` of KINDS; ``meta`` "" for the default, else a key of META_VARIANTS."""

    kind: str
    meta: str = ""

    @property
    def label(self) -> str:
        name = LABELS.get(self.kind, self.kind)
        return f"{name} meta={self.meta}" if self.meta else name

    def stream(self, case: Case) -> str:
        """The stream's name, also its rule's id."""
        return f"{self.kind}_{case.name}" + (f"_meta_{self.meta}" if self.meta else "")

    def datasource(self, case: Case) -> str:
        base = f"/ceiling/{case.name}" if self.kind == "ceiling" else f"/{case.name}"
        return base + (f"/meta-{self.meta}" if self.meta else "")

    def ceiling(self) -> Target:
        """The ceiling run whose envelopes are the ones this plugin target sends."""
        return Target("ceiling", "" if self.meta in ("", DEFAULT_META) else self.meta)

    def envelopes(self, case: Case) -> list[bytes]:
        """Ceiling only: the host envelopes of one body, with the meta the plugin target of the same meta sends."""
        names = META_VARIANTS[self.meta or DEFAULT_META]
        values = {"method": "POST", "path": Target("plugin", self.meta).datasource(case), "remoteAddr": "127.0.0.1",
                  "contentType": case.content_type}
        suffix = (b',"meta":' + _compact({n: values[n] for n in names}) if names else b"") + b"}"
        return [b'{"message":' + m + suffix for m in case.messages]


def targets_for(case: Case, meta_variants: bool, baseline: bool = False) -> list[Target]:
    """The targets of one cell, in the order they run; (a') only with a ``baseline`` plugin, and never with meta
    variants (it compares builds at their defaults)."""
    out = [Target(kind) for kind in KINDS if baseline or kind != "base"]
    if meta_variants and case.name in META_CASES:
        for variant in META_VARIANTS:
            out.append(Target("plugin", variant))
            if Target("plugin", variant).ceiling().meta:  # the default ceiling already sends DEFAULT_META
                out.append(Target("ceiling", variant))
    return out


def channel_path(rule_id: str, op_id: str, instance: int = 0) -> str:
    """The data channel eKuiper listens on for one portable source instance (docs/host-behaviour.md §4)."""
    return f"/tmp/{rule_id}_{op_id}_{instance}.ipc"


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
    target: str  # a kind of KINDS ("base" is plugin@base)
    rps: float | None  # None for the ceiling (no requests)
    accepted: int  # records in 2xx-answered bodies; for the ceiling, records written into the channel
    host_records: int | None  # records the host counted (None for the floor)
    p50_ms: float | None
    p99_ms: float | None
    seconds: float
    meta: str = ""  # "" or a key of META_VARIANTS
    requests: int = 0  # requests wrk completed (0 for the ceiling)
    read_by_source: int | None = None  # PORTABLE: records eKuiper's source node read from the channel
    cpu_s: float | None = None  # SERVED only: CPU seconds of the process that answered the requests
    peak_rss_mb: float | None = None  # SERVED only
    host_cpu_s: float | None = None  # kuiperd's CPU seconds during the run (JSON only)
    errors: int = 0

    @property
    def key(self) -> tuple[str, int, str, str]:
        return self.case, self.conns, self.target, self.meta

    @property
    def records_per_s(self) -> float:
        count = self.host_records if self.host_records is not None else self.accepted
        return count / self.seconds

    @property
    def cpu_us_per_request(self) -> float | None:
        return None if self.cpu_s is None or not self.requests else self.cpu_s / self.requests * 1e6

    @property
    def host_cpu_us_per_record(self) -> float | None:
        """kuiperd's CPU per record it counted: what eKuiper pays per record for this way in."""
        if self.host_cpu_s is None or not self.host_records:
            return None
        return self.host_cpu_s / self.host_records * 1e6


@dataclass
class Bench:
    host: EkuiperHost
    ports: dict[str, int]  # kind → the HTTP port of its server (plugin, base, floor); builtin: the host's data port
    workdir: Path
    #: kind → the pid of the process that serves it (SERVED); plugin and base are found after setup
    pids: dict[str, int] = field(default_factory=dict)
    scripts: dict[str, Path] = field(default_factory=dict)
    envelope_files: dict[str, Path] = field(default_factory=dict)

    def url(self, target: Target, case: Case) -> str:
        port = self.host.data_port if target.kind == "builtin" else self.ports[target.kind]
        return f"http://127.0.0.1:{port}{target.datasource(case)}"

    def setup(self, cells: list[tuple[Case, list[Target]]]) -> None:
        for variant in sorted({t.meta for _, targets in cells for t in targets if t.kind == "plugin" and t.meta}):
            # a config group stored through REST, named by the stream's CONF_KEY (docs/host-behaviour.md §6)
            self.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{conf_key(variant)}",
                          {"meta": META_VARIANTS[variant]})
        plugin_rules: dict[str, list[str]] = {PLUGIN: []}
        for case, targets in cells:
            body_path = self.workdir / f"{case.name}.body"
            body_path.write_bytes(case.body)
            script = self.workdir / f"{case.name}.lua"
            script.write_text(WRK_SCRIPT % {"content_type": case.content_type, "body_path": body_path})
            self.scripts[case.name] = script
            for target in targets:
                if target.kind == "floor":
                    continue
                stream = target.stream(case)
                cols, opts = case.stream_def.split(" WITH (", 1)
                type_ = {"builtin": "httppush", "base": BASE_PLUGIN}.get(target.kind, PLUGIN)
                conf = f'CONF_KEY="{conf_key(target.meta)}", ' if target.kind == "plugin" and target.meta else ""
                self.host.create_stream(f'CREATE STREAM {stream} {cols} WITH (TYPE="{type_}", '
                                        f'DATASOURCE="{target.datasource(case)}", {conf}{opts})')
                self.host.create_rule(stream, f"SELECT * FROM {stream}", [{"nop": {}}])
                self.host.wait_rule_running(stream)
                if type_ != "httppush":
                    plugin_rules.setdefault(type_, []).append(stream)
                if target.kind == "ceiling":
                    path = self.workdir / f"{stream}.envelopes"
                    path.write_bytes(b"".join(e + b"\n" for e in target.envelopes(case)))
                    self.envelope_files[stream] = path
        for plugin, rules in plugin_rules.items():
            self.wait_plugin_started(rules, plugin=plugin)
            kind = "base" if plugin == BASE_PLUGIN else "plugin"
            self.pids[kind] = find_plugin_pid(self.host, plugin)
            try:  # its server starts with its first source: serving now, or the port setting did not reach it
                wait_port(self.ports[kind], timeout=10)
            except RuntimeError:
                raise RuntimeError(f"the {plugin} plugin does not listen on its port {self.ports[kind]} "
                                   f"({env_prefix(plugin)}SERVER_PORT)\n{self.host.log_tail(40)}") from None

    def wait_plugin_started(self, rules: list[str], started: bool = True, timeout: float = 30.0,
                            plugin: str = PLUGIN) -> None:
        """The rule's status says running before the plugin has its start, and a deleted rule's source stops later;
        the plugin's refCount is the signal (docs/host-behaviour.md §7)."""
        deadline = time.monotonic() + timeout
        while True:
            refs = self.host.plugin_status(plugin).get("refCount") or {}
            waiting = [r for r in rules if (r in refs) != started]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {plugin} plugin has not {'started' if started else 'stopped'} the rules "
                                   f"{waiting}\n{self.host.log_tail(40)}")
            time.sleep(0.1)

    def check_meta(self, cells: list[tuple[Case, list[Target]]]) -> dict[tuple[str, str], str]:
        """What each meta-variant plugin stream really puts into ``meta``: one body through a temporary rule that
        selects ``meta(*)`` into a local sink. Returns a note for each stream whose meta is not the one asked for
        (its runs still count: the label then says what was measured)."""
        streams = [(case, t) for case, targets in cells for t in targets if t.kind == "plugin" and t.meta]
        if not streams:
            return {}
        seen: dict[str, set[str]] = {}
        with RecordSink() as sink:
            rules = []
            for case, t in streams:
                stream = t.stream(case)
                rules.append(f"check_{stream}")
                self.host.create_rule(rules[-1], f'SELECT meta(*) AS m, "{stream}" AS s FROM {stream}',
                                      [sink.action()])
            self.wait_plugin_started(rules)
            for case, t in streams:
                status, _ = http_request("POST", self.url(t, case), case.body,
                                         headers={"Content-Type": case.content_type})
                if status != 200:
                    raise RuntimeError(f"checking meta: POST {self.url(t, case)} answered {status}")
            for record in sink.wait_for(sum(case.records for case, _ in streams), timeout=30):
                seen.setdefault(record["s"], set(record.get("m") or {}))
            for rule in rules:
                self.host.delete_rule(rule)
            self.wait_plugin_started(rules, started=False)
        notes = {}
        for case, t in streams:
            got = seen.get(t.stream(case), set())
            if got != set(META_VARIANTS[t.meta]):
                notes[(case.name, t.meta)] = f"meta had {', '.join(sorted(got)) or 'nothing'}"
                print(f"bench: WARNING: stream {t.stream(case)} asked for meta {META_VARIANTS[t.meta]} but its "
                      f"records carried {sorted(got)}", flush=True)
        return notes

    def host_count(self, stream: str) -> int:
        """Records that entered the rule's projection. Not the source's records_in: the built-in's source counts
        bodies (its decoder splits them after the source node), ours counts records."""
        status = self.host.rule_status(stream)
        return sum(int(v) for k, v in status.items() if PROJECT_IN.match(k))

    def source_count(self, stream: str) -> int:
        return int(self.host.rule_status(stream).get(f"source_{stream}_0_records_in_total", 0))

    def settle(self, stream: str, expected: int, timeout: float = 15.0) -> int:
        """Wait until the host's count reaches ``expected`` or stops moving."""
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = self.host_count(stream)
            if count >= expected:
                return count
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                return count
            time.sleep(0.1)
        return last

    def run(self, target: Target, case: Case, conns: int, duration: int, profile: Path | None = None) -> Result:
        stream = target.stream(case)
        counted = target.kind != "floor"
        before = self.host_count(stream) if counted else 0
        read_before = self.source_count(stream) if target.kind in PORTABLE else 0
        server = self.pids.get(target.kind) if target.kind in SERVED else None
        spy = None
        if profile is not None and server is not None:
            out = profile / f"{stream}-c{conns}.folded"
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(server), "--duration", str(duration),
                                    "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_before = cpu_seconds(server) if server is not None else 0.0
        host_cpu_before = cpu_seconds(self.host.process.pid) if self.host.process else 0.0
        if server is not None:
            reset_peak_rss(server)
        if target.kind == "ceiling":
            result = self._send_ceiling(target, case, conns, duration)
        else:
            result = self._wrk(target, case, conns, duration)
        if spy is not None:
            spy.wait(timeout=60)
        if counted:
            result.host_records = self.settle(stream, before + result.accepted) - before
        if target.kind in PORTABLE:
            result.read_by_source = self.source_count(stream) - read_before
        if server is not None:
            result.cpu_s = cpu_seconds(server) - cpu_before
            result.peak_rss_mb = peak_rss_mb(server)
        if self.host.process:
            result.host_cpu_s = cpu_seconds(self.host.process.pid) - host_cpu_before
        return result

    def _wrk(self, target: Target, case: Case, conns: int, duration: int) -> Result:
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", str(self.scripts[case.name]),
               self.url(target, case)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary: {out.stdout}\n{out.stderr}")
        stats = json.loads(line.split(" ", 1)[1])
        seconds = stats["duration_us"] / 1e6
        ok_requests = stats["requests"] - stats["status_errors"]
        records = (case.builtin_records or case.records) if target.kind == "builtin" else case.records
        return Result(case.name, conns, target.kind, stats["requests"] / seconds, ok_requests * records, None,
                      stats["p50_us"] / 1000, stats["p99_us"] / 1000, seconds, meta=target.meta,
                      requests=stats["requests"], errors=stats["status_errors"] + stats["socket_errors"])

    def _send_ceiling(self, target: Target, case: Case, conns: int, duration: int) -> Result:
        stream = target.stream(case)
        cmd = [sys.executable, str(CEILING), channel_path(stream, stream), str(self.envelope_files[stream]),
               str(duration)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"the ceiling sender failed (exit {out.returncode}): {out.stderr}")
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        return Result(case.name, conns, "ceiling", None, stats["records"], None, None, None, stats["seconds"],
                      meta=target.meta)


def conf_key(variant: str) -> str:
    return f"bench_meta_{variant}"


def find_plugin_pid(host: EkuiperHost, plugin: str = PLUGIN) -> int:
    """The process our kuiperd runs for an installed portable plugin (``…/plugins/portable/<plugin>/main.py``; the
    ``/main.py`` keeps pyhttppush from matching pyhttppushbase). Only kuiperd's descendants are looked at: other
    hosts on the machine (tests in a private /tmp share /proc) run processes with the same command line."""
    assert host.process is not None
    needle = f"/{plugin}/main.py".encode()
    for pid in descendants(host.process.pid):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise RuntimeError(f"the {plugin} plugin's process was not found among kuiperd's")


def descendants(root: int) -> list[int]:
    """The pids of every live descendant of ``root`` (Linux /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        kids = children.get(stack.pop(), [])
        found += kids
        stack += kids
    return found


def env_prefix(symbol: str) -> str:
    """The plugin's environment variable prefix for a source symbol (``httppush_plugin/settings.py`` env_prefix, kept
    here so that the bench does not import the tree it may be comparing against)."""
    return symbol.upper() + "_"


def rename_plugin_zip(src: Path, dst: Path, old: str = PLUGIN, new: str = BASE_PLUGIN) -> None:
    """Write ``src`` (a plugin package) to ``dst`` as the plugin ``new`` with the source symbol ``new``: the
    descriptor ``<old>.json`` becomes ``<new>.json`` with ``"sources": [new]``, and ``sources/<old>.yaml|json``
    (copied by the host into its etc/sources) become ``sources/<new>.…``. Every other entry is copied as is. The
    plugin names itself from its folder and descriptor (httppush_plugin/source.py ``_plugin_identity``), so the
    result installs beside ``old`` and reads ``<NEW>_SERVER_PORT``. Raises SystemExit when ``src`` is no such
    package."""
    descriptor = f"{old}.json"
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        if descriptor not in names:
            raise SystemExit(f"--baseline-zip {src}: no {descriptor} at the root; is it a {old} package "
                             f"(`make package`, dist/{old}.zip)?")
        meta = json.loads(zin.read(descriptor))
        if old not in (meta.get("sources") or []):
            raise SystemExit(f"--baseline-zip {src}: {descriptor} declares the sources {meta.get('sources')}, "
                             f"not {old}")
        meta["sources"] = [new]
        renames = {descriptor: f"{new}.json", **{f"sources/{old}.{ext}": f"sources/{new}.{ext}"
                                                 for ext in ("yaml", "json")}}
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename == descriptor:
                    data = (json.dumps(meta, indent=2) + "\n").encode()
                out = zipfile.ZipInfo(renames.get(info.filename, info.filename), info.date_time)
                out.compress_type, out.external_attr = zipfile.ZIP_DEFLATED, info.external_attr  # keeps install.sh +x
                zout.writestr(out, data)


def median_results(results: list[Result]) -> dict[tuple[str, int, str, str], Result]:
    """One row per (case, conns, target, meta): the run with the median requests/s (host-counted records/s for the
    ceiling), which keeps each row self-consistent; host, read and accepted counts and seconds summed over all runs."""
    groups: dict[tuple[str, int, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault(r.key, []).append(r)
    out = {}
    for key, runs in groups.items():
        runs.sort(key=lambda r: r.rps if r.rps is not None else r.records_per_s)
        row = out[key] = runs[(len(runs) - 1) // 2]
        counted = key[2] != "floor"
        row.host_records = sum(r.host_records or 0 for r in runs) if counted else None
        if row.read_by_source is not None:
            row.read_by_source = sum(r.read_by_source or 0 for r in runs)
        row.accepted = sum(r.accepted for r in runs)
        if counted:
            row.seconds = sum(r.seconds for r in runs)
            if row.host_cpu_s is not None:  # per record over all runs, like the counts
                row.host_cpu_s = sum(r.host_cpu_s or 0 for r in runs)
    return out


def _order(key: tuple[str, int, str, str]) -> tuple[int, int, int, int]:
    case, conns, kind, meta = key
    return list(CASES).index(case), conns, (list(META_VARIANTS).index(meta) + 1) if meta else 0, KINDS.index(kind)


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}" if y else "∞"


def _loss(r: Result) -> str:
    # host > accepted is no loss: wrk stops counting at the deadline while the last requests still complete
    if r.host_records is None:
        return ""
    if r.host_records >= r.accepted:
        return "yes"
    text = f"**no: {r.host_records} of {r.accepted}**"
    if r.read_by_source is not None:
        text += (f" (the host's source read {r.read_by_source}: "
                 f"{'it dropped the rest in its rule buffers' if r.read_by_source >= r.accepted else 'lost'})")
    return text


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _cpu_ratio(x: Result, y: Result | None) -> str:
    """Server CPU per request of ``x`` over that of ``y`` ("" when either has none)."""
    cx, cy = x.cpu_us_per_request, y.cpu_us_per_request if y is not None else None
    return "" if cx is None or cy is None else _ratio(cx, cy)


def table(results: list[Result], idle_rss: dict[str, float], header: str,
          notes: dict[tuple[str, str], str] | None = None) -> str:
    """The markdown table; ``idle_rss``: kind → MB of each plugin process after setup; ``notes``: (case, meta) →
    why a plugin meta variant did not measure what it says. The a/a' columns appear only with a baseline's rows."""
    rows = median_results(results)
    notes = notes or {}
    baseline = any(kind == "base" for _, _, kind, _ in rows)
    columns = ["case", "conns", "target", "req/s", "records/s (host)", "host ≥ accepted", "p50 ms", "p99 ms",
               "server CPU s", "server CPU µs/request", "eKuiper CPU µs/record", "server peak RSS MB", "a/b req/s",
               "a/b records/s", "a/c req/s", "a/c CPU µs/request", "a/d records/s"]
    if baseline:
        columns += ["a/a' req/s", "a/a' CPU µs/request"]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key in sorted(rows, key=_order):
        case, conns, kind, meta = key
        r = rows[key]
        ratios = [""] * (len(columns) - 12)
        if kind == "plugin":
            b, c = rows.get((case, conns, "builtin", "")), rows.get((case, conns, "floor", ""))
            d = rows.get((case, conns, "ceiling", Target(kind, meta).ceiling().meta))
            if b:
                ratios[0:2] = [_ratio(r.rps or 0, b.rps or 0), _ratio(r.records_per_s, b.records_per_s)]
            if c:
                ratios[2:4] = [_ratio(r.rps or 0, c.rps or 0), _cpu_ratio(r, c)]
            if d:
                ratios[4] = _ratio(r.records_per_s, d.records_per_s)
            base = rows.get((case, conns, "base", "")) if not meta else None
            if base:
                ratios[5:7] = [_ratio(r.rps or 0, base.rps or 0), _cpu_ratio(r, base)]
        label = Target(kind, meta).label
        if kind == "plugin" and (case, meta) in notes:
            label += f" (**{notes[case, meta]}**)"
        lines.append(
            f"| {CASES[case].title} | {conns} | {label} | {_num(r.rps, ',.0f')} | "
            f"{'' if r.host_records is None else f'{r.records_per_s:,.0f}'} | {_loss(r)} | {_num(r.p50_ms, '.2f')} | "
            f"{_num(r.p99_ms, '.2f')} | {_num(r.cpu_s, '.1f')} | {_num(r.cpu_us_per_request, ',.1f')} | "
            f"{_num(r.host_cpu_us_per_record, ',.0f')} | "
            f"{_num(r.peak_rss_mb, '.0f')} | {' | '.join(ratios)} |")
    idle = ", ".join(f"{LABELS.get(kind, kind)} {mb:.0f} MB" for kind, mb in idle_rss.items())
    lines += ["", f"Plugin RSS idle (after setup, before load): {idle}. Rows are the median-req/s run of "
              "each cell (ceiling: median records/s); host and accepted counts are summed over all its runs. "
              "The ceiling is one sender whatever the connections; for it, accepted = records written. Server CPU: "
              "the process that answered the requests (plugin, plugin@base, floor; the built-in's is kuiperd, in "
              "the eKuiper column); the floor's drain is not in it."]
    return "\n".join(lines)


def parse_cells(conns: str, extra: str, cases: list[Case]) -> list[tuple[Case, int]]:
    """``--conns`` for every case, then ``--extra-cells`` (``case:conns,…``) for the cases that are run."""
    base = [int(c) for c in conns.split(",") if c]
    more: dict[str, list[int]] = {}
    for item in filter(None, extra.split(",")):
        name, _, count = item.partition(":")
        if name not in CASES or not count.isdigit():
            raise SystemExit(f"--extra-cells: {item!r} is not <case>:<connections> with a case of {', '.join(CASES)}")
        more.setdefault(name, []).append(int(count))
    return [(case, c) for case in cases for c in dict.fromkeys(base + more.get(case.name, []))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\nUsage:")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--conns", default="1,32", help="comma-separated connection counts, for every case")
    parser.add_argument("--extra-cells", default="json1:256",
                        help="more case:connections cells, comma-separated ('' for none)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--meta-variants", action="store_true",
                        help=f"also plugin and ceiling targets with meta {', '.join(META_VARIANTS)} for "
                             f"{', '.join(META_CASES)}")
    parser.add_argument("--smoke", action="store_true", help="1 s runs, json1 at 1 connection, one round")
    parser.add_argument("--write", action="store_true", help="store the table in bench/README.md")
    parser.add_argument("--json", type=Path, help="also write every run as JSON to this file")
    parser.add_argument("--zip", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip",
                        help="the plugin package to install (default: dist/pyhttppush.zip, `make package`)")
    parser.add_argument("--baseline-zip", type=Path, metavar="FILE",
                        help=f"another {PLUGIN} package (e.g. an older commit's dist/{PLUGIN}.zip) to run as target "
                             f"a' (plugin@base), installed as {BASE_PLUGIN}; adds a/a' columns")
    parser.add_argument("--floor-mode", choices=FLOOR_MODES, default="coalesced",
                        help="bench/floor.py --mode: how the floor writes frames to its drain (default: coalesced "
                             "per loop iteration, as the plugin)")
    parser.add_argument("--profile", type=Path, help="py-spy flame graphs of the plugin's, the baseline's and the "
                                                     "floor's first-round runs into this folder")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.conns, args.extra_cells, args.cases, args.rounds = 1, "1", "", "json1", 1
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk; or `make tools`)")
    for name, path in (("--zip", args.zip), ("--baseline-zip", args.baseline_zip)):
        if path is not None and not path.is_file():
            raise SystemExit(f"bench: {name} {path} does not exist (`make package` builds dist/{PLUGIN}.zip)")
    cases = [CASES[name] for name in args.cases.split(",")]
    cells = parse_cells(args.conns, args.extra_cells, cases)
    baseline = args.baseline_zip is not None
    targets = {case.name: targets_for(case, args.meta_variants, baseline) for case in cases}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="httppush-bench-"))
    ports = {"plugin": free_port(), "floor": free_port()}
    env = {"PYHTTPPUSH_SERVER_IP": "127.0.0.1", "PYHTTPPUSH_SERVER_PORT": str(ports["plugin"]),
           "KUIPER__BASIC__LOGLEVEL": "warn"}
    if baseline:
        ports["base"] = free_port()
        env[env_prefix(BASE_PLUGIN) + "SERVER_IP"] = "127.0.0.1"
        env[env_prefix(BASE_PLUGIN) + "SERVER_PORT"] = str(ports["base"])
    floor = subprocess.Popen([sys.executable, str(FLOOR), str(ports["floor"]), "--mode", args.floor_mode],
                             stdout=subprocess.DEVNULL)
    results: list[Result] = []
    try:
        with EkuiperHost(workdir / "host", extra_env=env) as host:
            host.install_plugin(PLUGIN, args.zip)
            if baseline:
                base_zip = workdir / f"{BASE_PLUGIN}.zip"
                rename_plugin_zip(args.baseline_zip, base_zip)
                host.install_plugin(BASE_PLUGIN, base_zip)
            bench = Bench(host, ports, workdir, pids={"floor": floor.pid})
            bench.setup([(case, targets[case.name]) for case in cases])
            notes = bench.check_meta([(case, targets[case.name]) for case in cases])
            wait_port(ports["floor"])
            time.sleep(1)
            idle_rss = {kind: status_kb(bench.pids[kind], "VmRSS") / 1024 for kind in ("plugin", "base")
                        if kind in bench.pids}
            for rnd in range(args.rounds):
                for case, c in cells:
                    for target in targets[case.name]:
                        r = bench.run(target, case, c, args.duration, args.profile if rnd == 0 else None)
                        if floor.poll() is not None:
                            raise RuntimeError(f"bench/floor.py exited (code {floor.returncode}) during a run")
                        results.append(r)
                        rate = f"{r.rps:9,.0f} req/s  p99 {r.p99_ms:7.2f} ms" if r.rps is not None else (
                            f"{r.records_per_s:9,.0f} rec/s (host)       ")
                        cpu = f"  {r.cpu_us_per_request:6.1f} µs CPU/req" if r.cpu_us_per_request is not None else ""
                        print(f"round {rnd + 1}/{args.rounds} {case.name:8} c={c:<3} {target.label:17} {rate}  "
                              f"host {r.host_records} / accepted {r.accepted}{cpu}", flush=True)
    finally:
        floor.terminate()  # the floor closes its channel; its drain reads to the end and exits
        try:
            floor.wait(timeout=10)
        except subprocess.TimeoutExpired:
            floor.kill()
            floor.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    version = Path(kuiperd_path()).parent.name  # .cache/ekuiper/<version>/kuiperd, unless KUIPERD was given
    base_note = f", a' = plugin@base ({args.baseline_zip})" if baseline else ""
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} "
              f"cores, Python {platform.python_version()}, eKuiper {version}; wrk -t1, {args.duration:g} s "
              f"per run, {args.rounds} round(s). a = pyhttppush plugin{base_note}, b = eKuiper's built-in httppush, "
              f"c = floor (bench/floor.py --mode {args.floor_mode}), d = ceiling (records written straight into a "
              f"rule's data channel).")
    text = table(results, idle_rss, header, notes)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if args.write:
        write_results(ROOT / "bench" / "README.md", text)


def write_results(readme: Path, text: str) -> None:
    """Put ``text`` between ``<!-- results -->`` and ``<!-- /results -->``: what follows the end marker (the earlier
    results, kept as history) stays. Without the end marker, everything after the start marker is replaced; without
    either, the table is appended."""
    start, end = "<!-- results -->", "<!-- /results -->"
    doc = readme.read_text()
    head, _, rest = doc.partition(start) if start in doc else (doc + "\n", "", "")
    tail = rest.partition(end)[2] if end in rest else "\n"
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


if __name__ == "__main__":
    main()
