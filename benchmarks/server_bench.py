"""Server benchmark: ``python -m benchmarks.server_bench [--quick] [--out DIR]``.

Starts, on loopback, perceiver-serve with dynamic batching on, the same models with batching
off (``max_batch_size = 1``), and a plain transformers + FastAPI server (one forward pass per
request, :mod:`benchmarks.baseline_server`) for the headline text classifier, all at once
and idle while not measured. A load generator in its own process (:mod:`benchmarks.loadgen`)
sweeps concurrency for text classification (a mid-size classifier, random weights written at
run time), image classification and optical flow (the demo models), the servers interleaved
level by level. Then sequential requests time REST against gRPC on the tiny demo text model.
Last, :mod:`benchmarks.served_ratio` serves issue 12's mid-size classifier in each precision and
compile setting (``--variants``) and sets its served throughput beside the isolated model's and
beside FastAPI scripts running transformers and ONNX Runtime (fp32, int8) one request at a time.
Writes ``server.json``, ``server.md``, ``server_throughput.png`` and ``server_latency.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report, served_ratio
from .measure import items_per_second
from .checkpoints import checkpoint_dir, load_reference
from .configs import server_text_spec
from .servers import (
    ROOT,
    Service,
    baseline_server,
    demo_model,
    perceiver_serve,
    write_repository,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TMP = DEFAULT_OUT / "tmp"
TARGET_RATIO = 1.3
LABELS = {"on": "batching on", "off": "batching off (max_batch_size 1)", "baseline": "transformers + FastAPI"}
STYLES = {"on": {"color": "tab:green"}, "off": {"color": "tab:orange"}, "baseline": {"color": "tab:grey"}}


@dataclasses.dataclass(frozen=True)
class Sweep:
    endpoint: str
    model: str
    levels: list[int]
    requests: int  # most requests per level and server
    duration: float  # most seconds per level and server
    baseline: bool = False
    loadgen_args: tuple[str, ...] = ()


def plan(quick: bool, flow_size: tuple[int, int]) -> list[Sweep]:
    flow_args = ("--flow-size", f"{flow_size[0]}x{flow_size[1]}")
    if quick:
        return [Sweep("text", "text-mid", [1, 4], 12, 3.0, baseline=True),
                Sweep("image", "image-classifier", [1, 4], 12, 3.0, loadgen_args=("--image-size", "64")),
                Sweep("flow", "optical-flow", [1, 4], 8, 3.0, loadgen_args=flow_args)]
    levels = [1, 2, 4, 8, 16, 32, 64]
    return [Sweep("text", "text-mid", levels, 400, 12.0, baseline=True),
            Sweep("image", "image-classifier", levels, 600, 6.0, loadgen_args=("--image-size", "224")),
            Sweep("flow", "optical-flow", [1, 4, 16, 64], 200, 6.0, loadgen_args=flow_args)]


#: ``[batching]`` of the two perceiver-serve configurations; only max_batch_size differs.
BATCHING = {
    "on": {"max_batch_size": 32, "max_delay_ms": 5, "max_queue": 1024, "timeout_ms": 300_000},
    "off": {"max_batch_size": 1, "max_delay_ms": 0, "max_queue": 1024, "timeout_ms": 300_000},
}


def repository_models(text_checkpoint: Path) -> dict[str, dict[str, Any]]:
    return {
        "text-mid": {"task": "text-classification", "source": str(text_checkpoint), "device": "cpu",
                     "dtype": "float32", "default": False},
        "text-sentiment": demo_model("text-sentiment"),
        "image-classifier": demo_model("image-classifier"),
        "optical-flow": demo_model("optical-flow"),
    }


def loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    """Run the load generator in its own process; its progress goes to our stderr."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True, timeout=timeout, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {' '.join(args)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_sweep(sweep: Sweep, servers: dict[str, Service]) -> dict[str, Any]:
    targets = []
    for label in ("on", "off", "baseline"):
        if label == "baseline" and not sweep.baseline:
            continue
        model = "" if label == "baseline" else f"#{sweep.model}"  # no /metrics on the baseline
        targets += ["--target", f"{label}={servers[label].url}{model}"]
    args = ["sweep", "--endpoint", sweep.endpoint, *targets, "--levels", ",".join(map(str, sweep.levels)),
            "--requests", str(sweep.requests), "--duration", str(sweep.duration), *sweep.loadgen_args]
    # Bound: each level and server runs at most `duration` plus the drain of the requests in flight.
    budget = len(targets) * len(sweep.levels) * (sweep.duration + 60) + 60
    result = loadgen(args, budget)
    result["model"] = sweep.model
    result["max_requests"], result["max_duration_s"] = sweep.requests, sweep.duration
    return result


