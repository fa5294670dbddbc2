"""Issue 10, the daemon and remote items: real daemon processes over real sockets, the installed
`vcli` command against them.

Item 1: the file commands never touch the store's own files, and a .qmail file written through
them holds only deliveries inside the login's tree and allowlisted programs.  Item 7: started as
root the daemon serves as `vpopmail` even when the interpreter is unreadable to it, and says in
one line (exit 78) what it cannot do before binding.  Items 11, 17, 18, the loopback throttle and
the remote port: see each test.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from daemon_helpers import Client, Daemon, build_store, env_path, free_port, vpopmail_can_read
from storeenv import run, snapshot

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_AUTH_STORE = b"-ERR 9.1513 Not Authorized\r\n"
NOT_AUTH_DEFAULT = b"-ERR 9.1514 Not Authorized\r\n"
REFUSED_CONTENT = b"-ERR 9.2003 Not Authorized\r\n"


@pytest.fixture()
def env(tmp_path):
    return build_store(tmp_path)


@pytest.fixture()
def daemon(env):
    with Daemon(env, "--idle-timeout", "5", "--login-delay", "0.01") as d:
        yield d


def _login(port: int, who: str) -> Client:
    c = Client(port)
    assert c.cmd(f"slogin {who}") == b"+OK \r\n", who
    return c


def _write(c: Client, path: str, lines: list[str]) -> bytes:
    """write_file with its data sent whole; the final reply (or the immediate refusal)."""
    c.send(f"write_file {path}")
    c.send("".join(x + "\r\n" for x in lines).encode() + b".\r\n")
    return c.line()


DADMIN = "dadmin@example.test Dadmin-pw1"
ALICE = "alice@example.test pw with spaces"
SYSADMIN = "sysadmin@admin.test SysPass1"


# --- item 1 -------------------------------------------------------------------------------


def test_i10_01_domain_admin_cannot_reach_the_store_files(daemon, env):
    """The attacks of the issue: every one refused with -ERR 9.1513/9.1514 before anything is
    read, and the store's bytes unchanged."""
    before = snapshot(env["VPOPMAIL_DIR"])
    c = _login(daemon.port, DADMIN)
    vpasswd_line = "postmaster:$6$x$y:1:65536:Postmaster:/x:NOQUOTA"
    for path in ("example.test/vpasswd", "example.test/vpasswd.cdb", "example.test/.qmailadmin-limits",
                 "example.test/.dir-control", "example.test/.vcli-intent", "example.test/.vpasswd.lock",
                 "example.test/.dir_control_free", "example.test/vpasswd.cdb/x"):
        assert c.cmd(f"write_file {path}") == NOT_AUTH_STORE, path  # refused at once: no data sent
        assert c.cmd(f"rm_file {path}") == NOT_AUTH_STORE, path
        assert c.cmd(f"read_file {path}") == NOT_AUTH_STORE, path
        assert c.cmd(f"stat_file {path}") == NOT_AUTH_STORE, path
        assert c.cmd(f"mk_dir {path}") == NOT_AUTH_STORE, path
    assert c.cmd(f"write_file {env_path(env, 'domains', 'example.test', 'vpasswd')}") == NOT_AUTH_STORE
    assert c.cmd("rename_file example.test/.qmail-info example.test/vpasswd") == NOT_AUTH_STORE
    assert c.cmd("rename_file example.test/vpasswd example.test/x") == NOT_AUTH_STORE
    assert c.cmd("write_file example.test/.qmail-default") == NOT_AUTH_DEFAULT
    assert c.cmd("rm_file example.test/.qmail-default") == NOT_AUTH_DEFAULT
    assert c.cmd("rename_file example.test/.qmail-info example.test/.qmail-default") == NOT_AUTH_DEFAULT
    assert c.cmd("rename_file example.test/.qmail-default example.test/x") == NOT_AUTH_DEFAULT
    # a delivery path naming a store file: the mail itself would be appended to vpasswd
    assert _write(c, "example.test/.qmail-x", ["./vpasswd", vpasswd_line]) == REFUSED_CONTENT
    assert _write(c, "example.test/.qmail-x", ["./.qmail-default"]) == REFUSED_CONTENT
    # what a domain admin may still do: read the catch-all, list the domain
    assert c.cmd("read_file example.test/.qmail-default").startswith(b"+OK+\r\n")
    assert b"vpasswd file" in c.cmd("list_dir example.test/")
    assert snapshot(env["VPOPMAIL_DIR"]) == before
    # the login still is what it was: no system admin rights gained
    assert c.cmd("list_domains") == b"-ERR 4.107 Invalid Command\r\n"


