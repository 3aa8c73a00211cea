"""The client installs and imports without the server's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

from ..support import REPO

SERVER_ONLY = ("torch", "fastapi", "starlette", "uvicorn", "PIL", "transformers", "safetensors", "soundfile")

BLOCKED_IMPORT = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is blocked: the client must not need it")
        return None

sys.meta_path.insert(0, Block())
import perceiver_serve.client, perceiver_serve.client.cli, perceiver_serve.client.media
from perceiver_serve.client.cli import main
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
loaded = sorted(m for m in sys.modules if m.startswith("perceiver_serve."))
print("\\n".join(loaded))
"""


def test_the_client_imports_without_torch_or_fastapi():
    run = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = {line for line in run.stdout.splitlines() if line.startswith("perceiver_serve.")}
    server_side = {m for m in loaded if not m.startswith(("perceiver_serve.client", "perceiver_serve.pb"))}
    assert server_side == {"perceiver_serve.answers"}, server_side
