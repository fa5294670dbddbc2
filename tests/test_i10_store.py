"""Issue 10, the store's items (2, 3, 4, 10, 12, 13, 15, 16): through the installed commands,
a real daemon process, and, where permissions matter, the commands run as the `vpopmail` user
(root's chmod does not stop root) on a store that user owns.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import CliStore, assign_cdb, tool, vpasswd_cdb
from daemon_helpers import Client, Daemon, build_store, env_path

SETPRIV = ["setpriv", "--reuid", "89", "--regid", "89", "--clear-groups"]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture()
def site_base():
    """A store directory the vpopmail user can reach (pytest's tmp_path is root's 0700)."""
    assert os.geteuid() == 0, "these tests chown a store to the vpopmail user: run them as root"
    d = tempfile.mkdtemp(prefix="vcli-i10-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        for dirpath, _dirs, _files in os.walk(d):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(d, ignore_errors=True)


def vpopmail_store(base: Path) -> CliStore:
    """example.test with postmaster and alice, everything owned by vpopmail:vchkpw (89:89)."""
    pw = pwd.getpwnam("vpopmail")  # KeyError: the machine lacks the site's vpopmail user
    assert (pw.pw_uid, pw.pw_gid) == (89, 89), "the vpopmail user is expected as uid/gid 89"
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run a command as vpopmail"
    st = CliStore(base)
    st.ok("vadddomain", "example.test", "Pm-pass1")
    st.ok("vadduser", "alice@example.test", "Alice-pw1")
    for dirpath, dirs, files in os.walk(base):
        for name in [*dirs, *files, ""]:
            os.lchown(os.path.join(dirpath, name), 89, 89)
    return st


def as_vpopmail(st: CliStore, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SETPRIV, tool(name), *args], env=st.env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 2: the alias name `default` ------------------------------------------------------------------


def test_i10_02_valias_refuses_the_catchall_as_an_alias(st):
    """`default` would append to or delete .qmail-default, the domain's catch-all."""
    qd = st.ddir("example.test") / ".qmail-default"
    before = st.snapshot()
    for argv in (["valias", "-i", "spy@evil.test", "default@example.test"],
                 ["valias", "-d", "default@example.test"],
                 ["valias", "-i", "spy@evil.test", "DEFAULT@example.test"],
                 ["vcli", "valias", "-i", "spy@evil.test", "default@example.test"],
                 ["vcli", "valias", "--delete", "default@example.test"]):
        r = st.run(*argv)
        assert r.rc == 255, (argv, r)
        assert "alias name default is reserved" in one_line(r.err), r.err
    assert st.snapshot() == before
    assert qd.read_bytes().startswith(b"| ")
    # legal names beside it: an extension default (`foo-default`) is an ordinary alias file
    st.ok("valias", "-i", "bob@example.net", "list-default@example.test")
    r = st.ok("valias", "-s", "example.test")
    assert r.out == "list-default@example.test -> bob@example.net\n"
    assert st.ok("valias", "-n", "example.test").out == "list-default\n"
    assert st.ok("vcli", "valias", "example.test").out == "list-default@example.test -> bob@example.net\n"


def test_i10_02_daemon_refuses_the_catchall_as_an_alias(tmp_path):
    """A domain admin's add_alias/remove_alias/delete_alias of default@dom get -ERR and leave
    .qmail-default byte for byte."""
    env = build_store(tmp_path)
    qd = Path(env_path(env, "domains", "example.test", ".qmail-default"))
    before = qd.read_bytes()
    with Daemon(env, "--login-delay", "0.01") as d:
        c = Client(d.port)
        assert c.cmd("login dadmin@example.test Dadmin-pw1").startswith(b"+OK")
        for cmd in ("add_alias default@example.test spy@evil.test",
                    "remove_alias default@example.test |",
                    "delete_alias default@example.test"):
            reply = c.cmd(cmd)
            assert reply.startswith(b"-ERR "), (cmd, reply)
            assert qd.read_bytes() == before
        listing = c.cmd("list_alias example.test")
        assert b"default" not in listing and b"info@example.test" in listing
        c.close()
    assert qd.read_bytes() == before


# --- 3: vdeldomain removes nothing when qmail's files cannot be changed ---------------------------


