"""Tests of meaning: the trained demo models answer correctly on held-out data, through the real server.

The held-out data comes from the same code the training script uses (``scripts/demo_training/``),
which keeps it apart from what the models were trained on. The server and its client are the
API tests' (a real uvicorn on the bundled repository).
"""

import sys

from ..api.conftest import client, server  # noqa: F401  (fixtures shared with the API tests)
from ..support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
