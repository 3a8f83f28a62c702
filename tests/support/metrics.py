"""The plugin's ``/metrics``, parsed by prometheus_client's own parser: what the observability tests check, and the
gauges other tests wait on (``httppush_buffered_bytes``: bytes of bodies and of records waiting for eKuiper;
``httppush_open_connections``: HTTP connections, the scrape's own included)."""

from __future__ import annotations

import ssl
import time

from prometheus_client.parser import text_string_to_metric_families

from httppush_plugin.admin import METRICS_MAX_AGE_S
from tests.support.http import push

#: Samples by (name, labels): what :func:`samples` returns.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(port: int, path: str = "/metrics", tls: ssl.SSLContext | None = None) -> Samples:
    """Every sample of the plugin's metrics, by (name, labels), counting everything done before the call: the plugin
    answers one rendering for up to ``METRICS_MAX_AGE_S``, so the call first waits that long. An empty label is
    dropped, as Prometheus does (``method=""`` is no ``method``)."""
    time.sleep(METRICS_MAX_AGE_S + 0.05)  # the stimulus: let any rendering made before the call expire
    reply = push(port, path, b"", method="GET", tls=tls)
    content_type = reply.headers.get("Content-Type", "")
    assert reply.status == 200 and content_type.startswith("text/plain"), (reply.status, reply.headers, reply.raw[:200])
    return {(sample.name, frozenset((k, v) for k, v in sample.labels.items() if v)): sample.value
            for family in text_string_to_metric_families(reply.raw.decode()) for sample in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when there is none, as for a counter never incremented)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def gauge_of(found: Samples, name: str) -> float:
    """The server-wide gauge ``name`` (no labels) in ``found``; it must be there."""
    key = (name, frozenset())
    assert key in found, f"no gauge {name} in the metrics: {sorted({n for n, _ in found})}"
    return found[key]


def gauge(port: int, name: str, tls: ssl.SSLContext | None = None) -> float:
    """The server-wide gauge ``name`` as the plugin reports it now (scraped; over TLS with ``tls``)."""
    return gauge_of(samples(port, tls=tls), name)
