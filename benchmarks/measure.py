"""Measuring instruments: alternating timers, a FLOP counter, the machine's matmul peak, peak RSS.

Absolute times on a shared machine drift, so every comparison is timed in one process,
alternating the two implementations, and reported as a ratio of medians.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


@dataclasses.dataclass
class Timing:
    """Wall-clock samples of one implementation, in seconds."""

    samples: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the range of the samples (0 for a single sample)."""
        return (max(self.samples) - min(self.samples)) / 2

    def to_dict(self) -> dict:
        return {"median_s": self.median, "spread_s": self.spread, "samples_s": self.samples}


def alternate(runs: dict[str, Callable[[], object]], reps: int,
              progress: Callable[[str], None] = lambda _: None) -> dict[str, Timing]:
    """Time each callable ``reps`` times, interleaved (a, b, a, b, …), so drift hits all alike."""
    timings = {name: Timing() for name in runs}
    for rep in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            timings[name].samples.append(time.perf_counter() - start)
            progress(f"rep {rep + 1}/{reps} {name}: {timings[name].samples[-1]:.2f} s")
    return timings


def items_per_second(forward: Callable[[], object], items: int, budget_s: float) -> float:
    """``items`` per call of ``forward`` over at least ``budget_s`` seconds and two calls, after one warm-up call."""
    forward()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s or runs < 2:
        forward()
        runs += 1
    return items * runs / (time.perf_counter() - start)


def _numel(shape) -> int:
    return math.prod(shape)


def _product_flops(args, out) -> int:
    """``mm``, ``bmm``, ``matmul``, ``linear``: 2 × output elements × the contracted length."""
    return 2 * _numel(out.shape) * args[0].shape[-1]


def _accumulating_product_flops(args, out) -> int:
    """``addmm``, ``baddbmm``: the same with the accumulator first."""
    return 2 * _numel(out.shape) * args[1].shape[-1]


def _conv_flops(args, out) -> int:
    weight = args[1]
    return 2 * _numel(out.shape) * _numel(weight.shape[1:])


def _sdpa_flops(args, out) -> int:
    q, k, v = args[:3]
    return 2 * _numel(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])


#: Under ``inference_mode`` a dispatch mode sees composite ops (``matmul``, ``linear``, ``conv2d``,
#: ``scaled_dot_product_attention``) before they decompose; ops called inside an intercepted one
#: are not seen again, so nothing is counted twice.
_FLOPS = {
    aten.mm.default: _product_flops,
    aten.bmm.default: _product_flops,
    aten.matmul.default: _product_flops,
    aten.linear.default: _product_flops,
    aten.addmm.default: _accumulating_product_flops,
    aten.baddbmm.default: _accumulating_product_flops,
    aten.conv2d.default: _conv_flops,
    aten.convolution.default: _conv_flops,
    aten.scaled_dot_product_attention.default: _sdpa_flops,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa_flops,
}
if hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    _FLOPS[torch.ops.mkldnn._linear_pointwise.default] = _product_flops


class FlopCounter(TorchDispatchMode):
    """Counts the floating-point operations of matrix products, convolutions and fused attention.

    ``torch.utils.flop_counter`` skips the CPU flash-attention kernel and oneDNN linear ops,
    which is where most of the work of these models happens.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = _FLOPS.get(func)
        if formula is not None:
            self.flops += formula(args, out)
        return out


def matmul_peak(dtype: torch.dtype, size: int, budget_s: float = 3.0, device: str = "cpu") -> float:
    """Best GFLOP/s of ``size``² matrix products in ``dtype`` on ``device`` within about ``budget_s`` seconds,
    through the kernels our model's layers use (:func:`perceiver_serve.modeling.kernels.linear`: oneDNN
    for fp32 on a CPU, where MKL's ``sgemm`` behind ``F.linear`` reaches half of it on AMD processors)."""
    from perceiver_serve.modeling.kernels import linear

    a = torch.randn(size, size).to(device, dtype)
    b = torch.randn(size, size).to(device, dtype)
    sync = torch.cuda.synchronize if a.device.type == "cuda" else (lambda: None)
    flops = 2 * size**3
    best = math.inf
    deadline = time.perf_counter() + budget_s
    with torch.inference_mode():
        linear(a, b)  # warm-up
        sync()
        while True:
            start = time.perf_counter()
            linear(a, b)
            sync()
            best = min(best, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
    return flops / best / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident set size so far.

    On Linux from ``VmHWM``, the high-water mark of this program's own address space:
    ``ru_maxrss`` survives ``exec`` and so would report the parent's size at ``fork`` for a
    probe started from a process that holds models.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Start this process's peak RSS afresh (Linux ≥ 4.0), so it measures what comes next only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20
