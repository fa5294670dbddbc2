"""A one-line progress counter on stderr, shown only when stderr is a terminal (never in cron
mail, never with --quiet): `label: 1200/100000`."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, enabled: bool | None = None):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.shown = False
        self.last = 0.0

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and n != self.total):
            return
        self.last = now
        sys.stderr.write(f"\r{self.label}: {n}" + (f"/{self.total}" if self.total else ""))
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
