"""Train the bundled demo models on data that ships inside PyPI wheels, and write them to ``models/``.

One small Perceiver IO per task, each trained through the server's own preprocessing and
written in Hugging Face layout with its ``model.toml`` and a model card holding the held-out
figures of this run. Seeded: a rerun on the same machine and thread count gives the same
weights. ``--quick`` runs a few steps on a sliver of the data (the test suite uses it so the
script cannot rot); its models are written but mean nothing.

Usage: ``python scripts/train_demo_models.py [--only NAME ...] [--out models] [--quick]``
(``make demo-models`` trains the shipped ones, one after another).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Model folder name → trainer module in ``scripts/demo_training/``.
TRAINERS = {
    "image-classifier": "digits",
    "text-sentiment": "sentiment",
    "language-mlm": "prose",
    "optical-flow": "flow",
    "video-autoencoder": "video",
}
#: The models whose training meets its targets and which ship in models/ (trained by default).
#: The others still ship with random weights (scripts/make_demo_models.py); --only trains them.
SHIPPED = ("image-classifier", "text-sentiment", "language-mlm", "optical-flow", "video-autoencoder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TRAINERS),
                        help=f"train these models (default: the shipped ones, {', '.join(SHIPPED)})")
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="model repository to write (default: models/)")
    parser.add_argument("--examples", type=Path, default=ROOT / "examples",
                        help="where the example inputs of the README go (default: examples/)")
    parser.add_argument("--quick", action="store_true", help="a few steps on a sliver of the data (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: each trainer's THREADS, the count its shipped model was "
                             "trained with, else 1; a different count is a different draw)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file as it happens

    if args.threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from demo_training.common import RunOptions, write_folder

    for name in args.only or SHIPPED:
        trainer = importlib.import_module(f"demo_training.{TRAINERS[name]}")
        threads = args.threads or getattr(trainer, "THREADS", 1)
        torch.set_num_threads(threads)
        run = RunOptions(seed=args.seed, quick=args.quick, threads=threads)
        torch.manual_seed(args.seed)
        started = time.monotonic()
        trained = trainer.train(run)
        size = write_folder(trained, args.out / name, trainer.SUMMARY)
        for file_name, data in getattr(trainer, "example_files", dict)().items():
            args.examples.mkdir(parents=True, exist_ok=True)
            (args.examples / file_name).write_bytes(data)
        print(f"{name}: {size / 1e6:.2f} MB in {time.monotonic() - started:.0f} s -> {args.out / name}", flush=True)


if __name__ == "__main__":
    main()
