"""Issue 13 item 3: the MySQL auth module against a real MariaDB (tests/sqlservers.py).

The classic commands run as the installed entry points on a MySQL-built site and on a cdb site
side by side: the same stdout, stderr and exit status (the differences vpopmail itself has are
named: `uid: 0` on SQL, spec/sql.md §8.1), and the rows are what vpopmail writes (§3, §4, §10).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from cli_helpers import ASCTIME_RE, CliStore, fast_base
from sqlenv import write_site

D = "example.test"
HASH = re.compile(r"\$6\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{86}")


@pytest.fixture()
def db(mariadb):
    return mariadb.new_database()


@pytest.fixture()
def my(tmp_path, db):
    """A CliStore whose site is MySQL-built (default configure: many-domains, sql-aliasdomains)."""
    with fast_base(tmp_path / "my") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db)
        st.db = db
        yield st


@pytest.fixture()
def cdb(tmp_path):
    with fast_base(tmp_path / "cdb") as b:
        st = CliStore(b)
        write_site(st.vp, "cdb")
        yield st


def norm(st: CliStore, text: str) -> str:
    """Paths, hashes and times out, so the two sites' outputs can be compared."""
    return ASCTIME_RE.sub("{TIME}", HASH.sub("{HASH}", text.replace(str(st.base), "{BASE}")))


def users(db, domain: str = D) -> list[tuple]:
    return db.query("SELECT pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell "
                    "FROM vpopmail WHERE pw_domain = %s ORDER BY pw_name", (domain,))


def dir_control(db, key: str = D) -> tuple | None:
    rows = db.query("SELECT cur_users, level_cur, level_max, level_start0, level_start1, level_start2, "
                    "level_end0, level_end1, level_end2, level_mod0, level_mod1, level_mod2, level_index0, "
                    "level_index1, level_index2, the_dir FROM dir_control WHERE domain = %s", (key,))
    return rows[0] if rows else None


SCRIPT = [
    ("vadddomain", D, "Pm-pass1"),
    ("vadduser", "-c", "Bob Smith", f"bob@{D}", "Bob-pass1"),
    ("vadduser", "-q", "5000000", f"carol@{D}", "Carol-pw1"),
    ("vadduser", f"bob@{D}", "Bob-pass1"),
    ("vuserinfo", f"bob@{D}"),
    ("vuserinfo", "-n", "-q", "-D", D),
    ("vmoduser", "-p", "-s", "-c", "Robert", f"bob@{D}"),
    ("vuserinfo", "-g", "-c", f"bob@{D}"),
    ("vpasswd", f"carol@{D}", "New-pass1"),
    ("vsetuserquota", f"bob@{D}", "50M"),
    ("vuserinfo", "-q", f"bob@{D}"),
    ("vsetuserquota", D, "10M"),
    ("vuserinfo", "-q", "-D", D),
    ("vdominfo", D),
    ("vuserinfo", f"nobody@{D}"),
    ("vdeluser", f"carol@{D}"),
    ("vdeluser", f"carol@{D}"),
    ("vdominfo", D),
    ("vuserinfo", "-n", "-D", D),
]


def test_i13_03_classic_commands_same_as_cdb(my, cdb):
    """Each command line gives the same (exit, stdout, stderr) on both sites; vuserinfo's uid line
    is vpopmail's own difference (0 on SQL, 1 on cdb)."""
    for argv in SCRIPT:
        a, b = my.run(*argv), cdb.run(*argv)
        got = (a.rc, norm(my, a.out).replace("uid:    0\n", "uid:    1\n"), norm(my, a.err))
        assert got == (b.rc, norm(cdb, b.out), norm(cdb, b.err)), argv
    # nothing of the user database on disk: no vpasswd, no cdb, no counter file, no lastauth files
    ddir = my.ddir(D)
    assert not any(os.path.exists(ddir / f) for f in ("vpasswd", "vpasswd.cdb", ".dir-control"))
    assert not (ddir / "bob" / "lastauth").exists() and (cdb.ddir(D) / "bob" / "lastauth").exists()
    assert my.run("vdeldomain", D).t == cdb.run("vdeldomain", D).t
    assert my.db.query("SELECT COUNT(*) FROM vpopmail") == [(0,)]
    assert dir_control(my.db) is None and my.db.query("SELECT COUNT(*) FROM lastauth") == [(0,)]


