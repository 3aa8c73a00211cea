"""Prometheus instruments, one registry per server instance.

The names below are a public contract: the Grafana dashboard, the Prometheus config and the
Kubernetes autoscaler query them (a test checks that every name they use is exported).
Buckets span 1 ms to 10 min so both text classification and full video reconstructions land
in meaningful buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import ProcessCollector, PlatformCollector

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


def device_memory() -> dict[str, dict[str, int]]:
    """Allocated and reserved bytes per CUDA device ({} without CUDA).

    Both, because the caching allocator keeps freed blocks: allocated memory can be low while the
    device is full, and another process (or model) sees only what is reserved.
    """
    import torch

    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": {"allocated": torch.cuda.memory_allocated(i), "reserved": torch.cuda.memory_reserved(i)}
            for i in range(torch.cuda.device_count())}


class Metrics:
    """All instruments of one server; engine and front ends report through its methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "perceiver_requests", "Requests answered, by model, endpoint/RPC, protocol and status code.",
            ["model", "endpoint", "protocol", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "perceiver_request_duration_seconds", "Wall time from request received to answer sent.",
            ["model", "endpoint", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_duration = Histogram(
            "perceiver_queue_duration_seconds", "Time a work item waited in its model's queue.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_duration = Histogram(
            "perceiver_inference_duration_seconds", "Device time of one batched forward pass.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "perceiver_batch_size", "Work items per forward pass.", ["model"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "perceiver_queue_depth", "Work items waiting in the model's queue.", ["model"], registry=r,
        )
        self.inflight = Gauge(
            "perceiver_inflight_requests", "Requests being handled now.", ["protocol"], registry=r,
        )
        self.rejected = Counter(
            "perceiver_rejected_requests", "Work items (a text, an image, a flow tile, a video window or chunk) refused or dropped "
            "before computing, by reason; one request may count many.",
            ["model", "reason"], registry=r,
        )
        self.model_ready = Gauge(
            "perceiver_model_ready", "1 when the model version is loaded, warmed up and serving.",
            ["model", "version"], registry=r,
        )
        self.model_load_seconds = Gauge(
            "perceiver_model_load_seconds", "Seconds spent loading and warming up the model version.",
            ["model", "version"], registry=r,
        )
        self.model_events = Counter(
            "perceiver_model_events", "Model loads, reloads and unloads while serving, by outcome.",
            ["model", "event", "outcome"], registry=r,
        )
        self.decode_bytes_inflight = Gauge(
            "perceiver_decode_bytes_inflight", "Bytes of decoded media (pixels, samples) held now, of the "
            "--max-decode-mb budget.", registry=r,
        )
        self.device_memory = Gauge(
            "perceiver_device_memory_bytes",
            "Accelerator memory of this process: 'allocated' to live tensors, 'reserved' by the caching allocator "
            "(allocated plus cached free blocks; what the device sees as used).", ["device", "kind"], registry=r,
        )
        self._is_model: Callable[[str], bool] = lambda name: True  # until the registry says (label_models)

    # -- engine hooks -------------------------------------------------------------------------
    def observe_queue_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def observe_batch(self, model: str, size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference_duration.labels(model).observe(compute_seconds)
        queue = self.queue_duration.labels(model)
        for waited in queue_seconds:
            queue.observe(waited)

    def observe_rejected(self, model: str, reason: str, items: int = 1) -> None:
        self.rejected.labels(model, reason).inc(items)

    def observe_model_state(self, model: str, version: str, ready: bool, load_seconds: float | None = None) -> None:
        self.model_ready.labels(model, version).set(1 if ready else 0)
        if load_seconds is not None:
            self.model_load_seconds.labels(model, version).set(load_seconds)

    def forget_model_version(self, model: str, version: str) -> None:
        for gauge in (self.model_ready, self.model_load_seconds):
            try:
                gauge.remove(model, version)
            except KeyError:  # never reported (not loaded at start)
                pass

    def observe_model_event(self, model: str, event: str, outcome: str) -> None:
        self.model_events.labels(model, event, outcome).inc()

    def label_models(self, is_model: Callable[[str], bool]) -> None:
        """Label requests with a model name only where ``is_model(name)`` (the registry's models).

        Requests name their model themselves, and every name a label takes is a series kept
        until the process exits: requests for made-up names would grow the exposition, and
        Prometheus with it, without bound. They are counted under ``model=""``, as requests
        that name no model are, whichever front end or route answers them.
        """
        self._is_model = is_model

    def observe_decode_bytes(self, inflight: int) -> None:
        self.decode_bytes_inflight.set(inflight)

    # -- front-end hooks ----------------------------------------------------------------------
    @contextmanager
    def track_inflight(self, protocol: str) -> Iterator[None]:
        gauge = self.inflight.labels(protocol)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def observe_request(self, model: str, endpoint: str, protocol: str, status: str | int, seconds: float) -> None:
        model = model if self._is_model(model) else ""
        self.requests.labels(model, endpoint, protocol, str(status)).inc()
        self.request_duration.labels(model, endpoint, protocol).observe(seconds)

    # -- exposition ---------------------------------------------------------------------------
    def refresh_device_memory(self) -> None:
        self.set_device_memory(device_memory())

    def set_device_memory(self, usage: dict[str, dict[str, int]]) -> None:
        for device, kinds in usage.items():
            for kind, value in kinds.items():
                self.device_memory.labels(device, kind).set(value)

    def exposition(self) -> bytes:
        self.refresh_device_memory()
        return generate_latest(self.registry)
