"""How far a reconstruction is: a bar redrawn in place on a terminal, one line per window otherwise."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 24


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class Progress:
    def __init__(self, out: TextIO, source: str = "") -> None:
        self.out = out
        self.source = source
        self.tty = out.isatty()
        self.total: int | None = None
        self.started = time.monotonic()
        self.sent = self.chunks = self.done = 0

    def begin(self, windows: int | None, has_audio: bool) -> None:
        self.total = windows
        if not has_audio:
            print(f"{self.source}: no audio track, sending silence", file=self.out, flush=True)

    def window_sent(self) -> None:
        self.sent += 1
        self._draw()

    def chunk_received(self) -> None:
        self.chunks += 1
        self._draw()

    def window_done(self) -> None:
        self.done += 1
        if self.tty:
            self._draw()
        else:
            of = f"/{self.total}" if self.total else ""
            print(f"window {self.done}{of} reconstructed ({self.chunks} chunks, {self._elapsed():.1f} s)",
                  file=self.out, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.out, flush=True)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _draw(self) -> None:
        if not self.tty:
            return
        elapsed = self._elapsed()
        total = max(self.total or 0, self.sent, self.done, 1)
        filled = round(BAR_WIDTH * self.done / total)
        eta = _clock(elapsed / self.done * (total - self.done)) if self.done else "?"
        self.out.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{total} windows, "
                       f"{self.sent} sent, {self.chunks} chunks, {_clock(elapsed)} elapsed, ETA {eta} ")
        self.out.flush()