def test_i10_01_system_admin_limits_only(daemon, env):
    """A system admin may edit .qmailadmin-limits (set_limits is his) and .qmail-default, never
    vpasswd, nor remove a directory holding one."""
    before = snapshot(env["VPOPMAIL_DIR"])
    c = _login(daemon.port, SYSADMIN)
    assert c.cmd("write_file example.test/vpasswd") == NOT_AUTH_STORE
    assert c.cmd(f"rm_dir {env_path(env, 'domains', 'example.test')}") == b"-ERR 9.1703 Not Authorized\r\n"
    assert snapshot(env["VPOPMAIL_DIR"]) == before
    assert _write(c, "example.test/.qmailadmin-limits", ["maxpopaccounts: 5"]) == b"+OK \r\n"
    assert _write(c, "example.test/.qmail-default", ["| /bin/true"]) == b"+OK \r\n"  # expert rights
    with open(env_path(env, "domains", "example.test", ".qmailadmin-limits"), "rb") as f:
        assert f.read() == b"maxpopaccounts: 5\r\n"


def test_i10_01_plain_user_cannot_run_a_program(daemon, env):
    """`| /bin/sh -c …` in his .qmail would run as vpopmail: refused after the data, nothing written,
    nor can the same text be renamed into .qmail, nor shell syntax hide behind an allowed program."""
    c = _login(daemon.port, ALICE)
    home = env_path(env, "domains", "example.test", "alice")
    before = snapshot(env["VPOPMAIL_DIR"])
    for lines in (["| /bin/sh -c 'touch /tmp/owned'"],
                  ["./Maildir/", "|/bin/sh -c id"],
                  ["|autorespond 1 1 msg dir; /bin/sh -c id"],
                  ["|autorespond 1 1 $(id) dir"],
                  ["|PATH=/tmp autorespond 1 1 m d"],
                  ["|./autorespond 1 1 m d"],
                  [f"|{home}/autorespond 1 1 m d"],
                  ["|autorespond 1 1 /etc/passwd /tmp"],
                  [" |/bin/sh"],
                  ["&|/bin/sh"],
                  ["&$(id)@example.test"],
                  ["-oi@example.test"],
                  ["alice@example.test\x00|/bin/sh"],
                  ["./../dadmin/Maildir/"],
                  [env_path(env, "domains", "other.test", "dan", "Maildir") + "/"]):
        assert _write(c, "alice@example.test/.qmail", lines) == REFUSED_CONTENT, lines
        assert _write(c, "alice@example.test/.qmail-foo", lines) == REFUSED_CONTENT, lines
    assert snapshot(env["VPOPMAIL_DIR"]) == before
    assert _write(c, "alice@example.test/x", ["|/bin/sh -c id"]) == b"+OK \r\n"  # no delivery file
    assert c.cmd("rename_file alice@example.test/x alice@example.test/.qmail") == b"-ERR 9.3804 Not Authorized\r\n"
    assert not os.path.exists(os.path.join(home, ".qmail")) and os.path.exists(os.path.join(home, "x"))


