"""Test support: a real `perceiver-serve` process on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.servers import DEMO_MODELS, ROOT, Service, free_port, serve_command

REPO = ROOT  # the repository's root


class ServerProcess(Service):
    """``perceiver-serve serve`` in a subprocess (REST, and gRPC with ``grpc=True``) on free ports.

    ``stop()`` sends SIGTERM and returns the exit code; the log is in ``$TMPDIR``.
    """

    def __init__(self, *args: str, repository: Path = DEMO_MODELS, grpc: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port() if grpc else -1
        super().__init__(f"perceiver-serve-{self.http_port}",
                         serve_command(repository, self.http_port, self.grpc_port, *args), self.http_port,
                         Path(os.environ.get("TMPDIR", "/tmp")), env={"OMP_NUM_THREADS": "2", **(env or {})},
                         scheme="https" if "--tls-cert" in args else "http")

    def wait(self, path: str = "/health/ready", timeout: float = 120.0,
             verify: ssl.SSLContext | None = None) -> None:
        self.wait_ready(timeout, path=path, context=verify)

    def stop(self, timeout: float = 60.0) -> int:
        return super().stop(timeout)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (the server's, for memory-growth checks)."""
    import psutil

    return psutil.Process(pid).memory_info().rss


def thread_heaps(pid: int) -> int:
    """glibc's heaps of threads (arenas other than the main one) in a live process: 64 MiB
    reservations aligned to 64 MiB, the part in use readable and writable, the rest inaccessible."""
    size, regions = 64 << 20, []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            regions.append((*(int(end, 16) for end in span.split("-")), perms))
    return sum(1 for (start, end, perms), after in zip(regions, [*regions[1:], (0, 0, "")])
               if start % size == 0 and perms.startswith("rw")
               and (end - start == size or (after[:2] == (end, start + size) and after[2].startswith("---"))))


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


class Peak:
    """The server's peak RSS growth over what it held when the block began."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def _kib(self, field: str) -> int:
        for line in self.status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in {self.status}")

    def __enter__(self) -> "Peak":
        self.clear_refs.write_text("5")  # VmHWM starts again from the current RSS
        self.start = self._kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        self.growth = self._kib("VmHWM") * 1024 - self.start


def wait_for(check, timeout: float = 120.0, what: str = "a state"):
    """Poll ``check`` until it returns something true; the waiting is on the server's state (metrics,
    for one, are recorded just after an answer is sent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