@pytest.mark.parametrize("sub", ["users", "control"])
def test_i10_03_vdeldomain_as_vpopmail_with_unwritable_qmail_dirs_keeps_the_domain(site_base, sub):
    """The daemon runs as vpopmail; qmail's users/ (or control/) belongs to root.  vdeldomain
    must fail (74, one line) before it removes any mail."""
    st = vpopmail_store(site_base)
    os.chown(st.qm / sub, 0, 0)
    os.chmod(st.qm / sub, 0o755)
    before = st.snapshot()
    r = as_vpopmail(st, "vdeldomain", "example.test")
    assert r.returncode == 74, r
    line = one_line(r.stderr)
    assert f"{st.qm / sub}: Permission denied; nothing was removed" in line
    assert st.snapshot() == before
    r = as_vpopmail(st, "vuserinfo", "-n", "alice@example.test")
    assert r.returncode == 0 and r.stdout == "alice\n", r


def test_i10_03_vdeldomain_undoes_qmail_changes_when_a_later_qmail_step_fails(st):
    """qmail-newu failing after rcpthosts/virtualdomains/assign were edited: they are put back,
    and the mail is untouched."""
    st.ok("vadddomain", "other.test", "Pm-pass1")
    newu = st.qm / "bin" / "qmail-newu"
    newu.parent.mkdir()
    newu.write_text("#!/bin/sh\necho 'cannot write users/cdb' >&2\nexit 111\n")
    newu.chmod(0o755)
    before = st.snapshot()
    r = st.run("vdeldomain", "example.test")
    assert r.rc == 74, r
    assert "qmail-newu failed" in one_line(r.err)
    assert st.snapshot() == before


# --- 4: check --repair never drops the last vpasswd line -------------------------------------------


def test_i10_04_repair_keeps_the_user_of_a_last_line_without_newline(st):
    st.ok("vadduser", "zz@example.test", "Zz-pass-1")
    vp = st.ddir("example.test") / "vpasswd"
    data = vp.read_bytes()
    vp.write_bytes(data[:-1])  # the last line (zz) loses its newline
    assert st.ok("vuserinfo", "-n", "zz@example.test").out == "zz\n"  # lookups still find zz
    r = st.run("vcli", "check")
    assert r.rc == 65 and "line 2 has no newline" in r.out
    r = st.run("vcli", "check", "--repair")
    assert r.rc == 0, r
    assert f"repaired: added the missing newline at the end of {vp}" in r.out
    assert vp.read_bytes() == data
    assert (st.ddir("example.test") / "vpasswd.cdb").read_bytes() == vpasswd_cdb(data)
    assert st.ok("vuserinfo", "-n", "zz@example.test").out == "zz\n"
    assert st.run("vcli", "check").rc == 0


# --- 10: concurrent vadddomains ------------------------------------------------------------------


