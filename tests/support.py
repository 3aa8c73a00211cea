"""Test support: a real `perceiver-serve` process on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEMO_MODELS = REPO / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``perceiver-serve serve`` in a subprocess; ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, *args: str, repository: Path = DEMO_MODELS, grpc: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port() if grpc else -1
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"perceiver-serve-{self.http_port}.log"
        command = [sys.executable, "-m", "perceiver_serve.cli", "serve", "--model-repository", str(repository),
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *args]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})
        self.scheme = "https" if "--tls-cert" in args else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.http_port}"

    def wait(self, path: str = "/health/ready", timeout: float = 120.0, **client_kw) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + path, timeout=2, **client_kw).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (the server's, for memory-growth checks)."""
    import psutil

    return psutil.Process(pid).memory_info().rss


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (``/metrics`` text); 0 when the series does not exist yet."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@contextlib.contextmanager
def running(*args: str, **kwargs) -> Iterator[ServerProcess]:
    """A ready ``ServerProcess`` that must exit 0 when stopped."""
    with ServerProcess(*args, **kwargs) as proc:
        proc.wait()
        yield proc
        assert proc.stop() == 0, proc.logs()


@contextlib.contextmanager
def grpc_channel(port: int, **options: int):
    """An insecure channel to a loopback gRPC port, once it is ready."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=list(options.items())) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield channel
