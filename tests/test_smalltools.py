"""Issue 12 item 7, the small tools: vverifypw, vmkpasswd, vchangepw (on a pty), vmakedotqmail,
dotqmail2valias, vrcptcheck (recipient on fd 3) and vusagec (a usage daemon on a socket, or
maildirsize), each run as the installed command; bad input is one stderr line, its documented
exit status, and an unchanged store."""

from __future__ import annotations

import os
import pty
import select
import socket
import struct
import subprocess
import threading
import time

import pytest
from cli_helpers import CliStore, cdb_records, diff_snapshots, tool, verify, vpasswd_cdb

D = "example.test"


@pytest.fixture()
def st(base):
    s = CliStore(base)
    s.call_ok("vadddomain", D, "Pm-pass1")
    s.call_ok("vadduser", f"bob@{D}", "Bob-pw1x")
    return s


def unchanged(st: CliStore, before: dict) -> None:
    assert diff_snapshots(before, st.snapshot()) == []


def one_line_error(r, code: int, text: str) -> None:
    assert r.rc == code, r
    assert r.out == "" and len(r.err_lines) == 1 and text in r.err, r


# --- vverifypw --------------------------------------------------------------------------


def test_i12_07_vverifypw(st):
    """Success by argument, by prompt (stdin) and with -e (the stored hash); a wrong password, an
    unknown user or domain is `Error: authentication failed!`, 255, and nothing is written."""
    before = st.snapshot()
    assert st.run("vverifypw", f"bob@{D}", "Bob-pw1x").t == (0, "User authenticated.\n", "")
    r = st.run("vverifypw", input=f"bob@{D}\nBob-pw1x\n")
    assert (r.rc, r.out) == (0, "Please enter the email address: User authenticated.\n")
    assert r.err == "Enter password: "
    hashed = st.fields(D, "bob")[1]
    assert st.ok("vverifypw", "-e", f"bob@{D}", hashed).out == "User authenticated.\n"
    for args in ((f"bob@{D}", "wrong"), ("-e", f"bob@{D}", "Bob-pw1x"), (f"nobody@{D}", "x"),
                 ("bob@nodomain.test", "Bob-pw1x")):
        one_line_error(st.run("vverifypw", *args), 255, "Error: authentication failed!")
    one_line_error(st.run("vverifypw", "bad user@example.test", "x"), 255, "Error: Illegal username")
    r = st.run("vverifypw", "-x", f"bob@{D}", "Bob-pw1x")
    assert r.rc == 255 and r.out == "" and "vverifypw: usage:" in r.err
    r = st.run("vverifypw", "-h")
    assert r.rc == 0 and r.out.startswith("vverifypw: usage:")
    unchanged(st, before)
    r = st.run("vcli", "vverifypw", f"bob@{D}", "--password-file", "-", input="Bob-pw1x\n")
    assert r.t == (0, "User authenticated.\n", "")
    assert st.run("vcli", "vverifypw", f"bob@{D}", "nope").rc == 255


# --- vmkpasswd -----------------------------------------------------------------------------


def test_i12_07_vmkpasswd(st):
    """vpasswd.cdb rebuilt from vpasswd (missing or stale), as spec/store.md §4.1 lays it out;
    usage 255, unknown domain 253, a malformed vpasswd 65 with the cdb left as it was."""
    cdb = st.ddir(D) / "vpasswd.cdb"
    cdb.unlink()
    assert st.run("vmkpasswd", D.upper()).t == (0, "", "")
    assert cdb.read_bytes() == vpasswd_cdb(st.vpasswd(D))
    assert [k for k, _ in cdb_records(cdb.read_bytes())] == [b"bob", b"postmaster"]
    assert oct(cdb.stat().st_mode & 0o777) == "0o600"
    before = st.snapshot()
    for args in ((), (D, "extra")):
        r = st.run("vmkpasswd", *args)
        assert r.rc == 255 and r.out == "" and r.err.startswith("vmkpasswd: usage: domain"), r
    one_line_error(st.run("vmkpasswd", "nodomain.test"), 253, "Domain does not exist")
    unchanged(st, before)
    vp = st.ddir(D) / "vpasswd"
    vp.write_bytes(vp.read_bytes() + b"broken line\n")
    old = cdb.read_bytes()
    one_line_error(st.run("vmkpasswd", D), 65, "malformed")
    assert cdb.read_bytes() == old
    vp.write_bytes(vp.read_bytes().replace(b"broken line\n", b""))
    assert st.run("vcli", "vmkpasswd", D).rc == 0


# --- vchangepw -------------------------------------------------------------------------