def headline(text: dict[str, Any]) -> dict[str, Any]:
    """Batching on against off and against the baseline at concurrency 16–32 (the largest level in --quick)."""
    levels = text["levels"]
    chosen = [c for c in levels if 16 <= c <= 32] or [max(levels)]
    rows = []
    for c in chosen:
        i = levels.index(c)
        rps = {label: text["results"][label][i]["throughput_rps"] for label in ("on", "off", "baseline")}
        rows.append({"concurrency": c, "throughput_rps": rps,
                     "on_vs_off": rps["on"] / rps["off"] if rps["off"] else None,
                     "on_vs_baseline": rps["on"] / rps["baseline"] if rps["baseline"] else None})
    met = {key: all(r[key] is not None and r[key] >= TARGET_RATIO for r in rows)
           for key in ("on_vs_off", "on_vs_baseline")}
    return {"model": text["model"], "target_ratio": TARGET_RATIO, "levels": rows, "met": met}


def headline_rows(head: dict[str, Any]) -> list[list[str]]:
    """The headline table's rows (server.md and the README): concurrency, req/s of each server, ratios."""
    return [[str(r["concurrency"]), *(f"{r['throughput_rps'][k]:.1f}" for k in ("on", "off", "baseline")),
             f"**{r['on_vs_off']:.2f}×**", f"**{r['on_vs_baseline']:.2f}×**"] for r in head["levels"]]