def test_i10_01_robot_and_vacation_flows_still_work(daemon, env):
    """The Net_Vpopmaild flows: a domain admin's robot (.qmail-NAME with |autorespond and a
    forward), a user's vacation (.qmail with |autorespond and his Maildir, relative or full)."""
    ddir = env_path(env, "domains", "example.test")
    home = os.path.join(ddir, "alice")
    qa = _login(daemon.port, DADMIN)
    assert qa.cmd("mk_dir example.test/ROBOT") == b"+OK \r\n"
    assert _write(qa, "example.test/ROBOT/message", ["From: robot@example.test", "Subject: away", "", "bye"]) \
        == b"+OK \r\n"
    robot = ["|/usr/local/bin/autorespond 1000 3 example.test/ROBOT/message example.test/ROBOT",
             "&alice@example.test", "bob@example.com"]
    assert _write(qa, "example.test/.qmail-robot", robot) == b"+OK \r\n"
    assert qa.cmd("read_file example.test/.qmail-robot") == b"+OK+\r\n" + b"".join(
        x.encode() + b"\r\n" for x in robot) + b".\r\n"
    lists = [f"|/usr/local/bin/ezmlm/ezmlm-reject '{ddir}/list'", f"|/usr/local/bin/ezmlm/ezmlm-send '{ddir}/list'"]
    assert _write(qa, "example.test/.qmail-list", lists) == b"+OK \r\n"
    user = _login(daemon.port, ALICE)
    assert user.cmd("mk_dir alice@example.test/vacation") == b"+OK \r\n"
    assert _write(user, "alice@example.test/vacation/message", ["Subject: on holiday"]) == b"+OK \r\n"
    for maildir in ("./Maildir/", f"{home}/Maildir/"):
        vacation = ["# vacation", f"| /usr/local/bin/autorespond 86400 3 {home}/vacation/message {home}/vacation",
                    maildir]
        assert _write(user, "alice@example.test/.qmail", vacation) == b"+OK \r\n"
        with open(os.path.join(home, ".qmail"), "rb") as f:
            assert f.read() == "".join(x + "\r\n" for x in vacation).encode()
    assert user.cmd("rm_file alice@example.test/.qmail") == b"+OK \r\n"
    # the domain admin may set it for his user too (qmailadmin does)
    assert _write(qa, "alice@example.test/.qmail", [f"|autorespond 86400 3 {home}/vacation/message {home}/vacation",
                                                    "./Maildir/"]) == b"+OK \r\n"
    assert user.cmd("rename_file alice@example.test/.qmail alice@example.test/.qmail-old") == b"+OK \r\n"


def test_i10_01_qmail_programs_option(env):
    """--qmail-programs replaces the allowlist (by basename)."""
    with Daemon(env, "--qmail-programs", "myfilter", "--login-delay", "0.01") as d:
        c = _login(d.port, ALICE)
        assert _write(c, "alice@example.test/.qmail", ["|/usr/local/bin/myfilter -q", "./Maildir/"]) == b"+OK \r\n"
        assert _write(c, "alice@example.test/.qmail", ["|autorespond 1 1 m d"]) == REFUSED_CONTENT


# --- item 7 -------------------------------------------------------------------------------


def _root() -> None:
    assert os.geteuid() == 0, "the privilege drop is tested as root (CI runs the suite as root)"


def _daemon_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vcli.daemon", "--listen", f"127.0.0.1:{port}", *extra]


def test_i10_07_unknown_user_one_line_before_listening(env):
    _root()
    r = subprocess.run(_daemon_argv(free_port(), "--user", "nosuchuser"), env=env, capture_output=True,
                       text=True, timeout=30)
    assert (r.returncode, r.stderr) == (78, "vpopmaild: no user 'nosuchuser' (--user)\n")


