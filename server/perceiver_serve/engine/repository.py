"""The model repository: one folder per served model, described by ``model.toml``.

```
models/<name>/model.toml        task, source, device, dtype, compile, [batching], [options]
models/<name>/checkpoint/       config.json + weights, Hugging Face layout (or source = "hf://org/name")
```

Reading a repository never raises for one bad folder: each folder becomes either a
:class:`ModelSpec` or a :class:`SpecProblem` naming the file and the field at fault, so one
broken model never keeps the others from serving.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import InvalidInput, ModelNotFound
from .tasks import TaskTable

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HF_SCHEME = "hf://"


class InvalidModelName(InvalidInput):
    """A control request named something that cannot be a model folder."""

    code = "invalid_model_name"


class RepositoryError(ValueError):
    """The repository directory itself is unusable (missing, not a directory)."""


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(8, ge=1, le=4096, description="Largest number of work items in one forward pass.")
    max_delay_ms: float = Field(5.0, ge=0, le=60_000, description="Longest wait for a batch to fill.")
    max_queue: int = Field(256, ge=1, le=1_000_000, description="Work items waiting beyond which requests get 429.")
    timeout_ms: float = Field(60_000, gt=0, le=3_600_000, description="Default per-request deadline.")


class LatestVersions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int = Field(ge=1, le=1000, description="Serve the N highest-numbered versions.")


class SpecificVersions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    specific: list[int] = Field(min_length=1, max_length=1000, description="Serve exactly these versions.")


class ModelSpec(BaseModel):
    """One validated ``model.toml``.

    The checkpoint is either ``source`` (one version, "1"), or, when the folder holds numbered
    subfolders (``<name>/1/``, ``<name>/2/``, … each a checkpoint in Hugging Face layout, as
    in Triton's repository), those versions, served as ``version_policy`` says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    toml_path: Path
    task: str
    source: str | None = Field(None, min_length=1, description="Required unless the folder has version folders.")
    version_policy: Literal["all"] | LatestVersions | SpecificVersions = LatestVersions(latest=1)
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16", "int8", "auto"] = "float32"
    compile: bool = False
    tf32: bool = False  # CUDA float32 products in TF32: faster, no longer at parity (see devices.configure_tf32)
    instances: int = Field(1, ge=1, le=64, description="Worker threads running this model's batches side by side "
                           "(Triton's instance group), sharing its weights and queue.")
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads of each instance; default: the "
                                "process's torch threads divided among the instances.")
    worker: Literal["thread", "process"] = Field("thread", description="Where each instance computes: a thread of "
                                                 "the server process, or a process of its own (CPU models; see "
                                                 "engine/worker_process.py).")
    default: bool = False
    batching: BatchingConfig = BatchingConfig()
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task")
    @classmethod
    def _task(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("tasks", ())
        if value not in known:
            raise ValueError(f"must be one of {', '.join(repr(name) for name in known)}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @model_validator(mode="after")
    def _one_compiled_instance(self) -> "ModelSpec":
        if self.compile and self.instances > 1 and self.worker == "thread":
            raise ValueError("instances: a compiled model (compile = true) runs as one instance in threads; "
                             "torch.compile's code is not made to be called from several threads at once "
                             "(worker = \"process\" runs each instance in a process of its own)")
        return self

    @model_validator(mode="after")
    def _source_or_versions(self) -> "ModelSpec":
        if self.source is None and not self.numbered_versions():
            raise ValueError("source: Field required (a checkpoint directory or hf:// id), unless the model's "
                             "folder holds numbered version folders (1/, 2/, …)")
        return self

    @property
    def is_remote(self) -> bool:
        return self.source is not None and self.source.startswith(HF_SCHEME)

    def numbered_versions(self) -> list[int]:
        """The numbered subfolders (Triton's version layout), lowest first."""
        folder = self.toml_path.parent
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")

    def versions(self) -> list[str]:
        """The versions to serve, lowest first: the numbered subfolders that ``version_policy`` picks.

        Without numbered subfolders the model has one version, "1", read from ``source``.
        """
        found = self.numbered_versions()
        if not found:
            return ["1"]
        policy = self.version_policy
        if policy == "all":
            chosen = found
        elif isinstance(policy, LatestVersions):
            chosen = found[-policy.latest:]
        else:
            if missing := sorted(set(policy.specific) - set(found)):
                raise FileNotFoundError(f"{self.toml_path}: version_policy.specific names versions with no folder: "
                                        f"{', '.join(map(str, missing))}")
            chosen = sorted(set(policy.specific))
        return [str(v) for v in chosen]

    def checkpoint_dir(self, version: str = "1") -> Path:
        """The local checkpoint directory of ``version``, fetching ``hf://`` sources first."""
        numbered = self.toml_path.parent / version
        if version.isdigit() and numbered.is_dir():
            return numbered.resolve()
        if self.is_remote:
            return fetch_from_hub(self.source)
        assert self.source is not None  # the validator saw to it
        path = (self.toml_path.parent / self.source).resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"{self.toml_path}: source directory {self.source!r} does not exist ({path})")
        return path


@dataclasses.dataclass(frozen=True)
class SpecProblem:
    """A model folder whose ``model.toml`` cannot be used, and why."""

    name: str
    toml_path: Path
    message: str


def fetch_from_hub(source: str) -> Path:
    """Download ``hf://org/name[@revision]`` with huggingface_hub; offline, fail with advice."""
    ref = source[len(HF_SCHEME):]
    repo_id, _, revision = ref.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        raise ValueError(f"{source!r} is not of the form hf://org/name[@revision]")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id, revision=revision or None,
            allow_patterns=["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model.bin"],
        ))
    except Exception as exc:  # noqa: BLE001 - hub errors are many; all mean "not available here"
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise ConnectionError(
            f"cannot fetch {source}{hint}: {type(exc).__name__}: {exc}. Without network access, download the "
            f"checkpoint beforehand (hf download {repo_id} --local-dir DIR) and set source to DIR."
        ) from None


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in error.errors():
        field = prefix + ".".join(str(p) for p in err["loc"]) or "(file)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg}")
    return "; ".join(parts)