def model_batch_scaling(checkpoint: Path, threads: int, budget_s: float) -> dict[str, Any]:
    """Items/s of the headline model alone, batch 1 against batch 16: the ceiling batching can reach."""
    import torch
    from perceiver_serve.modeling import ByteTokenizer, load_model

    from .loadgen import TEXTS

    torch.set_num_threads(threads)
    tokenizer = ByteTokenizer()

    def rate(forward, size: int) -> float:
        ids, mask = tokenizer.batch([tokenizer.encode(TEXTS[i % len(TEXTS)]) for i in range(size)])
        return items_per_second(lambda: forward(ids, mask), size, budget_s)

    ours, reference = load_model(checkpoint), load_reference(checkpoint)
    with torch.inference_mode():
        items_per_s = {str(size): rate(ours, size) for size in (1, 16)}
        ref_rate = rate(lambda ids, mask: reference(inputs=ids, attention_mask=mask), 1)
    return {"items_per_s": items_per_s, "batch16_vs_batch1": items_per_s["16"] / items_per_s["1"],
            "transformers_batch1_items_per_s": ref_rate}


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    env, head = payload["environment"], payload["headline"]
    text = [
        "# Server benchmark: dynamic batching on vs off vs a plain transformers server\n",
        (f"Run {payload['started']} ({'quick, tiny sizes' if payload['quick'] else 'full'}), "
         f"{payload['duration_s'] / 60:.1f} min. {report.machine_line(env, payload['server_threads'])} "
         "(torch threads: per server.)\n"),
        ("All servers run at once on loopback (idle while another is measured); a load generator in its own "
         "process runs N closed-loop clients per level, the servers interleaved level by level. A level ends "
         "after a bounded number of requests or seconds; requests in flight are then awaited and counted. "
         "Throughput counts checked answers (status 200, well-formed body) over the level's wall time. Mean "
         "batch size: work items per forward pass, from the server's `perceiver_batch_size` histogram. "
         f"Batching on: `{_batching(payload['batching']['on'])}`; off: `{_batching(payload['batching']['off'])}`.\n"),
        "## Headline: mid-size text classifier\n",
        (f"`{head['model']}`: PerceiverForSequenceClassification, random weights, "
         f"{_shape(payload['text_model_config'])}; ≈100-byte texts. Target: batching on ≥ "
         f"{head['target_ratio']}× batching off and ≥ {head['target_ratio']}× transformers + FastAPI (one request "
         "at a time under a lock, same checkpoint, same byte tokenisation), at concurrency 16–32.\n"),
        report.markdown_table(
            ["concurrency", "on req/s", "off req/s", "baseline req/s", "on / off", "on / baseline"],
            headline_rows(head)),
        (f"\nTarget on / off ≥ {head['target_ratio']}×: **{_yes(head['met']['on_vs_off'])}**; on / baseline ≥ "
         f"{head['target_ratio']}×: **{_yes(head['met']['on_vs_baseline'])}**.\n"),
    ]
    scaling = payload.get("model_batch_scaling")
    if scaling:
        text.append(
            f"The model alone (same process, no server) runs {scaling['items_per_s']['1']:.1f} items/s at batch 1 "
            f"and {scaling['items_per_s']['16']:.1f} items/s at batch 16 ({scaling['batch16_vs_batch1']:.2f}×): "
            "the most batching can gain on this CPU. transformers runs it at "
            f"{scaling['transformers_batch1_items_per_s']:.1f} items/s at batch 1 (the baseline server's ceiling).\n")
    for note in payload.get("notes", []):
        text.append(note + "\n")
    for endpoint, sweep in payload["sweeps"].items():
        text.append(f"## {endpoint}: model `{sweep['model']}`\n")
        rows = []
        for i, c in enumerate(sweep["levels"]):
            for label, levels in sweep["results"].items():
                r = levels[i]
                lat = r["latency_ms"]
                batch = r["mean_batch_size"]
                rows.append([str(c), LABELS[label], f"{r['throughput_rps']:.1f}", _ms(lat["p50"]), _ms(lat["p95"]),
                             _ms(lat["p99"]), f"{r['ok']}/{r['requests']}", str(r["failed"]),
                             "–" if batch is None else f"{batch:.2f}"])
        text.append(report.markdown_table(
            ["concurrency", "server", "req/s", "p50 ms", "p95 ms", "p99 ms", "ok/sent", "failed", "mean batch"],
            rows))
    over = payload["overhead"]
    text += [
        f"## Per-request overhead: REST vs gRPC (`{over['model']}`, sequential)\n",
        (f"One client, one request at a time, the four kinds interleaved: ClassifyText of a {over['text_bytes']}-byte "
         "text, answered, and rejected (an empty text: REST 400, gRPC INVALID_ARGUMENT), which isolates "
         "transport, parsing and error handling from the model. Client time included.\n"),
        report.markdown_table(
            ["request", "n", "median ms", "p95 ms", "mean ms", "failed"],
            [[name.replace("_", " "), str(r["requests"]), f"{r['p50']:.2f}", f"{r['p95']:.2f}", f"{r['mean']:.2f}",
              str(r["failed"])] for name, r in over["latency_ms"].items()]),
        (f"\nREST − gRPC, median: answered {over['rest_minus_grpc_ms']['classify']:+.2f} ms, "
         f"rejected {over['rest_minus_grpc_ms']['rejected']:+.2f} ms.\n"),
        *([served_ratio.markdown(payload["served_ratio"])] if payload.get("served_ratio") else []),
        "Plots: [`server_throughput.png`](server_throughput.png), [`server_latency.png`](server_latency.png).\n",
        "## Environment\n",
        report.markdown_table(["key", "value"], [[k, str(v)] for k, v in env.items()]),
    ]
    path.write_text("\n".join(text), encoding="utf-8")


def _batching(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in values.items())


def _shape(config: dict[str, Any]) -> str:
    return (f"{config['num_latents']} latents × {config['d_latents']}, "
            f"{config['num_blocks'] * config['num_self_attends_per_block']} self-attention layers, "
            f"inputs d_model {config['d_model']}")


def _yes(met: bool) -> str:
    return "met" if met else "NOT met"