def test_i10_07_store_unreadable_by_vpopmail_refused_before_listening(env):
    """The pytest store lies under root's 0700 directory: vpopmail could serve nothing."""
    _root()
    r = subprocess.run(_daemon_argv(free_port(), "--user", "vpopmail"), env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 78, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vpopmaild: user vpopmail cannot read ")


@pytest.fixture()
def site_env():
    """The store as a site has it: owned by vpopmail:vchkpw, below directories anyone may enter."""
    top = tempfile.mkdtemp(prefix="vcli-site-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        env = build_store(pathlib.Path(top))
        pw = pwd.getpwnam("vpopmail")
        for dirpath, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)
        yield env
    finally:
        shutil.rmtree(top)


def test_i10_07_root_drops_to_vpopmail_and_serves_with_the_interpreter_unreadable(site_env):
    """Started as root with --user vpopmail: with Python or the venv unreadable to vpopmail (pyenv
    under /root here; a 0700 venv in CI's site stage) everything was loaded before the drop, so
    every session works: the transcripts, password hashing, the file commands.  Were the
    interpreter readable the same must hold."""
    _root()
    pw = pwd.getpwnam("vpopmail")
    stdlib = os.path.dirname(os.__file__)
    print(f"interpreter stdlib {stdlib} readable by vpopmail: {vpopmail_can_read(stdlib)}")
    sys.path.insert(0, os.path.join(HERE, "transcripts"))
    import run as transcripts

    with Daemon(site_env, "--user", "vpopmail", "--workers", "2", "--login-delay", "0.01") as d:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{d.proc.pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
            if uids[0] == str(pw.pw_uid):
                break
            time.sleep(0.05)
        assert uids == [str(pw.pw_uid)] * 4
        for name in sorted(os.listdir(os.path.join(HERE, "transcripts"))):
            if name.endswith(".txt"):
                assert transcripts.replay("127.0.0.1", d.port, os.path.join(HERE, "transcripts", name)) == [], name
        c = _login(d.port, SYSADMIN)
        assert c.cmd("add_user new@example.test New-pass1") == b"+OK \r\n"
        assert c.mod_user("new@example.test", "clear_text_password Other-pass2") == b"+OK \r\n"
        assert _login(d.port, "new@example.test Other-pass2").cmd("q") == b"+OK \r\n"  # the new hash checks
        assert _write(c, "example.test/.qmail-x", ["&new@example.test"]) == b"+OK \r\n"
        assert c.cmd("mk_dir example.test/d") == b"+OK \r\n" and c.cmd("rm_dir example.test/d") == b"+OK \r\n"
        assert c.cmd("del_user new@example.test") == b"+OK \r\n"
        err = d.stop()
    assert "Traceback" not in err and "internal error" not in err and "Error" not in err, err


# --- item 11: a plain user changes his own password and comment over the protocol ----------------


def _remote(env: dict, port: int, login: str, password: str) -> dict:
    return dict(env, VCLI_REMOTE=f"127.0.0.1:{port}", VCLI_LOGIN=login, VCLI_PASSWORD=password)


def test_i10_11_plain_user_changes_his_own_password_and_comment(daemon, env):
    e = _remote(env, daemon.port, "alice@example.test", "pw with spaces")
    r = run(e, "vpasswd", "alice@example.test", "New-pass-11")
    assert (r.returncode, r.stderr) == (0, "")
    e = _remote(env, daemon.port, "alice@example.test", "New-pass-11")
    r = run(e, "vmoduser", "-c", "Alice Changed", "alice@example.test")
    assert (r.returncode, r.stderr) == (0, "")
    r = run(e, "vuserinfo", "-c", "alice@example.test")
    assert (r.returncode, r.stdout) == (0, "Alice Changed\n")
    with open(env_path(env, "domains", "example.test", "vpasswd")) as f:
        assert ":Alice Changed:" in f.read()
    r = run(e, "vpasswd", "dadmin@example.test", "Hijack-pw1")  # still only himself
    assert r.returncode == 77 and r.stderr.count("\n") == 1
    assert _login(daemon.port, "dadmin@example.test Dadmin-pw1")


def test_i10_11_refused_password_change_is_reported(env):
    """With NO_PASSWD_CHNG the daemon ignores the new password: vpasswd says so instead of 0."""
    from vcli import flags as F
    from vcli.config import load_settings
    from vcli.store.store import Store, UserChanges

    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.mod_user("alice", "example.test", UserChanges(set_flags=F.NO_PASSWD_CHNG))
    with Daemon(env, "--login-delay", "0.01") as d:
        r = run(_remote(env, d.port, "alice@example.test", "pw with spaces"), "vpasswd", "alice@example.test",
                "New-pass-11")
        assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
        assert _login(d.port, ALICE)  # the old password still works


# --- items 17, 18 ------------------------------------------------------------------------------


def test_i10_17_remote_vdeldomain(daemon, env):
    r = run(_remote(env, daemon.port, "sysadmin@admin.test", "SysPass1"), "vdeldomain", "other.test")
    assert (r.returncode, r.stderr) == (0, "")
    assert not os.path.exists(env_path(env, "domains", "other.test"))
    r = run(_remote(env, daemon.port, "sysadmin@admin.test", "SysPass1"), "vcli", "vdeldomain", "example.test")
    assert (r.returncode, r.stderr) == (0, "")


def test_i10_18_remote_check_is_local_only(daemon, env):
    r = run(_remote(env, daemon.port, "sysadmin@admin.test", "SysPass1"), "vcli", "check")
    assert (r.returncode, r.stdout) == (64, "")
    assert r.stderr == "Error: check works on a local store only: run it on the mail server\n"


# --- the loopback throttle ---------------------------------------------------------------------


def test_i10_loopback_is_not_capped_after_failed_logins(env):
    """Every webmail user comes from 127.0.0.1: after failed logins there, 300 concurrent
    connections from it all get a greeting (the issue saw 100 served, 200 closed silently)."""
    with Daemon(env, "--login-delay", "0.05") as d:
        for _ in range(3):
            c = Client(d.port)
            assert c.cmd("login alice@example.test wrong") == b"-ERR 8.207 Invalid Login\r\n"
            c.close()
        greetings: list[bytes] = []
        socks = []
        t0 = time.monotonic()
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            socks.append(s)
        for s in socks:
            greetings.append(s.recv(100))
        took = time.monotonic() - t0
        for s in socks:
            s.close()
    assert greetings == [b"+OK \r\n"] * 300
    assert took < 20


def test_i10_loopback_delay_is_per_login(env):
    """At a shared address the failed-login delay still grows, for the login name tried: another
    user's mistyped password is not slowed down by it."""
    def failure(who: str) -> float:
        c = Client(d.port)
        t0 = time.monotonic()
        assert c.cmd(f"login {who} wrong") == b"-ERR 8.207 Invalid Login\r\n"
        c.close()
        return time.monotonic() - t0

    with Daemon(env, "--workers", "1", "--login-delay", "0.1", "--login-delay-max", "0.8") as d:
        times = [failure("alice@example.test") for _ in range(4)]
        assert times[-1] >= 0.7, times
        assert failure("dadmin@example.test") < 0.35


def test_i10_refused_connections_are_told_why(env):
    """--throttle-loopback puts 127.0.0.1 under the per-address cap again; a connection beyond it,
    or beyond --max-connections, gets an error line, never a silent close."""
    with Daemon(env, "--workers", "1", "--throttle-loopback", "--max-per-address", "2", "--login-delay", "2") as d:
        held = [Client(d.port), Client(d.port)]
        held[0].send("login alice@example.test wrong")
        time.sleep(0.3)
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        assert s.recv(100) == b"-ERR 5.110 Too many invalid login attempts\r\n"
    with Daemon(env, "--workers", "1", "--max-connections", "1") as d:
        held = Client(d.port)
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        assert s.recv(100) == b"-ERR 33.110 Not Available\r\n"
        held.close()


def test_i10_trusted_option(env):
    """--trusted ADDR exempts another shared address (here 127.0.0.2) from the cap."""
    with Daemon(env, "--workers", "1", "--trusted", "127.0.0.2", "--max-per-address", "1", "--login-delay", "2") as d:
        held = Client(d.port, source="127.0.0.2")
        held.send("login alice@example.test wrong")
        time.sleep(0.3)
        more = [Client(d.port, source="127.0.0.2") for _ in range(3)]
        assert all(c.cmd("q") == b"+OK \r\n" for c in more)
    r = subprocess.run(_daemon_argv(free_port(), "--trusted", "webmail"), env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 64 and r.stderr.count("\n") == 1


# --- the remote port ---------------------------------------------------------------------------


@pytest.mark.parametrize("remote", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:8x", "127.0.0.1:+89",
                                    "127.0.0.1:\u0665", ":89", "[::1]:70000"])
def test_i10_remote_port_is_validated(env, remote):
    r = run(dict(env, VCLI_REMOTE=remote, VCLI_LOGIN="sysadmin@admin.test", VCLI_PASSWORD="SysPass1"),
            "vcli", "vuserinfo", "alice@example.test")
    assert (r.returncode, r.stdout) == (64, ""), r.stderr
    assert r.stderr.count("\n") == 1 and ("bad port" in r.stderr or "no host" in r.stderr), r.stderr


def test_i10_remote_default_port_is_the_real_daemons(env):
    """`--remote HOST` means port 89, the real vpopmaild's (our daemon's own default is 8900,
    README says why); what is not listening is reported with the port."""
    from vcli.backend import split_hostport

    assert split_hostport("mail.example.test") == ("mail.example.test", 89)
    r = run(dict(env, VCLI_REMOTE="127.0.0.1", VCLI_LOGIN="sysadmin@admin.test", VCLI_PASSWORD="SysPass1"),
            "vuserinfo", "alice@example.test")
    assert r.returncode == 69 and "127.0.0.1:89" in r.stderr
    r = subprocess.run([sys.executable, "-m", "vcli.daemon", "--listen", "127.0.0.1:99999"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "port 0-65535" in r.stderr
