"""Issue 13 "Bad input" on the MySQL module, against a real MariaDB: one clear line, a documented
exit status (README's table: 69 the server unreachable or failing, 77 a login or a table right
refused), nothing half-written in the database or on disk."""

from __future__ import annotations

import subprocess

import pytest
from cli_helpers import CliStore, fast_base, patched_environ, tool
from sqlenv import write_site
from sqlservers import MariaDB, free_port

D = "example.test"


@pytest.fixture()
def db(mariadb):
    return mariadb.new_database()


def site(base, db, **kw) -> CliStore:
    st = CliStore(base)
    write_site(st.vp, "mysql", db, **kw)
    st.db = db
    return st


@pytest.fixture()
def my(tmp_path, db):
    with fast_base(tmp_path) as b:
        yield site(b, db)


def rows(db) -> dict:
    """Every row of vcli's tables, for 'nothing changed' checks."""
    out = {}
    for (t,) in db.query("SHOW TABLES"):
        out[t] = sorted(db.query(f"SELECT * FROM `{t}`"))
    return out


def store_of(st):
    from vcli.config import load_settings
    from vcli.store.store import Store

    with patched_environ(st.env):
        return Store(load_settings())


# --- the server ---------------------------------------------------------------------------------

def test_i13_03_server_down_one_line_exit_69_nothing_written(my):
    my.ok("vadddomain", D, "Pm-pass1")
    port = free_port()
    write_site(my.vp, "mysql", my.db, db_text=f"127.0.0.1|{port}|{my.db.user}|{my.db.password}|{my.db.database}\n")
    before = my.snapshot()
    for argv in (("vuserinfo", f"postmaster@{D}"), ("vadduser", f"bob@{D}", "Bob-pass1"),
                 ("vadddomain", "new.test", "Pm-pass1"), ("vdominfo", D), ("vdeluser", f"postmaster@{D}")):
        r = my.run(*argv)
        assert r.rc == 69 and r.out == "" and len(r.err_lines) == 1, (argv, r)
        assert r.err.startswith(f"Error: MySQL server 127.0.0.1:{port} unreachable: "), r.err
        assert "Traceback" not in r.err
    assert my.snapshot() == before


def test_i13_03_login_refused_one_line_exit_77(my):
    my.ok("vadddomain", D, "Pm-pass1")
    db = my.db
    write_site(my.vp, "mysql", db, db_text=f"127.0.0.1|{db.port}|{db.user}|wrong-pw|{db.database}\n")
    before, data = my.snapshot(), rows(db)
    r = my.run("vadduser", f"bob@{D}", "Bob-pass1")
    assert r.rc == 77 and len(r.err_lines) == 1
    assert r.err.startswith(f"Error: MySQL server 127.0.0.1:{db.port}: Access denied for user '{db.user}'")
    assert my.snapshot() == before and rows(db) == data


