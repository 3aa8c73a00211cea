"""Where a model runs: choosing its device, and the CUDA stream its worker thread owns.

Every CUDA call here sits behind a check of the device type, so on a CPU these are no-ops
and CPU-only builds of torch never touch ``torch.cuda``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

GPU_REQUESTS = ("auto", "cuda")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The device a model got, and why it is not the one it asked for (if it is not)."""

    device: str
    fallback: str | None = None


def asked_for_gpu(requested: str) -> bool:
    return requested.split(":")[0] in GPU_REQUESTS


def cuda_unavailable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, in words an operator can act on."""
    if not torch.backends.cuda.is_built():
        return "this torch build has no CUDA support (a CPU wheel)"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - the driver's own words are the useful part
        return f"CUDA failed to start: {type(exc).__name__}: {exc}"
    return "no CUDA device is visible (CUDA_VISIBLE_DEVICES, or the container runtime passed none)"


def resolve_device(requested: str) -> Placement:
    """``auto`` → the first GPU, else the CPU with the reason (logged at WARNING when torch has CUDA
    built in); ``cuda[:N]`` → that GPU, or fail."""
    if requested == "cpu":
        return Placement("cpu")
    if requested == "auto":
        if torch.cuda.is_available():
            return Placement("cuda:0")
        reason = cuda_unavailable_reason()
        # A CPU build of torch (the CPU image) expects the CPU; a CUDA build that cannot start
        # is a GPU node gone wrong, which must not pass in silence.
        level = logging.WARNING if torch.backends.cuda.is_built() else logging.INFO
        log.log(level, "device 'auto' falls back to the CPU: %s", reason)
        return Placement("cpu", fallback=reason)
    index = 0 if requested == "cuda" else int(requested.split(":")[1])
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        detail = "" if count else f": {cuda_unavailable_reason()}"
        raise RuntimeError(f"device {requested!r} is not available ({count} CUDA devices{detail})")
    return Placement(f"cuda:{index}")


class WorkerStream:
    """The CUDA stream one model's worker thread runs on, so that one model's host copies wait
    only for its own kernels, not for every model's on the device's default stream.

    :meth:`bind` runs on the worker thread (it selects the thread's current device); the
    worker runs each batch inside :meth:`running` and ends it with :meth:`synchronize`, so a
    batch's compute time counts the device's work and an asynchronous error fails the batch
    that caused it, not the next one.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self._stream: torch.cuda.Stream | None = None

    def bind(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            self._stream = torch.cuda.Stream(self.device)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._stream is None:
            yield
            return
        with torch.cuda.stream(self._stream):
            yield

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()

    def release_cached_memory(self) -> None:
        """Give the caching allocator's free blocks back, so a retry after running out can use them."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def configure_tf32(wanted: dict[str, bool]) -> bool:
    """Let CUDA's float32 matrix products and convolutions use TF32 if every model asks for it.

    ``wanted``: per model that may run on CUDA, its ``tf32`` choice. TF32 keeps float32's range
    with a 10-bit mantissa: several times the throughput on Ampere and newer, results no longer
    equal to transformers' float32 ones to 1e-4. torch's switch is process-wide, so models that
    disagree get the parity setting (off), and the ones that asked are named in a warning.
    """
    on = bool(wanted) and all(wanted.values())
    asked = sorted(name for name, tf32 in wanted.items() if tf32)
    if asked and not on:
        log.warning("TF32 stays off: models %s ask for it, but %s do not (torch's switch is process-wide)",
                    ", ".join(asked), ", ".join(sorted(set(wanted) - set(asked))))
    precision = "tf32" if on else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    return on
