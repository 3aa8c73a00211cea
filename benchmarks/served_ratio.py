"""Served against isolated throughput, per precision and compile setting of one model.

``python -m benchmarks.served_ratio [--quick] [--variants fp32,int8,...] [--rounds N]`` (also run by
:mod:`benchmarks.server_bench`). One perceiver-serve process serves the mid-size text
classifier of issue 12 in each variant (``max_batch_size = 32``); a load generator in its own
process sends ≈100-byte texts from 16 and 32 closed-loop clients, the variants interleaved,
``--rounds`` times to show the spread. After each round, with the servers idle, each variant is
loaded in a process of its own (or, for ``worker = "process"``, one per instance) and run alone on
the same texts in batches of 16 and 32 for 3 s: the isolated batched throughput, its median over
the rounds (on a shared machine one measurement of either side can be off by 20%). The served /
isolated ratio says how much of its model's speed the server keeps.

Plain FastAPI servers of :mod:`benchmarks.baseline_server` (one request at a time, the same
checkpoint) run beside it, interleaved with the variants (``--peers``): transformers, and ONNX
Runtime running the exported transformers model in float32 and in int8, each with the same
threads. The served / peer ratios are what perceiver-serve gains over what a user would write
instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from . import report
from .checkpoints import checkpoint_dir
from .configs import classifier_spec
from .servers import Service, baseline_server, perceiver_serve, write_repository

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TMP = DEFAULT_OUT / "tmp"
#: Variant → model.toml settings.
VARIANTS = {
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "int8": {"dtype": "int8"},
    "compiled": {"dtype": "float32", "compile": True},
    "compiled-int8": {"dtype": "int8", "compile": True},
    # Two instances of one thread each (model.toml ``instances = 2``, ``threads = 1``).
    "fp32-x2": {"dtype": "float32", "instances": 2, "threads": 1},
    "bf16-x2": {"dtype": "bfloat16", "instances": 2, "threads": 1},
    "int8-x2": {"dtype": "int8", "instances": 2, "threads": 1},
    # The same, each instance in a worker process of its own (model.toml ``worker = "process"``).
    "fp32-x2p": {"dtype": "float32", "instances": 2, "threads": 1, "worker": "process"},
    "bf16-x2p": {"dtype": "bfloat16", "instances": 2, "threads": 1, "worker": "process"},
    "int8-x2p": {"dtype": "int8", "instances": 2, "threads": 1, "worker": "process"},
    "fp32-p": {"dtype": "float32", "worker": "process"},
    "bf16-p": {"dtype": "bfloat16", "worker": "process"},
    "int8-p": {"dtype": "int8", "worker": "process"},
}
BATCHING = {"max_batch_size": 32, "max_delay_ms": 5, "max_queue": 1024, "timeout_ms": 300_000}
LEVELS = (16, 32)
#: The plain FastAPI servers beside ours (:mod:`benchmarks.baseline_server`), by engine: what a user could
#: write instead, one request at a time.
PEERS = {"transformers": "transformers + FastAPI", "onnxruntime": "ONNX Runtime fp32 + FastAPI",
         "onnxruntime-int8": "ONNX Runtime int8 + FastAPI"}
BASELINE = PEERS["transformers"]


def _served(servers: dict[str, tuple[Service, str]], rounds: int, requests: int, duration: float,
            say: report.Progress, after_round: Callable[[int], None] = lambda r: None, levels: tuple[int, ...] = LEVELS,
            ) -> tuple[dict[str, dict[int, list[dict[str, Any]]]], dict[str, tuple[float, float]]]:
    """Each target's load levels per round, and its server's (user, system) CPU seconds per answered request;
    ``after_round(r)`` runs after each round.

    ``servers``: target → (its server, the ``#model`` suffix of its loadgen target). CPU time per
    request hardly depends on what else runs on the machine, so beside the throughput (which
    does) it tells whether the server does more work per item than its model; system time is
    mostly the kernel faulting memory in.
    """
    import psutil

    from .server_bench import loadgen

    served: dict[str, dict[int, list[dict[str, Any]]]] = {t: {c: [] for c in levels} for t in servers}
    cpu, answered = {t: [0.0, 0.0] for t in servers}, dict.fromkeys(servers, 0)
    for r in range(rounds):
        say(f"  round {r + 1}/{rounds}: {', '.join(servers)} at {levels} clients")
        for target, (server, model) in servers.items():
            process = psutil.Process(server.process.pid)
            before = _cpu_times(process)
            result = loadgen(["sweep", "--endpoint", "text", "--target", f"{target}={server.url}{model}",
                              "--levels", ",".join(map(str, levels)), "--requests", str(requests),
                              "--duration", str(duration)], timeout=len(levels) * (duration + 60) + 60)
            after = _cpu_times(process)
            cpu[target][0] += after[0] - before[0]
            cpu[target][1] += after[1] - before[1]
            for c, level in zip(levels, result["results"][target]):
                served[target][c].append(level)
                answered[target] += level["ok"]
        after_round(r)
    nan = float("nan")
    return served, {t: (cpu[t][0] / answered[t], cpu[t][1] / answered[t]) if answered[t] else (nan, nan)
                    for t in servers}


def _cpu_times(process: Any) -> tuple[float, float]:
    """(user, system) CPU seconds of a server process and its worker processes (``worker = "process"``)."""
    times = [process.cpu_times()] + [child.cpu_times() for child in process.children(recursive=True)]
    return sum(t.user for t in times), sum(t.system for t in times)


def isolated(checkpoint: Path, variant: str, threads: int, budget_s: float,
             levels: tuple[int, ...] = LEVELS) -> tuple[dict[int, float], float]:
    """Items/s of the variant alone on the load generator's texts, ``size`` texts at a time for each
    ``size`` of ``levels`` (each instance at least one), and its CPU seconds per item (all sizes together).

    Measured in processes of their own, arranged as the server arranges the variant: the model
    loaded on a thread that then ends and each instance passing batches of ``size / instances``
    texts on a thread of its own with its torch threads, all at once (for ``worker = "process"``,
    one process per instance). This process has computed on several threads already (it made the
    checkpoint), and OpenMP then slows every other thread's parallel work (see
    :mod:`perceiver_serve.modeling.threads`): a measurement here would undercount the model.
    """
    from perceiver_serve.modeling import ByteTokenizer

    from .loadgen import TEXTS

    settings = VARIANTS[variant]
    instances = settings.get("instances", 1)
    per_instance = settings.get("threads") or max(1, threads // instances)
    processes, per_process = (instances, 1) if settings.get("worker") == "process" else (1, instances)
    tokenizer = ByteTokenizer()
    batches = {size: tokenizer.batch([tokenizer.encode(TEXTS[i % len(TEXTS)])
                                       for i in range(max(1, size // instances))])
               for size in levels}
    rates, items, cpu = {}, 0, 0.0
    for size, (ids, mask) in batches.items():
        rates[size], counted, seconds = _in_processes(checkpoint, settings, ids, mask, processes, per_process,
                                                      per_instance, budget_s)
        items, cpu = items + counted, cpu + seconds
    return rates, cpu / items


def _in_processes(checkpoint: Path, settings: dict[str, Any], ids: Any, mask: Any, processes: int, instances: int,
                  threads: int, budget_s: float) -> tuple[float, int, float]:
    """``processes`` processes of ``instances`` instances of ``threads`` torch threads each passing
    ``(ids, mask)`` for ``budget_s``, after each has run one pass (a compiled model compiles there):
    ``(items/s, items, CPU seconds)``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes * instances + 1), context.Queue()
    started = [context.Process(target=_alone, args=(checkpoint, settings, ids, mask, instances, threads, budget_s,
                                                    ready, results))
               for _ in range(processes)]
    for process in started:
        process.start()
    ready.wait()
    done = [results.get(timeout=600) for _ in started]
    for process in started:
        process.join()
    return sum(count / seconds for count, seconds, _ in done), sum(d[0] for d in done), sum(d[2] for d in done)


