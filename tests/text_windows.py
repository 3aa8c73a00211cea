"""Which bytes of a long text the fill-mask server reads for a group of masked bytes (``context_bytes``).

Written out independently of ``tasks.text.context_windows``, for the tests' direct computations.
"""

from __future__ import annotations

import tomllib
from pathlib import Path


def context_bytes(repository: Path, name: str = "language-mlm") -> int:
    """The model's ``[options] context_bytes`` (0: the whole text)."""
    spec = tomllib.loads((repository / name / "model.toml").read_text())
    return spec.get("options", {}).get("context_bytes", 0)


def answering_window(length: int, first: int, last: int, width: int) -> tuple[int, int]:
    """``[start, end)`` read for masked bytes ``first … last`` (inclusive) of a ``length``-byte text:
    the whole text if it fits in ``width`` bytes (or ``width`` is 0), else the ``width`` bytes
    centred on them, moved inside the text."""
    if width == 0 or length <= width:
        return 0, length
    before = (width - (last - first + 1)) // 2
    start = max(0, min(first - before, length - width))
    return start, start + width