def test_i13_03_access_denied_on_one_table_rolls_back(my, mariadb):
    """The login may write vpopmail and dir_control but only read lastauth: vadduser's lastauth row
    is refused, so the user row, the counter and the new tree are not kept either."""
    my.ok("vadddomain", D, "Pm-pass1")
    db = my.db
    user, pw = f"r{db.user}"[:32], "Restricted-1"
    conn = mariadb.admin()
    with conn.cursor() as cur:
        cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, pw))
        for t in ("vpopmail", "dir_control", "aliasdomains"):
            cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db.database}`.`{t}` TO %s@'127.0.0.1'", (user,))
        cur.execute(f"GRANT SELECT ON `{db.database}`.`lastauth` TO %s@'127.0.0.1'", (user,))
    conn.close()
    write_site(my.vp, "mysql", db, db_text=f"127.0.0.1|{db.port}|{user}|{pw}|{db.database}\n")
    assert my.ok("vuserinfo", "-n", f"postmaster@{D}").out == "postmaster\n"
    before, data = my.snapshot(), rows(db)
    r = my.run("vadduser", f"bob@{D}", "Bob-pass1")
    assert r.rc == 77 and len(r.err_lines) == 1, r
    assert "command denied to user" in r.err and "lastauth" in r.err
    assert my.snapshot() == before and rows(db) == data


def test_i13_03_bulk_import_failing_midway_leaves_nothing(my):
    """A statement failing in the third batch of a 1,200-user import (a server-side trigger): the
    whole import rolls back, the trees already built are removed, the counter is unchanged."""
    from vcli.errors import DatabaseError
    from vcli.model import NewUser

    my.ok("vadddomain", D, "Pm-pass1")
    my.db.query("CREATE TRIGGER no_u1100 BEFORE INSERT ON vpopmail FOR EACH ROW "
                "IF NEW.pw_name = 'u1100' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused u1100'; END IF")
    before, data = my.snapshot(), rows(my.db)
    store = store_of(my)
    users = [NewUser(f"u{i:04d}", hashed="$1$salt$hash") for i in range(1200)]
    with patched_environ(my.env), pytest.raises(DatabaseError, match="refused u1100"):
        store.add_users(D, users)
    assert my.snapshot() == before and rows(my.db) == data
    my.db.query("DROP TRIGGER no_u1100")
    with patched_environ(my.env):
        assert len(store.add_users(D, users)) == 1200
    assert my.db.query("SELECT COUNT(*) FROM vpopmail") == [(1201,)]
    assert my.db.query("SELECT cur_users, the_dir FROM dir_control WHERE domain = %s", (D,)) == [(1201, "B")]


@pytest.mark.parametrize("n", [600, 1200], ids=["inserts-after-trees", "inserts-beside-trees"])
def test_i13_03_connection_lost_midway_leaves_nothing(my, mariadb, n):
    """The connection killed while the trees are being built (600: before the INSERTs; 1,200: an
    import that sends its INSERTs while the trees are built): one error naming the server, the
    trees removed, nothing in the tables."""
    from vcli.errors import DatabaseUnavailable
    from vcli.model import NewUser

    my.ok("vadddomain", D, "Pm-pass1")
    before, data = my.snapshot(), rows(my.db)
    store = store_of(my)
    killed = []
    with patched_environ(my.env):  # the connection the import will use, asked for its id now: during
        victim = int(store.auth._conn("update").thread_id())  # the import another thread is in it

    def progress(n):
        if n >= 300 and not killed:
            admin = mariadb.admin()
            with admin.cursor() as cur:
                cur.execute(f"KILL CONNECTION {victim}")
            admin.close()
            killed.append(n)

    users = [NewUser(f"u{i:04d}", hashed="$1$salt$hash") for i in range(n)]
    with patched_environ(my.env), pytest.raises(DatabaseUnavailable, match=f"127.0.0.1:{my.db.port}"):
        store.add_users(D, users, progress=progress)
    assert killed and my.snapshot() == before and rows(my.db) == data
    with patched_environ(my.env):  # the next change reconnects
        assert len(store.add_users(D, users[:3])) == 3


# --- values ---------------------------------------------------------------------------------------

def test_i13_03_quotes_backslashes_percent_underscore_round_trip(tmp_path, db):
    with fast_base(tmp_path) as b:
        st = site(b, db, add=("CLEAR_PASS",))
        st.ok("vadddomain", D, "Pm-pass1")
        gecos = "O'Brien \"Q\" 100% a_b \\n \\ `x`"
        pw = "P'w\"d\\%_1"
        st.ok("vadduser", "-c", gecos, f"a_b@{D}", pw)
        out = st.ok("vuserinfo", "-c", "-C", f"a_b@{D}").out
        assert out == f"{pw}\n{gecos}\n"
        assert db.query("SELECT pw_gecos, pw_clear_passwd FROM vpopmail WHERE pw_name = 'a_b'") == [(gecos, pw)]
        # `_` and `%` are no patterns: axb and a% find nothing
        assert st.run("vuserinfo", f"axb@{D}").t == (255, "", f"no such user axb@{D}\n")
        st.ok("vpasswd", f"a_b@{D}", pw + "'2")
        assert st.ok("vuserinfo", "-C", f"a_b@{D}").out == f"{pw}'2\n"
        st.ok("vmoduser", "-c", "here: colon", f"a_b@{D}")
        assert st.ok("vuserinfo", "-c", f"a_b@{D}").out == "here: colon\n"


def test_i13_03_non_utf8_and_nul_refused_before_the_query(tmp_path, db):
    from vcli.errors import BadCharacter
    from vcli.model import VUser

    with fast_base(tmp_path) as b:
        st = site(b, db, add=("CLEAR_PASS",))
        st.ok("vadddomain", D, "Pm-pass1")
        before, data = st.snapshot(), rows(db)
        for argv, what in (([b"-c", b"caf\xe9", f"bob@{D}".encode(), b"Bob-pass1"], "gecos"),
                           ([f"bob@{D}".encode(), b"Bob-pass\xff1"], "password")):
            p = subprocess.run([tool("vadduser").encode(), *argv], env=st.env, capture_output=True)
            assert (p.returncode, p.stdout, p.stderr) == (
                236, b"", f"Error: bad character: the {what} is not UTF-8 text\n".encode()), argv
        assert st.snapshot() == before and rows(db) == data
        store = store_of(st)
        entry = store.real_entry(D)
        with pytest.raises(BadCharacter, match="NUL in the gecos"):
            store.auth.import_records(entry, [VUser("zed", gecos="a\0b", dir=f"{entry.dir}/zed")], None)
        assert rows(db) == data


def test_i13_03_name_wider_than_lastauth_user_refused(my):
    """lastauth.user is 32 wide while names may be 64: the C tools lose the row and exit 0; we refuse."""
    my.ok("vadddomain", D, "Pm-pass1")
    before, data = my.snapshot(), rows(my.db)
    name = "a" * 33
    r = my.run("vadduser", f"{name}@{D}", "Bob-pass1")
    assert r.t == (231, "", "Error: user name too long for lastauth.user (max=32)\n")
    assert my.snapshot() == before and rows(my.db) == data
    my.ok("vadduser", "a" * 32 + f"@{D}", "Bob-pass1")


# --- strict and non-strict servers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lax_server(sql_servers):
    """A second MariaDB whose default sql_mode is empty (not strict), as older sites have it."""
    server = MariaDB(sql_servers.base, name="mariadb-lax", extra=["--sql-mode="])
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"the non-strict MariaDB could not be started: {exc}", pytrace=False)
    yield server
    server.stop()


def test_i13_03_non_strict_server_gets_a_strict_session(tmp_path, lax_server):
    db = lax_server.new_database()
    assert db.query("SELECT @@GLOBAL.sql_mode") == [("",)]
    with fast_base(tmp_path) as b:
        st = site(b, db)
        st.ok("vadddomain", D, "Pm-pass1")
        st.ok("vadduser", "-c", "Bob", f"bob@{D}", "Bob-pass1")
        assert st.ok("vuserinfo", "-c", f"bob@{D}").out == "Bob\n"
        store = store_of(st)
        with patched_environ(st.env):
            store.get_user("bob", D)
        cur = store.auth._conns["update"].cursor()
        cur.execute("SELECT @@SESSION.sql_mode")
        assert cur.fetchone()[0] == "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
        before, data = st.snapshot(), rows(db)
        r = st.run("vadduser", "b" * 33 + f"@{D}", "Bob-pass1")  # a lax server would cut it silently
        assert r.t == (231, "", "Error: user name too long for lastauth.user (max=32)\n")
        assert st.snapshot() == before and rows(db) == data


def test_i13_03_driver_missing_is_one_line(my):
    """A MySQL site where mysqlclient is not installed: one line saying what to install, exit 78."""
    import os
    import sys

    my.ok("vadddomain", D, "Pm-pass1")
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys; sys.argv = ['vuserinfo', 'postmaster@example.test']\nfrom vcli.cli.classic import vuserinfo\nvuserinfo()"
    # a path with vcli and crypt-r (the lookup's one other dependency) but not the driver
    site = os.path.dirname(__import__("crypt_r").__file__)
    only = my.base / "pkgs"
    only.mkdir()
    for name in os.listdir(site):
        if name.startswith(("crypt_r", "_crypt_r")):
            os.symlink(os.path.join(site, name), only / name)
    p = subprocess.run([sys.executable, "-S", "-c", code], env=dict(my.env, PYTHONPATH=os.pathsep.join([src, str(only)])),
                       capture_output=True, text=True)
    assert (p.returncode, p.stdout, p.stderr) == (
        78, "", "Error: MySQL auth module: its driver MySQLdb is not installed (pip install 'vcli[mysql]')\n")


@pytest.mark.parametrize("name", ["", "a" * 65, "x`y", "a b", "a-b", "vp;drop"])
def test_i13_03_table_names_pass_one_quoting_function(name):
    from vcli.errors import DatabaseError
    from vcli.store.auth.mysql import MysqlDialect

    with pytest.raises(DatabaseError, match="cannot be a MySQL table name"):
        MysqlDialect.quote(name)
    assert MysqlDialect.quote("a_b_test") == "`a_b_test`"


def test_i13_03_vadddomain_failing_at_postmaster_is_undone(my):
    """The postmaster INSERT refused by the server: vadddomain's undo leaves no domain dir, no
    assign line, no rows, and the dom_<uid> counter row exactly as before."""
    my.ok("vadddomain", "first.test", "Pm-pass1")
    my.db.query("CREATE TRIGGER no_pm BEFORE INSERT ON vpopmail FOR EACH ROW "
                "IF NEW.pw_domain = 'example.test' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no pm'; END IF")
    before, data = my.snapshot(), rows(my.db)
    r = my.run("vadddomain", D, "Pm-pass1")
    assert r.rc == 69 and len(r.err_lines) == 1 and r.err.endswith("no pm\n"), r
    assert my.snapshot() == before and rows(my.db) == data
