"""Generate the Python gRPC code for ``proto/perceiver/v1/perceiver.proto`` (``make proto``).

protoc writes ``perceiver/v1/perceiver_pb2{,_grpc}.py`` (and a ``.pyi``) whose stub imports
``from perceiver.v1 import …``; the code lives in the package ``perceiver_serve.pb``, so that
import is rewritten. ``tests/grpc/test_generated.py`` runs this into a temporary directory and
compares, so the committed code cannot drift from the .proto.

    python proto/generate.py [OUT_DIR]      # default: server/perceiver_serve/pb
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTO = "perceiver/v1/perceiver.proto"
PACKAGE = "perceiver_serve.pb"
DEFAULT_OUT = ROOT / "server" / "perceiver_serve" / "pb"
GENERATED = ("perceiver_pb2.py", "perceiver_pb2.pyi", "perceiver_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out/perceiver/v1/`` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/struct.proto
    status = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(PROTO_DIR / PROTO),
    ])
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {status})")
    paths = [out / "perceiver" / "v1" / name for name in GENERATED]
    for path in paths:
        text = path.read_text()
        path.write_text(text.replace("from perceiver.v1 import", f"from {PACKAGE}.perceiver.v1 import"))
    return paths


if __name__ == "__main__":
    for written in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(written.relative_to(ROOT) if written.is_relative_to(ROOT) else written)
