"""Fixtures shared by the end-to-end tests (modules override `st` when they need another start)."""

from __future__ import annotations

import pytest
from cli_helpers import CliStore, fast_base


@pytest.fixture()
def base(tmp_path):
    """A fresh store directory (on /dev/shm when there is one: this disk is slow at mkdir)."""
    with fast_base(tmp_path) as b:
        yield b


@pytest.fixture()
def st(base):
    """The commands on a store holding example.test and its postmaster."""
    s = CliStore(base)
    s.call_ok("vadddomain", "example.test", "Pm-pass1")
    return s
