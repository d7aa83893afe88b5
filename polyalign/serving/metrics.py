"""Prometheus metrics of a server: requests, latency, errors and batch sizes (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The counters and histograms of one app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("polyalign_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=self.registry)
        self.errors = Counter("polyalign_errors", "Requests answered with a 4xx or 5xx status, by route and status",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram("polyalign_request_seconds", "Seconds from a request's arrival to its answer",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("polyalign_batch_requests", "Requests run together in one model batch",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_values = Histogram("polyalign_batch_values", "Values embedded in one model batch",
                                      buckets=BATCH_BUCKETS, registry=self.registry)

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
