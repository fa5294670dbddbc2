"""The one place that decides which backend a command works on.

Today that is the local store (`vcli.store.store.Store`); commands never build
a backend themselves, so a remote (vpopmaild protocol) backend slots in here.
"""

from __future__ import annotations

from collections.abc import Callable


def open_backend(vpopmail_dir: str | None = None, qmail_dir: str | None = None, wait: float | None = None,
                 warn: Callable[[str], None] | None = None, announce: Callable[[str], None] | None = None):
    from .config import load_settings
    from .store.store import Store

    settings = load_settings({"vpopmail_dir": vpopmail_dir, "qmail_dir": qmail_dir}, announce=announce or warn)
    return Store(settings, warn=warn, lock_wait=wait)
