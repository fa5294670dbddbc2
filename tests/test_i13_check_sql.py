"""Issue 13 item 5: `vcli check [--repair]` on a MySQL site, through the installed command against a
real MariaDB: table rows against Maildirs and users/assign, dir_control against the row count."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from cli_helpers import CliStore, fast_base
from sqlenv import write_site

D = "example.test"


@pytest.fixture()
def my(tmp_path, mariadb):
    with fast_base(tmp_path / "my") as b:
        st = CliStore(b)
        st.db = mariadb.new_database()
        write_site(st.vp, "mysql", st.db)
        st.ok("vadddomain", D, "Pm-pass1")
        for name in ("alice", "bob"):
            st.ok("vadduser", f"{name}@{D}", "Some-pass1")
        lines = "".join(f"u{i:03d}@{D},Pw-{i:04d}x\n" for i in range(120))  # past 100: hashed dirs
        st.ok("vcli", "vadduser", "--from-file", "-", input=lines)
        yield st


def check(st, *args):
    return st.run("vcli", "check", *args)


def home(st, user):
    return st.db.query("SELECT pw_dir FROM vpopmail WHERE pw_name = %s", (user,))[0][0]


def test_i13_05_clean_sql_site(my):
    r = check(my)
    assert (r.rc, r.out, r.err) == (0, "", "")
    assert check(my, D).rc == 0


def test_i13_05_dir_control_drift_is_recounted(my):
    my.db.query("UPDATE dir_control SET cur_users = cur_users + 3 WHERE domain = %s", (D,))
    r = check(my)
    assert r.rc == 65 and r.out == (f"mysql:{D}: dir_control counts 126 users, the table has 123 "
                                    "(vdominfo's user count is off)\n")
    r = check(my, "--repair")
    assert r.rc == 0 and r.out == f"repaired: set the dir_control user count of mysql:{D} to 123 (was 126)\n"
    assert my.db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(123,)]
    assert [x.split()[-1] for x in my.ok("vdominfo", D).out.splitlines() if x.startswith("users")] == ["123"]


def test_i13_05_tree_left_under_its_temp_name_is_renamed_in(my):
    """A crash between COMMIT and the rename leaves the row and the tree at its temp name."""
    h = home(my, "u110")
    assert os.path.dirname(h) != str(my.ddir(D))  # in a hash dir
    tmp = os.path.join(os.path.dirname(h), ".vcli-new.u110")
    os.rename(h, tmp)
    r = check(my)
    assert r.rc == 65 and r.out == f"{tmp}: tree of u110, whose record is committed, not renamed into place\n"
    r = check(my, "--repair")
    assert r.rc == 0 and r.out == f"repaired: renamed {tmp} into place as {h}\n"
    assert os.path.isdir(os.path.join(h, "Maildir", "new"))


def test_i13_05_row_without_maildir_is_reported_not_touched(my):
    h = home(my, "bob")
    shutil.rmtree(h)
    r = check(my, "--repair")
    assert r.rc == 65 and r.out == f"{h}: home of bob missing (its record stays; left alone: restore it, or vdeluser)\n"
    assert not os.path.exists(h)
    assert my.db.query("SELECT COUNT(*) FROM vpopmail WHERE pw_name = 'bob'") == [(1,)]
    shutil.rmtree(os.path.join(home(my, "alice"), "Maildir", "cur"))
    assert f"{home(my, 'alice')}/Maildir/cur: missing (alice) (its record stays" in check(my).out


def test_i13_05_half_made_trees_and_orphans(my):
    ddir = my.ddir(D)
    old = ddir / ".vcli-new.ghost"
    (old / "Maildir" / "new").mkdir(parents=True)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    young = ddir / ".vcli-new.busy"  # an add at work right now: not a problem yet
    (young / "Maildir").mkdir(parents=True)
    orphan = ddir / "olduser"
    (orphan / "Maildir").mkdir(parents=True)
    r = check(my)
    assert r.rc == 65 and sorted(r.out.splitlines()) == sorted([
        f"{old}: half-made user directory of an interrupted add",
        f"{orphan}: mailbox not in the mysql table (orphaned; left alone)"])
    r = check(my, "--repair")
    assert f"repaired: removed {old}" in r.out and not old.exists() and young.exists() and orphan.exists()


def test_i13_05_rows_of_a_domain_users_assign_does_not_name(my):
    my.db.query("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell) "
                "VALUES ('x', 'gone.test', '', 0, 0, 'x', '/nowhere/x', 'NOQUOTA')")
    r = check(my)
    assert r.rc == 65 and r.out == ("mysql:gone.test: records of a domain users/assign does not name "
                                    "(left by vdeldomain of another tool?); left alone\n")
    assert check(my, D).rc == 0  # a domain's own check does not look at the others


def test_i13_05_database_down_is_one_line(my):
    from sqlservers import free_port

    (my.vp / "etc" / "vpopmail.mysql").write_text(f"127.0.0.1|{free_port()}|u|p|vpopmail\n")
    r = check(my)
    assert r.rc == 69 and r.out == "" and len(r.err_lines) == 1, r


def test_i13_05_bulk_import_names_existing_users_by_line(my):
    """The bulk import's check of names already there (one batched pass per domain on SQL, not a
    query a line) reports each such line, in line order among the other bad lines; nothing added."""
    before = my.db.query("SELECT COUNT(*) FROM vpopmail")[0][0]
    feed = f"new1@{D},Pw-new1xx\nalice@{D},Pw-alice1\nbad-address,Pw-x12345\nu005@{D},Pw-u0051x\n"
    r = my.run("vcli", "vadduser", "--from-file", "-", input=feed)
    assert r.rc == 254 and r.err_lines == [f"Error: -:2: alice@{D}: User already exists",
                                           "Error: -:3: bad-address: not a full address",
                                           f"Error: -:4: u005@{D}: User already exists"], r
    assert my.db.query("SELECT COUNT(*) FROM vpopmail")[0][0] == before
