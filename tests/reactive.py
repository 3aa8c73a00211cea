"""Test models that react: the demo architectures with weights large enough to move every output.

The demo checkpoints are drawn with std 0.02 (transformers' initialisation), which leaves
attention nearly uniform: their answers hardly depend on the input (fill-mask scores at
neighbouring positions differed by 4e-7, swapping the flow frames moved the flow by 8.5e-5),
so a server that decoded the wrong position or swapped the frames passed every comparison.
Drawn with ``STD`` instead, attention is sharp and every input byte, position and frame
changes the answer by far more than the tolerances of ``tests.numerics`` (the tests check
this with ``assert_distinct`` before they trust an equality).

The repository has the demo models' names, tasks, batching and options; only the weights
differ. It is written once per test session (about a second).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from perceiver_serve.modeling import ARCHITECTURES

from .models.repository import load_script

#: Weight std of the reactive models (the demo models use 0.02).
STD = 0.2


def write_reactive_repository(root: Path) -> Path:
    """Every demo model, reactive, as ``root/<name>/{model.toml, checkpoint/}``; returns ``root``."""
    script = load_script()
    for demo in script.DEMO_MODELS:
        model = ARCHITECTURES[demo.architecture](demo.config)
        script.init_weights(model, demo.seed, std=STD)
        checkpoint = root / demo.name / "checkpoint"
        checkpoint.mkdir(parents=True)
        (checkpoint / "config.json").write_text(json.dumps(demo.config.to_dict(), indent=2, sort_keys=True))
        state = {key: tensor.contiguous() for key, tensor in model.eval().state_dict().items()}
        save_file(state, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
        (root / demo.name / "model.toml").write_text(script.model_toml(demo))
    return root


@functools.cache
def reactive_models() -> Path:
    """The reactive repository of this test session, written on first use and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="reactive-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_reactive_repository(root)
