"""Prometheus metrics of the embedding service, exposed on our own /metrics route (`exposition`).

BentoML's HTTP metrics are switched off (service/app.py): they label each series with the raw request path, so
random paths grew /metrics without bound. Ours label by route from the route table only.

Created when the service starts, never at import: BentoML sets PROMETHEUS_MULTIPROC_DIR in each worker before the
service is built, and prometheus_client must be imported after that for the workers' values to be aggregated.
Tests pass their own CollectorRegistry.
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests, latency, batches, tokens, errors by code, and which model version serves (with swap outcomes)."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as prom

        registry = prom.REGISTRY if registry is None else registry
        self.requests = prom.Counter(
            "embedgate_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.errors = prom.Counter(
            "embedgate_errors", "Error answers, by route and error code", ["route", "code"], registry=registry
        )
        self.latency = prom.Histogram(
            "embedgate_request_duration_seconds",
            "Time to answer a model request",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.inputs = prom.Counter("embedgate_inputs", "Texts embedded", ["route"], registry=registry)
        self.tokens = prom.Counter(
            "embedgate_tokens",
            "Tokens embedded (after truncation, special tokens included)",
            ["route"],
            registry=registry,
        )
        self.truncated = prom.Counter(
            "embedgate_truncated_inputs", "Texts cut to the model's max tokens", ["route"], registry=registry
        )
        self.batch_size = prom.Histogram(
            "embedgate_batch_size", "Texts per model run", buckets=BATCH_BUCKETS, registry=registry
        )
        self.batch_requests = prom.Histogram(
            "embedgate_batch_requests",
            "Requests sharing one model run",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_duration = prom.Histogram(
            "embedgate_batch_duration_seconds",
            "Model run time per batch",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue_wait = prom.Histogram(
            "embedgate_queue_wait_seconds",
            "Time a request waited for its batch",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = prom.Gauge(
            "embedgate_requests_in_flight",
            "Model requests being answered",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.model_info = prom.Gauge(
            "embedgate_model_info",
            "1 for the model version being served, 0 for one served before",
            ["version", "precision", "serving_dim"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.swaps = prom.Counter(
            "embedgate_model_swaps", "Model versions switched to", ["version"], registry=registry
        )
        self.swap_failures = prom.Counter(
            "embedgate_model_swap_failures",
            "Champion versions refused (the previous one kept serving)",
            ["version", "reason"],
            registry=registry,
        )

    def record_model(self, new: Any, old: Any | None) -> None:
        """Mark `new` (a ServingModel) as served and `old` as no longer served."""
        if old is not None:
            self.model_info.labels(old.version, old.precision, str(old.serving_dim)).set(0)
        self.model_info.labels(new.version, new.precision, str(new.serving_dim)).set(1)


def exposition() -> tuple[bytes, str]:
    """The text /metrics answers, and its content type: every worker's values when BentoML runs several (Prometheus'
    multiprocess mode, PROMETHEUS_MULTIPROC_DIR), else this process' default registry."""
    import os

    import prometheus_client as prom
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prom.REGISTRY
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
