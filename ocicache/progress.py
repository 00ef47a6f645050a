"""Progress on long work: live lines on a terminal, nothing in CI (the summary says it all)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._live = False
        self._lock = threading.Lock()  # downloads report from their own thread

    def step(self, message: str) -> None:
        if self.enabled:
            with self._lock:
                self._end_live()
                print(f"[{time.monotonic() - self._start:6.1f}s] {message}", file=self.stream, flush=True)

    def count(self, label: str, done: int, total: int) -> None:
        """Rewrite one line in place: `label done/total`."""
        if self.enabled:
            with self._lock:
                print(f"\r         {label} {done}/{total}", end="", file=self.stream, flush=True)
                self._live = True

    def _end_live(self) -> None:
        if self._live:
            print(file=self.stream)
            self._live = False

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._end_live()
