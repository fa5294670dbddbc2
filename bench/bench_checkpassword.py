#!/usr/bin/env python3
"""Checkpassword figures (issue 12 items 1, 2): logins/s with one process per login, as qmail runs
them, for `vchkpw` on the local store and `vcheckpassword --remote` through our daemon; the bare
clogin round trip in-process; and the interpreter's own start-up for scale.

    python bench/bench_checkpassword.py [--seconds 3] [--users 1000]

VPOPMAIL_REF=/home/vpopmail/bin and VPOPMAIL_REF_LOGIN=user@domain:password (an account of that
build's store): the real vchkpw is measured too. VPOPMAILD_REF=host:port (a real vpopmaild) with
VPOPMAIL_REF_LOGIN: `vcheckpassword --remote` against it. Otherwise those lines say "not measured".
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import empty_store, tool

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, os.path.join(HERE, ".."))
LOGIN, PASSWORD = "bench@bench.test", "Bench-pw1"


def make_store(root: str, users: int) -> dict:
    from vcli.config import load_settings
    from vcli.store.passwords import hash_password
    from vcli.store.store import NewUser, Store

    vp, qm = empty_store(root)
    ids = {} if os.geteuid() == 0 else {"vpopmail_uid": os.getuid(), "vpopmail_gid": os.getgid()}
    st = Store(load_settings({"vpopmail_dir": vp, "qmail_dir": qm, **ids}))
    st.add_domain("bench.test", "Pm-pass1")
    h = hash_password("Other-pw1")
    st.add_users("bench.test", [NewUser(f"u{i:06d}", hashed=h) for i in range(users)])
    st.add_user("bench.test", NewUser("bench", PASSWORD))
    env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm, VCLI_AUTH_FAIL_DELAY="0")
    # as installed on a site (pip writes the .pyc files): without them every login compiles vcli again
    for var in ("VCLI_REMOTE", "VCLI_PROFILE", "VCLI_CONFIG", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    return env


def one(argv: list[str], env: dict, data: bytes) -> int:
    """One login: a fresh process with `data` on fd 3, as qmail-popup / qmail-smtpd start it."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              pass_fds=(3, r), preexec_fn=lambda: os.dup2(r, 3)).returncode
    finally:
        os.close(r)


def rate(label: str, argv: list[str], env: dict, data: bytes, seconds: float) -> float | None:
    rc = one(argv, env, data)
    if rc != 0:
        print(f"{label:<52} failed: exit {rc}")
        return None
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if one(argv, env, data) != 0:
            print(f"{label:<52} a login failed")
            return None
        n += 1
    per_s = n / (time.perf_counter() - t0)
    print(f"{label:<52} {per_s:7.1f} logins/s  ({1000 / per_s:6.1f} ms each)")
    return per_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(env: dict, log: str) -> tuple[subprocess.Popen, int]:
    """Our daemon, its log in a file (a pipe nobody reads would fill up and stall it)."""
    port = free_port()
    extra = ["--user", "root"] if os.geteuid() == 0 else []
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vcli.daemon", "--listen", f"127.0.0.1:{port}", *extra],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 20
    while "listening" not in open(log).read():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"our daemon did not start: {open(log).read()}")
        time.sleep(0.05)
    return proc, port


def round_trip(port: int, login: str, password: str, seconds: float) -> None:
    """connect + greeting + clogin + close, in this process: what --remote adds to a login."""
    from vcli.protocol.client import Connection

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c = Connection("127.0.0.1", port, timeout=5)
        c.connect()
        c.login(login, password)
        c.sock.close()
        n += 1
    per_s = n / (time.perf_counter() - t0)
    print(f"{'  clogin round trip alone (in-process)':<52} {per_s:7.1f} logins/s  ({1000 / per_s:6.2f} ms each)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--users", type=int, default=1000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-chkpw-")
    os.chmod(root, 0o755)
    try:
        env = make_store(root, a.users)
        data = f"{LOGIN}\0{PASSWORD}\0{int(time.time())}\0".encode()
        print(f"store: bench.test with {a.users + 2} users; one process per login, sequential")
        rate("python3 -c pass (interpreter start-up, for scale)", [sys.executable, "-c", "pass"], env, b"", a.seconds)
        rate("vchkpw /bin/true (SMTP AUTH)", [tool("vchkpw"), "/bin/true"], env, data, a.seconds)
        rate("vchkpw /bin/true, TCPLOCALPORT=110 (POP: setuid, chdir)", [tool("vchkpw"), "/bin/true"],
             dict(env, TCPLOCALPORT="110", TCPREMOTEIP="192.0.2.1"), data, a.seconds)
        rate("vcheckpassword /bin/true (local)", [tool("vcheckpassword"), "/bin/true"], env, data, a.seconds)
        proc, port = start_daemon(env, os.path.join(root, "daemon.log"))
        try:
            rate("vcheckpassword --remote (our daemon) /bin/true", [tool("vcheckpassword"), "--remote",
                 f"127.0.0.1:{port}", "/bin/true"], env, data, a.seconds)
            round_trip(port, LOGIN, PASSWORD, a.seconds)
        finally:
            proc.terminate()
            proc.wait(10)
        ref, ref_login = os.environ.get("VPOPMAIL_REF"), os.environ.get("VPOPMAIL_REF_LOGIN")
        ref_data = None
        if ref_login and ":" in ref_login:
            user, _, pw = ref_login.partition(":")
            ref_data = f"{user}\0{pw}\0{int(time.time())}\0".encode()
        label = "real vchkpw /bin/true (VPOPMAIL_REF)"
        if ref and ref_data:
            rate(label, [os.path.join(ref, "vchkpw"), "/bin/true"], dict(os.environ), ref_data, a.seconds)
        else:
            print(f"{label:<52} not measured (set VPOPMAIL_REF and VPOPMAIL_REF_LOGIN=user@domain:password)")
        dref = os.environ.get("VPOPMAILD_REF")
        label = "vcheckpassword --remote (real vpopmaild)"
        if dref and ref_data:
            rate(label, [tool("vcheckpassword"), "--remote", dref, "/bin/true"], env, ref_data, a.seconds)
        else:
            print(f"{label:<52} not measured (set VPOPMAILD_REF=host:port and VPOPMAIL_REF_LOGIN)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
