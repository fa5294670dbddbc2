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
from cli_helpers import ASCTIME_RE, CliStore, fast_base, patched_environ
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


# --- item 2: what moves into tables on an SQL site --------------------------------------------------

def test_i13_03_domain_counter_is_the_dom_uid_row(my):
    """The domain hashing counter is dir_control row dom_<uid> (sql.md §4.2), not domains/.dir-control."""
    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadddomain", "other.test", "Pm-pass1")
    assert dir_control(my.db, "dom_89") == (2, 0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, "")
    assert not (my.vp / "domains" / ".dir-control").exists()
    my.ok("vdeldomain", "other.test")
    assert dir_control(my.db, "dom_89")[0] == 1
    r = my.run("vadddomain", D, "Pm-pass1")
    assert r.rc == 243 and dir_control(my.db, "dom_89")[0] == 1


def test_i13_03_aliasdomains_rows_follow_alias_domains(my, cdb):
    """SQL_ALIASDOMAINS: vaddaliasdomain adds (domain, alias), deleting the alias or the real domain
    takes the rows (sql.md §4.3 step 6, §6); the commands say what they say on cdb."""
    for st in (my, cdb):
        st.ok("vadddomain", D, "Pm-pass1")
    for argv in (("vaddaliasdomain", D, "alias1.test"), ("vaddaliasdomain", D, "alias2.test"),
                 ("vdominfo", "alias1.test"), ("vdeldomain", D)):
        a, b = my.run(*argv), cdb.run(*argv)
        assert (a.rc, norm(my, a.out), a.err) == (b.rc, norm(cdb, b.out), b.err), argv
    assert sorted(my.db.query("SELECT alias, domain FROM aliasdomains")) == [
        ("alias1.test", D), ("alias2.test", D)]
    my.ok("vdeldomain", "alias1.test")
    assert my.db.query("SELECT alias, domain FROM aliasdomains") == [("alias2.test", D)]
    my.ok("vdeldomain", "-f", D)
    assert my.db.query("SELECT alias, domain FROM aliasdomains") == []


@pytest.fixture()
def per_domain(tmp_path, db):
    """A site built with --disable-many-domains: one table per domain."""
    with fast_base(tmp_path / "pd") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, drop=("MANY_DOMAINS",))
        st.db = db
        yield st


def test_i13_03_per_domain_tables(per_domain):
    st = per_domain
    st.ok("vadddomain", "a-b.test", "Pm-pass1")
    st.ok("vadduser", "bob@a-b.test", "Bob-pass1")
    rows = st.db.query("SELECT pw_name, pw_uid, pw_gid, pw_gecos, pw_shell FROM a_b_test ORDER BY pw_name")
    assert rows == [("bob", 0, 0, "bob", "NOQUOTA"), ("postmaster", 0, 0, "Postmaster", "NOQUOTA")]
    cols = [r[0] for r in st.db.query("SHOW COLUMNS FROM a_b_test")]
    assert "pw_domain" not in cols
    assert st.ok("vuserinfo", "-n", "-D", "a-b.test").out.split() == ["-" * 42, "bob", "-" * 42, "postmaster"]
    # a.b.test would share a_b_test: refused before anything is written, in one line
    before, tables = st.snapshot(), st.db.query("SHOW TABLES")
    r = st.run("vadddomain", "a.b.test", "Pm-pass1")
    assert r.t == (69, "", "Error: a.b.test and a-b.test would share the table a_b_test (a site without "
                           "MANY_DOMAINS keeps one table per domain)\n")
    assert st.snapshot() == before and st.db.query("SHOW TABLES") == tables
    st.ok("vdeldomain", "a-b.test")
    assert ("a_b_test",) not in st.db.query("SHOW TABLES")


