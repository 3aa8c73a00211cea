"""Generate the Python gRPC code for the .proto files under ``proto/`` (``make proto``).

``perceiver/v1/perceiver.proto`` is our own contract; ``inference/grpc_service.proto`` is the
Open Inference Protocol's service (inference, metadata, health and the repository calls). protoc writes ``<dir>/<name>_pb2{,_grpc}.py`` (and a
``.pyi``) whose stub imports ``from <dir> import …``; the code lives in the package
``perceiver_serve.pb``, so that import is rewritten. ``tests/grpc/test_generated.py`` runs this into a temporary directory and
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
PROTOS = ("perceiver/v1/perceiver.proto", "inference/grpc_service.proto")
PACKAGE = "perceiver_serve.pb"
DEFAULT_OUT = ROOT / "server" / "perceiver_serve" / "pb"


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out/<dir>/`` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/struct.proto
    paths = []
    for proto in PROTOS:
        status = protoc.main([
            "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(PROTO_DIR / proto),
        ])
        if status != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {status})")
        folder, stem = Path(proto).parent, Path(proto).stem
        module = ".".join(folder.parts)
        for name in (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"):
            path = out / folder / name
            path.write_text(path.read_text().replace(f"from {module} import", f"from {PACKAGE}.{module} import"))
            paths.append(path)
    return paths


if __name__ == "__main__":
    for written in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(written.relative_to(ROOT) if written.is_relative_to(ROOT) else written)
