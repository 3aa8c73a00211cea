"""Tests of meaning: the trained demo models answer correctly on held-out data, through the real server.

The server is the suite's shared ``perceiver-serve serve`` process on the bundled repository
(``rest`` in tests/conftest.py). The held-out data comes from the same code the training
script uses (``scripts/demo_training/``), which keeps it apart from what the models were
trained on.
"""

import sys

from ..support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