def test_i13_03_legacy_column_types_still_work(tmp_path, db):
    """A table an old vpopmail created (CHAR columns, char(40) passwords, extra columns with
    defaults, sql.md §3.10, §3.11) is used as found; a value wider than its column is refused
    before the query instead of failing (or being cut) on the server."""
    db.query("CREATE TABLE vpopmail (id INT AUTO_INCREMENT UNIQUE, pw_name CHAR(32) NOT NULL, "
             "pw_domain CHAR(96) NOT NULL, pw_passwd CHAR(40), pw_uid INT, pw_gid INT, pw_gecos CHAR(48), "
             "pw_dir CHAR(160), pw_shell CHAR(20), my_uid TINYINT DEFAULT 89, "
             "PRIMARY KEY (pw_name, pw_domain), KEY pw_domain (pw_domain)) ENGINE=MyISAM CHARSET=latin1")
    db.query("CREATE TABLE lastauth (user CHAR(32) NOT NULL, domain CHAR(96) NOT NULL, "
             "remote_ip CHAR(18) NOT NULL, timestamp BIGINT DEFAULT 0 NOT NULL, PRIMARY KEY (user, domain))")
    with fast_base(tmp_path / "old") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("MD5_PASSWORDS",), drop=("SHA512_PASSWORDS",))
        st.ok("vadddomain", D, "Pm-pass1")
        st.ok("vadduser", "-c", "Old Style", f"bob@{D}", "Bob-pass1")
        st.ok("vmoduser", "-c", "Renamed", f"bob@{D}")
        out = st.ok("vuserinfo", "-c", "-d", "-q", f"bob@{D}").out
        assert out == f"Renamed\n{st.ddir(D)}/bob\nNOQUOTA\n"
        assert st.ok("vuserinfo", "-l", f"bob@{D}").out.startswith("account created: ")
        assert db.query("SELECT pw_name, my_uid, LENGTH(pw_passwd) FROM vpopmail ORDER BY pw_name") == [
            ("bob", 89, 34), ("postmaster", 89, 34)]
        before = st.snapshot()
        r = st.run("vadduser", "-c", "x" * 49, f"carol@{D}", "Carol-pw1")
        assert r.t == (228, "", "Error: gecos too long for vpopmail.pw_gecos (max=48)\n")
        r = st.run("vadduser", "a" * 33 + f"@{D}", "Carol-pw1")
        assert r.t == (231, "", "Error: user name too long for vpopmail.pw_name (max=32)\n")
        assert st.snapshot() == before
        write_site(st.vp, "mysql", db)  # the same table under a sha512 build: 98 chars do not fit
        before = st.snapshot()
        r = st.run("vadduser", f"carol@{D}", "Carol-pw1")
        assert r.t == (229, "", "Error: password too long for vpopmail.pw_passwd (max=40)\n")
        assert st.snapshot() == before
        assert [r[0] for r in db.query("SELECT pw_name FROM vpopmail")] == ["bob", "postmaster"]


def test_i13_03_vmkpasswd_has_nothing_to_rebuild(my):
    my.ok("vadddomain", D, "Pm-pass1")
    r = my.run("vmkpasswd", D)
    assert r.t == (0, "", f"vmkpasswd: nothing to rebuild: {D}'s users are in the mysql database\n")
    assert not (my.ddir(D) / "vpasswd.cdb").exists()


def test_i13_03_listing_streams_in_collation_order(my):
    """More rows than one fetch of the server-side cursor, in the server's ORDER BY pw_name
    (utf8mb4_general_ci: `a_b` after `ab`, sql.md §10 item 12), while each row's lastauth is read
    on another connection."""
    from vcli.model import NewUser

    my.ok("vadddomain", D, "Pm-pass1")
    store = _store(my)
    names = [f"u{i:04d}" for i in range(2500)] + ["a_b", "ab", "a-b", "a.b", "aa"]
    with patched_environ(my.env):
        store.add_users(D, [NewUser(n, hashed="$1$s$h") for n in names])
        got = []
        for vu in store.list_users(D):
            got.append(vu.name)
            assert store.lastauth(vu, D)[1] == "0.0.0.0"
    assert got[:5] == ["a-b", "a.b", "aa", "ab", "a_b"] and len(got) == 2506
    assert got[5:] == sorted(names[:2500] + ["postmaster"])
    # an abandoned listing does not disturb the next one
    with patched_environ(my.env):
        it = store.list_users(D)
        next(it)
        it.close()
        assert sum(1 for _ in store.list_users(D)) == 2506
        r = store.domain_info(D)
        assert r.users == 2506
    # the hashed dirs as vpopmail's dir_control gives them: 99 + postmaster at the top, then 100 per dir
    tops = {os.path.basename(os.path.dirname(u[6])) for u in users(my.db)}
    assert tops == {D, *"0123456789ABCDEFGHIJKLMNO"}


