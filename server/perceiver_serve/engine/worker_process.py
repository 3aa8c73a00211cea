"""A model instance in a process of its own (``worker = "process"`` in ``model.toml``).

Why: in one process every torch operation of a forward pass hands Python's lock (the GIL) over
and takes it back, and in between the event loop (parsing requests, writing answers) and the
other instances' worker threads take it. Measured on the mid-size text classifier of issue 12
on two cores: the server kept its cores 82% busy against 98% for the model alone, with ~230
``futex`` calls a request, and reached 70–86% of the model's own throughput. A worker process
has its own interpreter and lock: the server process keeps the network, parsing, batching and
bookkeeping, and the worker process only computes. With two instances of one thread, worker
processes served 49.1 req/s in fp32 and 95.8 in int8 at 16 clients, against 46.8 and 81.8 as
threads in the same run; the price is memory (each process its own torch and weights).

What stays in the server process, unchanged: the queue, batching, deadlines, cancellation (an
item dropped before its batch is sent never reaches the worker), splitting a batch that ran out
of memory (the worker reports the error; the batcher retries the halves), and every metric.
What moves: the weights, the forward passes, the warm-up (and compilation) and handing free
memory back to the system when idle. The server process keeps only the model's outline
(:func:`~..modeling.model_outline`: config and geometry, no weights) for preparing requests.

:class:`ProcessRunner` stands in for the task's runner on one of the batcher's worker threads:
it sends a batch's payloads down a pipe and waits, without the GIL, for the results. Tensors
travel as their raw bytes (:func:`dumps`), not through torch's shared-memory pickling, whose
file handshake per tensor costs more than copying a batch's small tensors.

A worker process that dies (killed, or crashed in native code) fails the batch it was running
with a clear error, and the next batch starts a new one (the model loaded and warmed again);
meanwhile that instance's queued work waits as behind a slow batch. A worker whose server
process dies sees its pipe close and exits.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..allocator import fix_mmap_threshold, limit_arenas, trim_heap
from ..errors import InferenceFailed
from ..modeling import load_model
from .batcher import HAND_BACK_EVERY_S, IDLE_AFTER_S
from .devices import WorkerStream
from .warmup import warm_up

log = logging.getLogger(__name__)

#: How long :meth:`ProcessRunner.close` waits for a worker to finish before terminating it.
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker process needs to build its instance (pickled to it at start)."""

    name: str
    checkpoint: Path
    device: str
    dtype: str
    compile: bool
    runner: Callable[[Any, Any], Any]  # the task's runner class, ``(model, options) -> BatchRunner``
    options: Any
    threads: int
    max_batch_size: int
    mmap_threshold: int = 0  # the server process's fixed malloc mmap threshold (0: none)
    arenas: int = 0  # the server process's malloc arena limit (0: none)


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the worker's loaded model says of itself, for ``/models``."""

    precision: str
    precision_check: Any
    compiled: bool