def test_i10_10_twenty_parallel_vadddomains_all_succeed(tmp_path):
    """Three bursts of twenty at once, on disk (tmp_path, not tmpfs: the fsync before the rename
    of users/cdb.tmp is the window the race needs)."""
    for burst in range(3):
        st = CliStore(tmp_path / f"burst{burst}")
        procs = [subprocess.Popen([tool("vadddomain"), f"d{i:02}.test", "Pm-pass1"], env=st.env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(20)]
        results = [(p.wait(120), p.stderr.read().decode()) for p in procs]
        for p in procs:
            p.stderr.close()
        assert [r for r in results if r[0] != 0] == [], burst
        assign = (st.qm / "users" / "assign").read_bytes()
        assert sorted(line.split(b":")[0] for line in assign.splitlines() if line != b".") == \
            [f"+d{i:02}.test-".encode() for i in range(20)]
        assert (st.qm / "users" / "cdb").read_bytes() == assign_cdb(assign)
        for i in range(20):
            assert st.ok("vdominfo", "-n", f"d{i:02}.test").out == f"d{i:02}.test\n"


# --- 12: check says whether the replay completes or undoes -----------------------------------------


def _intent(st: CliStore, add: dict) -> None:
    with open(st.ddir("example.test") / ".vcli-intent", "w") as f:
        json.dump({"v": 1, "op": "vadduser", "pid": 1, "time": 0, "add": add, "remove": {},
                   "files": {}, "maildirsize": [], "lines": {}}, f)


def test_i10_12_check_says_the_replay_completes_a_committed_add(st):
    """vpasswd names alice (the commit happened), her tree is still at its temp name."""
    d = st.ddir("example.test")
    st.ok("vadduser", "alice@example.test", "Alice-pw1")
    os.rename(d / "alice", d / ".vcli-new.alice")
    _intent(st, {"alice": str(d / "alice")})
    r = st.run("vcli", "check")
    assert r.rc == 65 and r.out.rstrip().endswith("alice); the next change to the domain or --repair completes it")
    r = st.run("vcli", "check", "--repair")
    assert r.rc == 0 and r.out.startswith("repaired: completed the interrupted vadduser"), r
    assert (d / "alice" / "Maildir").is_dir()


def test_i10_12_check_says_the_replay_undoes_an_uncommitted_add(st):
    """carol never reached vpasswd: the replay removes her half-made tree."""
    d = st.ddir("example.test")
    os.makedirs(d / ".vcli-new.carol" / "Maildir" / "new")
    _intent(st, {"carol": str(d / "carol")})
    r = st.run("vcli", "check")
    assert r.rc == 65 and r.out.rstrip().endswith("carol); the next change to the domain or --repair undoes it")
    r = st.run("vcli", "check", "--repair")
    assert r.rc == 0 and r.out.startswith("repaired: undid the interrupted vadduser"), r
    assert not (d / ".vcli-new.carol").exists() and not (d / "carol").exists()


# --- 13: unreadable users/cdb, vpasswd.cdb, vpasswd ---------------------------------------------------


def test_i10_13_unreadable_store_files_are_io_errors_not_missing_entries(site_base):
    st = vpopmail_store(site_base)
    d = st.ddir("example.test")
    cases = [(st.qm / "users" / "cdb", ["vuserinfo", "alice@example.test"]),
             (st.qm / "users" / "cdb", ["vdominfo", "example.test"]),
             (d / "vpasswd.cdb", ["vuserinfo", "alice@example.test"]),
             (d / "vpasswd", ["vuserinfo", "-D", "example.test"])]
    for path, argv in cases:
        mode = path.stat().st_mode
        path.chmod(0)
        try:
            r = as_vpopmail(st, *argv)
        finally:
            path.chmod(mode)
        assert r.returncode == 74, (argv, r)
        line = one_line(r.stderr)
        assert str(path) in line and "Permission denied" in line, (argv, line)


# --- 15: a symlinked domain directory ---------------------------------------------------------------


def test_i10_15_symlinked_domain_dir_checks_clean_and_is_deleted_with_its_tree(st, base):
    d = st.ddir("example.test")
    st.ok("vadduser", "alice@example.test", "Alice-pw1")
    other = base / "otherdisk"
    other.mkdir()
    outside = base / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep\n")
    os.rename(d, other / "example.test")
    os.symlink(other / "example.test", d)
    os.symlink(outside, other / "example.test" / "alice" / "escape")
    r = st.run("vcli", "check")
    assert r.rc == 0 and r.out == "", r
    before = st.snapshot()
    r = st.run("vcli", "vdeldomain", "--dry-run", "example.test")
    assert r.rc == 0, r
    assert f"would remove the tree {other / 'example.test'}" in r.out
    assert f"would remove {d}\n" in r.out
    assert st.snapshot() == before
    r = st.run("vdeldomain", "example.test")
    assert r.rc == 0, r
    assert not os.path.lexists(d) and not os.path.lexists(other / "example.test")
    assert (outside / "precious").read_bytes() == b"keep\n"
    assert b"example.test" not in (st.qm / "users" / "assign").read_bytes()
    assert st.run("vcli", "check").rc == 0


# --- 16: the bulk import's hashing workers die with it ------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_i10_16_sigkill_of_a_bulk_import_takes_its_hashing_workers(st, base):
    src = base / "users.txt"
    src.write_text("".join(f"user{i:05}@example.test,Bulk-pass-{i:05}\n" for i in range(6000)))
    p = subprocess.Popen([tool("vcli"), "vadduser", "--from-file", str(src), "--jobs", "2"], env=st.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2 and p.poll() is None:
            workers = _children(p.pid)
            time.sleep(0.02)
        assert len(workers) >= 2, f"no hashing workers seen (exit {p.poll()})"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        survivors = [w for w in workers if _alive(w)]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert survivors == [], "hashing workers outlived their killed import"
