"""Where the bundled model repository and its generator live, and what the engine expects of them."""

from __future__ import annotations

import functools
import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "models"
SCRIPT = ROOT / "scripts" / "make_demo_models.py"

#: Architectures that can serve each task.
TASK_ARCHITECTURES = {
    "text-classification": {"PerceiverForSequenceClassification"},
    "fill-mask": {"PerceiverForMaskedLM"},
    "image-classification": {
        "PerceiverForImageClassificationLearned",
        "PerceiverForImageClassificationFourier",
        "PerceiverForImageClassificationConvProcessing",
    },
    "optical-flow": {"PerceiverForOpticalFlow"},
    "video-autoencoding": {"PerceiverForMultimodalAutoencoding"},
}


def model_folders() -> list[Path]:
    """Every model in the repository: the demo models and any a user has added."""
    return sorted(p.parent for p in REPOSITORY.glob("*/model.toml"))


@functools.cache
def demo_folders() -> tuple[Path, ...]:
    """The models ``scripts/make_demo_models.py`` writes."""
    return tuple(REPOSITORY / demo.name for demo in load_script().DEMO_MODELS)


def read_toml(folder: Path) -> dict:
    with open(folder / "model.toml", "rb") as f:
        return tomllib.load(f)


def checkpoint_of(folder: Path) -> Path:
    return folder / read_toml(folder)["source"]


def load_script() -> ModuleType:
    """``scripts/make_demo_models.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("make_demo_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