def _store(st):
    from vcli.config import load_settings
    from vcli.store.store import Store

    with patched_environ(st.env):
        return Store(load_settings())


BANNED = {"dataclasses", "inspect", "re", "json", "enum", "typing"}
PROBE = """
import sys
before = set(sys.modules)
{body}
sys.stdout.flush()
sys.stderr.write("IMPORTED " + " ".join(sorted(set(sys.modules) - before)) + "\\n")
sys.exit(code or 0)
"""
LOOKUP = """
sys.argv = ["vuserinfo", "bob@example.test"]
from vcli.cli.classic import vuserinfo
import os


def _exit(code):  # the lookups leave by os._exit (no teardown): report first
    raise SystemExit(code)


os._exit = _exit
try:
    code = vuserinfo()
except SystemExit as exc:
    code = exc.code
"""
DRIVER = """
import MySQLdb, MySQLdb.cursors
conn = MySQLdb.connect(host="127.0.0.1", port={port}, user={user!r}, password={password!r},
                       database={database!r}, charset="utf8mb4", connect_timeout=2, autocommit=True)
cur = conn.cursor()
cur.execute("SELECT %s", ("x",))
code = 0
"""


def _imports(env, body: str) -> tuple:
    import site
    import subprocess
    import sys

    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([src, *site.getsitepackages()])
    env = {k: v for k, v in env.items() if k != "VCLI_CONFIG"}  # no config file: tomllib imports typing
    r = subprocess.run([sys.executable, "-S", "-c", PROBE.format(body=body)], env=dict(env, PYTHONPATH=path),
                       capture_output=True, text=True)
    line = [x for x in r.stderr.splitlines() if x.startswith("IMPORTED ")]
    assert len(line) == 1, r.stderr
    return r, set(line[0].split()[1:])


def test_i13_03_lookup_path_imports_no_more_than_the_driver(my):
    """`vuserinfo user@domain` on a MySQL site loads mysqlclient's C layer, not its Python
    Connection/Cursor classes (which import re, decimal and enum: ~7 ms of the lookup), and none
    of the modules the lookup path bans -- though MySQLdb.connect itself would import some."""
    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadduser", f"bob@{D}", "Bob-pass1")
    r, lookup = _imports(my.env, LOOKUP)
    assert r.returncode == 0 and "name:   bob" in r.stdout, r.stderr
    assert "MySQLdb._mysql" in lookup and "vcli.store.auth.mysqlconn" in lookup
    assert not lookup & {"MySQLdb.connections", "MySQLdb.cursors", "MySQLdb.converters", "decimal"}, lookup
    assert not lookup & {"MySQLdb", "MySQLdb.times", "datetime"}, lookup  # the package's __init__ is not run
    assert sorted(lookup & BANNED) == []
    db = my.db
    r, driver = _imports(my.env, DRIVER.format(port=db.port, user=db.user, password=db.password,
                                               database=db.database))
    assert r.returncode == 0, r.stderr
    assert driver & BANNED, driver  # what the probe would have cost through MySQLdb.connect



def test_i13_05_dry_run_prints_the_statements_and_keeps_nothing(tmp_path, db):
    """--dry-run on an SQL site: the statements (checked by the server inside a transaction that is
    rolled back; tables a fresh database lacks made TEMPORARY), a clear password masked; afterwards
    not a row, not a table, not a file more."""
    with fast_base(tmp_path / "dry") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("CLEAR_PASS",))
        before = st.snapshot()
        r = st.ok("vcli", "vadddomain", "--dry-run", D, "Pm-pass1")
        assert "would run: CREATE TABLE IF NOT EXISTS `vpopmail` (pw_name VARCHAR(64) NOT NULL" in r.out
        assert db.query("SHOW TABLES") == [] and st.snapshot() == before
        st.ok("vadddomain", D, "Pm-pass1")
        before, data = st.snapshot(), db.query("SELECT * FROM vpopmail")
        r = st.ok("vcli", "vadduser", "--dry-run", "-q", "5M", f"bob@{D}", "Secret-Bob1")
        lines = r.out.splitlines()
        ins = [x for x in lines if x.startswith("would run: INSERT INTO `vpopmail`")]
        assert len(ins) == 1 and "Secret-Bob1" not in r.out and "'********')" in ins[0], r.out
        assert f"'bob', '{D}', '$6$" in ins[0] and "'5242880S'" in ins[0]
        assert any(x.startswith("would run: SELECT cur_users") and "FOR UPDATE" in x for x in lines)
        assert any(x.startswith("would run: REPLACE INTO `lastauth`") for x in lines)
        assert f"would create mailbox {st.ddir(D)}/bob" in r.out
        assert st.snapshot() == before and db.query("SELECT * FROM vpopmail") == data
        r = st.ok("vcli", "vdeluser", "--dry-run", f"postmaster@{D}")
        assert "would run: DELETE FROM `vpopmail` WHERE pw_name IN (%s) AND pw_domain = %s <- ('postmaster', " \
               f"'{D}')" in r.out
        assert st.snapshot() == before and db.query("SELECT * FROM vpopmail") == data


