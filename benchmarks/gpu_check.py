"""The Python steps of ``scripts/gpu_check.sh``: ``python -m benchmarks.gpu_check COMMAND``.

``repository OUT``: a model repository of official-size checkpoints (random weights, cached as
for the model benchmark) for the text, image and flow endpoints the load generator drives, with
the device and dtype under test; ``device``: what torch sees, as JSON; ``port``: a free port;
``wait-ready URL SECONDS``: until the server's readiness turns 200 (exit 1 if it does not);
``fetch URL FILE``: save one GET.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .checkpoints import checkpoint_dir
from .configs import head_spec, server_text_spec
from .servers import free_port, write_repository

#: The load generator's models: the server benchmark's text classifier, the conv image
#: classifier (its 322-wide attention is the one CUDA's fused kernels refuse unpadded) and flow.
SERVED = {"text-mid": ("text-classification", None), "image": ("image-classification", "vision-perceiver-conv"),
          "flow": ("optical-flow", "optical-flow-perceiver")}
BATCHING = {"max_batch_size": 64, "max_delay_ms": 2, "max_queue": 4096, "timeout_ms": 300_000}


def repository(out: Path, device: str, dtype: str, quick: bool) -> Path:
    models: dict[str, dict[str, Any]] = {}
    for name, (task, head) in SERVED.items():
        spec = server_text_spec(quick) if head is None else head_spec(head, quick)
        models[name] = {"task": task, "source": str(checkpoint_dir(spec)), "device": device, "dtype": dtype,
                        "default": True}
    return write_repository(out, models, BATCHING)


def device() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
    if info["available"]:
        info["devices"] = [{"name": torch.cuda.get_device_name(i), "capability": torch.cuda.get_device_capability(i),
                            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                           for i in range(torch.cuda.device_count())]
    return info


def wait_ready(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("repository")
    r.add_argument("out", type=Path)
    r.add_argument("--device", default="cuda")
    r.add_argument("--dtype", default="auto")
    r.add_argument("--quick", action="store_true", help="tiny checkpoints (to check the step on a CPU)")
    sub.add_parser("device")
    sub.add_parser("port")
    w = sub.add_parser("wait-ready")
    w.add_argument("url")
    w.add_argument("seconds", type=float)
    f = sub.add_parser("fetch")
    f.add_argument("url")
    f.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "repository":
        print(repository(args.out, args.device, args.dtype, args.quick))
    elif args.command == "device":
        print(json.dumps(device(), indent=2))
    elif args.command == "port":
        print(free_port())
    elif args.command == "wait-ready":
        return 0 if wait_ready(args.url, args.seconds) else 1
    else:
        with urllib.request.urlopen(args.url, timeout=30) as response:
            args.file.write_bytes(response.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
