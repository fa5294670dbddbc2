"""vcli and vpopmail exclude each other through fcntl record locks on `.vpasswd.lock`."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from storeenv import make_env, tool

# A stand-in for a C vpopmail tool: takes fcntl(F_SETLK, F_WRLCK) on the lock file, as vpopmail does.
HOLDER = r"""
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture()
def env(tmp_path):
    e = make_env(tmp_path)
    subprocess.run([tool("vadddomain"), "example.test", "Pm-pass1"], env=e, check=True)
    return e, tmp_path / "vpopmail" / "domains" / "example.test"


def _hold(lock: str, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, lock, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_busy_lock_fails_at_once_with_wait_zero(env):
    e, ddir = env
    before = (ddir / "vpasswd").read_bytes()
    holder = _hold(str(ddir / ".vpasswd.lock"), 5)
    try:
        t0 = time.monotonic()
        r = subprocess.run([tool("vcli"), "--wait", "0", "vadduser", "bob@example.test", "Bob-pass1"],
                           env=e, capture_output=True, text=True)
        assert time.monotonic() - t0 < 3
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 75
    assert r.stderr.strip() == "Error: File busy try again later!"
    assert r.stdout == ""
    assert (ddir / "vpasswd").read_bytes() == before


def test_wait_waits_for_the_lock_then_succeeds(env):
    e, ddir = env
    holder = _hold(str(ddir / ".vpasswd.lock"), 1.5)
    t0 = time.monotonic()
    r = subprocess.run([tool("vcli"), "--wait", "10", "vadduser", "bob@example.test", "Bob-pass1"],
                       env=e, capture_output=True, text=True)
    waited = time.monotonic() - t0
    holder.wait()
    assert r.returncode == 0, r.stderr
    assert waited >= 1.0
    assert (ddir / "vpasswd").read_bytes().startswith(b"bob:")


def test_classic_command_honours_lock_wait_setting(env):
    e, ddir = env
    holder = _hold(str(ddir / ".vpasswd.lock"), 5)
    try:
        r = subprocess.run([tool("vadduser"), "carol@example.test", "Carol-pass1"],
                           env=dict(e, VCLI_LOCK_WAIT="0.2"), capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 75
    assert "File busy try again later!" in r.stderr
    assert b"carol:" not in (ddir / "vpasswd").read_bytes()
