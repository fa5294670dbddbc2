"""A store laid out as tests/transcripts/README.md says, and a real daemon process serving it.

Site mode (VCLI_TEST_SITE=1, set by .ci/site-tests): the daemon is the installed `vpopmaild` started
as root with no --user, so it drops to the vpopmail user as on a real site; its store must then be
reachable by that user (see `open_to_vpopmail`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

from storeenv import make_env

from vcli import flags as F
from vcli.config import load_settings
from vcli.store.store import NewUser, Store, UserChanges

SITE = os.environ.get("VCLI_TEST_SITE") == "1"
BIN = os.path.dirname(sys.executable)


def vpopmail_ids() -> tuple[int, int]:
    """uid of the vpopmail user and gid of the vchkpw group (site mode: they must exist)."""
    import grp
    import pwd

    return pwd.getpwnam("vpopmail").pw_uid, grp.getgrnam("vchkpw").gr_gid


def vpopmail_can_read(path: str) -> bool:
    """Whether the vpopmail user can read (or search) `path`: a forked child drops to it, no exec."""
    uid, gid = vpopmail_ids()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os._exit(0 if os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)) else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def open_to_vpopmail(env: dict, qmail_writable: bool = True) -> None:
    """Site mode: let the daemon, dropped to vpopmail, reach the store as on a site. The vpopmail
    home and its etc/ go to vpopmail:vchkpw (as vpopmail's install leaves them; domains made by
    root commands already are); directories above it inside VCLI_TEST_SITE_TMP (pytest's
    basetemp, 0700) get o+x; any other directory vpopmail cannot search is an error, not a chmod.
    qmail_writable: qmail's users/ and control/ group-writable by vchkpw, as contrib/README.md
    tells a site whose daemon changes domains; else they stay root's 0755 (/var/qmail as installed)."""
    uid, gid = vpopmail_ids()
    vp = env["VPOPMAIL_DIR"]
    for path in [vp, os.path.join(vp, "etc"), *(os.path.join(vp, "etc", n) for n in os.listdir(os.path.join(vp, "etc")))]:
        if os.lstat(path).st_uid == 0:
            os.chown(path, uid, gid)
    if qmail_writable:
        for sub in ("users", "control"):
            d = os.path.join(env["QMAIL_DIR"], sub)
            os.makedirs(d, exist_ok=True)
            for path in [d, *(os.path.join(d, n) for n in os.listdir(d))]:
                os.chown(path, -1, gid)
                os.chmod(path, os.lstat(path).st_mode & 0o7777 | 0o060 | (0o010 if os.path.isdir(path) else 0))
    allowed = os.path.realpath(os.environ["VCLI_TEST_SITE_TMP"])
    d = os.path.dirname(os.path.realpath(vp))
    while True:
        mode = os.stat(d).st_mode
        if not mode & 0o001:
            if not (d + "/").startswith(allowed + "/"):
                raise RuntimeError(f"site mode: vpopmail cannot search {d}: put the test stores under "
                                   f"VCLI_TEST_SITE_TMP ({allowed})")
            os.chmod(d, (mode & 0o7777) | 0o011)
        if d == "/":
            break
        d = os.path.dirname(d)

def build_store(tmp_path) -> dict:
    env = make_env(tmp_path)
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain("admin.test", "Admin-pm1")
    st.add_domain("example.test", "Pm-pass1")
    st.add_domain("other.test", "Other-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1", gecos="System Admin"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
    st.add_user("example.test", NewUser("alice", "pw with spaces", gecos="Alice A"))
    st.add_user("example.test", NewUser("dadmin", "Dadmin-pw1"))
    st.mod_user("dadmin", "example.test", UserChanges(set_flags=F.QA_ADMIN))
    st.add_user("other.test", NewUser("dan", "Dan-pass1"))
    st.add_alias_line("example.test", "info", "alice@example.test")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`python -m vcli.daemon` on a free loopback port; stops on exit. In site mode the installed
    `vpopmaild`, started from / without --user: it drops to vpopmail by itself (qmail_writable:
    see open_to_vpopmail)."""

    def __init__(self, env: dict, *extra: str, qmail_writable: bool = True):
        self.port = free_port()
        if SITE:
            open_to_vpopmail(env, qmail_writable)
            argv = [os.path.join(BIN, "vpopmaild")]
        else:
            argv = [sys.executable, "-m", "vcli.daemon"]
            if "--user" not in extra and os.geteuid() == 0:
                # started as root the daemon drops to `vpopmail` when that user exists (a machine with
                # vpopmail installed), who may not be able to read this interpreter or the test store
                extra = ("--user", "root", *extra)
        self.proc = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{self.port}", *extra], cwd="/" if SITE else None,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        line = self.proc.stderr.readline().decode()
        if "listening" not in line:
            self.proc.kill()
            raise RuntimeError(f"daemon did not start: {line!r}")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Client:
    """A raw protocol client that reads whole replies (one command at a time)."""

    def __init__(self, port: int, timeout: float = 10.0, source: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        assert self.line() == b"+OK \r\n"

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def send(self, text: str | bytes) -> None:
        self.sock.sendall(text if isinstance(text, bytes) else text.encode() + b"\r\n")

    def cmd(self, text: str) -> bytes:
        """Send one command, return the whole reply (through '.' for +OK+)."""
        self.send(text)
        first = self.line()
        if not first.startswith(b"+OK+"):
            return first
        out = first
        while True:
            ln = self.line()
            out += ln
            if ln == b".\r\n":
                return out

    def mod_user(self, address: str, option: str) -> bytes:
        """One mod_user with one option line, sent whole (the daemon answers an unknown user only
        after the '.'); returns the final reply."""
        self.send(f"mod_user {address}\r\n{option}\r\n.".encode() + b"\r\n")
        first = self.line()
        return self.line() if first == b"+OK \r\n" else first

    def close(self) -> None:
        self.sock.close()


def mask(reply: bytes) -> bytes:
    return re.sub(rb"\$[0-9a-z]+\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+", b"{HASH}", reply)


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, TimeoutError):
        return True
    return False


def env_path(env: dict, *parts: str) -> str:
    return os.path.join(env["VPOPMAIL_DIR"], *parts)
