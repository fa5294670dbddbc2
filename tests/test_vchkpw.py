"""Issue 12 items 1 and 2: `vchkpw` (vpopmail's exit codes) under a real tcpserver with a tiny
checkpassword client, and `vcheckpassword` (the checkpassword standard's 1/2/111) on the local
store and through a real daemon process, a daemon that is down and one that never answers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from daemon_helpers import Daemon, free_port
from storeenv import make_env, tool

from vcli import flags as F
from vcli.config import load_settings
from vcli.store.store import NewUser, Store, UserChanges

D = "example.test"
DELAY = 0.3  # VCLI_AUTH_FAIL_DELAY of these tests


def req(login: str, password: str) -> bytes:
    return login.encode() + b"\0" + password.encode() + b"\0" + b"1733100000\0"


@pytest.fixture(scope="module")
def site():
    """A store in a fresh 0755 directory under /tmp, so that vchkpw, dropped to the domain's
    owner (the vpopmail user when it exists), can chdir into the mailboxes as on a site."""
    top = tempfile.mkdtemp(prefix="vchkpw-test-")
    os.chmod(top, 0o755)

    class P:  # a tmp_path look-alike for make_env
        def __truediv__(self, name):
            from pathlib import Path

            return Path(top) / name

    env = make_env(P())
    os.chmod(env["VPOPMAIL_DIR"], 0o755)
    ids = {} if os.geteuid() == 0 else {"vpopmail_uid": os.getuid(), "vpopmail_gid": os.getgid()}  # not root: ours
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"], **ids}))
    st.add_domain(D, "Pm-pass1")
    for name, flag in (("bob", 0), ("nopop", F.BY_NAME["NO_POP"].bit), ("noimap", F.BY_NAME["NO_IMAP"].bit), ("nosmtp", F.BY_NAME["NO_SMTP"].bit),
                       ("noweb", F.BY_NAME["NO_WEBMAIL"].bit), ("nomaildir", 0)):
        st.add_user(D, NewUser(name, f"{name}-Pass1"))
        if flag:
            st.mod_user(name, D, UserChanges(set_flags=flag))
    with open(os.path.join(env["VPOPMAIL_DIR"], "etc", "defaultdomain"), "w") as f:
        f.write(D + "\n")
    os.symlink("/usr/bin/env", os.path.join(top, "imapd-env"))  # a program whose name says IMAP
    env.update(VCLI_AUTH_FAIL_DELAY=str(DELAY), PATH=os.path.dirname(tool("vchkpw")) + ":" + env["PATH"])
    yield st, env, top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def server(site):
    """`tcpserver 127.0.0.1 PORT vchkpw PROGRAM`: the client's bytes are vchkpw's fd 3 (as qmail-popup
    hands them on), its output and then its exit status go back to the client."""
    st, env, top = site
    port = free_port()
    log = os.path.join(top, "tcpserver.log")
    script = 'vchkpw "$@" 3<&0 </dev/null; s=$?; cat >/dev/null; echo "status=$s"'
    with open(log, "w") as err:
        proc = subprocess.Popen(["/usr/bin/tcpserver", "-v", "-H", "-R", "-l", "0", "127.0.0.1", str(port),
                                 "sh", "-c", f'{script}', "sh", "/usr/bin/env"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 10
    while "status:" not in open(log).read():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"tcpserver did not start: {open(log).read()!r}")
        time.sleep(0.02)
    yield port, log
    proc.terminate()
    proc.wait(10)


def client(port: int, data: bytes, source: str = "127.0.0.2") -> tuple[int, dict, bytes]:
    """The tiny checkpassword client: send the request, close our side, read to the end.
    From 127.0.0.2 by default: 127.0.0.1 is vchkpw's "webmail"."""
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0)) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    body, _, status = out.rpartition(b"status=")
    env = dict(line.split("=", 1) for line in body.decode(errors="replace").splitlines() if "=" in line)
    return int(status), env, out


def home(st, user: str) -> str:
    return st.get_user(user, D).dir