def _alone(checkpoint: Path, settings: dict[str, Any], ids: Any, mask: Any, instances: int, threads: int,
           budget_s: float, ready: Any, results: Any) -> None:
    """One process of :func:`_in_processes`: (items, seconds, CPU seconds) of its instances into ``results``."""
    from perceiver_serve.modeling.threads import in_fresh_thread, serve_single_threaded
    from perceiver_serve.modeling import load_model

    serve_single_threaded()  # as the server: only the instances' threads compute with several
    model = in_fresh_thread(lambda: load_model(checkpoint, dtype=settings["dtype"],
                                               compile=settings.get("compile", False)))
    outcomes: list[tuple[int, float, float, float]] = []

    def loop() -> None:
        outcomes.append(_passes(model, ids, mask, threads, ready, lambda elapsed: elapsed < budget_s))

    workers = [threading.Thread(target=loop) for _ in range(instances)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    results.put((sum(o[0] for o in outcomes), max(o[1] for o in outcomes), cpu))


def _passes(model: Any, ids: Any, mask: Any, threads: int, ready: Any,
            keep_going: Callable[[float], bool]) -> tuple[int, float, float, float]:
    """One instance's loop: a first pass (a compiled model compiles there), ``ready.wait()``, then passes while
    ``keep_going(seconds since ready)``: ``(items, seconds, process CPU seconds at the start and at the end)``."""
    import torch

    from perceiver_serve.modeling.threads import use_torch_threads

    use_torch_threads(threads)
    count = 0
    with torch.inference_mode():
        model(ids, mask)
        ready.wait()
        started, cpu_started = time.perf_counter(), time.process_time()
        while keep_going(time.perf_counter() - started):
            model(ids, mask)
            count += ids.shape[0]
    return count, time.perf_counter() - started, cpu_started, time.process_time()


def measure(variants: list[str], quick: bool, threads: int, rounds: int, say: report.Progress,
            batching: dict[str, Any] = BATCHING, peers: tuple[str, ...] = tuple(PEERS),
            levels: tuple[int, ...] = LEVELS) -> dict[str, Any]:
    from .baseline_server import onnx_model

    spec = classifier_spec(quick)
    checkpoint = checkpoint_dir(spec)
    models = {f"text-{v}": {"task": "text-classification", "source": str(checkpoint), "device": "cpu",
                            "default": False, **VARIANTS[v]} for v in variants}
    requests, duration = (16, 3.0) if quick else (192, 10.0)
    for engine in peers:
        if engine != "transformers":
            say(f"exporting the transformers model for {PEERS[engine]} (cached): {onnx_model(checkpoint, engine).name}")
    TMP.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="served-ratio-", dir=TMP) as work:
        repository = write_repository(Path(work) / "repository", models, batching)
        server, _ = perceiver_serve("perceiver-serve-variants", repository, Path(work), threads)
        baselines = {PEERS[e]: baseline_server(f"{e}-fastapi", checkpoint, Path(work), threads, e) for e in peers}
        try:
            say(f"starting perceiver-serve with {', '.join(models)} (compiled variants warm every shape first), "
                f"and {', '.join(baselines)}")
            server.wait_ready(timeout=1800)
            for baseline in baselines.values():
                baseline.wait_ready(timeout=600)
            targets = {**{v: (server, f"#text-{v}") for v in variants},
                       **{label: (baseline, "") for label, baseline in baselines.items()}}
            alone_runs: dict[str, list[tuple[dict[int, float], float]]] = {v: [] for v in variants}

            def measure_alone(r: int) -> None:  # each round, so that served and isolated share the machine's mood
                for v in variants:
                    say(f"  round {r + 1}/{rounds}: {v} alone, batches of {levels} (servers idle)")
                    alone_runs[v].append(isolated(checkpoint, v, threads, 0.5 if quick else 3.0, levels))

            served, served_cpu = _served(targets, rounds, requests, duration, say, measure_alone, levels)
        finally:
            exit_code = server.stop()
            for baseline in baselines.values():
                baseline.stop()
    def median_rps(target: str, c: int) -> float:
        return statistics.median(level["throughput_rps"] for level in served[target][c])

    def loadgen_cpu(target: str, c: int) -> float:
        return statistics.mean(level["loadgen_cpu_ms_per_request"] for level in served[target][c])

    rows = []
    for v in variants:
        alone_rounds = {c: [rates[c] for rates, _ in alone_runs[v]] for c in levels}
        alone = {c: statistics.median(alone_rounds[c]) for c in levels}
        alone_cpu = statistics.mean(cpu for _, cpu in alone_runs[v])
        for c in levels:
            batches = [level["mean_batch_size"] for level in served[v][c] if level["mean_batch_size"]]
            rows.append({"variant": v, "concurrency": c, "served_rps": [level["throughput_rps"] for level in served[v][c]],
                         "served_median": median_rps(v, c), "mean_batch": statistics.mean(batches) if batches else None,
                         "isolated": alone[c], "isolated_rounds": alone_rounds[c], "ratio": median_rps(v, c) / alone[c],
                         "vs_peers": {label: median_rps(v, c) / median_rps(label, c) for label in baselines},
                         "served_cpu_ms_per_request": 1000 * sum(served_cpu[v]),
                         "served_system_cpu_ms_per_request": 1000 * served_cpu[v][1],
                         "isolated_cpu_ms_per_item": 1000 * alone_cpu, "loadgen_cpu_ms_per_request": loadgen_cpu(v, c),
                         "failed": sum(level["failed"] for level in served[v][c])})
    peer_rows = {label: [{"concurrency": c, "served_rps": [level["throughput_rps"] for level in served[label][c]],
                          "served_median": median_rps(label, c), "served_cpu_ms_per_request": 1000 * sum(served_cpu[label]),
                          "failed": sum(level["failed"] for level in served[label][c])} for c in levels]
                 for label in baselines}
    return {"model": spec.name, "config": spec.config, "batching": batching, "rounds": rounds,
            "requests_per_level": requests, "rows": rows, "peers": peer_rows, "server_exit_code": exit_code}


