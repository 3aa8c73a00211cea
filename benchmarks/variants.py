"""Every way to run one model, side by side: ``python -m benchmarks.variants [--quick] [--models ...]``.

Rows: transformers fp32 (the reference), ours in float32, bfloat16 and int8, ours compiled
(``torch.compile`` of the encoder, in float32, bfloat16 and int8), and ONNX Runtime running the
transformers model exported with ``torch.onnx.export``, in float32 and after int8 dynamic
quantization. All rows run in one process on the same inputs, alternating, so load from other
work on a shared machine hits them alike; each row gives items per second, its ratio to
transformers and to both ONNX Runtime rows, and its arg-max agreement and largest logit
difference against transformers fp32 on a separate, larger set of inputs. Every result names
the CPU's features (AVX2, AVX-512, BF16, VNNI, AMX): which rows can be fast depends on them.

Workloads:

* ``text-classifier``: the mid-size classifier of issue 12 (128 latents × 512, 8 self-attention
  layers, d_model 256, qk 256, 3 labels): 48 texts of 50–400 random bytes in batches of 16,
  each padded to its longest text with a mask, and the same texts one at a time; agreement on
  256 other texts.
* ``mlm-2048``: the published MLM size, one text of 2,048 bytes, all positions decoded.
* ``image-learned``: the published learned-position image classifier, one 224² image.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from perceiver_serve.allocator import fix_mmap_threshold
from perceiver_serve.modeling import ByteTokenizer, load_model
from perceiver_serve.settings import Settings

from . import report
from .checkpoints import checkpoint_dir, load_reference
from .configs import HeadSpec, classifier_spec, head_spec
from .peers import ONNX_CACHE, TEXT_AXES, OnnxModel, export, quantized
from .report import Progress

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
Batch = tuple[torch.Tensor, ...]

#: Our rows: name → (dtype, compiled).
OURS = {
    "ours fp32": ("float32", False), "ours bf16": ("bfloat16", False), "ours int8": ("int8", False),
    "ours compiled fp32": ("float32", True), "ours compiled bf16": ("bfloat16", True),
    "ours compiled int8": ("int8", True),
}
REFERENCE, ORT_FP32, ORT_INT8 = "transformers fp32", "onnxruntime fp32", "onnxruntime int8"
ROWS = (REFERENCE, *OURS, ORT_FP32, ORT_INT8)
#: Seconds of quiet before each row is timed. Idle threads go on spinning after a run (ONNX Runtime's
#: pool; OpenMP's), on the same two cores as the next row's: back to back, the row after ONNX Runtime
#: was measured 5-18% slower (MLM-2048 in int8, two threads). Each row starts on a quiet machine.
PAUSE_S = 0.3


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    spec: Callable[[bool], HeadSpec]
    batches: Callable[[dict[str, Any], bool], dict[str, list[Batch]]]  # timed sets, and "agreement"
    input_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def _texts(count: int, seed: int, lengths: tuple[int, int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(lengths[0], lengths[1] + 1, (count,), generator=g).tolist()
    return [ByteTokenizer().encode(bytes(torch.randint(0, 256, (n,), generator=g).tolist())) for n in sizes]


def _padded(texts: list[list[int]], size: int) -> list[Batch]:
    return [ByteTokenizer().batch(texts[i:i + size]) for i in range(0, len(texts), size)]


def _classifier_batches(config: dict[str, Any], quick: bool) -> dict[str, list[Batch]]:
    lengths = (50, 400) if not quick else (5, 60)
    timed = _texts(48 if not quick else 8, 1, lengths)
    return {"batch 16": _padded(timed, 16), "batch 1": _padded(timed[:16], 1),
            "agreement": _padded(_texts(256 if not quick else 16, 2, lengths), 16)}


def _mlm_batches(config: dict[str, Any], quick: bool) -> dict[str, list[Batch]]:
    length = config["max_position_embeddings"] - 2
    return {"batch 1": _padded(_texts(1, 3, (length, length)), 1),
            # A random-weight MLM answers nearly one byte at every position of a text, so agreement
            # moves text by text: eight texts, not two (whose 50% was one text's flip).
            "agreement": _padded(_texts(8 if not quick else 2, 4, (length, length)), 1)}


def _image_batches(config: dict[str, Any], quick: bool) -> dict[str, list[Batch]]:
    size = config["image_size"]
    g = torch.Generator().manual_seed(5)
    return {"batch 1": [(torch.randn(1, 3, size, size, generator=g),)],
            "agreement": [(torch.randn(4, 3, size, size, generator=g),)]}


WORKLOADS = {w.name: w for w in (
    Workload("text-classifier", "mid-size text classifier (issue 12): 128 latents × 512, 8 layers, d_model 256",
             classifier_spec, _classifier_batches, ("inputs", "attention_mask"), TEXT_AXES),
    Workload("mlm-2048", "MLM at the published size, 2,048 bytes, all positions",
             lambda quick: head_spec("language-perceiver", quick), _mlm_batches, ("inputs", "attention_mask"),
             TEXT_AXES),
    Workload("image-learned", "image classification 224², learned positions (published size)",
             lambda quick: head_spec("vision-perceiver-learned", quick), _image_batches, ("inputs",),
             {"inputs": {0: "batch"}}),
)}


def implementations(workload: Workload, quick: bool, rows: list[str], threads: int,
                    say: Progress) -> dict[str, Callable[[Batch], torch.Tensor]]:
    """Row name → a function from one batch to its logits (float32)."""
    spec = workload.spec(quick)
    directory = checkpoint_dir(spec)
    reference = load_reference(directory)
    out: dict[str, Callable[[Batch], torch.Tensor]] = {}
    if REFERENCE in rows:
        names = workload.input_names
        out[REFERENCE] = lambda batch: reference(**dict(zip(names, batch))).logits
    for row in rows:
        if row in OURS:
            dtype, compiled = OURS[row]
            say(f"  loading {row}")
            model = load_model(directory, dtype=dtype, compile=compiled)
            out[row] = _ours(model)
    if ORT_FP32 in rows or ORT_INT8 in rows:
        say("  exporting the transformers model to ONNX (cached)")
        example = workload.batches(spec.config, True)["agreement"][0]
        path = export(reference, example, workload.input_names, workload.dynamic_axes,
                      ONNX_CACHE / f"{directory.name}.onnx")
        if ORT_FP32 in rows:
            session = OnnxModel(path, threads)
            out[ORT_FP32] = lambda batch, s=session: s(*batch)
        if ORT_INT8 in rows:
            say("  quantizing it (onnxruntime.quantization.quantize_dynamic, cached)")
            session = OnnxModel(quantized(path), threads)
            out[ORT_INT8] = lambda batch, s=session: s(*batch)
    return {row: out[row] for row in rows}


def _ours(model: torch.nn.Module) -> Callable[[Batch], torch.Tensor]:
    def run(batch: Batch) -> torch.Tensor:
        first = batch[0] if batch[0].dtype == torch.long else batch[0].to(model.dtype)
        return model(first, *batch[1:]).float()
    return run


def run_workload(workload: Workload, quick: bool, rows: list[str], reps: int, threads: int,
                 say: Progress, pause: float = PAUSE_S) -> dict[str, Any]:
    spec = workload.spec(quick)
    sets = workload.batches(spec.config, quick)
    impls = implementations(workload, quick, rows, threads, say)
    agreement_set = sets.pop("agreement")
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for row, fn in impls.items():
            say(f"  agreement set through {row} (also its warm-up)")
            outputs[row] = torch.cat([fn(b).flatten(0, -2) for b in agreement_set])
            for batches in sets.values():
                for batch in batches:
                    fn(batch)
        timings: dict[str, dict[str, list[float]]] = {name: {row: [] for row in impls} for name in sets}
        for rep in range(reps):
            for name, batches in sets.items():
                items = sum(b[0].shape[0] for b in batches)
                for row, fn in impls.items():
                    time.sleep(pause)
                    started = time.perf_counter()
                    for batch in batches:
                        fn(batch)
                    timings[name][row].append(items / (time.perf_counter() - started))
            say(f"  rep {rep + 1}/{reps}: " + ", ".join(
                f"{row} {statistics.median(timings[name][row]):.1f}/s" for name in sets for row in impls))
    result: dict[str, Any] = {"workload": workload.name, "title": workload.title, "sets": list(sets), "rows": []}
    reference = outputs.get(REFERENCE)
    for row in impls:
        entry: dict[str, Any] = {"row": row}
        for name in sets:
            samples = timings[name][row]
            entry[name] = {"items_per_s": statistics.median(samples), "spread": (max(samples) - min(samples)) / 2,
                           "samples": samples}
        if reference is not None:
            got = outputs[row]
            entry["argmax_agreement"] = (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
            entry["agreement_rows"] = got.shape[0]
            entry["max_abs_diff"] = (got - reference).abs().max().item()
        result["rows"].append(entry)
    del impls, outputs
    gc.collect()
    return result


def _ratio(result: dict[str, Any], row: dict[str, Any], other: str, name: str) -> str:
    base = next((r for r in result["rows"] if r["row"] == other), None)
    return "–" if base is None else f"{row[name]['items_per_s'] / base[name]['items_per_s']:.2f}×"


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    text = ["# Every way to run a model: ours, transformers and ONNX Runtime\n",
            f"Run {payload['started']} ({'quick, tiny configs' if payload['quick'] else 'benchmark sizes'}), "
            f"{payload['duration_s'] / 60:.1f} min, {payload['reps']} repetitions. "
            f"{report.machine_line(payload['environment'])} ONNX Runtime {payload['onnxruntime']}.\n",
            "Items per second: medians ± half the range over the repetitions, every row alternating with the "
            "others in one process, which runs with the server's allocator setting (glibc's mmap threshold fixed "
            f"at 32 MiB); each row is timed after {payload.get('pause_s', 0):g} s of quiet (idle threads of the "
            "row before stop spinning). Agreement: against transformers fp32 on a separate input set (arg-max over "
            "each row of logits, and the largest absolute logit difference).\n"]
    for result in payload["results"]:
        text.append(f"## `{result['workload']}`: {result['title']}\n")
        headers = ["implementation"]
        for name in result["sets"]:
            headers += [f"items/s, {name}", "vs transformers", "vs ORT fp32", "vs ORT int8"]
        headers += ["arg-max agreement", "max abs diff"]
        rows = []
        for row in result["rows"]:
            cells = [row["row"]]
            for name in result["sets"]:
                m = row[name]
                cells += [f"{m['items_per_s']:.1f} ± {m['spread']:.1f}", _ratio(result, row, REFERENCE, name),
                          _ratio(result, row, ORT_FP32, name), _ratio(result, row, ORT_INT8, name)]
            cells += [f"{row['argmax_agreement']:.1%} of {row['agreement_rows']}" if "argmax_agreement" in row
                      else "–", f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else "–"]
            rows.append(cells)
        text.append(report.markdown_table(headers, rows))
    path.write_text("\n".join(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configs: checks the harness")
    parser.add_argument("--models", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=PAUSE_S,
                        help=f"seconds of quiet before each row is timed (default {PAUSE_S}; see PAUSE_S)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [n for n in names if n not in WORKLOADS] + [r for r in rows if r not in ROWS]
    if bad:
        parser.error(f"unknown model(s) or row(s) {bad}")
    import onnxruntime

    torch.set_num_threads(args.threads)
    # The server's allocator setting (perceiver_serve.allocator), for every row alike: without it glibc
    # maps and faults in MLM-2048's larger activations afresh in every pass (12,000 page faults each).
    fix_mmap_threshold(int(Settings.model_fields["malloc_mmap_threshold_mb"].default) << 20)
    args.out.mkdir(parents=True, exist_ok=True)
    say = Progress()
    payload: dict[str, Any] = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
                               "reps": args.reps, "pause_s": args.pause, "environment": report.environment(),
                               "onnxruntime": onnxruntime.__version__, "commit": report.git_commit(), "results": []}
    for i, name in enumerate(names, 1):
        say(f"[{i}/{len(names)}] {name}: {WORKLOADS[name].title}")
        payload["results"].append(run_workload(WORKLOADS[name], args.quick, rows, args.reps, args.threads, say,
                                                   args.pause))
        payload["duration_s"] = time.perf_counter() - say.start
        report.write_json(args.out / "variants.json", payload)
    write_markdown(args.out / "variants.md", payload)
    say(f"wrote {args.out / 'variants.json'} and variants.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