def test_i12_01_vchkpw_success_sets_env_and_lastauth(site, server):
    """Item 1: the right password execs the program as the domain's owner in the user's dir, with
    USER, HOME, SHELL=NOLOGIN and VPOPUSER; lastauth then holds the client IP."""
    st, env, _ = site
    port, _ = server
    before = time.time()
    status, got, raw = client(port, req("Bob@Example.test", "bob-Pass1"))
    assert status == 0, raw
    assert got["USER"] == "bob" and got["HOME"] == home(st, "bob")
    assert got["SHELL"] == "NOLOGIN" and got["VPOPUSER"] == "Bob@Example.test"
    assert got["TCPREMOTEIP"] == "127.0.0.2"
    mtime, ip = st.lastauth(st.get_user("bob", D))
    assert ip == "127.0.0.2" and mtime >= before - 1
    lastauth = os.path.join(home(st, "bob"), "lastauth")
    assert os.stat(lastauth).st_uid == st.real_entry(D).uid and oct(os.stat(lastauth).st_mode & 0o777) == "0o600"


def test_i12_01_vchkpw_bad_password_unknown_user_and_delay(site, server):
    """Item 1: a wrong password or an unknown user is vchkpw's 3, after the failed-login delay;
    nothing is exec'd and lastauth is untouched."""
    st, _, _ = site
    port, log = server
    la = st.lastauth(st.get_user("bob", D))
    for login, pw in (("bob@example.test", "wrong"), ("ghost@example.test", "x"), ("bob@nodomain.test", "bob-Pass1")):
        t0 = time.monotonic()
        status, got, raw = client(port, req(login, pw))
        assert status == 3 and "USER" not in got, raw
        assert time.monotonic() - t0 >= DELAY
    assert st.lastauth(st.get_user("bob", D)) == la
    assert "vchkpw: password fail bob@example.test" in open(log).read()


def test_i12_01_vchkpw_flags_by_service(site, server):
    """Item 1: no_pop refuses POP (exit 1) but not SMTP; no_imap refuses a program named *imap*;
    no_smtp refuses a `true` program (SMTP AUTH); no_webmail refuses POP from 127.0.0.1 only."""
    st, env, top = site
    port, _ = server
    assert client(port, req("nopop@example.test", "nopop-Pass1"))[0] == 1
    assert client(port, req("nosmtp@example.test", "nosmtp-Pass1"))[0] == 0  # POP: fine
    assert client(port, req("noweb@example.test", "noweb-Pass1"))[0] == 0
    assert client(port, req("noweb@example.test", "noweb-Pass1"), source="127.0.0.1")[0] == 1
    assert client(port, req("nopop@example.test", "nopop-Pass1"), source="127.0.0.1")[0] == 0  # webmail
    for user, prog, want in (("noimap", os.path.join(top, "imapd-env"), 1), ("nopop", os.path.join(top, "imapd-env"), 0),
                             ("nosmtp", "/bin/true", 1), ("nopop", "/bin/true", 0)):
        r = run_direct(env, ["vchkpw", prog], req(f"{user}@example.test", f"{user}-Pass1"),
                       TCPLOCALPORT="10000", TCPREMOTEIP="192.0.2.1")
        assert r.returncode == want, (user, prog, r.stderr)
    # the port wins over the program's name (spec §12): 25 is SMTP even for an *imap* program
    r = run_direct(env, ["vchkpw", os.path.join(top, "imapd-env")], req("nosmtp@example.test", "nosmtp-Pass1"),
                   TCPLOCALPORT="25", TCPREMOTEIP="192.0.2.1")
    assert r.returncode == 1 and "smtp access closed" in r.stderr


def test_i12_01_vchkpw_bad_input(site, server):
    """Item 1 bad input: over 512 bytes, no NUL separators, an empty login or password, an
    invalid login: one line on stderr, the documented code, nothing exec'd."""
    st, env, _ = site
    port, log = server
    for data, want in ((req("bob@example.test", "x" * 600), 11), (b"bob@example.test bob-Pass1", 11),
                       (b"bob@example.test\0bob-Pass1", 11), (b"", 11), (req("", "pw"), 12),
                       (req("bob@example.test", ""), 13), (req("b/o@example.test", "x"), 20)):
        status, got, raw = client(port, data)
        assert status == want and "USER" not in got, (data[:40], raw)
    text = open(log).read()
    assert "vchkpw: more than 512 bytes on fd 3" in text and "NUL after each" in text


def run_direct(env, argv, data: bytes | None, fd3: bool = True, **extra):
    """The installed command with `data` on fd 3 (a pipe), or fd 3 closed."""
    e = dict(env, **extra)
    argv = [argv[0] if "/" in argv[0] else tool(argv[0]), *argv[1:]]
    if not fd3:
        return subprocess.run(argv, env=e, capture_output=True, text=True, timeout=30, close_fds=True)
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:  # the pipe becomes the child's fd 3 (the test process's own fd 3 stays alone)
        return subprocess.run(argv, env=e, capture_output=True, text=True, timeout=30, pass_fds=(3, r),
                              preexec_fn=lambda: os.dup2(r, 3))
    finally:
        os.close(r)


