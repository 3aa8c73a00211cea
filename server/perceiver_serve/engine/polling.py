"""``--model-control poll``: the repository on disk drives what is served.

A thread rescans the repository every ``interval_s``. A model folder that appeared or changed
is (re)loaded once its files have settled (:class:`RepositoryWatcher`: never a checkpoint
still being written), one that disappeared is unloaded. Loads run on this thread, so the
event loop keeps serving, and a reload keeps the old copy answering until the new is warm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import ServeError

from .registry import ModelRegistry
from .watcher import RepositoryWatcher

log = logging.getLogger(__name__)


class RepositoryPoller:
    def __init__(self, registry: ModelRegistry, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        root = registry.repository.root
        # Files must look the same over a whole poll interval before they are believed complete.
        self.watcher = RepositoryWatcher(root, settle_s=interval_s, is_model=lambda p: (p / "model.toml").is_file())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repository-poller", daemon=True)

    def start(self) -> None:
        """Take the repository as it is now as known (start-up loaded it), then watch for changes."""
        for name in self.registry.repository.names():
            self.watcher.accept(name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a scan that fails (a folder vanishing mid-walk) retries next time
                log.exception("repository poll failed; trying again in %.1f s", self.interval_s)

    def poll_once(self) -> None:
        changes = self.watcher.poll(time.monotonic())
        for name in changes.unload:
            if name in self.registry.models:
                log.info("repository poll: %r left the repository; unloading it", name)
                self._apply(self.registry.unload, name)
        for name in changes.load:
            if self._stop.is_set():
                return
            log.info("repository poll: %r is new or changed on disk; loading it", name)
            self._apply(self.registry.load, name)

    @staticmethod
    def _apply(change: Callable[[str], object], name: str) -> None:
        try:
            change(name)
        except ServeError as exc:  # an invalid folder name, a folder gone since the scan: skip this one
            log.error("repository poll: cannot change %r: %s", name, exc)