def read_spec(toml_path: Path, tasks: TaskTable) -> ModelSpec | SpecProblem:
    name = toml_path.parent.name
    if not MODEL_NAME.fullmatch(name):
        return SpecProblem(name, toml_path, f"{toml_path}: folder name {name!r} is not a valid model name "
                                            "(letters, digits, '.', '_', '-'; at most 64)")
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return SpecProblem(name, toml_path, f"{toml_path}: cannot read TOML ({exc})")
    for reserved in ("name", "toml_path"):
        if reserved in raw:
            return SpecProblem(name, toml_path, f"{toml_path}: {reserved}: unknown key")
    try:
        return ModelSpec.model_validate({"name": name, "toml_path": toml_path, **raw}, context={"tasks": tasks})
    except ValidationError as exc:
        return SpecProblem(name, toml_path, f"{toml_path}: {describe_validation_error(exc)}")


@dataclasses.dataclass(frozen=True)
class ModelRepository:
    root: Path
    specs: tuple[ModelSpec, ...]
    problems: tuple[SpecProblem, ...]
    tasks: TaskTable  # the tasks this server offers, handed in by whoever builds the server

    @classmethod
    def scan(cls, root: str | Path, tasks: TaskTable) -> "ModelRepository":
        root = Path(root)
        if not root.is_dir():
            raise RepositoryError(f"model repository {root} is not a directory")
        specs, problems = [], []
        for toml_path in sorted(root.glob("*/model.toml")):
            entry = read_spec(toml_path, tasks)
            (specs if isinstance(entry, ModelSpec) else problems).append(entry)
        if not specs and not problems:
            raise RepositoryError(f"model repository {root} holds no */model.toml")
        return cls(root, tuple(specs), tuple(problems), tasks)

    def folder(self, name: str) -> Path:
        """The folder of model ``name``: a valid model name is one path component, never ``..``.

        Control requests name models; checking the name against :data:`MODEL_NAME` (one
        component, no separator, never starting with a dot) keeps every name inside ``root``.
        """
        if not MODEL_NAME.fullmatch(name):
            raise InvalidModelName(f"{name[:80]!r} is not a valid model name (letters, digits, '.', '_', '-'; "
                                   "starting with a letter or digit; at most 64)")
        return self.root / name

    def holds(self, name: str) -> bool:
        """Whether ``name`` has a ``model.toml`` on disk now."""
        return (self.folder(name) / "model.toml").is_file()

    def read(self, name: str) -> ModelSpec | SpecProblem:
        """Model ``name`` as it is on disk now (a reload reads it afresh)."""
        toml_path = self.folder(name) / "model.toml"
        if not toml_path.is_file():
            raise ModelNotFound(f"the model repository has no model named {name!r} (no {name}/model.toml)")
        return read_spec(toml_path, self.tasks)

    def names(self) -> list[str]:
        """Every folder of the repository holding a ``model.toml`` now."""
        return sorted(p.parent.name for p in self.root.glob("*/model.toml"))