def test_i12_01_vchkpw_missing_fd3_default_domain_and_maildir(site):
    """Item 1: fd 3 closed is vchkpw's 11 with a line about it; a login without @ is in the default
    domain; a missing Maildir is re-created (owned by the domain) and the login goes on."""
    st, env, _ = site
    r = run_direct(env, ["vchkpw", "/usr/bin/env"], None, fd3=False)
    assert r.returncode == 11 and r.stderr.count("\n") == 1 and "fd 3 is not open" in r.stderr
    r = run_direct(env, ["vchkpw", "/usr/bin/env"], req("bob", "bob-Pass1"), TCPREMOTEIP="192.0.2.7")
    assert r.returncode == 0 and "USER=bob\n" in r.stdout and "VPOPUSER=bob\n" in r.stdout
    maildir = os.path.join(home(st, "nomaildir"), "Maildir")
    shutil.rmtree(maildir)
    r = run_direct(env, ["vchkpw", "/bin/sh", "-c", "pwd; ls Maildir"], req("nomaildir@example.test", "nomaildir-Pass1"),
                   TCPREMOTEIP="192.0.2.7")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [home(st, "nomaildir"), "cur", "new", "tmp"]
    assert os.stat(os.path.join(maildir, "new")).st_uid == st.real_entry(D).uid
    r = run_direct(env, ["vchkpw"], req("bob", "bob-Pass1"))
    assert r.returncode == 2 and "usage" in r.stderr


def test_i12_01_store_trouble_is_temporary(site, tmp_path):
    """Item 1: a store that cannot be read is 111 (try later) for both commands, never 'bad password'."""
    _, env, _ = site
    bad = dict(env, VPOPMAIL_DIR=str(tmp_path / "nowhere"))
    assert run_direct(bad, ["vchkpw", "/bin/true"], req("bob@example.test", "bob-Pass1")).returncode == 111
    assert run_direct(bad, ["vcheckpassword", "/bin/true"], req("bob@example.test", "bob-Pass1")).returncode == 111


def test_i12_02_vcheckpassword_local_codes(site):
    """Item 2, local: the checkpassword standard's codes (1 refused, 2 misuse), the same checks."""
    st, env, _ = site
    r = run_direct(env, ["vcheckpassword", "/usr/bin/env"], req("bob@example.test", "bob-Pass1"), TCPREMOTEIP="192.0.2.9")
    assert r.returncode == 0 and f"HOME={home(st, 'bob')}\n" in r.stdout
    for data, want in ((req("bob@example.test", "no"), 1), (req("nopop@example.test", "nopop-Pass1"), 1),
                       (req("bob@example.test", "x" * 600), 2), (b"bob\0", 2)):
        r = run_direct(env, ["vcheckpassword", "/usr/bin/env"], data, TCPREMOTEIP="192.0.2.9")
        assert r.returncode == want and "USER=" not in r.stdout, (data[:30], r.stderr)
    assert run_direct(env, ["vcheckpassword", "/bin/true"], None, fd3=False).returncode == 2
    assert run_direct(env, ["vcheckpassword", "--bogus", "/bin/true"], req("bob", "bob-Pass1")).returncode == 2
    # `vcli checkpassword` is the same command (its 2 is not turned into click's 64)
    r = run_direct(env, [tool("vcli"), "checkpassword", "/bin/true"], b"bob\0")
    assert r.returncode == 2


@pytest.fixture()
def daemon_env(tmp_path):
    env = make_env(tmp_path)
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain(D, "Pm-pass1")
    st.add_user(D, NewUser("bob", "bob pass 1"))
    st.add_user(D, NewUser("nosmtp", "nosmtp-Pass1"))
    st.mod_user("nosmtp", D, UserChanges(set_flags=F.BY_NAME["NO_SMTP"].bit))
    env["VCLI_AUTH_FAIL_DELAY"] = "0"
    return st, env


