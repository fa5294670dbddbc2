"""Issue 13 item 7, the scale-out case for real: a primary and a replica MariaDB with real GTID
replication (tests/sqlservers.py `mariadb_replicated`), and a site whose two-line vpopmail.mysql
names the replica as the read server (line 1) and the primary as the update server (line 2),
built with MYSQL_REPLICATION (spec/sql.md §2.1, §2.3)."""

from __future__ import annotations

import pytest


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
