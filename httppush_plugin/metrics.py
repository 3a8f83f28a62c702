"""What the server counts, and the health and metrics answers built from it.

Counting happens on the event-loop thread, for every request, so it is plain integers on plain objects: no lock, no
label lookup. ``prometheus_client``'s own counters cost 1.9–5.9 µs per request for the same facts, against 0.4 µs
here and about 24 µs for the whole request (``bench/metrics_cost.py``); its text format is used only when
``/metrics`` is scraped, through a collector that reads these numbers. It is imported in a thread of its own when
the server starts (:func:`warm`): importing it takes 0.3–0.6 s, which on the event loop, at the first scrape, would
stall every client. It costs about 2 MB of RSS.

One :class:`Metrics` lives as long as the plugin process, so counters never go back while it runs: a rule restart
(which may stop and start the shared server) keeps them, a plugin restart starts from zero.

Example: ``stats = metrics.endpoint("POST", "/api/data"); stats.handled(200, 57, 0.0004)``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left as _bucket
from collections.abc import Callable, Iterator
from typing import Any

#: Upper bounds (seconds) of the latency histogram's buckets; the last bucket is +Inf.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EndpointStats:
    """The counters of one endpoint (method + DATASOURCE), or of requests that reached none (``method == ""``)."""

    __slots__ = ("method", "path", "statuses", "body_bytes", "records", "decode_failures", "delivery_failures",
                 "replays", "key_conflicts", "evictions", "buckets", "latency_sum", "rate_limited", "rate_clients")

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.statuses: dict[int, int] = {}
        self.body_bytes = 0
        self.records = 0
        #: format → bodies refused because they could not be decoded
        self.decode_failures: dict[str, int] = {}
        #: requests answered 503 because a source's host channel did not take every record
        self.delivery_failures = 0
        self.replays = 0  # Idempotency-Key: answered with the stored answer
        self.key_conflicts = 0  # Idempotency-Key: reused for another request (422) or while in flight (409)
        self.evictions = 0  # Idempotency-Key: remembered keys dropped before their window ended (maxKeys)
        #: requests by latency bucket (their sum is the count); ``latency_sum``: their seconds
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.rate_limited = 0  # rateLimit: requests answered 429 because the client's bucket was empty
        self.rate_clients = 0  # rateLimit: clients whose buckets the endpoint keeps now

    def answered(self, status: int) -> None:
        """A request answered before it reached the endpoint's sources (refused by its head, or cut short)."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1

    def handled(self, status: int, body_bytes: int, seconds: float) -> None:
        """A whole request handed to the endpoint, answered ``status`` ``seconds`` after its body ended."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.body_bytes += body_bytes
        self.buckets[_bucket(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def decode_failed(self, fmt: str) -> None:
        self.decode_failures[fmt] = self.decode_failures.get(fmt, 0) + 1


class Metrics:
    """Every endpoint's counters, kept for the life of the process."""

    def __init__(self) -> None:
        self._endpoints: dict[tuple[str, str], EndpointStats] = {}
        #: requests that reached no endpoint: 404, 405, malformed, too slow, the health and metrics paths
        self.unrouted = EndpointStats("", "")

    def endpoint(self, method: str, path: str) -> EndpointStats:
        stats = self._endpoints.get((method, path))
        if stats is None:
            stats = self._endpoints[(method, path)] = EndpointStats(method, path)
        return stats

    def all(self) -> list[EndpointStats]:
        return [self.unrouted, *self._endpoints.values()]


#: What ``/metrics`` reports of one endpoint as it is now: method, path, source instances attached, source instances
#: configured, idempotency keys remembered.
EndpointState = tuple[str, str, int, int, int]


def warm() -> None:
    """Import ``prometheus_client`` in a thread: a first scrape then finds it imported, and the loop runs meanwhile."""
    threading.Thread(target=_import, name="httppush-metrics-import", daemon=True).start()


def _import() -> None:
    import prometheus_client.core  # noqa: F401
    import prometheus_client.exposition  # noqa: F401


def encoder_for(accept: str) -> tuple[Callable[[Any], bytes], str]:
    """The exposition format an ``Accept`` header asks for (OpenMetrics or Prometheus text): encoder, Content-Type."""
    from prometheus_client.exposition import choose_encoder

    return choose_encoder(accept)  # type: ignore[no-any-return]


