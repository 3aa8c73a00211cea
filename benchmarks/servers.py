"""Servers for the server benchmark: model repositories written on the fly, and processes on loopback.

A :class:`Service` is any HTTP server started as a subprocess (perceiver-serve, or the
plain transformers baseline of :mod:`benchmarks.baseline_server`) whose output goes to a
log file and which is ready once a GET of its readiness path answers 200.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODELS = ROOT / "models"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, and that this process has not
    handed out before: servers started together (REST and gRPC ports of several) bind only
    after loading, and the kernel may offer a just-released port again in the meantime."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} to model.toml")


def write_model_toml(path: Path, spec: Mapping[str, Any]) -> None:
    """``spec``'s scalar keys first, then one ``[table]`` per dict value (the model.toml layout)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, Mapping)]
    for table, values in spec.items():
        if isinstance(values, Mapping):
            lines += ["", f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def demo_model(name: str) -> dict[str, Any]:
    """A bundled demo model's ``model.toml`` as a dict, its source made absolute."""
    folder = DEMO_MODELS / name
    spec = tomllib.loads((folder / "model.toml").read_text(encoding="utf-8"))
    spec["source"] = str((folder / spec["source"]).resolve())
    return spec


def write_repository(root: Path, models: Mapping[str, Mapping[str, Any]],
                     batching: Mapping[str, Any] | None = None) -> Path:
    """One folder per model under ``root``; ``batching`` (if given) replaces every model's ``[batching]``."""
    for name, spec in models.items():
        spec = dict(spec)
        if batching is not None:
            spec["batching"] = {**spec.get("batching", {}), **batching}
        write_model_toml(root / name / "model.toml", spec)
    return root


class Service:
    """A server subprocess on loopback; ``stop()`` sends SIGTERM (then SIGKILL) and returns its exit code.

    Also the test suite's server process (``tests/support.ServerProcess``), so benchmarks and
    tests start, wait for and stop servers the same way.
    """

    def __init__(self, name: str, command: list[str], port: int, log_dir: Path, *,
                 ready_path: str = "/health/ready", env: Mapping[str, str] | None = None,
                 scheme: str = "http") -> None:
        self.name = name
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.ready_path = ready_path
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 180.0, *, path: str | None = None,
                   context: ssl.SSLContext | None = None) -> None:
        """Until a GET of ``path`` (default: the readiness path) answers 200; ``context`` for TLS."""
        url = self.url + (path or self.ready_path)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.logs()[-chars:]

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (negative: the signal that ended it).

        Stopping a stopped service again returns the same code.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_command(repository: Path, http_port: int, grpc_port: int, *args: str) -> list[str]:
    """``perceiver-serve serve`` of ``repository`` on the given ports (``grpc_port`` -1: no gRPC)."""
    return [sys.executable, "-m", "perceiver_serve.cli", "serve", "--model-repository", str(repository),
            "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args]


def perceiver_serve(name: str, repository: Path, log_dir: Path, threads: int = 2) -> tuple[Service, int]:
    """``perceiver-serve serve`` on free REST and gRPC ports: the service and its gRPC port."""
    http_port, grpc_port = free_port(), free_port()
    command = serve_command(repository, http_port, grpc_port)
    return Service(name, command, http_port, log_dir, env=_thread_env(threads)), grpc_port


def baseline_server(name: str, checkpoint: Path, log_dir: Path, threads: int = 2,
                    engine: str = "transformers") -> Service:
    """A plain FastAPI server of :mod:`benchmarks.baseline_server` running ``engine`` (transformers, ONNX Runtime)."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.baseline_server", "--checkpoint", str(checkpoint),
               "--port", str(port), "--engine", engine]
    return Service(name, command, port, log_dir, env=_thread_env(threads))


def _thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
