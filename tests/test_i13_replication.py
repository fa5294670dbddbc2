"""Issue 13 item 7, the scale-out case for real: a primary and a replica MariaDB with real GTID
replication (tests/sqlservers.py `mariadb_replicated`), and a site whose two-line vpopmail.mysql
names the replica as the read server (line 1) and the primary as the update server (line 2),
built with MYSQL_REPLICATION (spec/sql.md §2.1, §2.3)."""

from __future__ import annotations

import pytest
from sqlenv import write_site
from storeenv import make_env, run

from vcli.errors import EXIT_UNAVAILABLE
from vcli.store.passwords import hash_password, verify_password


def test_i13_07_replica_follows_the_primary_and_refuses_writes(mariadb_replicated):
    """The pair itself: what the primary commits reaches the replica (bounded wait), and the
    replica is read-only for the site's user, as a replica is on a site."""
    db = mariadb_replicated.new_database()
    db.query("CREATE TABLE t (v VARCHAR(8))")
    db.query("INSERT INTO t VALUES (%s)", ("one",))
    mariadb_replicated.sync()
    assert db.replica.query("SELECT v FROM t") == [("one",)]
    import MySQLdb

    with pytest.raises(MySQLdb.OperationalError, match="read-only"):
        db.replica.query("INSERT INTO t VALUES ('two')")
    mariadb_replicated.pause()
    db.query("INSERT INTO t VALUES (%s)", ("three",))
    assert db.replica.query("SELECT v FROM t ORDER BY v") == [("one",)]
    mariadb_replicated.resume()
    assert db.replica.query("SELECT v FROM t ORDER BY v") == [("one",), ("three",)]


@pytest.fixture()
def rsite(tmp_path, mariadb_replicated):
    """A replicated MySQL site holding example.test (postmaster, bob), in step on both servers."""
    db = mariadb_replicated.new_database()
    env = make_env(tmp_path)
    write_site(tmp_path / "vpopmail", "mysql", add=("MYSQL_REPLICATION",), db_text=db.db_lines())
    ok(env, "vadddomain", "example.test", "Pm-pass1")
    ok(env, "vadduser", "bob@example.test", "Bob-pass1")
    mariadb_replicated.sync()
    yield env, db
    if not mariadb_replicated.replica.proc:  # a test stopped it: the next one needs it back
        mariadb_replicated.replica.start()
    mariadb_replicated.resume()


def ok(env, *argv) -> str:
    r = run(env, *argv)
    assert (r.returncode, r.stderr) == (0, ""), (argv, r.stdout, r.stderr)
    return r.stdout


def names(db, where: str = "") -> list[str]:
    return [n for (n,) in db.query(f"SELECT pw_name FROM vpopmail WHERE pw_domain = 'example.test' {where} "
                                   "ORDER BY pw_name")]


def listing(env) -> list[str]:
    return [ln for ln in ok(env, "vuserinfo", "-n", "-D", "example.test").splitlines() if not ln.startswith("---")]


def test_i13_07_listings_come_from_the_replica(rsite, mariadb_replicated):
    """With replication paused, a row only the replica has is listed, and a user just added (on
    the primary) is not, until the replica catches up."""
    env, db = rsite
    mariadb_replicated.pause()
    conn = mariadb_replicated.replica.admin(database=db.database)  # root: past read_only
    conn.cursor().execute(
        "INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell) "
        "VALUES ('ghost', 'example.test', %s, 0, 0, 'Ghost', '/nonexistent', 'NOQUOTA')",
        (hash_password("Ghost-pw1"),))
    assert listing(env) == ["bob", "ghost", "postmaster"]
    ok(env, "vadduser", "carol@example.test", "Carol-pw1")
    assert names(db) == ["bob", "carol", "postmaster"]  # on the primary at once
    assert names(db.replica) == ["bob", "ghost", "postmaster"]
    assert listing(env) == ["bob", "ghost", "postmaster"]
    conn.cursor().execute("DELETE FROM vpopmail WHERE pw_name = 'ghost'")
    conn.close()
    mariadb_replicated.resume()
    assert listing(env) == ["bob", "carol", "postmaster"]


TABLES = {"vpopmail": "pw_domain, pw_name", "dir_control": "domain", "aliasdomains": "alias",
          "lastauth": "domain, user"}


def dump(db) -> dict:
    return {t: db.query(f"SELECT * FROM {t} ORDER BY {key}") for t, key in TABLES.items()}


def test_i13_07_every_change_goes_to_the_primary(rsite, mariadb_replicated):
    """With replication paused each change is on the primary at once and not on the replica (a
    read-only server: a write sent there would have failed the command); once resumed, the
    replica holds exactly what the primary holds."""
    env, db = rsite
    mariadb_replicated.pause()
    before = dump(db.replica)
    ok(env, "vadduser", "carol@example.test", "Carol-pw1")
    assert names(db) == ["bob", "carol", "postmaster"]
    ok(env, "vmoduser", "-c", "Bob Changed", "bob@example.test")
    assert db.query("SELECT pw_gecos FROM vpopmail WHERE pw_name = 'bob'") == [("Bob Changed",)]
    ok(env, "vpasswd", "bob@example.test", "Bob-newpw1")
    (hashed,) = db.query("SELECT pw_passwd FROM vpopmail WHERE pw_name = 'bob'")[0]
    assert verify_password("Bob-newpw1", hashed)
    ok(env, "vsetuserquota", "carol@example.test", "5M")
    assert db.query("SELECT pw_shell FROM vpopmail WHERE pw_name = 'carol'") == [("5242880S",)]
    ok(env, "vaddaliasdomain", "example.test", "alias.test")
    ok(env, "vdeluser", "bob@example.test")
    assert names(db) == ["carol", "postmaster"]
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = 'example.test'") == [(2,)]
    assert dump(db.replica) == before  # nothing reached the replica but through replication
    mariadb_replicated.resume()
    assert dump(db.replica) == dump(db)
    assert listing(env) == ["carol", "postmaster"]


def test_i13_07_reads_fail_clearly_with_the_replica_down(rsite, mariadb_replicated):
    """The read server stopped: listings and lookups fail with one line naming it (host:port)
    and exit 69 (EXIT_UNAVAILABLE, vcli/errors.py DatabaseUnavailable), no traceback, no fallback
    to the primary; a change that reads only the update server still goes through.  Back up,
    the reads work again."""
    env, db = rsite
    replica = mariadb_replicated.replica
    replica.stop()
    want = f"Error: MySQL server 127.0.0.1:{replica.port} unreachable: "
    for argv in (["vuserinfo", "-n", "-D", "example.test"], ["vuserinfo", "bob@example.test"],
                 ["vdominfo", "example.test"], ["vcli", "vuserinfo", "-D", "example.test", "-o", "json"]):
        r = run(env, *argv)
        assert (r.returncode, r.stdout) == (EXIT_UNAVAILABLE, ""), (argv, r.stderr)
        assert r.stderr.startswith(want) and r.stderr.count("\n") == 1, (argv, r.stderr)
    ok(env, "vmoduser", "-c", "Changed Meanwhile", "bob@example.test")
    assert db.query("SELECT pw_gecos FROM vpopmail WHERE pw_name = 'bob'") == [("Changed Meanwhile",)]
    replica.start()
    mariadb_replicated.resume()
    assert ok(env, "vuserinfo", "-c", "bob@example.test") == "Changed Meanwhile\n"
