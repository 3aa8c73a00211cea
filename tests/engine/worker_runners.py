"""A runner for the worker-process tests: imported by the worker process itself (by reference, as the
server's task runners are), it answers each payload with what the tests need to see from there."""

import os
import time

import torch

from perceiver_serve.errors import InvalidInput


class Probe:
    """``(worker pid, payload)`` per payload; a few payloads do something else (see :meth:`run`)."""

    def __init__(self, model, options):
        self.model = model
        self.options = options

    def batch_key(self, payload):
        return "probe"

    def warmup_payloads(self):
        return ["warm"]

    def run(self, payloads):
        if "exit" in payloads:
            os._exit(3)  # a crash in native code looks like this to the server process
        if "invalid" in payloads:
            raise InvalidInput("the probe refuses this payload", code="probe_refused")
        if "oom-if-batched" in payloads and len(payloads) > 1:
            raise torch.OutOfMemoryError("CPU out of memory (probe)")
        if "sleep" in payloads:
            time.sleep(30)
        return [(os.getpid(), payload) for payload in payloads]