def render(metrics: Metrics, gauges: dict[str, tuple[str, float]], endpoints: list[EndpointState],
           encoder: Callable[[Any], bytes]) -> bytes:
    """The exposition of ``metrics`` in the format of ``encoder`` (:func:`encoder_for`).

    ``gauges``: name → (help, value), read now."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, gauges, endpoints))
    return encoder(registry)


class _Collector:
    """Builds the metric families from the plain counters at scrape time (prometheus_client's collector protocol)."""

    def __init__(self, metrics: Metrics, gauges: dict[str, tuple[str, float]], endpoints: list[EndpointState]) -> None:
        self.metrics, self.gauges, self.endpoints = metrics, gauges, endpoints

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        endpoint = ["method", "path"]
        every = self.metrics.all()
        routed = every[1:]

        def counter(name: str, text: str, value: Callable[[EndpointStats], float],
                    stats: list[EndpointStats]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, text, labels=endpoint)
            for item in stats:
                family.add_metric([item.method, item.path], value(item))
            return family

        requests = CounterMetricFamily(
            "httppush_requests", "Requests answered, by endpoint and HTTP status (no method and path: requests that "
            "reached no endpoint, including the health and metrics paths).", labels=[*endpoint, "status"])
        for item in every:
            for status, count in sorted(item.statuses.items()):
                requests.add_metric([item.method, item.path, str(status)], count)
        yield requests
        yield counter("httppush_request_body_bytes", "Bytes of request bodies handed to an endpoint (after "
                      "Content-Encoding is undone).", lambda s: s.body_bytes, routed)
        yield counter("httppush_records", "Records delivered to every subscribed source and answered 2xx.",
                      lambda s: s.records, routed)
        failures = CounterMetricFamily("httppush_decode_failures", "Bodies refused because they could not be "
                                       "decoded, by format.", labels=[*endpoint, "format"])
        for item in routed:
            for fmt, count in sorted(item.decode_failures.items()):
                failures.add_metric([item.method, item.path, fmt], count)
        yield failures
        yield counter("httppush_delivery_failures", "Requests answered 503 because a source's host channel did not "
                      "take every record.", lambda s: s.delivery_failures, routed)
        yield counter("httppush_idempotent_replays", "Requests with a known Idempotency-Key answered with the "
                      "stored answer, not delivered again.", lambda s: s.replays, routed)
        yield counter("httppush_idempotency_conflicts", "Requests refused because their Idempotency-Key was in use "
                      "by another request (422) or one still in flight (409).", lambda s: s.key_conflicts, routed)
        yield counter("httppush_idempotency_evictions", "Idempotency keys forgotten before their window ended "
                      "because the endpoint remembered maxKeys keys.", lambda s: s.evictions, routed)
        yield counter("httppush_rate_limited", "Requests answered 429 because the client's rateLimit bucket was "
                      "empty (before their body was read).", lambda s: s.rate_limited, routed)
        clients = GaugeMetricFamily("httppush_rate_limit_clients", "Clients whose rateLimit buckets an endpoint keeps "
                                    "now (at most rateLimit.maxClients).", labels=endpoint)
        current = {(method, path) for method, path, *_ in self.endpoints}  # a gauge goes with its endpoint
        for item in routed:
            if (item.method, item.path) in current:
                clients.add_metric([item.method, item.path], item.rate_clients)
        yield clients
        latency = HistogramMetricFamily(
            "httppush_request_duration_seconds", "From the end of a request's body to its answer, for requests "
            "handed to an endpoint: decoding, delivery to eKuiper, answering.", labels=endpoint)
        for item in every:
            if any(item.buckets):
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), item.buckets, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric([item.method, item.path], buckets, item.latency_sum)
        yield latency
        attached = GaugeMetricFamily("httppush_sources", "Source instances (rules' streams and tables) subscribed "
                                     "to an endpoint, by whether eKuiper has attached their channel yet.",
                                     labels=[*endpoint, "attached"])
        keys = GaugeMetricFamily("httppush_idempotency_keys", "Idempotency keys an endpoint remembers now (in flight "
                                 "or answered within its window).", labels=endpoint)
        for method, path, up, configured, remembered in self.endpoints:
            attached.add_metric([method, path, "true"], up)
            attached.add_metric([method, path, "false"], configured - up)
            keys.add_metric([method, path], remembered)
        yield attached
        yield keys
        for name, (text, value) in self.gauges.items():
            yield GaugeMetricFamily(name, text, value=value)
