"""The progress display: redrawn in place on a terminal, one plain line per window otherwise."""

from __future__ import annotations

import io

from perceiver_serve.client.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(out: io.StringIO) -> str:
    progress = Progress(out, "in.mp4")
    progress.begin(2, has_audio=False)
    for _ in range(2):
        progress.window_sent()
        progress.chunk_received()
        progress.window_done()
    progress.close()
    return out.getvalue()


def test_a_terminal_gets_a_bar_with_counts_and_eta():
    shown = run(Terminal())
    assert "in.mp4: no audio track, sending silence\n" in shown
    last = shown.rstrip("\n").split("\r")[-1]
    assert last.startswith("[" + "#" * 24 + "] 2/2 windows, 2 sent, 2 chunks, 0:00 elapsed, ETA 0:00")
    assert "ETA ?" in shown  # before the first window is done


def test_a_pipe_gets_one_line_per_window():
    lines = run(io.StringIO()).splitlines()
    assert lines[0] == "in.mp4: no audio track, sending silence"
    assert [line.split(" (")[0] for line in lines[1:]] == ["window 1/2 reconstructed", "window 2/2 reconstructed"]
    assert "\r" not in "".join(lines)