def test_i13_03_rows_are_what_vpopmail_writes(my):
    t0 = int(time.time())
    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadduser", "-q", "5000000", f"bob@{D}", "Bob-pass1")
    my.ok("vadduser", "-c", "Carol C", f"carol@{D}", "Carol-pw1")
    ddir = str(my.ddir(D))
    rows = users(my.db)
    assert [r[:2] + r[3:] for r in rows] == [
        ("bob", D, 0, 0, "bob", f"{ddir}/bob", "5000000S"),
        ("carol", D, 0, 0, "Carol C", f"{ddir}/carol", "NOQUOTA"),
        ("postmaster", D, 0, 0, "Postmaster", f"{ddir}/postmaster", "NOQUOTA"),
    ]
    assert all(HASH.fullmatch(r[2]) for r in rows)
    assert (my.ddir(D) / "bob" / "Maildir" / "maildirsize").read_bytes() == b"5000000S\n0 0\n"
    assert not (my.ddir(D) / "carol" / "Maildir" / "maildirsize").exists()
    assert dir_control(my.db) == (3, 0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, "")
    la = my.db.query("SELECT user, domain, remote_ip, timestamp FROM lastauth ORDER BY user")
    assert [r[:3] for r in la] == [("bob", D, "0.0.0.0"), ("carol", D, "0.0.0.0"), ("postmaster", D, "0.0.0.0")]
    assert all(t0 <= r[3] <= time.time() + 1 for r in la)
    tables = {r[0] for r in my.db.query("SHOW TABLES")}
    assert tables == {"vpopmail", "dir_control", "lastauth", "aliasdomains"}
    engines = dict(my.db.query("SELECT TABLE_NAME, CONCAT(ENGINE, ' ', TABLE_COLLATION) FROM "
                               "information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"))
    assert set(engines.values()) == {"InnoDB utf8mb4_general_ci"}
    # the modifications: SETPW of every field, SETQUOTA, flags
    my.ok("vmoduser", "-a", f"carol@{D}")
    my.ok("vsetuserquota", f"carol@{D}", "50M")
    assert users(my.db)[1][4:] == (4096, "Carol C", f"{ddir}/carol", "52428800S")
    assert (my.ddir(D) / "carol" / "Maildir" / "maildirsize").read_bytes() == b"52428800S\n0 0\n"
    my.ok("vmoduser", "-x", "-p", "-s", f"carol@{D}")
    assert users(my.db)[1][4] == 2050
    my.ok("vdeluser", f"bob@{D}")
    assert [r[0] for r in users(my.db)] == ["carol", "postmaster"]
    assert dir_control(my.db)[0] == 2 and not (my.ddir(D) / "bob").exists()
    assert [r[0] for r in my.db.query("SELECT user FROM lastauth ORDER BY user")] == ["carol", "postmaster"]


def test_i13_03_vuserinfo_created_and_last_auth_from_the_row(my):
    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadduser", f"bob@{D}", "Bob-pass1")
    (ts,) = my.db.query("SELECT timestamp FROM lastauth WHERE user = 'bob'")[0]
    created = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(ts))
    out = my.ok("vuserinfo", f"bob@{D}").out
    assert out.endswith(f"account created: {created}\nlast auth: Never logged in\n")
    my.db.query("UPDATE lastauth SET remote_ip = '192.0.2.7', timestamp = 1700000000 WHERE user = 'bob'")
    last = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(1700000000))
    assert my.ok("vuserinfo", "-l", f"bob@{D}").out == f"last auth: {last}\nlast auth ip: 192.0.2.7\n"
    my.db.query("DELETE FROM lastauth WHERE user = 'bob'")
    assert my.ok("vuserinfo", "-l", f"bob@{D}").out == "last auth: Never logged in\n"


@pytest.mark.parametrize("site", ["my", "cdb"])
def test_i13_03_import_records_verbatim_all_or_nothing(site, request):
    """import_records (vcli convert's target side) stores records as they are, sets the counter,
    and refuses a name already there with nothing written -- on both modules."""
    from cli_helpers import patched_environ

    from vcli.config import load_settings
    from vcli.errors import UserExists
    from vcli.model import VUser
    from vcli.store.dircontrol import DirControl
    from vcli.store.store import Store

    st = request.getfixturevalue(site)
    st.ok("vadddomain", D, "Pm-pass1")
    with patched_environ(st.env):
        store = Store(load_settings())
        entry = store.real_entry(D)
        ddir = entry.dir
        recs = [VUser("a'b\\c", "$1$x$y", "1", 2050, "Quote ' back \\ 100% a_b", f"{ddir}/a'b\\c", "5S"),
                VUser("zed", "", "1", 0, "Zed é 🎉", f"{ddir}/0/zed", "NOQUOTA")]
        dc = DirControl(cur_users=150, the_dir="0")
        assert store.auth.import_records(entry, recs, dc) == 2
        for vu in recs:
            got = store.get_user(vu.name, D)
            assert (got.name, got.passwd, got.gid, got.gecos, got.dir, got.quota) == (
                vu.name, vu.passwd, vu.gid, vu.gecos, vu.dir, vu.quota)
        assert store.auth.dir_control(entry).cur_users == 150
        assert [u.name for u in store.list_users(D)] == ["a'b\\c", "postmaster", "zed"]
        with pytest.raises(UserExists):
            store.auth.import_records(entry, [VUser("new1", dir=f"{ddir}/new1"), VUser("zed", dir=f"{ddir}/zed")],
                                      DirControl(cur_users=999))
        assert [u.name for u in store.list_users(D)] == ["a'b\\c", "postmaster", "zed"]
        assert store.auth.dir_control(entry).cur_users == 150
