#!/usr/bin/env python3
"""What counting one request costs, in µs: prometheus_client's own counters against the plugin's plain integers.

The plugin counts every request (status, body bytes, records, latency histogram: ``httppush_plugin/metrics.py``) on
its event-loop thread. This compares, for the same four facts per request:
  (1) prometheus_client with ``.labels(...)`` looked up per request, as instrumentation usually is written;
  (2) prometheus_client with the labelled children bound once (its cheapest use);
  (3) the plugin's :class:`EndpointStats` (two clock reads included, which (1) and (2) leave out).
The whole request costs the plugin about 24 µs of CPU (bench/README.md), so (1) and (2) would add 8–25% to it.

Usage: python bench/metrics_cost.py [--requests N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from httppush_plugin.metrics import LATENCY_BUCKETS, EndpointStats  # noqa: E402


def per_request(fn: object, n: int) -> float:
    start = time.perf_counter()
    fn(n)  # type: ignore[operator]
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    n = parser.parse_args().requests

    registry = CollectorRegistry()
    requests = Counter("requests", "", ["method", "path", "status"], registry=registry)
    records = Counter("records", "", ["method", "path"], registry=registry)
    body = Counter("body_bytes", "", ["method", "path"], registry=registry)
    latency = Histogram("latency", "", ["method", "path"], buckets=LATENCY_BUCKETS, registry=registry)

    def labelled(count: int) -> None:
        for _ in range(count):
            requests.labels("POST", "/api", "200").inc()
            records.labels("POST", "/api").inc(1)
            body.labels("POST", "/api").inc(57)
            latency.labels("POST", "/api").observe(0.0003)

    bound = (requests.labels("POST", "/api", "200"), records.labels("POST", "/api"), body.labels("POST", "/api"),
             latency.labels("POST", "/api"))

    def prebound(count: int) -> None:
        r, c, b, h = bound
        for _ in range(count):
            r.inc()
            c.inc(1)
            b.inc(57)
            h.observe(0.0003)

    stats = EndpointStats("POST", "/api")
    now = time.monotonic

    def plain(count: int) -> None:
        for _ in range(count):
            started = now()
            stats.records += 1
            stats.handled(200, 57, now() - started)

    rows = [("prometheus_client, labels() per request", per_request(labelled, n)),
            ("prometheus_client, children bound once", per_request(prebound, n)),
            ("plugin EndpointStats (+2 clock reads)", per_request(plain, n))]
    print(f"{n} requests, Python {sys.version.split()[0]}")
    for name, micros in rows:
        print(f"  {name:<42} {micros:5.2f} µs/request")


if __name__ == "__main__":
    main()
