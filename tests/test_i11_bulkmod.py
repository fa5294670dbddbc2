"""Issue 11 item 1: `vmoduser [flags] DOMAIN` and `vsetuserquota DOMAIN Q` change the whole domain
in one commit (one lock, one vpasswd rewrite, one cdb, one intent) and leave the same bytes as
doing it user by user with the classic commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from cli_helpers import CliStore, diff_snapshots, fast_base, patched_environ

D = "example.test"
N = 150  # postmaster + 149: the 100th user and later land in the hashed dir 0/


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A domain of N users (mixed quotas, some mail in a few Maildirs) built once; each test
    works on fresh copies of it at the same path."""
    from vcli.backend import open_backend
    from vcli.model import NewUser

    with fast_base(tmp_path_factory.mktemp("i11")) as base:
        st = CliStore(base / "s")
        st.ok("vadddomain", D, "Pm-pass-1")
        with patched_environ(st.env):
            store = open_backend()
            store.add_users(D, [NewUser(f"u{i:03d}", hashed="$1$abcdefgh$0123456789abcdefghijkl",
                                        quota=None if i % 3 else f"{i + 1}M") for i in range(N - 1)])
        for i in (0, 5, 120, 140):  # usage that maildirsize must count
            home = st.fields(D, f"u{i:03d}")[5]
            with open(os.path.join(home, "Maildir", "new", f"{i}.msg"), "wb") as f:
                f.write(b"x" * (100 + i))
        assert "/0/u1" in st.fields(D, "u140")[5]  # crosses into a hashed dir
        pristine = base / "pristine"
        shutil.copytree(st.base, pristine, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(st.base):
            for name in [".", *dirnames, *filenames]:
                src = os.path.join(dirpath, name)
                sst = os.lstat(src)
                os.lchown(os.path.join(pristine, os.path.relpath(src, st.base)), sst.st_uid, sst.st_gid)
        yield st, pristine


def _fresh(seeded) -> CliStore:
    """The seeded store restored at its own path (paths are inside vpasswd, so copies must sit there)."""
    st, pristine = seeded
    for d in ("vpopmail", "qmail"):
        shutil.rmtree(st.base / d)
        shutil.copytree(pristine / d, st.base / d, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(pristine / d):  # owners too (vcli check looks)
            for name in [".", *dirnames, *filenames]:
                src = os.path.join(dirpath, name)
                sst = os.lstat(src)
                os.lchown(os.path.join(st.base, os.path.relpath(src, pristine)), sst.st_uid, sst.st_gid)
    return st


def _users(st: CliStore) -> list[str]:
    return [line.split(":", 1)[0] for line in st.vpasswd_lines(D)]


CASES = {
    "vmoduser_flags_quota_comment": (["vmoduser", "-p", "-w", "-q", "5M", "-c", "Same Comment"],
                                     ["vmoduser", "-p", "-w", "-q", "5M", "-c", "Same Comment"]),
    "vmoduser_clear_flags_no_cdb": (["vmoduser", "-x", "-i", "-n"], ["vmoduser", "-x", "-i", "-n"]),
    "vsetuserquota": (["vsetuserquota", D, "20m"], None),
    "vsetuserquota_noquota": (["vsetuserquota", D, "NOQUOTA"], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_i11_01_domain_wide_same_bytes_as_user_by_user(seeded, case):
    """The installed command on the domain leaves the tree byte-identical (vpasswd, its cdb,
    .dir-control, every maildirsize, every mode) to the classic command run on each address."""
    whole, per_user = CASES[case]
    st = _fresh(seeded)
    users = _users(st)
    assert len(users) == N
    ino = os.stat(st.ddir(D) / "vpasswd").st_ino
    if per_user is None:
        r = st.run(*whole)
    else:
        r = st.run(*whole, D)
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert os.stat(st.ddir(D) / "vpasswd").st_ino != ino
    got = st.snapshot()

    st = _fresh(seeded)
    for u in users:
        if per_user is None:
            st.call_ok(whole[0], f"{u}@{D}", whole[2])
        else:
            st.call_ok(*per_user, f"{u}@{D}")
    want = st.snapshot()
    assert diff_snapshots(want, got) == []
    assert got == want
    assert any(k.endswith("/0/u141/Maildir/maildirsize") for k in want) != (case == "vsetuserquota_noquota")


def test_i11_01_vcli_vmoduser_domain_same_bytes(seeded):
    """`vcli vmoduser --quota 3M --no-imap DOMAIN` = the classic vmoduser on each address."""
    st = _fresh(seeded)
    users = _users(st)
    r = st.call_vcli("vmoduser", "--quota", "3M", "--no-imap", D)
    assert r.rc == 0, r
    got = st.snapshot()
    st = _fresh(seeded)
    for u in users:
        st.call_ok("vmoduser", "-q", "3M", "-i", f"{u}@{D}")
    assert diff_snapshots(st.snapshot(), got) == [] and st.snapshot() == got


def test_i11_01_one_lock_one_commit(seeded, monkeypatch):
    """The domain form takes the domain lock once and commits once (it used to do both N times)."""
    from vcli.store import fsutil
    from vcli.store.auth.cdb import PROOF_LINES, CdbAuth

    st = _fresh(seeded)
    commits, locks = [], []
    real_commit, real_locked = CdbAuth._commit, fsutil.locked

    def commit(self, entry, op, lines, *a, **kw):
        commits.append((op, len(kw.get("maildirsize") or ()), len(kw.get("changed") or {})))
        return real_commit(self, entry, op, lines, *a, **kw)

    def locked(path, *a, **kw):
        locks.append(os.path.basename(path))
        return real_locked(path, *a, **kw)

    monkeypatch.setattr(CdbAuth, "_commit", commit)
    monkeypatch.setattr(fsutil, "locked", locked)
    st.call_ok("vsetuserquota", D, "7M")
    # the intent names a few of the changed lines (one in vpasswd proves the commit), not all N
    assert commits == [("vmoduser", N, PROOF_LINES)] and locks.count(".vpasswd.lock") == 1
    commits.clear()
    locks.clear()
    st.call_ok("vmoduser", "-p", D)
    assert commits == [("vmoduser", 0, PROOF_LINES)] and locks.count(".vpasswd.lock") == 1
    assert all(int(line.split(":")[3]) & 2 for line in st.vpasswd_lines(D))  # NO_POP everywhere


def test_i11_01_store_mod_users_subset_and_validation(seeded):
    """Store.mod_users on named users changes only those (unknown names skipped); a bad value is
    refused before anything is written; a new password gets its own salt per user."""
    from vcli.backend import open_backend
    from vcli.errors import VcliError
    from vcli.model import UserChanges

    st = _fresh(seeded)
    before = st.snapshot()
    with patched_environ(st.env):
        store = open_backend()
        with pytest.raises(VcliError):
            store.mod_users(D, UserChanges(dir="/x" * 100))
        with pytest.raises(VcliError):
            store.mod_users(D, UserChanges(gecos="a:b"))
        assert st.snapshot() == before
        got = store.mod_users(D, UserChanges(password="New-pass-1"), users=["U001", "u002", "nobody"])
    assert [u.name for u in got] == ["u001", "u002"]
    h1, h2, h3 = (st.fields(D, u)[1] for u in ("u001", "u002", "u003"))
    assert h1.startswith("$6$") and h2.startswith("$6$") and h1 != h2
    assert h3 == "$1$abcdefgh$0123456789abcdefghijkl"


_KILL_AT_COMMIT = """
import os, sys
real = os.rename
def rename(a, b, *x, **k):
    if os.path.basename(str(b)) == "vpasswd" and os.path.basename(str(a)).startswith("vpasswd.bak."):
        os._exit(9)
    return real(a, b, *x, **k)
os.rename = rename
from vcli.cli.classic import MAINS
from vcli.cli.common import run
sys.exit(run(lambda: MAINS["vsetuserquota"]([sys.argv[1], "9M"])))
"""


def test_i11_01_crash_before_commit_is_undone(seeded):
    """Killed with vpasswd and all N maildirsize files staged but vpasswd not yet renamed: the
    next command undoes it (every staged file gone) and the tree is as before."""
    st = _fresh(seeded)
    before = st.snapshot()
    p = subprocess.run([sys.executable, "-c", _KILL_AT_COMMIT, D], env=st.env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 9, p
    assert (st.ddir(D) / ".vcli-intent").exists()
    r = st.call("vuserinfo", f"u001@{D}")  # the next reader (or writer) replays it
    assert r.rc == 0 and "Note: undone an interrupted vmoduser" in r.err, r
    assert not (st.ddir(D) / ".vcli-intent").exists()
    assert diff_snapshots(before, st.snapshot()) == [] and st.snapshot() == before


def test_i11_01_crash_after_commit_is_finished(seeded, monkeypatch):
    """Committed (vpasswd renamed in) but stopped before the staged maildirsize files were
    renamed: the replay finishes every user's maildirsize, the same bytes as a clean run."""
    from vcli.store.auth import cdb as cdbmod

    st = _fresh(seeded)
    st.call_ok("vsetuserquota", D, "9M")
    want = st.snapshot()

    st = _fresh(seeded)
    real = os.rename

    def rename(a, b, *x, **k):
        if os.path.basename(str(b)) == "maildirsize":
            raise OSError(28, "No space left on device")
        return real(a, b, *x, **k)

    monkeypatch.setattr(cdbmod.os, "rename", rename)
    r = st.call("vsetuserquota", D, "9M")
    monkeypatch.undo()
    assert r.rc != 0 and "is committed but could not be finished" in r.err, r
    assert (st.ddir(D) / ".vcli-intent").exists()
    r = st.run("vcli", "check", "--repair", D)
    assert r.rc == 0, r
    assert not (st.ddir(D) / ".vcli-intent").exists()
    assert diff_snapshots(want, st.snapshot()) == [] and st.snapshot() == want
