"""`vcli check [DOMAIN] [--repair]` through the installed command: each kind of damage is reported
in one line, exit 65; --repair fixes what follows from other files and leaves the rest alone."""

from __future__ import annotations

import json
import os
import shutil

import pytest


@pytest.fixture()
def st(st):
    st.call_ok("vadduser", "-q", "5M", "alice@example.test", "Alice-pw1")
    st.call_ok("vadduser", "bob@example.test", "Bob-pass1")
    return st


def dom(st, *parts):
    return os.path.join(st.vp, "domains", "example.test", *parts)


def check(st, *args):
    return st.run("vcli", "check", *args)


def problems(st, *args):
    r = check(st, *args)
    assert r.rc == 65, r
    return r.out.splitlines()


def test_a_fresh_store_is_clean(st):
    r = check(st)
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert check(st, "example.test").rc == 0


def test_unknown_domain_is_an_error(st):
    r = check(st, "nowhere.test")
    assert r.rc != 0 and r.rc != 65 and r.err.count("\n") == 1


def _repaired(st, expect_lines: int):
    r = check(st, "--repair")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert len([x for x in lines if x.startswith("repaired: ")]) == expect_lines, lines
    assert check(st).rc == 0
    return lines


def test_stale_cdb_is_reported_and_rebuilt(st):
    vp = dom(st, "vpasswd")
    data = open(vp, "rb").read().replace(b":bob:", b":Robert:")
    with open(vp, "wb") as f:
        f.write(data)
    assert problems(st) == [f"{vp}.cdb: does not match vpasswd"]
    assert _repaired(st, 1) == [f"repaired: rebuilt {vp}.cdb from vpasswd"]


def test_missing_maildir_is_recreated(st):
    shutil.rmtree(dom(st, "bob", "Maildir"))
    assert problems(st) == [f"{dom(st, 'bob', 'Maildir')}: missing (bob)"]
    _repaired(st, 1)
    assert sorted(os.listdir(dom(st, "bob", "Maildir"))) == ["cur", "new", "tmp"]


def test_missing_home_is_recreated(st):
    shutil.rmtree(dom(st, "bob"))
    assert problems(st) == [f"{dom(st, 'bob')}: home of bob missing"]
    _repaired(st, 1)
    assert os.path.isdir(dom(st, "bob", "Maildir", "new"))


def test_wrong_dir_control_count_is_set_to_the_vpasswd_count(st):
    """Real vpopmail writes .dir-control without a lock, so its tools running at once lose
    counts; --repair sets the count from vpasswd and leaves the hashing position alone."""
    path = dom(st, ".dir-control")
    data = open(path, "rb").read().split(b"\n", 1)
    with open(path, "wb") as f:
        f.write(b"7\n" + data[1])
    assert problems(st) == [f"{path}: counts 7 users, vpasswd has 3 (vdominfo's user count is off)"]
    _repaired(st, 1)
    assert open(path, "rb").read() == b"3\n" + data[1]


def test_qmail_control_files_are_reported_and_repaired(st):
    qm = st.qm
    with open(qm / "users" / "cdb", "ab") as f:
        f.write(b"junk")
    (qm / "control" / "rcpthosts").write_text("")
    (qm / "control" / "virtualdomains").write_text("")
    (qm / "control" / "locals").write_text("localhost\nexample.test\n")
    got = problems(st)
    assert got == [
        f"{qm}/users/cdb: does not match users/assign",
        f"{qm}/control/rcpthosts: example.test missing",
        f"{qm}/control/virtualdomains: example.test:example.test missing",
        f"{qm}/control/locals: example.test listed (mail would be delivered locally)",
    ]
    _repaired(st, 4)
    assert (qm / "control" / "locals").read_text() == "localhost\n"


def test_malformed_vpasswd_line_is_reported_and_left(st):
    vp = dom(st, "vpasswd")
    with open(vp, "ab") as f:
        f.write(b"broken:line\n")
    got = problems(st)
    assert f"{vp}: line 4 has fewer than 6 colons (vpopmail listings stop there)" in got
    before = open(vp, "rb").read()
    assert check(st, "--repair").rc == 65
    assert open(vp, "rb").read() == before