def test_i13_05_mysql_limits_table(tmp_path, db, cdb):
    """ENABLE_MYSQL_LIMITS: vmoddomlimits writes the `limits` row (no .qmailadmin-limits file), and
    every command reads it as cdb reads the file: the same output on both sites."""
    with fast_base(tmp_path / "lim") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("ENABLE_MYSQL_LIMITS",))
        for s in (st, cdb):
            s.ok("vadddomain", D, "Pm-pass1")
            s.ok("vadduser", f"bob@{D}", "Bob-pass1")
        for argv in (("vmoddomlimits", "-P", "10", "-A", "5", "-Q", "100", "-q", "10M", "-g", "ps", D),
                     ("vmoddomlimits", "-S", D), ("vuserinfo", f"bob@{D}"), ("vadduser", f"carol@{D}", "Carol-pw1"),
                     ("vuserinfo", "-q", f"carol@{D}"), ("vmoddomlimits", "-D", D), ("vmoddomlimits", "-S", D)):
            a, c = st.run(*argv), cdb.run(*argv)
            got = (a.rc, norm(st, a.out).replace("uid:    0\n", "uid:    1\n"), a.err)
            assert got == (c.rc, norm(cdb, c.out), c.err), argv
            if argv[1] == "-P":
                row = db.query("SELECT maxpopaccounts, maxaliases, diskquota, defaultquota, disable_pop, "
                               "disable_smtp, disable_imap FROM limits WHERE domain = %s", (D,))
                assert row == [(10, 5, 100, 10485760, 1, 1, 0)]
        assert db.query("SELECT COUNT(*) FROM limits") == [(0,)]
        assert not (st.ddir(D) / ".qmailadmin-limits").exists()
        st.ok("vmoddomlimits", "-P", "3", D)
        st.ok("vdeldomain", D)
        assert db.query("SELECT COUNT(*) FROM limits") == [(0,)]


def test_i13_05_valias_table(tmp_path, db, cdb):
    """VALIAS: valias writes rows of the valias table (no .qmail-<alias> files), and lists them as
    cdb lists its files: the same output on both sites."""
    with fast_base(tmp_path / "va") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("VALIAS",))
        for s in (st, cdb):
            s.ok("vadddomain", D, "Pm-pass1")
        for argv in (("valias", "-i", f"bob@{D}", f"info@{D}"), ("valias", "-i", "&carol@elsewhere.test", f"info@{D}"),
                     ("valias", "-i", f"bob@{D}", f"info@{D}"), ("valias", "-i", "x@y.test", f"sales@{D}"),
                     ("valias", D), ("valias", "-n", D), ("valias", f"info@{D}"), ("valias", "-d", f"sales@{D}"),
                     ("valias", "-d", f"sales@{D}"), ("valias", D)):
            a, c = st.run(*argv), cdb.run(*argv)
            assert (a.rc, a.out, a.err) == (c.rc, c.out, c.err), argv
        assert db.query("SELECT alias, domain, valias_line FROM valias ORDER BY id") == [
            ("info", D, f"bob@{D}"), ("info", D, "&carol@elsewhere.test")]
        assert not list(st.ddir(D).glob(".qmail-info*"))
        st.ok("vdeldomain", D)
        assert db.query("SELECT COUNT(*) FROM valias") == [(0,)]


