"""Where the bundled model repository and its two writers live, and what the engine expects of them.

``scripts/train_demo_models.py`` trains the demo models that do their task;
``scripts/make_demo_models.py`` writes the random-weight ones not trained yet.
"""

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
TRAIN_SCRIPT = ROOT / "scripts" / "train_demo_models.py"

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
def random_folders() -> tuple[Path, ...]:
    """The random-weight models ``scripts/make_demo_models.py`` writes."""
    return tuple(REPOSITORY / demo.name for demo in load_script().DEMO_MODELS)


@functools.cache
def trained_folders() -> tuple[Path, ...]:
    """The models ``scripts/train_demo_models.py`` trained and ships."""
    return tuple(REPOSITORY / name for name in load_script(TRAIN_SCRIPT).SHIPPED)


def demo_folders() -> tuple[Path, ...]:
    """Every bundled demo model."""
    return random_folders() + trained_folders()


def read_toml(folder: Path) -> dict:
    with open(folder / "model.toml", "rb") as f:
        return tomllib.load(f)


def checkpoint_of(folder: Path) -> Path:
    return folder / read_toml(folder)["source"]


def training_common() -> ModuleType:
    """``scripts/demo_training/common.py``, shared by both scripts (importing one puts it on the path)."""
    load_script()
    return sys.modules["demo_training.common"]


@functools.cache
def load_script(path: Path = SCRIPT) -> ModuleType:
    """A script of ``scripts/`` imported as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