def _pty_session(st: CliStore, argv: list[str], script: list[tuple[str, str]], timeout: float = 30) -> tuple[int, str]:
    """Run argv on a new pseudo-terminal; answer each (prompt, reply) when the prompt appears."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the command, its stdin/stdout/stderr the terminal
        os.umask(0o022)
        os.execve(argv[0], argv, st.env)
    out, pending, deadline = b"", list(script), time.time() + timeout
    seen = 0
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the command ended and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if pending and pending[0][0].encode() in out[seen:]:
                seen = out.index(pending[0][0].encode(), seen) + len(pending[0][0])
                os.write(fd, pending.pop(0)[1].encode() + b"\n")
        else:
            os.kill(pid, 9)
            raise AssertionError(f"{argv[0]} still running after {timeout}s: {out!r}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert not pending, (pending, out)
    return os.waitstatus_to_exitcode(status), out.decode()


def test_i12_07_vchangepw_on_a_terminal(st):
    """The address, the old password, the new one twice (a mismatch asks again) on a real pty,
    passwords not echoed; a wrong old password is exit 3 with nothing changed."""
    before = st.snapshot()
    rc, out = _pty_session(st, [tool("vchangepw")], [("email address: ", f"bob@{D}"),
                                                    ("old password: ", "Wrong-pw9")])
    assert rc == 3 and "Error: authentication failed!" in out and "Wrong-pw9" not in out
    unchanged(st, before)
    rc, out = _pty_session(st, [tool("vchangepw")], [
        ("email address: ", f"bob@{D}"), ("old password: ", "Bob-pw1x"),
        (f"password for bob@{D}: ", "New-pw2x"), ("again: ", "Other-pw3"),
        (f"password for bob@{D}: ", "New-pw2x"), ("again: ", "New-pw2x")])
    assert rc == 0, out
    assert "Passwords do not match, try again" in out and out.rstrip().endswith("Password successfully changed.")
    assert "New-pw2x" not in out and "Bob-pw1x" not in out
    assert verify("New-pw2x", st.fields(D, "bob")[1])
    rc, out = _pty_session(st, [tool("vchangepw")], [("email address: ", f"nobody@{D}"), ("old password: ", "x")])
    assert rc == 3 and "authentication failed" in out


def test_i12_07_vchangepw_without_a_terminal(st):
    """No address at all is exit 0 (the C tool's choice); a refused change (NO_PASSWD_CHNG) is
    vpasswd's `Error: Illegal username`, 255, with the password left alone."""
    assert st.run("vchangepw", input="").rc == 0
    st.call_ok("vmoduser", "-d", f"bob@{D}")
    before = st.snapshot()
    r = st.run("vchangepw", input=f"bob@{D}\nBob-pw1x\nNew-pw2x\nNew-pw2x\n")
    assert r.rc == 255 and r.err.endswith("enter password again: Error: Illegal username\n"), r
    unchanged(st, before)


# --- vmakedotqmail -------------------------------------------------------------------------


def test_i12_07_vmakedotqmail(st):
    """control/defaultdelivery copied into .qmail files (skip / -o / -r / -t), .qmail-default
    rewritten with -q; a missing defaultdelivery, -q without a domain, an unknown user: 255,
    nothing written."""
    st.call_ok("vaddaliasdomain", D, "alias.test")
    before = st.snapshot()
    one_line_error(st.run("vmakedotqmail", "-u", f"bob@{D}"), 255, "control/defaultdelivery")
    (st.qm / "control").mkdir(exist_ok=True)
    dd = st.qm / "control" / "defaultdelivery"
    dd.write_bytes(b"./Maildir/\n")
    before = st.snapshot()
    r = st.run("vmakedotqmail", "-q", "default")
    assert r.rc == 255 and "-d <domain> or -A" in r.err
    one_line_error(st.run("vmakedotqmail", "-u", f"nobody@{D}"), 255, f"no such user nobody@{D}")
    one_line_error(st.run("vmakedotqmail", "-d", "nodomain.test"), 255, "Domain nodomain.test does not exist")
    r = st.ok("vmakedotqmail", "-t", "-d", D)
    assert f"**TESTING** bob@{D} DONE" in r.out
    unchanged(st, before)
    assert st.ok("vmakedotqmail", "-u", f"bob@{D}").out == f"bob@{D} DONE\n"
    bob = st.ddir(D) / "bob" / ".qmail"
    assert bob.read_bytes() == b"./Maildir/\n" and oct(bob.stat().st_mode & 0o777) == "0o600"
    r = st.ok("vmakedotqmail", "-A")
    assert f"bob@{D} SKIP (.qmail already exists)" in r.out and f"postmaster@{D} DONE" in r.out
    assert "SKIP domain: alias.test (alias of example.test)" in r.out
    assert f"bob@{D} DONE (existing .qmail overwritten)" in st.ok("vmakedotqmail", "-o", "-d", D).out
    assert st.ok("vmakedotqmail", "-r", "-u", f"bob@{D}").out == f"bob@{D} REMOVED existing .qmail\n"
    assert not bob.exists()
    r = st.ok("vmakedotqmail", "-d", D, "-q", "default")
    assert f"{D}: rewriting .qmail-default" in r.out and r.out.count("DONE") == 1
    assert (st.ddir(D) / ".qmail-default").read_text() == f"| {st.vp}/bin/vdelivermail '' delete\n"
    dd.write_text(f"| {st.vp}/bin/vdelivermail '' delete\n")
    assert "SKIP (control/defaultdelivery already has vdelivermail)" in st.ok("vmakedotqmail", "-u", f"bob@{D}").out
    assert not bob.exists()


# --- dotqmail2valias ------------------------------------------------------------------


def test_i12_07_dotqmail2valias_says_this_store_has_no_valias(st):
    """A cdb store has no valias table: one line and 255 (the C program's status when built
    without valias), and the .qmail files stay."""
    st.call_ok("valias", "-i", "carol@elsewhere.test", f"info@{D}")
    before = st.snapshot()
    for args in ((D,), ("-a",), ()):
        one_line_error(st.run("dotqmail2valias", *args), 255, "no valias table")
    unchanged(st, before)


# --- vrcptcheck --------------------------------------------------------------------------


def rcptcheck(st: CliStore, data: bytes | None, *extra_env: str) -> tuple[int, str]:
    """vrcptcheck with `data` on fd 3 (None: fd 3 not open), as qmail-smtpd runs it."""
    cmd = [tool("vrcptcheck")]
    if data is not None:  # the data arrive on a pipe as fd 3, stdin is /dev/null
        cmd = ["/bin/sh", "-c", 'exec "$0" 3<&0 0</dev/null', tool("vrcptcheck")]
    p = subprocess.run(cmd, env=st.env, capture_output=True, input=data or b"", timeout=60)
    assert p.stdout == b""
    return p.returncode, p.stderr.decode()


def test_i12_07_vrcptcheck(st):
    """0 for a mailbox (also through an alias domain), a .qmail alias, a mailing list and its
    -default addresses, an autoresponder, qmail/alias; 1 for an unknown recipient even with a
    catch-all; 111 when fd 3 is missing or the store cannot be read."""
    st.call_ok("vaddaliasdomain", D, "alias.test")
    ddir = st.ddir(D)
    (ddir / ".qmail-info").write_text("&carol@elsewhere.test\n")
    (ddir / ".qmail-first:last").write_text("&x@elsewhere.test\n")
    (ddir / ".qmail-list").write_text(f"|/usr/bin/ezmlm-reject '{ddir}/list'\n")
    (ddir / ".qmail-list-default").write_text(f"|/usr/bin/ezmlm-manage '{ddir}/list'\n")
    (ddir / "AWAY").mkdir()
    (ddir / "AWAY" / "message").write_text("gone\n")
    (ddir / ".qmail-default").write_text(f"| {st.vp}/bin/vdelivermail '' {ddir}/postmaster\n")
    (st.qm / "alias").mkdir()
    (st.qm / "alias" / ".qmail-postmaster").write_text("root\n")
    before = st.snapshot()
    for rcpt in (f"bob@{D}", f"BOB@{D.upper()}", "bob@alias.test", f"info@{D}", f"first.last@{D}",
                 f"list@{D}", f"list-subscribe@{D}", f"away@{D}", "postmaster", f"postmaster@{D}"):
        assert rcptcheck(st, rcpt.encode() + b"\0") == (0, ""), rcpt
    assert rcptcheck(st, f"bob@{D}".encode())[0] == 0  # without the NUL
    for rcpt in (f"nobody@{D}", f"default@{D}", "bob@nodomain.test", "nobody", f"@{D}", f"../bob@{D}"):
        assert rcptcheck(st, rcpt.encode() + b"\0")[0] == 1, rcpt
    rc, err = rcptcheck(st, b"a" * 600 + b"@example.test\0")
    assert rc == 1 and "longer than 512" in err
    rc, err = rcptcheck(st, None)
    assert rc == 111 and "file descriptor 3" in err
    unchanged(st, before)
    cdb = ddir / "vpasswd.cdb"
    saved = cdb.read_bytes()
    cdb.unlink()
    cdb.mkdir()  # vpasswd.cdb unreadable (root reads any mode): a temporary failure, never "no such user"
    rc, err = rcptcheck(st, f"bob@{D}\0".encode())
    assert rc == 111 and err.startswith("vrcptcheck: temporary failure") and "vpasswd.cdb" in err, err
    assert st.run("vcli", "vrcptcheck", f"bob@{D}").rc == 111
    cdb.rmdir()
    cdb.write_bytes(saved)
    assert st.run("vcli", "vrcptcheck", f"bob@{D}").rc == 0
    assert st.run("vcli", "vrcptcheck", f"nobody@{D}").rc == 1


# --- vusagec --------------------------------------------------------------------------


class FakeVusaged:
    """A usage daemon on a unix socket answering as vusaged does: 2-byte length + entry in,
    two big-endian 64-bit counts out (all ones: no data)."""

    def __init__(self, path: str, answers: dict[str, tuple[int, int]]):
        self.path, self.answers, self.queries = path, answers, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while True:
                    head = conn.recv(2)
                    if len(head) < 2:
                        break
                    (n,) = struct.unpack(">H", head)
                    entry = conn.recv(n).decode()
                    self.queries.append(entry)
                    size, count = self.answers.get(entry.lower(), (2**64 - 1, 2**64 - 1))
                    conn.sendall(struct.pack(">QQ", size, count))

    def close(self) -> None:
        self.sock.close()


def test_i12_07_vusagec(st):
    """From maildirsize when no daemon is configured (the Maildir itself when maildirsize is
    missing), `No data available` for unknown entries; from the daemon when vusagec.conf enables
    one; a configured daemon that is down is one warning and the local figures."""
    st.call_ok("vadduser", f"carol@{D}", "Carol-pw1")
    md = st.ddir(D) / "bob" / "Maildir"
    (md / "maildirsize").write_text("1000000S\n300 2\n200 1\n")
    new = st.ddir(D) / "carol" / "Maildir" / "new"
    (new / "1.2.host,S=50").write_text("x" * 50)
    (st.ddir(D) / "carol" / "Maildir" / "maildirsize").unlink(missing_ok=True)
    before = st.snapshot()
    r = st.ok("vusagec", f"bob@{D}", f"carol@{D}", f"@{D}", f"nobody@{D}", "@nodomain.test")
    assert r.out.splitlines() == [f"bob@{D}: 500 byte(s) in 3 file(s)", f"carol@{D}: 50 byte(s) in 1 file(s)",
                                  f"{D}: 550 byte(s) in 4 file(s)", f"nobody@{D}: No data available",
                                  "@nodomain.test: No data available"]
    assert r.err == ""
    r = st.run("vusagec")
    assert r.rc == 1 and r.out == "" and r.err.startswith("Usage: vusagec")
    unchanged(st, before)

    sock = str(st.base / "vusaged.sock")
    conf = st.vp / "etc" / "vusagec.conf"
    conf.write_text(f"/* test */\nServer:\n   Disable = False;\n   Filename = {sock};\n   // comment\n"
                    "   Timeout = 2;\n")
    r = st.ok("vusagec", f"bob@{D}")
    assert r.out == f"bob@{D}: 500 byte(s) in 3 file(s)\n"
    assert "usage daemon not reachable" in r.err and len(r.err_lines) == 1
    daemon = FakeVusaged(sock, {f"bob@{D}": (123456, 7), f"@{D}": (999, 9)})
    try:
        r = st.ok("vusagec", f"bob@{D}", f"@{D}", f"nobody@{D}")
        assert r.out.splitlines() == [f"bob@{D}: 123456 byte(s) in 7 file(s)", f"{D}: 999 byte(s) in 9 file(s)",
                                      f"nobody@{D}: No data available"]
        assert daemon.queries == [f"bob@{D}", f"@{D}", f"nobody@{D}"] and r.err == ""
        r = st.ok("vcli", "vusagec", "-o", "json", f"bob@{D}")
        assert '"source": "vusaged"' in r.out and '"bytes": 123456' in r.out
        r = st.ok("vcli", "vusagec", "--local", "-o", "csv", f"bob@{D}")
        assert r.out.splitlines() == ["entry,bytes,files,source", f"bob@{D},500,3,maildirsize"]
    finally:
        daemon.close()
    os.unlink(sock)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts, never answers: the 2 s timeout
    mute.bind(sock)
    mute.listen(1)
    try:
        r = st.ok("vusagec", f"bob@{D}")
        assert r.out == f"bob@{D}: 500 byte(s) in 3 file(s)\n" and "failed" in r.err and len(r.err_lines) == 1
    finally:
        mute.close()
