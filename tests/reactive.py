"""Test models that react: the demo architectures with weights large enough to move every output.

The demo checkpoints are drawn with std 0.02 (transformers' initialisation), which leaves
attention nearly uniform: their answers hardly depend on the input (fill-mask scores at
neighbouring positions differed by 4e-7, swapping the flow frames moved the flow by 8.5e-5),
so a server that decoded the wrong position or swapped the frames passed every comparison.
Drawn with ``STD`` instead, attention is sharp and every input byte, position and frame
changes the answer by far more than the tolerances of ``tests.numerics`` (the tests check
this with ``assert_distinct`` before they trust an equality).

The repository has the demo models' names, tasks, batching, options and configurations
(architecture, sizes, labels); only the weights differ. It is written once per test session (about a second).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from perceiver_serve.modeling import ARCHITECTURES, PerceiverConfig

from .models.repository import checkpoint_of, demo_folders, training_common

#: The demo models' initialiser and checkpoint writer (scripts/demo_training/common.py).
init_weights, write_checkpoint = training_common().init_weights, training_common().write_checkpoint

#: Weight std of the reactive models of 128 latent channels (the demo models use 0.02); wider
#: ones get proportionally less (``std_for``).
STD = 0.2


def std_for(config: PerceiverConfig) -> float:
    """``STD``, scaled down for latents wider than 128 channels: at 0.2 the sentiment model's
    256-channel layers gave logits up to 97, and its bf16 / int8 copies agreed with float32 on
    86% / 78% of the load tests' texts; at 0.1, logits up to 6 and 100% / 98%."""
    return STD * min(1.0, 128 / config.d_latents)


def write_reactive_repository(root: Path) -> Path:
    """Every demo model, reactive, as ``root/<name>/{model.toml, checkpoint/}``; returns ``root``.

    Each keeps its committed ``model.toml`` and ``config.json`` (trained or random); the weights
    are drawn anew, seeded by the model's place in the repository.
    """
    for seed, folder in enumerate(demo_folders(), start=1):
        config = PerceiverConfig.from_file(checkpoint_of(folder) / "config.json")
        model = ARCHITECTURES[config.architectures[0]](config)
        init_weights(model, seed, std=std_for(config))
        (root / folder.name).mkdir(parents=True)
        shutil.copy(folder / "model.toml", root / folder.name / "model.toml")
        write_checkpoint(model.eval(), root / folder.name / "checkpoint")
    return root


@functools.cache
def reactive_models() -> Path:
    """The reactive repository of this test session, written on first use and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="reactive-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_reactive_repository(root)
