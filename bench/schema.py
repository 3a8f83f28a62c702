"""What the edge's schema check (``httppush_plugin/schema.py``) costs per record, in-process: the request path of
``bench/inproc.py`` (parser → app → decode → frame → a sender that takes everything; no sockets, no eKuiper) with a
5-field typed stream, checked and not, for a json1 body (one record) and a json100 body (100 records).

    python bench/schema.py                 # make bench runs it too, after bench/run.py

Each round runs every variant in a fresh process, alternately (drift hits them alike), ``--requests`` requests each
after a warm-up; the table shows the median µs per request and per record, and the check's cost per record:
(checked - plain) / records. The check alone (``Schema.check`` on the decoded records, no request) is timed too.
Every answer is verified: 200 with all records accepted for a good body, 422 for a body with one wrong value.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from inproc import Sender, Transport  # noqa: E402

#: the stream: ``CREATE STREAM s (id STRING, temperature FLOAT, humidity BIGINT, ts DATETIME, tags ARRAY(STRING))``
FIELDS = "id string, temperature float, humidity bigint, ts datetime, tags array(string)"
RECORD = {"id": "sensor-0042", "temperature": 21.53, "humidity": 48.2, "pressure": 1013.25, "ts": 1700000000123,
          "status": "ok", "tags": ["a", "b"], "loc": {"lat": 52.1, "lon": 4.3}}
BODIES = {"json1": orjson.dumps(RECORD), "json100": orjson.dumps([RECORD] * 100)}
RECORDS = {"json1": 1, "json100": 100}


def request(body: bytes) -> bytes:
    return (b"POST /api HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def connection(checked: bool) -> Any:
    from httppush_plugin import budget, connections, decoders, protocol, routing, settings
    from httppush_plugin.app import PushApp
    from httppush_plugin.layout import SearchPaths
    from httppush_plugin.properties import EndpointConfig
    from httppush_plugin.schema import CheckedDecoder, Schema

    endpoint = EndpointConfig.from_props({"datasource": "/api", "validation": "on", "schema": FIELDS})
    decoder = decoders.build_decoder(endpoint, SearchPaths(HERE.parent))
    if checked:
        assert endpoint.schema is not None
        decoder = CheckedDecoder(decoder, Schema(endpoint.schema))
    table = routing.EndpointTable()
    sub = routing.Subscription(endpoint, decoder, instance=("r", "s", 0))
    table.add(sub)
    sub.attach(Sender())
    config = settings.ServerConfig()
    shared = connections.ConnectionSet(PushApp(table, config), config, budget.Budget(1 << 30))
    shared.date = b"Date: Thu, 03 Dec 2026 06:00:00 GMT\r\n"
    conn = protocol.HttpConnection(shared)
    conn.connection_made(Transport())
    return conn


def worker(variant: str, requests: int) -> None:
    case, mode = variant.split(":")
    body = BODIES[case]
    if mode == "check-only":
        from httppush_plugin.fieldtypes import parse_fields
        from httppush_plugin.schema import Schema

        schema, records = Schema(parse_fields(FIELDS)), orjson.loads(body)
        records = records if isinstance(records, list) else [records]
        for _ in range(2000):
            schema.check(records)
        gc.collect()
        started = time.process_time()
        for _ in range(requests):
            schema.check(records)
        print(f"{(time.process_time() - started) / requests * 1e6:.4f}")
        return
    conn = connection(mode == "checked")
    feed = conn.data_received
    if mode == "checked":  # the check is live: one wrong value is refused
        feed(request(body.replace(b'"humidity":48.2', b'"humidity":"48"')))
        if not conn.transport.last.startswith(b"HTTP/1.1 422 "):
            raise SystemExit(f"{variant}: a wrong value was not refused: {conn.transport.last[:300]!r}")
    raw = request(body)
    for _ in range(2000):
        feed(raw)
    expected = b'{"accepted":%d,"sources":1}' % RECORDS[case]
    if not conn.transport.last.startswith(b"HTTP/1.1 200 ") or not conn.transport.last.endswith(expected):
        raise SystemExit(f"{variant}: not answered 200 with every record accepted: {conn.transport.last[-300:]!r}")
    gc.collect()
    started = time.process_time()
    for _ in range(requests):
        feed(raw)
    print(f"{(time.process_time() - started) / requests * 1e6:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.requests)
    variants = [f"{case}:{mode}" for case in BODIES for mode in ("plain", "checked", "check-only")]
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for variant in variants:
            requests = args.requests if variant.startswith("json1:") else max(1, args.requests // 20)
            out = subprocess.run([sys.executable, __file__, "--worker", variant, "--requests", str(requests)],
                                 check=True, capture_output=True, text=True).stdout
            times[variant].append(float(out.split()[-1]))
    med = {variant: statistics.median(values) for variant, values in times.items()}
    print(f"schema check, in-process, 5-field typed stream ({FIELDS}); median of {args.rounds} rounds")
    print(f"{'body':8} {'plain µs/req':>13} {'checked µs/req':>15} {'ratio':>6} {'check µs/record':>16} "
          f"{'check alone µs/record':>22}")
    for case, n in RECORDS.items():
        plain, checked, alone = med[f"{case}:plain"], med[f"{case}:checked"], med[f"{case}:check-only"]
        print(f"{case:8} {plain:13.2f} {checked:15.2f} {checked / plain:6.3f} {(checked - plain) / n:16.3f} "
              f"{alone / n:22.3f}")


if __name__ == "__main__":
    main()
