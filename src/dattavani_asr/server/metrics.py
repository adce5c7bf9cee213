"""Prometheus metrics of one app instance (its own registry, so several apps can live in a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)


class _CallbackGauges(Collector):
    """Gauges read at scrape time (queue depths, jobs by state), so they are never stale."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, str, dict[str, float]]]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, documentation, label, values in self.read():
            family = GaugeMetricFamily(name, documentation, labels=[label])
            for key, value in values.items():
                family.add_metric([key], value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "dattavani_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dattavani_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audio_seconds = Counter(
            "dattavani_audio_seconds", "Seconds of audio transcribed", ["model"], registry=registry
        )
        self.realtime_factor = Histogram(
            "dattavani_realtime_factor",
            "Processing seconds per audio second",
            ["model"],
            buckets=RTF_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "dattavani_batch_windows",
            "Windows per engine batch",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "dattavani_batch_seconds", "Engine time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.model_load_seconds = Gauge(
            "dattavani_model_load_seconds", "Seconds the last load of each model took", ["model"], registry=registry
        )
        self.errors = Counter("dattavani_errors", "Errors returned, by type", ["type"], registry=registry)
        self.stream_final_seconds = Histogram(
            "dattavani_stream_final_seconds",
            "Live streams: audio received after an utterance's end before its final was sent (s)",
            ["model"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=registry,
        )

    def add_gauges(self, read: Callable[[], Iterable[tuple[str, str, str, dict[str, float]]]]) -> None:
        self.registry.register(_CallbackGauges(read))

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        def observe(size: int, seconds: float) -> None:
            self.batch_size.labels(model).observe(size)
            self.batch_seconds.labels(model).observe(seconds)

        return observe

    def transcribed(self, model: str, audio_seconds: float, wall_seconds: float) -> None:
        self.audio_seconds.labels(model).inc(audio_seconds)
        if audio_seconds > 0:
            self.realtime_factor.labels(model).observe(wall_seconds / audio_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Mapping[str, Any]) -> str:
    """The route template (`/v1/jobs/{job_id}`), not the raw path, so labels stay few."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