def _rounds(row: dict[str, Any]) -> str:
    return f"{row['served_median']:.1f} ({', '.join(f'{x:.1f}' for x in row['served_rps'])})"


def markdown(result: dict[str, Any]) -> str:
    peers = list(result["peers"])
    rows = [[r["variant"], str(r["concurrency"]), _rounds(r),
             "–" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}", f"{r['isolated']:.1f}",
             f"**{r['ratio']:.0%}**", *(f"**{r['vs_peers'][label]:.2f}×**" for label in peers),
             f"{r['served_cpu_ms_per_request']:.1f} (system {r['served_system_cpu_ms_per_request']:.1f}) / "
             f"{r['isolated_cpu_ms_per_item']:.1f}", f"{r['loadgen_cpu_ms_per_request']:.2f}", str(r["failed"])]
            for r in result["rows"]]
    medians = {label: {b["concurrency"]: b["served_median"] for b in levels} for label, levels in result["peers"].items()}
    for label, levels in result["peers"].items():
        rows += [[label, str(b["concurrency"]), _rounds(b), "1", "–", "–",
                  *(f"{b['served_median'] / medians[other][b['concurrency']]:.2f}×" for other in peers),
                  f"{b['served_cpu_ms_per_request']:.1f}", "–", str(b["failed"])] for b in levels]
    return (f"## Served vs isolated: `{result['model']}` in every variant\n\n"
            f"One server holds every variant (`max_batch_size = {result['batching']['max_batch_size']}`, "
            f"`max_delay_ms = {result['batching']['max_delay_ms']}`), and {', '.join(peers)} (each one request at a "
            "time, the same checkpoint; ONNX Runtime runs the transformers model exported with `torch.onnx.export`, "
            "int8 after `quantize_dynamic`, with the same threads) run beside it; "
            f"{result['rounds']} rounds of at most "
            f"{result['requests_per_level']} requests per level, all interleaved. Isolated: the same model "
            "alone in a process of its own as the server runs it (each instance on a thread of its own, or for worker "
            "processes one process each), batches of as many texts as there are clients, measured after each round "
            "with the servers idle; the median of the rounds. "
            "CPU ms: the server process's CPU time (with its worker processes') per answered request (both levels; "
            "of it, the kernel's) against the model's alone "
            "per item; unlike throughput it hardly depends on other load on the machine. The load generator's own "
            "CPU per request is taken from the same two cores.\n\n"
            + report.markdown_table(["variant", "clients", "served req/s, median (rounds)", "mean batch",
                                     "isolated items/s", "served / isolated", *(f"vs {label}" for label in peers),
                                     "CPU ms served / isolated", "loadgen CPU ms", "failed"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few requests: checks the harness")
    parser.add_argument("--variants", default="fp32,fp32-x2,fp32-x2p,int8,int8-x2,int8-x2p,compiled", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-delay-ms", type=float, default=BATCHING["max_delay_ms"],
                        help="every variant's batching max_delay_ms")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, at least one: " + ", ".join(PEERS))
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="comma-separated client counts (the isolated figure uses batches of as many texts)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    if not peers or (unknown := [p for p in peers if p not in PEERS]):
        parser.error(f"--peers: choose at least one of {list(PEERS)}")
    try:
        levels = tuple(int(c) for c in args.levels.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        parser.error("--levels: positive client counts, e.g. 1,4,16,32")
    say = report.Progress(sys.stderr)
    result = measure(variants, args.quick, args.threads, args.rounds, say,
                     batching={**BATCHING, "max_delay_ms": args.max_delay_ms}, peers=peers, levels=levels)
    result["environment"] = report.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "served_ratio.json", result)
    (args.out / "served_ratio.md").write_text(
        markdown(result) + "\n" + report.machine_line(result["environment"], args.threads) + "\n", encoding="utf-8")
    for r in result["rows"]:
        say(f"{r['variant']:14s} c={r['concurrency']}: served {r['served_median']:.1f} req/s, isolated "
            f"{r['isolated']:.1f} items/s, ratio {r['ratio']:.0%}, "
            + ", ".join(f"{ratio:.2f}x {label}" for label, ratio in r["vs_peers"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
