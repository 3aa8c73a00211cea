"""Start-up and shutdown as an operator sees them: help, ports, broken models, --strict, forced quit."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

from perceiver_serve import __version__
from perceiver_serve.cli import EPILOG
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc
from perceiver_serve.server import EXIT_MODEL_FAILED, EXIT_NO_GPU, EXIT_PORT_BUSY

from ..grpc.inprocess import write_repository
from ..support import ServerProcess, running


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "perceiver_serve.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def _imported(importtime_log: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


def test_help_imports_neither_torch_nor_the_server_and_names_every_variable():
    done = _cli("--help")
    assert done.returncode == 0
    imported = _imported(done.stderr)
    assert not {m for m in imported if m.split(".")[0] in ("torch", "numpy", "PIL", "grpc", "fastapi")}, imported
    assert "perceiver_serve.server" not in imported
    text = done.stdout
    assert "--log-level {debug,info,warning,error}\n                        least severe" in text
    for variable in ("PERCEIVER_HTTP_PORT", "PERCEIVER_GRPC_PORT", "PERCEIVER_API_KEY", "PERCEIVER_STRICT",
                     "PERCEIVER_MODEL_REPOSITORY", "PERCEIVER_GRACE_PERIOD_S", "PERCEIVER_DOCS=false"):
        assert variable in text


def test_version():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"perceiver-serve {__version__}"


def test_help_states_the_exit_codes_the_server_uses():
    assert f"  {EXIT_PORT_BUSY}    the REST or gRPC port cannot be bound" in EPILOG
    assert f"  {EXIT_MODEL_FAILED}    --strict, and a model failed to load" in EPILOG
    assert f"  {EXIT_NO_GPU}    --require-gpu, and a model asking for device auto or cuda would get no GPU" in EPILOG


@pytest.mark.parametrize("which", ["rest", "grpc"])
def test_a_busy_port_fails_at_once_with_one_line(tmp_path, which):
    repository = write_repository(tmp_path / "repo", "text-sentiment")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        proc = ServerProcess(grpc=True, repository=repository)
        proc.stop()  # its free ports were chosen; run the same command with one of them taken
        http_port = busy if which == "rest" else proc.http_port
        grpc_port = busy if which == "grpc" else proc.grpc_port
        done = subprocess.run(
            [sys.executable, "-m", "perceiver_serve.cli", "--model-repository", str(repository),
             "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_PORT_BUSY, done.stderr
    assert "Traceback" not in done.stderr
    assert "loading model" not in done.stderr  # refused before any model loaded
    assert f"perceiver-serve: cannot listen for {'REST' if which == 'rest' else 'gRPC'} on" in done.stderr
    assert str(busy) in done.stderr.splitlines()[-1]


def _broken_repository(tmp_path):
    repository = write_repository(tmp_path / "repo", "text-sentiment")
    for name, text in {"typo": 'task = "text-clasification"\nsource = "x"\n',
                       "unknown-key": 'task = "fill-mask"\nsource = "x"\ndtpye = "float32"\n',
                       "syntax": 'task = "fill-mask\n'}.items():
        (repository / name).mkdir()
        (repository / name / "model.toml").write_text(text)
    return repository


def test_broken_models_are_logged_at_error_with_one_summary_line(tmp_path):
    with ServerProcess(grpc=True, repository=_broken_repository(tmp_path)) as proc:
        proc.wait("/health/live")
        deadline = time.monotonic() + 120
        while "models ready" not in proc.logs():
            assert time.monotonic() < deadline and proc.process.poll() is None, proc.logs()
            time.sleep(0.2)
        logs = proc.logs()
        assert proc.stop() == 0
    errors = [line for line in logs.splitlines() if " ERROR " in line]
    for name, why in (("typo", "task"), ("unknown-key", "dtpye: unknown key"), ("syntax", "cannot read TOML")):
        assert any(f"model {name!r}" in line and why in line for line in errors), (name, logs)
    (summary,) = [line for line in logs.splitlines() if "models ready" in line]
    assert " ERROR " in summary
    assert (f"1/4 models ready, serving REST on http://127.0.0.1:{proc.http_port}, "
            f"gRPC on 127.0.0.1:{proc.grpc_port}; failed: syntax: ") in summary
    assert logs.index(f"REST on http://127.0.0.1:{proc.http_port}") < logs.index("loading model 'text-sentiment'")


def test_all_ready_is_one_info_line(tmp_path):
    with running(repository=write_repository(tmp_path / "repo", "text-sentiment")) as proc:
        (summary,) = [line for line in proc.logs().splitlines() if "models ready" in line]
    assert " INFO " in summary and summary.endswith(f"1/1 models ready, serving REST on http://127.0.0.1:{proc.http_port}")


def test_strict_exits_when_a_model_fails(tmp_path):
    with ServerProcess("--strict", repository=_broken_repository(tmp_path)) as proc:
        assert proc.process.wait(180) == EXIT_MODEL_FAILED, proc.logs()
    assert "--strict: stopping because a model failed to load" in proc.logs()


def test_tolerant_by_default(tmp_path):
    with ServerProcess(repository=_broken_repository(tmp_path)) as proc:
        proc.wait("/models")
        deadline = time.monotonic() + 120
        while "models ready" not in proc.logs():
            assert time.monotonic() < deadline, proc.logs()
            time.sleep(0.2)
        assert proc.process.poll() is None
        assert proc.stop() == 0


def test_a_second_signal_during_the_drain_quits_at_once(tmp_path):
    repository = write_repository(tmp_path / "repo", "video-autoencoder")
    with ServerProcess("--grace-period", "300", grpc=True, repository=repository) as proc:
        proc.wait()
        hold = threading.Event()

        def requests():
            yield pb.ReconstructVideoRequest(config=pb.StreamConfig())
            hold.wait(120)  # an open stream keeps the drain waiting for its whole grace period

        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stream = perceiver_pb2_grpc.PerceiverStub(channel).ReconstructVideo(requests(), timeout=120)
            assert next(stream).WhichOneof("kind") == "started"
            proc.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 60
            while "draining" not in proc.logs():
                assert time.monotonic() < deadline, proc.logs()
                time.sleep(0.1)
            assert proc.process.poll() is None  # still draining: the stream is open
            proc.process.send_signal(signal.SIGTERM)
            code = proc.process.wait(30)  # at once, not after the 300 s grace period
            hold.set()
    assert code == 128 + signal.SIGTERM, proc.logs()
    assert "received SIGTERM again while draining: quitting now" in proc.logs()
