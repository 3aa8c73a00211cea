"""Which model folders changed on disk, once their files have stopped changing.

The repository poller (``--model-control poll``) must never load a checkpoint that is still
being written. A folder is reported only when two scans at least ``settle_s`` apart see the
same files with the same sizes and modification times; a writer still appending moves one
of them at every scan. A reported folder is remembered as it was, whatever its load did, so
a folder that fails to load is not retried until its files change again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

# path relative to the model folder -> (size, mtime in ns)
Snapshot = dict[str, tuple[int, int]]


def snapshot(folder: Path) -> Snapshot:
    """Every regular file below ``folder`` (links not followed), with its size and mtime."""
    files: Snapshot = {}
    for directory, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for filename in filenames:
            path = Path(directory) / filename
            try:
                stat = path.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed between listing and stat: the next scan sees it
                continue
            files[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return files


@dataclasses.dataclass(frozen=True)
class Changes:
    """Model folders to (re)load and to unload, by name."""

    load: tuple[str, ...] = ()
    unload: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.load or self.unload)


class RepositoryWatcher:
    """Successive scans of a repository root; :meth:`poll` says what changed and has settled."""

    def __init__(self, root: Path, settle_s: float, is_model: Callable[[Path], bool]) -> None:
        self.root = root
        self.settle_s = settle_s
        self.is_model = is_model
        self.known: dict[str, Snapshot] = {}  # as last reported (loaded, or failed to)
        self.pending: dict[str, tuple[Snapshot, float]] = {}  # changed: as first seen so, and when

    def accept(self, name: str) -> None:
        """Record ``name`` as it is now on disk (loaded at start-up or through the API)."""
        folder = self.root / name
        if folder.is_dir():
            self.known[name] = snapshot(folder)
        else:
            self.known.pop(name, None)
        self.pending.pop(name, None)

    def poll(self, now: float) -> Changes:
        present = {p.name: p for p in sorted(self.root.iterdir()) if p.is_dir() and self.is_model(p)}
        load: list[str] = []
        for name, folder in present.items():
            current = snapshot(folder)
            if self.known.get(name) == current:
                self.pending.pop(name, None)
                continue
            seen, since = self.pending.get(name, (None, now))
            if seen != current:
                self.pending[name] = (current, now)
            elif now - since >= self.settle_s:
                self.known[name] = current
                del self.pending[name]
                load.append(name)
        unload = sorted(set(self.known) - set(present))
        for name in unload:
            del self.known[name]
        for name in set(self.pending) - set(present):
            del self.pending[name]
        return Changes(tuple(load), tuple(unload))