def test_i13_05_ip_alias_map_table(tmp_path, db):
    """IP_ALIAS_DOMAINS: vipmap works on the ip_alias_map table (no etc/ip_alias_map); one domain
    per address, as the table's key makes it (sql.md §4.14)."""
    with fast_base(tmp_path / "ip") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("IP_ALIAS_DOMAINS",))
        st.ok("vadddomain", D, "Pm-pass1")
        st.ok("vadddomain", "other.test", "Pm-pass1")
        for ip, dom in (("10.0.0.1", D), ("2001:db8::1", "other.test"), ("10.0.0.1", "other.test")):
            assert st.run("vipmap", "-a", ip, dom).t == (0, "", "")
        assert st.ok("vipmap", "-p").out == "10.0.0.1 other.test\n2001:db8::1 other.test\n"
        assert db.query("SELECT ip_addr, domain FROM ip_alias_map ORDER BY ip_addr") == [
            ("10.0.0.1", "other.test"), ("2001:db8::1", "other.test")]
        assert st.run("vipmap", "-d", "10.0.0.1", D).rc == 255  # not that pair
        assert st.run("vipmap", "-d", "10.0.0.1", "other.test").t == (0, "", "")
        assert st.ok("vipmap", "-p").out == "2001:db8::1 other.test\n"
        assert st.run("vipmap", "-a", "10.0.0.300", D).rc == 255
        assert st.run("vipmap", "-a", "10.0.0.2", "nodomain.test").rc == 245
        assert not (st.vp / "etc" / "ip_alias_map").exists()


def test_i13_03_two_line_file_listings_from_line_1_changes_on_line_2(tmp_path, db, mariadb):
    """vpopmail.mysql with two lines (sql.md §2.3): line 1 (here a SELECT-only login) serves the
    listings, line 2 every change and -- without MYSQL_REPLICATION -- the single-record reads.
    A broken line 1 fails the listing in one line naming it; lookups and changes still work."""
    ro, ro_pw = f"ro{db.user}"[:32], "Read-only-1"
    conn = mariadb.admin()
    with conn.cursor() as cur:
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (ro, ro_pw))
        cur.execute(f"GRANT SELECT ON `{db.database}`.* TO %s@'127.0.0.1'", (ro,))
    conn.close()
    with fast_base(tmp_path / "two") as b:
        st = CliStore(b)
        line2 = db.db_line()
        write_site(st.vp, "mysql", db, db_text=f"127.0.0.1|{db.port}|{ro}|{ro_pw}|{db.database}\n" + line2)
        st.ok("vadddomain", D, "Pm-pass1")
        st.ok("vadduser", f"bob@{D}", "Bob-pass1")
        assert st.ok("vuserinfo", "-n", "-D", D).out.split() == ["-" * 42, "bob", "-" * 42, "postmaster"]
        # the listing really came from line 1: that login is seen by the server
        write_site(st.vp, "mysql", db, db_text=f"127.0.0.1|{db.port}|{ro}|wrong|{db.database}\n" + line2)
        r = st.run("vuserinfo", "-n", "-D", D)
        assert r.rc == 77 and r.err.startswith(f"Error: MySQL server 127.0.0.1:{db.port}: Access denied for user "
                                               f"'{ro}'"), r
        assert st.ok("vuserinfo", "-n", f"bob@{D}").out == "bob\n"
        st.ok("vdeluser", f"bob@{D}")