def test_bad_maildirsize_and_modes_are_reported(st):
    ms = dom(st, "alice", "Maildir", "maildirsize")
    with open(ms, "w") as f:
        f.write("5242880S\nnot numbers\n")
    os.chmod(dom(st, "bob"), 0o755)
    got = problems(st)
    assert f"{ms}: does not parse (quota line, then '<bytes> <count>' lines)" in got
    assert f"{dom(st, 'bob')}: mode 0755 (group/other access; vpopmail uses 0700)" in got


def test_leftovers_of_interrupted_commands(st):
    with open(dom(st, "vpasswd.bak.4242"), "w") as f:
        f.write("x")
    os.makedirs(dom(st, ".vcli-new.carol", "Maildir"))
    orphan = dom(st, "olduser")
    os.makedirs(os.path.join(orphan, "Maildir", "new"))
    got = problems(st)
    assert len(got) == 3  # one line each, nothing else
    assert f"{dom(st, 'vpasswd.bak.4242')}: temporary file of an interrupted command" in got
    assert f"{dom(st, '.vcli-new.carol')}: half-made user directory of an interrupted add" in got
    assert f"{orphan}: mailbox not in vpasswd (orphaned; left alone)" in got
    r = check(st, "--repair")
    assert r.rc == 65  # the orphan is not guessed away
    assert not os.path.exists(dom(st, "vpasswd.bak.4242")) and not os.path.exists(dom(st, ".vcli-new.carol"))
    assert os.path.isdir(orphan)
    assert check(st).out == f"{orphan}: mailbox not in vpasswd (orphaned; left alone)\n"


def test_interrupted_add_is_reported_then_undone_by_repair(st):
    """An intent record as a SIGKILL leaves it (the crash trials make real ones); carol never
    reached vpasswd, so check says the replay undoes it, and --repair says it did."""
    carol = dom(st, "carol")
    os.makedirs(dom(st, ".vcli-new.carol", "Maildir", "new"))
    with open(dom(st, ".vcli-intent"), "w") as f:
        json.dump({"v": 1, "op": "vadduser", "pid": 1, "time": 0, "add": {"carol": carol}, "remove": {},
                   "files": {}, "maildirsize": [], "lines": {}}, f)
    got = problems(st)
    assert len(got) == 1 and got[0].startswith(f"{dom(st, '.vcli-intent')}: interrupted vadduser (pid 1, ")
    assert got[0].endswith(", carol); the next change to the domain or --repair undoes it")
    r = check(st, "--repair")
    assert r.rc == 0 and r.out.startswith("repaired: undid the interrupted vadduser")
    assert "Note: undone an interrupted vadduser" in r.err  # carol never reached vpasswd
    assert not os.path.exists(carol) and not os.path.exists(dom(st, ".vcli-new.carol"))
    assert check(st).rc == 0


def test_a_lookup_finishes_a_committed_change(st):
    """vpasswd already names the user (the commit happened); the tree is still at its temp name."""
    os.rename(dom(st, "bob"), dom(st, ".vcli-new.bob"))
    with open(dom(st, ".vcli-intent"), "w") as f:
        json.dump({"v": 1, "op": "vadduser", "pid": 1, "time": 0, "add": {"bob": dom(st, "bob")}, "remove": {},
                   "files": {}, "maildirsize": [], "lines": {}}, f)
    r = st.run("vuserinfo", "-d", "bob@example.test")
    assert r.rc == 0 and r.out == dom(st, "bob") + "\n"
    assert r.err.startswith("Note: finished an interrupted vadduser")
    assert os.path.isdir(dom(st, "bob", "Maildir")) and not os.path.exists(dom(st, ".vcli-intent"))
    assert check(st).rc == 0


def test_unregistered_domain_directory_is_reported(st):
    ghost = os.path.join(st.vp, "domains", "ghost.test")
    os.makedirs(ghost)
    with open(os.path.join(ghost, "vpasswd"), "w"):
        pass
    assert problems(st) == [f"{ghost}: domain directory not in users/assign "
                            "(left by an interrupted vadddomain/vdeldomain?); left alone"]


