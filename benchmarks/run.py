"""Run the model benchmark: ``python -m benchmarks.run [--quick] [--cases A,B] [--out DIR]``.

For every case: load both implementations from one checkpoint directory, time them
alternately in this process, compare their outputs, then measure each one's peak memory
and FLOPs in a fresh process (:mod:`benchmarks.probe`). Writes ``results.json``,
``results.md`` and PNG charts into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import measure, report
from .checkpoints import checkpoint_dir, load_reference
from .configs import head_spec
from .model_bench import CASES, CASES_BY_NAME, Case, Marks, case_config, compare
from .report import Progress

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


class Models:
    """The models of the current checkpoint, kept while consecutive cases share it."""

    def __init__(self, quick: bool, say: Progress, device: str = "cpu") -> None:
        self.quick, self.say, self.device = quick, say, device
        self.head: str | None = None
        self.loaded: dict[str, torch.nn.Module] = {}

    def get(self, head: str, impl: str, dtype: str) -> torch.nn.Module:
        from perceiver_serve.modeling import load_model

        if head != self.head:
            self.loaded.clear()
            gc.collect()
            self.head = head
        key = impl if impl == "ref" else f"ours-{dtype}"
        if key not in self.loaded:
            directory = checkpoint_dir(head_spec(head, self.quick))
            self.say(f"  loading {key} from {directory.name}")
            model = load_reference(directory) if impl == "ref" else load_model(directory, dtype=dtype)
            self.loaded[key] = model.to(self.device)
        return self.loaded[key]


def probe(case: Case, impl: str, quick: bool, threads: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.probe", case.name, impl, "--threads", str(threads)]
    if quick:
        command.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "error",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe {case.name}/{impl} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def to_device(value: Any, device: str | torch.device) -> Any:
    """``value`` with every tensor in it (dicts, lists, tuples) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def run_case(case: Case, models: Models, quick: bool, reps: int | None, memory: bool, threads: int,
             peaks: dict[str, float], say: Progress) -> dict[str, Any]:
    config = case_config(case, quick)
    ref_model = models.get(case.head, "ref", "float32")
    our_model = models.get(case.head, "ours", case.ours_dtype)
    device = torch.device(models.device)
    inputs = to_device(case.inputs(config), device)
    outputs: dict[str, Any] = {}
    marks: dict[str, list[dict[str, float]]] = {"ref": [], "ours": []}

    def runner(impl: str, model: torch.nn.Module, fn):
        def run():
            m = Marks()
            # The device as default: tensors a case makes as it runs (indices, masks) land beside the model.
            with torch.inference_mode(), device:
                outputs[impl] = fn(model, inputs, m, None)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # time the device's work, not the launches
            marks[impl].append(m.points)
        return run

    runs = {"ref": runner("ref", ref_model, case.ref), "ours": runner("ours", our_model, case.ours)}
    if case.warmup:
        say("  warm-up")
        for run in runs.values():
            run()
        marks = {"ref": [], "ours": []}
    timings = measure.alternate(runs, reps or case.reps, lambda msg: say("  " + msg))
    result: dict[str, Any] = {
        "case": case.name, "title": case.title, "head": case.head, "ours_dtype": case.ours_dtype,
        "note": case.note, "units": case.num_units(config),
        "ref": timings["ref"].to_dict(), "ours": timings["ours"].to_dict(),
        "speedup": timings["ref"].median / timings["ours"].median,
        **compare(case, to_device(outputs["ref"], "cpu"), to_device(outputs["ours"], "cpu")),
    }
    for impl in ("ref", "ours"):
        names = {name for points in marks[impl] for name in points}
        result[impl]["marks_s"] = {
            name: sorted(p[name] for p in marks[impl] if name in p)[len(marks[impl]) // 2] for name in names
        }
    if memory and (not quick or case.target.memory):
        probe_case(case, result, quick, threads, peaks, say)
    result["target"] = {k: v for k, v in vars(case.target).items() if v is not None}
    result["target_text"] = case.target.describe()
    result["met"] = _met(case, result)
    return result


def probe_case(case: Case, result: dict[str, Any], quick: bool, threads: int, peaks: dict[str, float],
               say: Progress) -> None:
    """Add each implementation's peak memory and executed FLOPs (fresh processes) to a timed result."""
    for impl in ("ref", "ours"):
        say(f"  probing peak memory and FLOPs of {impl} in a fresh process")
        result[impl].update(probe(case, impl, quick, threads))
        gflops = result[impl]["flops"] / result[impl]["median_s"] / 1e9
        result[impl]["gflops"] = gflops
        result[impl]["pct_of_peak"] = 100 * gflops / peaks["float32"]
    result["memory_ratio"] = result["ref"]["peak_rss_mb"] / result["ours"]["peak_rss_mb"]
    result["met"] = _met(case, result)


def _met(case: Case, result: dict[str, Any]) -> dict[str, bool | None]:
    t = case.target
    checks = {
        "speedup": (t.speedup, lambda: result["speedup"] >= t.speedup),
        "memory": (t.memory, lambda: result["memory_ratio"] >= t.memory if "memory_ratio" in result else None),
        "max_abs_diff": (t.max_abs_diff, lambda: result["max_abs_diff"] <= t.max_abs_diff),
        "argmax_agreement": (t.argmax_agreement, lambda: result.get("argmax_agreement", 0) >= t.argmax_agreement),
    }
    return {name: check() for name, (wanted, check) in checks.items() if wanted is not None}


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    rows = []
    for r in payload["results"]:
        ref, ours = r["ref"], r["ours"]
        mem = ("–" if "memory_ratio" not in r else
               f"{ref['peak_rss_mb']:.0f} / {ours['peak_rss_mb']:.0f} ({r['memory_ratio']:.1f}×)")
        flops = ("–" if "gflops" not in ours else
                 f"{ref['gflops']:.3g} ({ref['pct_of_peak']:.0f}%) / {ours['gflops']:.3g} ({ours['pct_of_peak']:.0f}%)")
        diff = f"{r['max_abs_diff']:.1e}"
        if "argmax_agreement" in r:
            diff += f" (arg-max {r['argmax_agreement']:.1%})"
        rows.append([
            f"`{r['case']}`" + ("" if r["ours_dtype"] == "float32" else f" ({r['ours_dtype']})"),
            f"{report.seconds(ref['median_s'])} ± {report.seconds(ref['spread_s'])} (n={len(ref['samples_s'])})",
            f"{report.seconds(ours['median_s'])} ± {report.seconds(ours['spread_s'])} (n={len(ours['samples_s'])})",
            f"**{r['speedup']:.2f}×**", mem, flops, diff, r["target_text"] or "–", report.verdict(r["met"]),
        ])
    env, peaks = payload["environment"], payload["matmul_peak_gflops"]
    text = [
        "# Model benchmark: perceiver-serve vs transformers\n",
        (f"Run {payload['started']} ({'quick, tiny configs' if payload['quick'] else 'official checkpoint sizes'}),"
         f" {payload['duration_s'] / 60:.1f} min. {report.machine_line(env)}\n"),
        "Measured matmul peak in this run: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + ".\n",
        *([] if not payload.get("updated") else [
            f"Updated {payload['updated']}: "
            + ", ".join(f"`{r['case']}`" for r in payload["results"] if r.get("measured", "") >= payload["updated"])
            + " measured again (at commit " + ", ".join(sorted({str(r.get("commit")) for r in payload["results"]
                                                               if r.get("measured", "") >= payload["updated"]}))
            + "); the other rows are from the run above.\n"]),
        ("Times are medians ± half the range of the repetitions, the two implementations alternating in one "
         "process; the ratio is reference median / our median. Peak memory is each implementation's peak "
         "resident set size while running the case in a fresh process with its model loaded (same imports in "
         "both; loading's own transient peak is in results.json). GFLOP/s: the floating-point operations "
         "each implementation executes (matrix products, convolutions, attention) over its median time, and "
         "their share of the fp32 matmul peak (also for bf16/fp16: on a CPU without native low-precision "
         "products ours computes them in fp32).\n"),
        report.markdown_table(
            ["case", "transformers", "ours", "ratio", "peak MB ref / ours", "GFLOP/s ref / ours (% peak)",
             "max abs diff", "target", "met"], rows),
        "\n## Cases\n",
    ]
    for r in payload["results"]:
        extra = [f"{name} {report.seconds(v)}" for name, v in r["ours"].get("marks_s", {}).items()]
        line = f"- `{r['case']}`: {r['title']}."
        if r["note"]:
            line += f" {r['note'][0].upper()}{r['note'][1:]}."
        if extra:
            line += " Ours: " + ", ".join(extra).replace("first_chunk", "time to first chunk") + "."
        if r.get("units", 1) > 1 and "units_run" in r["ref"]:
            line += (f" Memory/FLOP probes ran {r['ref']['units_run']} of {r['units']} units for the reference and "
                     f"{r['ours']['units_run']} for ours (units cost the same; FLOPs scaled).")
        line += f" Largest reference output magnitude {r['ref_max_abs']:.3g}."
        text.append(line)
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def write_charts(out: Path, results: list[dict[str, Any]]) -> None:
    labels = [r["case"] for r in results]
    report.bar_chart(out / "latency_ratio.png", labels, [r["speedup"] for r in results],
                     targets=[r["target"].get("speedup") for r in results],
                     title="Speed-up over transformers (reference time / our time; black tick = target)",
                     xlabel="× faster", log=True)
    with_memory = [r for r in results if "memory_ratio" in r]
    if with_memory:
        report.grouped_bar_chart(out / "peak_memory.png", [r["case"] for r in with_memory],
                                 {"transformers": [r["ref"]["peak_rss_mb"] for r in with_memory],
                                  "ours": [r["ours"]["peak_rss_mb"] for r in with_memory]},
                                 title="Peak resident memory per process (MB)", xlabel="MB")
        report.grouped_bar_chart(out / "throughput.png", [r["case"] for r in with_memory],
                                 {"transformers": [r["ref"]["gflops"] for r in with_memory],
                                  "ours": [r["ours"]["gflops"] for r in with_memory]},
                                 title="Executed GFLOP/s (matrix products, convolutions, attention)",
                                 xlabel="GFLOP/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny configs, memory probes only where memory is a target: checks the harness in "
                             "seconds")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES),
                        help="comma-separated case names (default: all): " + ", ".join(CASES_BY_NAME))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--reps", type=int, default=None, help="override every case's repetitions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="where both implementations run (cpu, cuda, cuda:N); off the CPU the per-process "
                             "memory probes, which measure host RSS, are skipped")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the per-process memory and FLOP probes")
    parser.add_argument("--probe-only", action="store_true",
                        help="keep the timings in OUT/results.json, measure memory and FLOPs again")
    parser.add_argument("--update", action="store_true",
                        help="measure the named cases again and replace just their rows in OUT/results.json "
                             "(after a change that touches some cases only); each row says when and at which "
                             "commit it was measured")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(CASES_BY_NAME)}")
    if args.device != "cpu":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available here")
        args.memory = False
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    say = Progress()
    if args.probe_only:
        return reprobe(args.out, names, args.threads, say)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    say("measuring the matmul peak")
    size, budget = (256, 0.3) if args.quick else (2048, 3.0)
    low = size if args.device != "cpu" else size // 4  # CPUs without native bf16/fp16 are slow at it
    peaks = {"float32": measure.matmul_peak(torch.float32, size, budget, args.device),
             "bfloat16": measure.matmul_peak(torch.bfloat16, low, budget, args.device),
             "float16": measure.matmul_peak(torch.float16, low, budget, args.device)}
    say("  " + ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in peaks.items()))
    payload: dict[str, Any] = {"started": started, "quick": args.quick, "device": args.device,
                               "environment": report.environment(),
                               "matmul_peak_gflops": peaks, "results": []}
    kept: list[dict[str, Any]] = []
    if args.update and (args.out / "results.json").exists():
        previous = json.loads((args.out / "results.json").read_text())
        if previous["quick"] != args.quick:
            parser.error("--update: the results in OUT were measured with another --quick setting")
        kept = [r for r in previous["results"] if r["case"] not in names]
        payload["started"] = previous["started"]
        payload["updated"] = started
        payload["environment"], payload["matmul_peak_gflops"] = previous["environment"], previous["matmul_peak_gflops"]
        payload["matmul_peak_gflops_update"] = peaks
    commit = report.git_commit()
    models = Models(args.quick, say, args.device)
    cases = [CASES_BY_NAME[n] for n in names]
    for i, case in enumerate(cases, 1):
        say(f"[{i}/{len(cases)}] {case.name}: {case.title}")
        result = run_case(case, models, args.quick, args.reps, args.memory, args.threads, peaks, say)
        result.update(measured=datetime.datetime.now().isoformat(timespec="seconds"), commit=commit)
        say(f"  ratio {result['speedup']:.2f}×, max |diff| {result['max_abs_diff']:.2e}"
            + (f", memory {result['memory_ratio']:.1f}×" if "memory_ratio" in result else "")
            + f", target met: {report.verdict(result['met'])}")
        payload["results"].append(result)
        order = {c.name: i for i, c in enumerate(CASES)}
        payload["results"] = sorted(kept + [r for r in payload["results"] if r["case"] in names],
                                    key=lambda r: order[r["case"]])
        payload["duration_s"] = time.perf_counter() - say.start
        report.write_json(args.out / "results.json", payload)  # after every case: a crash keeps the rest
    write_markdown(args.out / "results.md", payload)
    write_charts(args.out, payload["results"])
    say(f"wrote {args.out / 'results.json'}, results.md and charts")
    return 0


def reprobe(out: Path, names: list[str], threads: int, say: Progress) -> int:
    """Measure memory and FLOPs again for the timed results in ``out`` (e.g. after fixing a probe)."""
    payload = json.loads((out / "results.json").read_text())
    for result in payload["results"]:
        if result["case"] in names:
            say(f"{result['case']}: probing again")
            probe_case(CASES_BY_NAME[result["case"]], result, payload["quick"], threads,
                       payload["matmul_peak_gflops"], say)
            report.write_json(out / "results.json", payload)
    write_markdown(out / "results.md", payload)
    write_charts(out, payload["results"])
    say(f"updated {out / 'results.json'}, results.md and charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
