"""Server settings: command-line flags, each also a ``PERCEIVER_*`` environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .media.limits import DEFAULT_DECODE_MB, MediaLimits

MiB = 1024 * 1024


def bundled_repository() -> Path:
    """The demo model repository shipped next to the package (a source checkout's ``models/``)."""
    return Path(__file__).resolve().parents[2] / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PERCEIVER_", extra="forbid", frozen=True)

    model_repository: Path = Field(default_factory=bundled_repository,
                                   description="Directory with one <name>/model.toml per served model.")
    host: str = Field("127.0.0.1", description="Interface both servers listen on.")
    http_port: int = Field(8000, ge=0, le=65535, description="REST port (0 picks a free one).")
    http_parser: Literal["auto", "h11", "httptools"] = Field(
        "auto", description="HTTP/1.1 implementation uvicorn runs (auto: httptools where installed, else h11).")
    grpc_port: int = Field(50051, ge=-1, le=65535, description="gRPC port (0 picks a free one, -1 disables).")
    api_key: SecretStr | None = Field(None, description="If set, model routes need 'Authorization: Bearer KEY'.")
    admin_key: SecretStr | None = Field(None, description="If set, model control (/v2/repository, the gRPC "
                                        "repository calls) needs 'Authorization: Bearer ADMIN_KEY'; the API key "
                                        "alone is refused there.")
    model_control: Literal["none", "explicit", "poll"] = Field(
        "none", description="none: the models read at start serve until exit; explicit: load, reload and unload "
                            "through the repository API; poll: also follow the repository on disk.")
    repository_poll_s: float = Field(5.0, gt=0, le=3600, description="With --model-control poll: seconds between "
                                     "scans; files must stay unchanged this long before they are loaded.")
    load_model: list[str] = Field(default_factory=list, description="With --model-control explicit or poll: load "
                                  "only these models at start (repeatable; explicit without it loads none).")
    max_body_mb: float = Field(64.0, gt=0, description="Largest REST request body, in MiB.")
    grpc_max_message_mb: float = Field(64.0, gt=0, description="Largest gRPC message, in MiB.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Largest decoded image, in pixels.")
    max_image_mb: float = Field(20.0, gt=0, description="Largest encoded image, in MiB.")
    max_audio_seconds: float = Field(120.0, gt=0, description="Longest audio clip accepted.")
    max_decode_mb: float = Field(
        DEFAULT_DECODE_MB, gt=0, description="Decoded media (pixels, samples) held at once by all requests, in MiB: "
                                             "work waits for its share; work larger than all of it is refused.")
    docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    strict: bool = Field(False, description="Exit (code 4) when a model fails to load, rather than serving "
                                            "the others and answering 503 on readiness.")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log messages shown.")
    tls_cert: Path | None = Field(None, description="PEM certificate: serve both ports over TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for --tls-cert.")
    grace_period_s: float = Field(30.0, ge=0, description="On SIGTERM, time allowed for in-flight work.")
    keep_alive_s: float = Field(75.0, gt=0, le=3600, description=(
        "How long an idle HTTP keep-alive connection stays open. Longer than clients keep idle "
        "connections (httpx: 5 s), so that a client never sends on a connection the server is closing."))
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description=(
        "Longest wait for the next part of a REST request body still arriving: a body that stalls "
        "longer is refused (408), so a slow or stalled upload can't hold its connection open."))
    require_gpu: bool = Field(False, description="Exit non-zero at start if a model that asks for a GPU "
                                                 "(device auto or cuda) would get none.")
    preprocess_threads: int | None = Field(None, ge=1, description="Threads decoding and preprocessing media.")
    malloc_mmap_threshold_mb: float = Field(
        32.0, ge=0, le=32, description="glibc: allocations from this size up are returned to the system when "
                                       "freed, smaller ones once a model falls idle (bounds memory creep under "
                                       "varied batches; 0 leaves glibc's default).")
    malloc_arenas: int | None = Field(
        None, ge=0, description="glibc: most malloc heaps the threads share (default: one per core, at least 2, "
                                "unless MALLOC_ARENA_MAX is set; 0 leaves glibc's eight per core). Threads come "
                                "and go, and each heap keeps its top resident.")
    omp_spin_count: int | None = Field(
        None, ge=0, description="libgomp: how many times an idle OpenMP thread spins before it sleeps (default: "
                                "30000 unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set; 0 leaves libgomp's own, "
                                "300000). Between batches a spinning helper held a core the server's own work needed.")

    @field_validator("api_key", "admin_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        return None if value in ("", None) else value

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        return self

    @model_validator(mode="after")
    def _load_model_needs_control(self) -> "Settings":
        if self.load_model and self.model_control == "none":
            raise ValueError("--load-model needs --model-control explicit or poll")
        return self

    def models_at_start(self) -> list[str] | None:
        """The models to load at start; ``None``: every model of the repository."""
        if self.model_control == "explicit" or self.load_model:
            return list(self.load_model)
        return None

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MiB)

    @property
    def grpc_max_message_bytes(self) -> int:
        return int(self.grpc_max_message_mb * MiB)

    @property
    def max_decode_bytes(self) -> int:
        return int(self.max_decode_mb * MiB)

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_image_bytes=int(self.max_image_mb * MiB),
            max_image_pixels=self.max_image_pixels,
            max_audio_seconds=self.max_audio_seconds,
        )
