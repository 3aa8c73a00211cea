"""Writing benchmark results: the machine they ran on, JSON, markdown tables and bar charts.

Shared by every benchmark in this package, so all results look alike and carry the
environment they were measured in.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from perceiver_serve.modeling.precision import describe_cpu


class Progress:
    """``say(message)``: a progress line on ``stream``, stamped with the seconds since the start."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.start = time.perf_counter()
        self.stream = stream

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f} s] {message}", file=self.stream or sys.stdout, flush=True)


def environment() -> dict[str, Any]:
    """What the numbers depend on: CPU, core count, library versions, thread setting."""
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and fields:
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        cpu = fields["model name"]
    if "cpu family" in fields and "model" in fields:
        # Virtual machines often name only the vendor's line ("AMD EPYC"): the family and model tell the
        # generation (25/17: Zen 4, whose AVX-512 runs on 256-bit units, about half Zen 5's fp32 peak).
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": describe_cpu(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "platform": platform.platform(),
    }


def verdict(met: dict[str, bool | None]) -> str:
    """A case's targets in a word: ``yes``, ``no (the missed ones)``, ``n/a`` or ``–`` (none set)."""
    if not met:
        return "–"
    if any(v is False for v in met.values()):
        return "no (" + ", ".join(k for k, v in met.items() if v is False) + ")"
    return "yes" if all(met.values()) else "n/a"


def git_commit() -> str | None:
    """The commit the measured code is at (with ``+`` when the working tree differs), if known."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+" if dirty else "")


def machine_line(env: dict[str, Any], threads: int | None = None) -> str:
    """``Machine: CPU, N cores (ISA), T torch threads; torch X, transformers Y.`` for a report's header."""
    features = f"; {env['cpu_features']}" if "cpu_features" in env else ""
    return (f"Machine: {env['cpu']}, {env['cpu_count']} cores ({env['cpu_capability']}{features}), "
            f"{threads or env['torch_threads']} torch threads; torch {env['torch']}, "
            f"transformers {env['transformers']}, Python {env['python']}.")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.1f} ms"


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float | None], *, title: str,
              xlabel: str, targets: Sequence[float | None] | None = None, reference_line: float | None = 1.0,
              log: bool = False) -> None:
    """A horizontal bar per label; optional per-bar target ticks and a vertical reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(label, value, (targets or [None] * len(labels))[i])
             for i, (label, value) in enumerate(zip(labels, values)) if value is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.4))
    ys = list(range(len(shown)))
    colors = ["tab:green" if t is None or v >= t else "tab:red" for _, v, t in shown]
    ax.barh(ys, [v for _, v, _ in shown], color=colors)
    for y, (_, value, target) in zip(ys, shown):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        if target is not None:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=2)
    if reference_line is not None:
        ax.axvline(reference_line, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [label for label, _, _ in shown], fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped_bar_chart(path: Path, labels: Sequence[str], series: dict[str, Sequence[float | None]], *,
                      title: str, xlabel: str, log: bool = False) -> None:
    """Side-by-side horizontal bars, one colour per series (e.g. reference vs ours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.4))
    height = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ys = [y + i * height for y in range(len(labels))]
        ax.barh(ys, [v or 0 for v in values], height=height, label=name)
        for y, v in zip(ys, values):
            if v:
                ax.text(v, y, f" {v:.0f}", va="center", fontsize=7)
    ax.set_yticks([y + 0.4 - height / 2 for y in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line_panels(path: Path, panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float | None]]]], *,
                title: str, xlabel: str, ylabel: str, styles: dict[str, dict[str, Any]] | None = None,
                logx: bool = True, logy: bool = False) -> None:
    """One panel per key of ``panels``, one line per series (``label -> (xs, ys)``), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for label, (xs, ys) in series.items():
            points = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=label,
                    **(styles or {}).get(label, {}))
        if logx:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({x for xs, _ in series.values() for x in xs}),
                          [str(x) for x in sorted({x for xs, _ in series.values() for x in xs})])
        if logy:
            ax.set_yscale("log")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