def write_charts(out: Path, sweeps: dict[str, dict[str, Any]]) -> None:
    throughput, latency, styles = {}, {}, {}
    for endpoint, sweep in sweeps.items():
        title = f"{endpoint} ({sweep['model']})"
        throughput[title] = {LABELS[label]: (sweep["levels"], [r["throughput_rps"] for r in rows])
                             for label, rows in sweep["results"].items()}
        latency[title] = {}
        for label, rows in sweep["results"].items():
            for q, dash in (("p50", "-"), ("p95", "--")):
                name = f"{label} {q}"
                latency[title][name] = (sweep["levels"], [r["latency_ms"][q] for r in rows])
                styles[name] = {**STYLES[label], "linestyle": dash}
    report.line_panels(out / "server_throughput.png", throughput, title="Throughput vs concurrency (loopback)",
                       xlabel="concurrent clients", ylabel="requests / s",
                       styles={LABELS[k]: v for k, v in STYLES.items()})
    report.line_panels(out / "server_latency.png", latency, title="Latency vs concurrency: p50 (solid), p95 (dashed)",
                       xlabel="concurrent clients", ylabel="ms", styles=styles, logy=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, concurrency 1 and 4, few requests: < 1 min")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server (default 2)")
    parser.add_argument("--variants", default=None,
                        help="served-vs-isolated variants (default: fp32,int8 with --quick, else all of "
                             + ", ".join(served_ratio.VARIANTS) + "); 'none' skips them")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    say = report.Progress(sys.stderr)  # stdout stays free for the load generator's JSON
    started = datetime.datetime.now().isoformat(timespec="seconds")

    spec = server_text_spec(args.quick)
    say(f"checkpoint of the text classifier ({'tiny' if args.quick else _shape(spec.config)})")
    text_checkpoint = checkpoint_dir(spec)
    flow_config = json.loads((Path(demo_model("optical-flow")["source"]) / "config.json").read_text())
    sweeps = plan(args.quick, tuple(flow_config["train_size"]))

    TMP.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="server-bench-", dir=TMP) as work:
        work_dir = Path(work)
        models = repository_models(text_checkpoint)
        servers: dict[str, Service] = {}
        grpc_ports: dict[str, int] = {}
        try:
            for label, batching in BATCHING.items():
                repository = write_repository(work_dir / f"repository-{label}", models, batching)
                servers[label], grpc_ports[label] = perceiver_serve(f"perceiver-serve-{label}", repository,
                                                                    work_dir, args.threads)
            servers["baseline"] = baseline_server("baseline", text_checkpoint, work_dir, args.threads)
            say("starting servers: " + ", ".join(f"{k} {s.url}" for k, s in servers.items()))
            for service in servers.values():
                service.wait_ready()
            say("all servers ready")
            results = {}
            for sweep in sweeps:
                say(f"sweep {sweep.endpoint} on {sweep.model}: concurrency {sweep.levels}, at most "
                    f"{sweep.requests} requests / {sweep.duration:.0f} s per level and server")
                results[sweep.endpoint] = run_sweep(sweep, servers)
            say("REST vs gRPC overhead on text-sentiment (batching on server)")
            n = ("30", "5") if args.quick else ("300", "30")
            over = loadgen(["overhead", "--url", servers["on"].url, "--grpc-port", str(grpc_ports["on"]),
                            "--model", "text-sentiment", "--requests", n[0], "--warmup", n[1]], 300)
        finally:
            exit_codes = {label: service.stop() for label, service in servers.items()}
        say(f"servers stopped (exit codes {exit_codes})")

    say("model alone: batch 1 vs batch 16 items/s")
    scaling = model_batch_scaling(text_checkpoint, args.threads, 0.5 if args.quick else 5.0)
    variants = args.variants or ("fp32,int8-x2" if args.quick else ",".join(served_ratio.VARIANTS))
    ratio = None
    if variants != "none":
        say(f"served vs isolated: {variants}")
        ratio = served_ratio.measure(variants.split(","), args.quick, args.threads, 1 if args.quick else 3, say)
    lat = over["latency_ms"]
    over["rest_minus_grpc_ms"] = {"classify": lat["rest_classify"]["p50"] - lat["grpc_classify"]["p50"],
                                  "rejected": lat["rest_rejected"]["p50"] - lat["grpc_rejected"]["p50"]}
    payload: dict[str, Any] = {
        "started": started, "quick": args.quick, "duration_s": time.perf_counter() - say.start,
        "environment": report.environment(), "server_threads": args.threads,
        "batching": BATCHING, "text_model_config": spec.config, "headline": headline(results["text"]),
        "model_batch_scaling": scaling, "sweeps": results, "overhead": over, "server_exit_codes": exit_codes,
        "served_ratio": ratio,
    }
    report.write_json(args.out / "server.json", payload)
    write_markdown(args.out / "server.md", payload)
    write_charts(args.out, results)
    head = payload["headline"]
    for row in head["levels"]:
        say(f"headline c={row['concurrency']}: on/off {row['on_vs_off']:.2f}×, on/baseline {row['on_vs_baseline']:.2f}×")
    say(f"targets: on/off {_yes(head['met']['on_vs_off'])}, on/baseline {_yes(head['met']['on_vs_baseline'])}")
    say(f"wrote {args.out / 'server.json'}, server.md, server_throughput.png, server_latency.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
