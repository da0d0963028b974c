"""
A one-line progress bar on stderr, plain lines when stderr is not a terminal.

On a terminal the bar is redrawn in place: units done, elapsed time, the
current step and the load generator's latest progress text. Elsewhere (CI
logs) each step prints one line and progress text is dropped.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._started = time.monotonic()
        self._step = ""
        self._detail = ""
        self._drawn = 0.0

    def step(self, label: str) -> None:
        """Begin the next unit of work."""
        self._step = label
        self._detail = ""
        if self._live:
            self._draw(force=True)
        else:
            self._stream.write(f"[{self.done + 1}/{self.total}] {label}\n")
            self._stream.flush()

    def detail(self, text: str) -> None:
        """Show the running step's latest progress text."""
        self._detail = text
        self._draw()

    def advance(self, units: int = 1) -> None:
        self.done = min(self.done + units, self.total)
        self._draw(force=True)

    def note(self, text: str) -> None:
        """Print a line above the bar."""
        if self._live:
            self._stream.write("\r\x1b[2K")
        self._stream.write(text.rstrip("\n") + "\n")
        self._draw(force=True)

    def close(self) -> None:
        if self._live:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._live or (not force and now - self._drawn < 0.2):
            return
        self._drawn = now
        width = shutil.get_terminal_size((100, 20)).columns
        elapsed = int(now - self._started)
        bar_width = 24
        filled = bar_width * self.done // self.total
        bar = "#" * filled + "-" * (bar_width - filled)
        text = (
            f"[{bar}] {self.done}/{self.total} {elapsed // 60:02d}:{elapsed % 60:02d} {self._step}"
        )
        if self._detail:
            text += f" | {self._detail}"
        self._stream.write("\r\x1b[2K" + text[: width - 1])
        self._stream.flush()
