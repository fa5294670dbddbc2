"""Issue 13 item 7: the SQL tests run against real servers that the test session starts itself."""

from __future__ import annotations


def test_i13_07_mariadb_is_a_real_server_with_a_site_charset(mariadb):
    db = mariadb.new_database()
    version, mode, charset = db.query("SELECT VERSION(), @@sql_mode, @@character_set_server")[0]
    assert "MariaDB" in version
    assert "STRICT_TRANS_TABLES" in mode  # Debian's default, as a site has it (spec/sql.md §10 item 3)
    assert charset == "utf8mb4"
    db.query("CREATE TABLE t (v VARCHAR(8))")
    db.query("INSERT INTO t VALUES (%s)", ("x'y",))
    assert db.query("SELECT v FROM t") == [("x'y",)]
    other = mariadb.new_database()
    assert other.database != db.database and other.query("SHOW TABLES") == []


def test_i13_07_postgres_is_a_real_server(postgres):
    db = postgres.new_database()
    (version,) = db.query("SHOW server_version")[0]
    assert int(version.split(".")[0]) >= 13
    assert db.query("SHOW standard_conforming_strings") == [("on",)]
    db.query("CREATE TABLE t (v VARCHAR(8))")
    db.query("INSERT INTO t VALUES (%s)", ("x\\y",))
    assert db.query("SELECT v FROM t") == [("x\\y",)]