@pytest.mark.parametrize("damage", ["stale", "missing", "corrupt"])
def test_cdb_compared_in_a_child_gives_the_same_problems_in_the_same_place(st, monkeypatch, damage):
    """A big domain's cdb comparison runs in a forked child beside the tree checks (check.BESIDE):
    the same problems, listed in the same order, as when it runs inline; and the repair works."""
    from cli_helpers import patched_environ

    from vcli.config import load_settings
    from vcli.store import check as C
    from vcli.store.store import Store

    vp = dom(st, "vpasswd")
    if damage == "stale":
        data = open(vp, "rb").read().replace(b":bob:", b":Robert:")
        with open(vp, "wb") as f:
            f.write(data)
    elif damage == "missing":
        os.unlink(vp + ".cdb")
    else:
        with open(vp + ".cdb", "r+b") as f:
            f.truncate(100)
    shutil.rmtree(dom(st, "alice", "Maildir", "new"))  # a problem listed after the cdb's
    seen = []
    for beside in (10**9, 1):
        monkeypatch.setattr(C, "BESIDE", beside)
        with patched_environ(st.env):
            seen.append([f"{p.path}: {p.what}" for p in C.check(Store(load_settings()))])
    assert seen[0] == seen[1] and len(seen[0]) == 2, seen
    assert seen[0][0].startswith(f"{vp}.cdb: ")
    monkeypatch.setattr(C, "BESIDE", 1)
    with patched_environ(st.env):
        for p in C.check(Store(load_settings())):
            if p.repair:
                p.repair()
        assert C.check(Store(load_settings())) == []


@pytest.mark.parametrize("child", ["answers", "dies"])
def test_trees_checked_half_in_a_child_give_the_same_problems_in_the_same_place(st, monkeypatch, child):
    """A big domain's trees are checked partly in the forked child (check.SPLIT): damage in
    either part -- a missing Maildir, a missing home, a home that is a symlink, an unparsable
    maildirsize, a wrong mode, an orphaned mailbox next to them -- is reported as the inline
    check reports it, in the same order, and --repair through the split check leaves only what
    it leaves alone.  A child that dies without answering costs time, not answers."""
    from cli_helpers import patched_environ

    from vcli.config import load_settings
    from vcli.store import check as C
    from vcli.store.store import Store

    names = [f"u{i:02d}" for i in range(30)]
    for name in names:
        st.call_ok("vadduser", f"{name}@example.test", "Some-pw1x")
    shutil.rmtree(dom(st, "u02", "Maildir", "cur"))  # in this process's part
    shutil.rmtree(dom(st, "u25", "Maildir", "new"))  # in the child's
    shutil.rmtree(dom(st, "u27"))
    os.rename(dom(st, "u28"), dom(st, "u28-real"))
    os.symlink(dom(st, "u28-real"), dom(st, "u28"))
    with open(dom(st, "u29", "Maildir", "maildirsize"), "w") as f:
        f.write("5S\nnot numbers\n")
    os.chmod(dom(st, "u26"), 0o750)
    os.makedirs(dom(st, "stray", "Maildir"))
    if child == "dies":
        monkeypatch.setattr(C.Checker, "_far_part", lambda *a: os._exit(3))
    seen = []
    for beside in (10**9, 1):
        monkeypatch.setattr(C, "BESIDE", beside)
        with patched_environ(st.env):
            seen.append([f"{p.path}: {p.what}" for p in C.check(Store(load_settings()))])
    assert seen[0] == seen[1], seen
    for want in (dom(st, "u02", "Maildir", "cur"), dom(st, "u25", "Maildir", "new"), dom(st, "u27"),
                 dom(st, "u28"), dom(st, "u29", "Maildir", "maildirsize"), dom(st, "u26"), dom(st, "stray")):
        assert any(line.startswith(want + ": ") for line in seen[0]), (want, seen[0])
    monkeypatch.setattr(C, "BESIDE", 1)
    with patched_environ(st.env):
        for p in C.check(Store(load_settings())):
            if p.repair:
                p.repair()
        left = [f"{p.path}: {p.what}" for p in C.check(Store(load_settings()))]
    assert [x.split(":")[0] for x in left] == [dom(st, "u26"), dom(st, "u28"), dom(st, "u29", "Maildir", "maildirsize"),
                                              dom(st, "stray")], left