def test_i13_03_vchkpw_writes_the_lastauth_row(my):
    """A good login through vchkpw REPLACEs the lastauth row with the client's IP (sql.md §4.10,
    §10 item 5); a wrong password writes nothing; an alias-domain login lands under the real domain."""
    import subprocess

    from cli_helpers import tool

    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadduser", f"bob@{D}", "Bob-pass1")
    my.ok("vaddaliasdomain", D, "alias.test")

    def chk(login: str, pw: str, ip: str) -> int:
        r, w = os.pipe()
        os.write(w, login.encode() + b"\0" + pw.encode() + b"\0")
        os.close(w)
        try:
            p = subprocess.run([tool("vchkpw"), "/bin/true"], env=dict(my.env, TCPREMOTEIP=ip),
                               capture_output=True, pass_fds=(3, r), preexec_fn=lambda: os.dup2(r, 3), timeout=30)
        finally:
            os.close(r)
        return p.returncode

    before = my.db.query("SELECT remote_ip, timestamp FROM lastauth WHERE user = 'bob'")
    assert chk(f"bob@{D}", "wrong", "192.0.2.9") == 3
    assert my.db.query("SELECT remote_ip, timestamp FROM lastauth WHERE user = 'bob'") == before
    assert chk("bob@alias.test", "Bob-pass1", "192.0.2.7") == 0
    assert my.db.query("SELECT domain, remote_ip FROM lastauth WHERE user = 'bob'") == [(D, "192.0.2.7")]
    assert my.ok("vuserinfo", "-l", f"bob@{D}").out.endswith("last auth ip: 192.0.2.7\n")


def test_i13_05_dotqmail2valias_on_a_valias_site_says_not_yet(tmp_path, db):
    with fast_base(tmp_path / "dq") as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db, add=("VALIAS",))
        st.ok("vadddomain", D, "Pm-pass1")
        before = st.snapshot()
        r = st.run("dotqmail2valias", D)
        assert r.rc == 255 and len(r.err_lines) == 1 and "not in this version of vcli" in r.err
        assert st.snapshot() == before


def test_i13_03_nested_listings_each_read_whole(my):
    """A listing started while another is still being read (vpopbull-style loops) gets its own
    connection: both are complete, and the shared listing connection stays usable."""
    from vcli.model import NewUser

    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadddomain", "other.test", "Pm-pass1")
    store = _store(my)
    with patched_environ(my.env):
        store.add_users(D, [NewUser(f"u{i:04d}", hashed="$1$s$h") for i in range(1500)])
        outer = []
        for vu in store.list_users(D):
            outer.append(vu.name)
            if len(outer) == 10:
                assert [u.name for u in store.list_users("other.test")] == ["postmaster"]
                assert sum(1 for _ in store.list_users(D)) == 1501
        assert len(outer) == 1501
        assert sum(1 for _ in store.list_users(D)) == 1501


def test_i13_03_lastauth_follows_a_domain_made_again(my):
    """A long-lived Store (the daemon's) keeps the domain of the last lastauth lookup only while
    users/cdb is unchanged: a name that was an alias domain and is now a real one of its own is
    read from its own rows, not the old real domain's."""
    from vcli.config import load_settings
    from vcli.store.store import Store

    my.ok("vadddomain", D, "Pm-pass1")
    my.ok("vadduser", f"ann@{D}", "Ann-pass1")
    my.ok("vaddaliasdomain", D, "al.test")
    with patched_environ(my.env):
        store = Store(load_settings())
        user = store.auth.get_user(store.real_entry(D), "ann")
        store.set_lastauth(user, D, "192.0.2.7")
        assert store.lastauth(user, "al.test")[1] == "192.0.2.7"
        my.ok("vdeldomain", "al.test")
        my.ok("vadddomain", "al.test", "Pm-pass1")
        my.ok("vadduser", "ann@al.test", "Ann-pass1")
        other = store.auth.get_user(store.real_entry("al.test"), "ann")
        store.set_lastauth(other, "al.test", "198.51.100.9")
        assert store.lastauth(other, "al.test")[1] == "198.51.100.9"
        assert store.lastauth(user, D)[1] == "192.0.2.7"


def test_i13_03_the_real_mysqldb_package_after_the_lean_c_layer():
    """mysqlconn loads MySQLdb._mysql without running the package's __init__ (a stand-in parent
    while it loads, taken out after): a later `import MySQLdb` in the same process runs the real
    package, which uses the same C module and exception classes, and connect, cursors and the
    converters are all there."""
    import subprocess
    import sys

    probe = """
import sys
from vcli.store.auth import mysqlconn
assert "MySQLdb" not in sys.modules and "datetime" not in sys.modules
import MySQLdb, MySQLdb.cursors, MySQLdb.converters
assert MySQLdb._mysql is mysqlconn._mysql
assert MySQLdb.Error is mysqlconn.Error and MySQLdb.OperationalError is mysqlconn.OperationalError
assert callable(MySQLdb.connect) and MySQLdb.cursors.Cursor and "datetime" in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
