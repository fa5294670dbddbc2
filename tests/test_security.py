"""Security review, as tests (docs/security-review.md): names that would leave the store,
symlinks in Maildirs and domain directories, planted temp files, shell metacharacters,
qmail-newu's invocation, the modes of created files, passwords off argv.

All through the installed classic commands on a real store laid out beside an `outside`
directory that nothing may touch.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from storeenv import make_env, run, snapshot, tool


@pytest.fixture
def site(tmp_path):
    env = make_env(tmp_path)
    assert run(env, "vadddomain", "example.test", "Pm-pass1").returncode == 0
    assert run(env, "vadduser", "alice@example.test", "Alice-pw1").returncode == 0
    outside = tmp_path / "outside"
    (outside / "tmp").mkdir(parents=True)
    (outside / "cur").mkdir()
    (outside / "precious").write_bytes(b"do not touch\n")
    (outside / "cur" / "1.msg").write_bytes(b"not a message of ours\n")
    return env, tmp_path, outside


def _home(env, user="alice", domain="example.test") -> str:
    r = run(env, "vuserinfo", "-d", f"{user}@{domain}")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _one_line_error(r: subprocess.CompletedProcess) -> None:
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [
    ["vadduser", "../evil@example.test", "Pw-pass-1"],
    ["vadduser", "..@example.test", "Pw-pass-1"],
    ["vadduser", ".hidden@example.test", "Pw-pass-1"],
    ["vadduser", "-rf@example.test", "Pw-pass-1"],
    ["vadduser", "evil@../../outside", "Pw-pass-1"],
    ["vadduser", "evil@example.test/../../outside", "Pw-pass-1"],
    ["vadddomain", "../../outside", "Pw-pass-1"],
    ["vadddomain", "..", "Pw-pass-1"],
    ["vadddomain", "evil.test/..", "Pw-pass-1"],
    ["vdeldomain", ".."],
    ["vdeldomain", "../outside"],
    ["vdeluser", "../alice@example.test"],
    ["vdeluser", "alice@../example.test"],
    ["vmoduser", "-c", "x", "../../outside@example.test"],
    ["vpasswd", "../alice@example.test", "Pw-pass-1"],
    ["vsetuserquota", "../alice@example.test", "1M"],
    ["vcli", "valias", "-i", "x@example.test", "../../outside@example.test"],
])
def test_names_that_would_leave_the_store_are_refused(site, argv):
    env, root, _ = site
    before = snapshot(root)
    r = run(env, *argv)
    _one_line_error(r)
    assert snapshot(root) == before


def test_vdeluser_removes_a_symlinked_maildir_link_not_its_target(site):
    env, _, outside = site
    home = _home(env)
    os.rename(os.path.join(home, "Maildir"), os.path.join(home, "Maildir.real"))
    os.symlink(outside, os.path.join(home, "Maildir"))
    os.symlink(outside / "precious", os.path.join(home, "Maildir.real", "cur", "link"))
    r = run(env, "vdeluser", "alice@example.test")
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(home)
    assert (outside / "precious").read_bytes() == b"do not touch\n"
    assert (outside / "cur" / "1.msg").exists()


def test_vdeluser_of_a_symlinked_home_removes_the_link_only(site):
    env, _, outside = site
    home = _home(env)
    os.rename(home, str(outside / "alice-home"))
    os.symlink(outside / "alice-home", home)
    r = run(env, "vdeluser", "alice@example.test")
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(home)
    assert (outside / "alice-home" / "Maildir" / "new").is_dir()


def test_vdeluser_with_a_home_outside_the_domain_leaves_it_alone(site):
    """A vpasswd line whose home points out of the domain (edited by hand, or hostile): the
    account goes, the directory does not, and the user is told."""
    env, root, outside = site
    home = _home(env)
    vp = os.path.join(os.path.dirname(home), "vpasswd")
    data = open(vp, "rb").read()
    with open(vp, "wb") as f:
        f.write(data.replace(home.encode(), str(outside).encode()))
    before = snapshot(outside)
    r = run(env, "vcli", "check", "--repair")  # rebuilds the cdb; reports the home, creates nothing there
    assert r.returncode == 65 and "home of alice is outside the domain directory" in r.stdout, r.stdout
    assert snapshot(outside) == before
    r = run(env, "vdeluser", "alice@example.test")
    assert r.returncode == 0, r.stderr
    assert "not removing" in r.stderr
    assert snapshot(outside) == before


def test_vdeldomain_never_follows_a_symlink_out(site):
    env, root, outside = site
    ddir = os.path.dirname(_home(env))
    os.symlink(outside, os.path.join(ddir, "linked-dir"))
    os.symlink(outside / "precious", os.path.join(ddir, "linked-file"))
    os.symlink(outside, os.path.join(_home(env), "Maildir", "new", "escape"))
    before = snapshot(outside)
    r = run(env, "vdeldomain", "example.test")
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(ddir)
    assert snapshot(outside) == before


def test_vdeldomain_of_a_symlinked_domain_dir_removes_the_link_and_its_tree(site):
    """vpopmail sites move big domains to other disks with a symlink: vdeldomain removes the
    domain's tree where the link leads and the link (vpopmail drops only the link, leaving the
    mail behind: README "Deliberate differences"), never following a link inside it."""
    env, root, outside = site
    ddir = os.path.dirname(_home(env))
    moved = root / "otherdisk" / "example.test"
    moved.parent.mkdir()
    os.rename(ddir, moved)
    os.symlink(moved, ddir)
    os.symlink(outside, moved / "linked-dir")
    before = snapshot(outside)
    r = run(env, "vdeldomain", "example.test")
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(ddir)
    assert not os.path.lexists(moved) and moved.parent.is_dir()
    assert snapshot(outside) == before


def test_a_quota_change_never_writes_through_a_maildir_leading_out(site):
    env, _, outside = site
    home = _home(env)
    os.rename(os.path.join(home, "Maildir"), os.path.join(home, "Maildir.real"))
    os.symlink(outside, os.path.join(home, "Maildir"))
    before = snapshot(outside)
    for argv in (["vsetuserquota", "alice@example.test", "1M"], ["vmoduser", "-q", "2M", "alice@example.test"],
                 ["vsetuserquota", "alice@example.test", "NOQUOTA"]):
        r = run(env, *argv)
        assert r.returncode == 0, r.stderr
        assert "leads outside" in r.stderr
        assert snapshot(outside) == before


def test_planted_temp_files_are_replaced_never_written_through(site):
    """A symlink or hard link waiting at a temp name in the domain directory is unlinked:
    the write goes to a fresh file, the planted target keeps its bytes."""
    env, root, outside = site
    ddir = os.path.dirname(_home(env))
    os.link(outside / "precious", os.path.join(ddir, "cdb.tmp"))
    os.symlink(outside / "precious", os.path.join(ddir, ".dir-control.vcli-new"))
    os.symlink(outside / "precious", os.path.join(ddir, ".vcli-intent.tmp"))
    r = run(env, "vadduser", "bob@example.test", "Bob-pw-12")
    assert r.returncode == 0, r.stderr
    assert (outside / "precious").read_bytes() == b"do not touch\n"
    assert os.stat(outside / "precious").st_nlink == 1  # the planted link was unlinked
    assert run(env, "vcli", "check").returncode == 0


def test_shell_metacharacters_are_only_data(site):
    env, root, _ = site
    nasty = "$(touch PWNED1) `touch PWNED2`; touch PWNED3 | x & y > z"
    r = subprocess.run([tool("vmoduser"), "-c", nasty, "alice@example.test"], env=env, cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = run(env, "vadduser", "-c", nasty, "a|b$c`d@example.test", "Pw-pass-123")
    assert r.returncode == 0, r.stderr
    assert run(env, "vuserinfo", "-c", "alice@example.test").stdout.strip() == nasty
    assert run(env, "vuserinfo", "-c", "a|b$c`d@example.test").stdout.strip() == nasty
    assert not [p for p in os.listdir(root) if p.startswith("PWNED")]
    assert not [p for p in os.listdir(os.getcwd()) if p.startswith("PWNED")]


def _fake_qmail_tool(path, body: str) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_qmail_newu_gets_a_fixed_argv_no_shell_and_no_input(site):
    env, root, _ = site
    log = root / "newu.log"
    compile_ = ("from vcli.store.qmail import users_cdb; "
                "open('users/cdb', 'wb').write(users_cdb(open('users/assign', 'rb').read()))")
    _fake_qmail_tool(root / "qmail" / "bin" / "qmail-newu",
                     f'echo "argc=$# argv0=$0 cwd=$(pwd)" >> {log}\n'
                     f'if read line; then echo "stdin=$line" >> {log}; fi\n'
                     f'exec {sys.executable} -c "{compile_}"\n')
    r = subprocess.run([tool("vadddomain"), "shell;touch PWNED.test", "Pw-pass-1"], env=env, cwd=root,
                       capture_output=True, text=True)
    _one_line_error(r)  # not a domain name at all
    r = run(env, "vadddomain", "other.test", "Pw-pass-1")
    assert r.returncode == 0, r.stderr
    assert log.read_text() == f"argc=0 argv0={root / 'qmail' / 'bin' / 'qmail-newu'} cwd={root / 'qmail'}\n"
    assert not [p for p in os.listdir(root) if p.startswith("PWNED")]


def test_a_failing_qmail_newu_is_one_clear_error(site):
    env, root, _ = site
    _fake_qmail_tool(root / "qmail" / "bin" / "qmail-newu",
                     'echo "qmail-newu: fatal: unable to write users/cdb.tmp" >&2\nexit 111\n')
    r = run(env, "vadddomain", "other.test", "Pw-pass-1")
    _one_line_error(r)
    assert r.returncode == 74
    assert "qmail-newu failed (qmail-newu: fatal: unable to write users/cdb.tmp)" in r.stderr
    assert "users/cdb is stale" in r.stderr


def test_modes_of_everything_created(site):
    """Nothing group- or world-writable; the domain directory, Maildirs and everything holding
    a password hash readable by the owner only (vpasswd is 0644 after vmoduser, as with
    vpopmail, inside a 0700 domain directory)."""
    env, root, _ = site
    assert run(env, "vadduser", "bob@example.test", "Bob-pw-12").returncode == 0
    assert run(env, "vmoduser", "-c", "Bob", "bob@example.test").returncode == 0
    assert run(env, "valias", "-i", "alice@example.test", "info@example.test").returncode == 0
    ddir = os.path.dirname(_home(env))
    bad = []
    for top in (root / "vpopmail", root / "qmail"):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if os.lstat(p).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    bad.append(p)
    assert bad == []
    assert stat.S_IMODE(os.stat(ddir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / "vpopmail" / "domains").st_mode) == 0o700
    for name in ("vpasswd.cdb", ".vpasswd.lock", ".qmail-default", ".qmail-info"):
        assert stat.S_IMODE(os.stat(os.path.join(ddir, name)).st_mode) == 0o600, name
    for sub in ("", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
        assert stat.S_IMODE(os.stat(os.path.join(_home(env, "bob"), sub)).st_mode) == 0o700, sub
    leftovers = [n for n in os.listdir(ddir) if ".vcli-" in n or n.endswith(".tmp") or n.startswith("vpasswd.bak")]
    assert leftovers == []


def test_passwords_need_not_be_on_the_command_line(site):
    """Every password-taking classic command reads it from stdin when it is not in argv, so
    scripts can keep it out of `ps`; the hash stored verifies."""
    env, root, _ = site
    from vcli.store.passwords import verify_password

    r = run(env, "vadduser", "carol@example.test", stdin="Carol-pw-77\nCarol-pw-77\n")
    assert r.returncode == 0, r.stderr
    r = run(env, "vpasswd", "carol@example.test", stdin="Carol-new-88\nCarol-new-88\n")
    assert r.returncode == 0, r.stderr
    r = run(env, "vadddomain", "third.test", stdin="Third-pm-99\nThird-pm-99\n")
    assert r.returncode == 0, r.stderr
    ddir = os.path.dirname(_home(env, "carol"))
    line = [ln for ln in open(os.path.join(ddir, "vpasswd"), encoding="utf-8") if ln.startswith("carol:")][0]
    assert verify_password("Carol-new-88", line.split(":")[1])