# -- the wire ------------------------------------------------------------------------------------
def _tensor_from_bytes(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(raw).view(getattr(torch, dtype)).reshape(shape)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.layout == torch.strided and not obj.is_quantized:
            flat = obj.detach().to("cpu").contiguous().reshape(-1)
            return _tensor_from_bytes, (flat.view(torch.uint8).numpy(), str(flat.dtype).removeprefix("torch."),
                                        tuple(obj.shape))
        return NotImplemented


def dumps(message: Any) -> bytes:
    """``message`` pickled, every dense tensor as its bytes (see the module's docstring)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    return buffer.getvalue()


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError saying what it was."""
    try:
        pickle.loads(dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception may carry unpicklable state
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# -- the worker process ----------------------------------------------------------------------------
def _serve(conn: Connection, setup: WorkerSetup) -> None:
    """The worker process: load and warm the model, then answer batches until told to stop."""
    torch.set_num_threads(setup.threads)
    torch.set_grad_enabled(False)
    limit_arenas(setup.arenas)
    fix_mmap_threshold(setup.mmap_threshold)

    def send(kind: str, value: Any) -> None:
        try:
            message = dumps((kind, value))
        except Exception as exc:  # noqa: BLE001 - an answer that can't travel fails its batch, not the worker
            message = dumps(("error", RuntimeError(f"the worker could not send its {kind!r} answer: {exc!r}")))
        conn.send_bytes(message)

    stream = WorkerStream(setup.device)
    try:
        stream.bind()
        model = load_model(setup.checkpoint, device=setup.device, dtype=setup.dtype, compile=setup.compile,
                           progress=lambda message: send("progress", message))
        runner = setup.runner(model, setup.options)
        with stream.running():
            warm_up(runner, setup.max_batch_size, model.compiled, lambda message: send("progress", message))
            stream.synchronize()
    except BaseException as exc:  # noqa: BLE001 - reported to the server process, which fails the load
        send("failed", _sendable(exc))
        return
    send("ready", ModelFacts(model.precision, model.precision_check, model.compiled))
    # Free memory goes back to the system as a batcher thread hands it back (see batcher.HAND_BACK_EVERY_S).
    worked, handed_back_at = True, time.monotonic()
    while True:
        try:
            if not conn.poll(IDLE_AFTER_S if worked else None):
                trim_heap()
                worked, handed_back_at = False, time.monotonic()
                continue
            kind, payloads = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the server process is gone
            return
        if kind == "stop":
            return
        worked = True
        try:
            with stream.running(), torch.inference_mode():
                answer: Any = list(runner.run(payloads))
                stream.synchronize()
        except Exception as exc:  # noqa: BLE001 - fails this batch in the server process, never the worker
            exc.add_note("in the worker process:\n" + "".join(traceback.format_exception(exc)).rstrip())
            traceback.clear_frames(exc.__traceback__)  # the failed pass's tensors, before a retry in halves
            stream.release_cached_memory()
            answer, kind = _sendable(exc.with_traceback(None)), "error"
        else:
            kind = "ok"
        try:
            send(kind, answer)
        except OSError:  # the server process is gone
            return
        if time.monotonic() - handed_back_at >= HAND_BACK_EVERY_S:  # after the answer, not before the batch
            trim_heap()
            handed_back_at = time.monotonic()


# -- the server process's side ----------------------------------------------------------------------
class ProcessRunner:
    """One model instance computing in a worker process; a ``BatchRunner`` for one batcher thread.

    :meth:`start` (on that thread) starts the process and waits until its model is loaded and
    warm, relaying its progress; :meth:`run` computes a batch there; :meth:`close` ends it.
    """

    def __init__(self, setup: WorkerSetup, progress: Callable[[str], None] | None = None) -> None:
        self.setup = setup
        self._progress = progress or log.info
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.facts: ModelFacts | None = None
        self.starts = 0  # processes started, restarts included

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> ModelFacts:
        """Start the worker process; returns once its model is warm, or raises why it could not load."""
        ours, theirs = socket.socketpair()
        # A fresh interpreter (no lock, thread pool or CUDA state inherited) that finds the modules this one does,
        # without re-running this process's main module as multiprocessing's spawn would.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        started = time.monotonic()
        with theirs:
            # A session of its own: a terminal's Ctrl-C stops the server gracefully, and the server, not the
            # signal, ends its workers once their queued work is done.
            process = subprocess.Popen([sys.executable, "-c", _CHILD, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                       env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self._process, self._conn = process, Connection(ours.detach())
        self.starts += 1
        self._send(self.setup)
        while True:
            kind, value = self._receive("loading its model")
            if kind == "progress":
                self._progress(f"worker process {process.pid}: {value}")
            elif kind == "ready":
                self.facts = value
                self._progress(f"worker process {process.pid} ready in {time.monotonic() - started:.1f} s")
                return value
            else:
                self.close()
                raise value

    def run(self, payloads: Sequence[Any]) -> list[Any]:
        """The results of ``payloads`` computed in the worker process (restarted first if it died)."""
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                self._progress(f"worker process {self._process.pid} exited (exit code {self._reap()}); starting another")
            self.start()
        self._send(("run", list(payloads)))
        kind, value = self._receive(f"computing a batch of {len(payloads)}")
        if kind == "error":
            raise value
        return value

    def _send(self, message: Any) -> None:
        """Send ``message`` to the worker process; if it has died, the next :meth:`_receive` says how."""
        assert self._conn is not None
        try:
            self._conn.send_bytes(dumps(message))
        except OSError:
            pass

    def _receive(self, doing: str) -> tuple[str, Any]:
        assert self._conn is not None
        try:
            return pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            code = self._reap()
            raise InferenceFailed(
                f"the worker process of model {self.setup.name!r} exited while {doing} (exit code {code}); "
                "the next batch starts another") from None

    def _reap(self) -> int | None:
        """Wait for the dead worker process and drop its pipe: its exit code."""
        process, self._process = self._process, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if process is None:
            return None
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self) -> None:
        """Ask the worker process to stop, and end it if it does not within :data:`STOP_TIMEOUT_S`."""
        process = self._process
        if process is None:
            return
        if self._conn is not None:
            self._send(("stop", None))
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("worker process %s of model %r did not stop; ending it", process.pid, self.setup.name)
            process.terminate()
        self._reap()


#: The worker process's program: its socket's descriptor is its one argument.
_CHILD = "import sys; from perceiver_serve.engine.worker_process import main; main(int(sys.argv[1]))"


def main(fd: int) -> None:
    """A worker process's entry: its setup arrives first on the socket ``fd``."""
    conn = Connection(fd)
    try:
        setup = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    _serve(conn, setup)
