"""The README's benchmark summary, written from the committed results.

``python -m benchmarks.readme`` rewrites the block between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in README.md from ``benchmarks/results/results.json`` (model
benchmark) and ``server.json`` (server benchmark); ``--check`` exits 1 if the README is not
what the results say (a test runs it, so the README cannot drift from the results).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import report
from .server_bench import headline_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    return report.markdown_table(headers, rows).rstrip("\n")


def model_section(payload: dict[str, Any]) -> list[str]:
    rows = []
    for r in payload["results"]:
        memory = (f"{r['ref']['peak_rss_mb']:.0f} / {r['ours']['peak_rss_mb']:.0f} MB"
                  if "memory_ratio" in r else "–")
        diff = f"{r['max_abs_diff']:.1e}"
        if "argmax_agreement" in r:
            diff += f", arg-max {r['argmax_agreement']:.0%}"
        dtype = "" if r["ours_dtype"] == "float32" else f" ({r['ours_dtype']})"
        rows.append([f"`{r['case']}`{dtype}", report.seconds(r["ref"]["median_s"]), report.seconds(r["ours"]["median_s"]),
                     f"**{r['speedup']:.2f}×**", memory, diff, r["target_text"] or "–", report.verdict(r["met"])])
    when = payload["started"] + (f", updated {payload['updated']}" if payload.get("updated") else "")
    return [
        f"**Model benchmark** ({when}; {report.machine_line(payload['environment'])} "
        f"Measured fp32 matmul peak {payload['matmul_peak_gflops']['float32']:.0f} GFLOP/s.) "
        "Official checkpoint sizes with random weights, one HF-layout directory loaded by both; "
        "medians, the two implementations alternating in one process; peak memory from a fresh "
        "process each. Details, spreads and GFLOP/s: [results.md](benchmarks/results/results.md).",
        "",
        _table(["case", "transformers", "perceiver-serve", "speed-up", "peak RSS ref / ours",
                               "max abs diff", "target", "met"], rows),
    ]


def server_section(payload: dict[str, Any]) -> list[str]:
    head = payload["headline"]
    latency = payload["overhead"]["latency_ms"]
    overhead = [[name, f"{latency[f'rest_{key}']['p50']:.2f} ms", f"{latency[f'grpc_{key}']['p50']:.2f} ms"]
                for name, key in (("classify (answered)", "classify"), ("empty text (rejected)", "rejected"))]
    return [
        f"**Server benchmark** ({payload['started']}): real servers on loopback, a load generator in its own "
        f"process, every answer checked. Mid-size text classifier (128 latents × 512, 8 layers), req/s; batching "
        f"off = `max_batch_size = 1`; baseline = transformers + FastAPI, one request at a time. Targets ≥ "
        f"{head['target_ratio']}×: on/off {'met' if head['met']['on_vs_off'] else 'not met'}, on/baseline "
        f"{'met' if head['met']['on_vs_baseline'] else 'not met'}. Sweeps 1…64 for text, image and flow with "
        "p50/p95/p99 and mean batch size: [server.md](benchmarks/results/server.md).",
        "",
        _table(["concurrency", "batching on", "batching off", "transformers + FastAPI", "on / off",
                               "on / baseline"], headline_rows(head)),
        "",
        f"Per-request overhead on the tiny demo model (`{payload['overhead']['model']}`), sequential, median:",
        "",
        _table(["request", "REST", "gRPC"], overhead),
    ]


def block(results: Path = RESULTS) -> str:
    lines = [START, ""]
    lines += model_section(json.loads((results / "results.json").read_text()))
    lines += ["", *server_section(json.loads((results / "server.json").read_text())), "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{args.readme}: no {START} … {END} block", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = before + block() + after
    if args.check:
        if updated != text:
            print("README.md's benchmark block is not what benchmarks/results says: "
                  "run python -m benchmarks.readme", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
