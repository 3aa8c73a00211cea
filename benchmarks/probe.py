"""One implementation running one case in a fresh process: its peak memory and FLOP count.

``python -m benchmarks.probe CASE {ref,ours} [--quick]`` prints one JSON line. A fresh process
per implementation is the honest way to measure peak resident memory: nothing the other
implementation allocated stays in the allocator. Both probes import the same modules before
measuring their baseline. ``peak_rss_mb`` is the peak while running the case with the model
loaded (the high-water mark is reset after loading, whose transients — file pages, copies —
are reported separately as ``load_peak_rss_mb``).
"""

from __future__ import annotations

import argparse
import gc
import json

import torch
import transformers  # noqa: F401 - imported by both probes, so their baselines match

from . import measure
from .checkpoints import checkpoint_dir, load_reference
from .configs import head_spec
from .model_bench import CASES_BY_NAME, Marks, case_config


def load(impl: str, head: str, quick: bool, dtype: str) -> torch.nn.Module:
    from perceiver_serve.modeling import load_model

    directory = checkpoint_dir(head_spec(head, quick))
    return load_reference(directory) if impl == "ref" else load_model(directory, dtype=dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", choices=sorted(CASES_BY_NAME))
    parser.add_argument("impl", choices=["ref", "ours"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    case = CASES_BY_NAME[args.case]
    config = case_config(case, args.quick)
    base = measure.current_rss_mb()
    model = load(args.impl, case.head, args.quick, "float32" if args.impl == "ref" else case.ours_dtype)
    gc.collect()
    load_peak, loaded = measure.peak_rss_mb(), measure.current_rss_mb()
    # Serving memory: from here on (loading has its own transients, e.g. file pages and copies).
    serving_only = measure.reset_peak_rss()
    inputs = case.inputs(config)
    limit = case.probe_limit.get(args.impl)
    run = case.ref if args.impl == "ref" else case.ours
    with torch.inference_mode(), measure.FlopCounter() as counter:
        run(model, inputs, Marks(), limit)
    units = case.num_units(config)
    print(json.dumps({
        "base_rss_mb": base,
        "load_peak_rss_mb": load_peak,
        "loaded_rss_mb": loaded,
        "peak_rss_mb": measure.peak_rss_mb(),
        "peak_excludes_loading": serving_only,
        "flops": counter.flops * (units / limit if limit else 1),
        "units_run": limit or units,
        "units": units,
    }))


if __name__ == "__main__":
    main()