def test_i12_02_remote_against_daemon(daemon_env, tmp_path):
    """Item 2: through a real daemon over one connection: success execs with HOME from the login
    block; a bad password and a closed service are 1; a --profile names the daemon."""
    st, env = daemon_env
    with Daemon(env) as d:
        remote = f"127.0.0.1:{d.port}"
        r = run_direct(env, ["vcheckpassword", "--remote", remote, "/usr/bin/env"], req("bob@example.test", "bob pass 1"))
        assert r.returncode == 0, r.stderr
        assert f"HOME={st.get_user('bob', D).dir}\n" in r.stdout and "USER=bob\n" in r.stdout
        r = run_direct(env, ["vcheckpassword", "--remote", remote, "/usr/bin/env"], req("bob@example.test", "bob pass 2"))
        assert r.returncode == 1 and "USER=" not in r.stdout and r.stderr.count("\n") == 1
        r = run_direct(env, ["vcheckpassword", "--remote", remote, "/bin/true"], req("ghost@example.test", "x"))
        assert r.returncode == 1
        r = run_direct(env, ["vcheckpassword", "--remote", remote, "--service", "smtp", "/bin/true"],
                       req("nosmtp@example.test", "nosmtp-Pass1"))
        assert r.returncode == 1 and "smtp access closed" in r.stderr
        conf = tmp_path / "vcli.toml"
        conf.write_text(f'[profiles.auth]\nremote = "{remote}"\ntimeout = 3\n')
        r = run_direct(env, ["vcheckpassword", "--profile", "auth", "/bin/true"], req("bob@example.test", "bob pass 1"),
                       VCLI_CONFIG=str(conf))
        assert r.returncode == 0, r.stderr


def test_i12_02_remote_down_or_silent_is_temporary(daemon_env):
    """Item 2: nothing listening, or a listener that never answers, is 111 within --timeout,
    never 1 ("bad password")."""
    _, env = daemon_env
    port = free_port()  # nobody listens there
    r = run_direct(env, ["vcheckpassword", "--remote", f"127.0.0.1:{port}", "/bin/true"], req("bob@example.test", "x"))
    assert r.returncode == 111 and "cannot connect" in r.stderr
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts (the kernel does) and never says a word
        t0 = time.monotonic()
        r = run_direct(env, ["vcheckpassword", "--remote", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "1",
                             "/bin/true"], req("bob@example.test", "bob pass 1"))
        took = time.monotonic() - t0
    assert r.returncode == 111 and "did not answer" in r.stderr and "1 s" in r.stderr, r.stderr
    assert 1 <= took < 3


def test_i12_01_dovecot_checkpassword_conventions(site):
    """Item 1 (Dovecot's checkpassword passdb): SERVICE names the service when the port does not;
    the ids are not changed (checkpassword-reply refuses a setuid checkpassword) but passed as
    userdb_uid/userdb_gid listed in EXTRA; a wrong password is the standard's 1 for vcheckpassword."""
    st, env, _ = site
    uid, gid = st.real_entry(D).uid, st.real_entry(D).gid
    prog = ["/bin/sh", "-c", "id -u; env"]
    for cmd in ("vchkpw", "vcheckpassword"):
        r = run_direct(env, [cmd, *prog], req("bob@example.test", "bob-Pass1"), SERVICE="imap", TCPLOCALPORT="10143",
                       TCPREMOTEIP="192.0.2.3", EXTRA="userdb_quota_rule")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == str(os.geteuid())
        assert f"userdb_uid={uid}" in lines and f"userdb_gid={gid}" in lines
        assert "EXTRA=userdb_quota_rule userdb_uid userdb_gid" in lines and f"HOME={home(st, 'bob')}" in lines
        r = run_direct(env, [cmd, *prog], req("noimap@example.test", "noimap-Pass1"), SERVICE="imap",
                       TCPREMOTEIP="192.0.2.3")
        assert r.returncode == 1 and "imap access closed" in r.stderr
    r = run_direct(env, ["vcheckpassword", *prog], req("bob@example.test", "nope"), SERVICE="imap")
    assert r.returncode == 1 and r.stdout == ""


def test_i12_02_help_and_bad_options(site):
    """Item 2: --help is usage on stdout (exit 0) before fd 3 is read; a bad --timeout or an
    unknown profile is misuse (2) with one line."""
    _, env, _ = site
    r = subprocess.run([tool("vcheckpassword"), "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage: vcheckpassword")
    for args in (["--timeout", "soon"], ["--timeout", "0"], ["--profile", "none"], ["--service", "ftp"],
                 ["--remote", "host:99999"], ["--remote"]):
        r = run_direct(dict(env, VCLI_CONFIG=os.devnull), ["vcheckpassword", *args, "/bin/true"], req("bob", "bob-Pass1"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
