"""Issue 13 item 4: the PostgreSQL auth module, against the real PostgreSQL 15 of tests/sqlservers.py.

The schema is vpgsql.h's, fixed where the C module cannot work on a default server (sql.md §7):
these tests create it on the server and read the columns back from information_schema.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlservers import postgres, sql_servers  # noqa: F401 - session fixtures

from vcli.site import DbServer
from vcli.store.auth import pgsql


def columns(db, table: str) -> dict[str, tuple]:
    """column -> (data_type, character_maximum_length, is_nullable, column_default)."""
    rows = db.query("SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
                    "ORDER BY ordinal_position", (table,))
    return {r[0]: tuple(r[1:]) for r in rows}


def key(db, table: str) -> list[str]:
    rows = db.query("SELECT k.column_name FROM information_schema.table_constraints c "
                    "JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name "
                    "AND k.table_name = c.table_name WHERE c.table_name = %s AND c.constraint_type = 'PRIMARY KEY' "
                    "ORDER BY k.ordinal_position", (table,))
    return [r[0] for r in rows]


def indexes(db, table: str) -> dict[str, str]:
    return dict(db.query("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)))


def create(db, *tables: str, many: bool = True, clear: bool = False) -> None:
    """What SqlAuth._ensure sends for each table ("users" = the user table of the build, named
    by the second word: `users:ex_ample_test`)."""
    settings = SimpleNamespace(many_domains=many, clear_passwords=clear)
    d = pgsql.dialect
    conn = db.connect()
    try:
        for t in tables:
            kind, _, name = t.partition(":")
            name = name or ("vpopmail" if kind == "users" else kind)
            conn.execute(d.create_table(d.quote(name), d.ddl(kind, settings)))
    finally:
        conn.close()


VC, INT, BIG, SMALL = "character varying", "integer", "bigint", "smallint"
USER_COLS = {"pw_passwd": (VC, 128, "YES", None), "pw_uid": (INT, None, "YES", None),
             "pw_gid": (INT, None, "YES", None), "pw_gecos": (VC, 64, "YES", None),
             "pw_dir": (VC, 160, "YES", None), "pw_shell": (VC, 20, "YES", None)}


@pytest.mark.parametrize("many,clear", [(True, False), (True, True), (False, False), (False, True)])
def test_i13_04_user_table_ddl_as_vpgsql(postgres, many, clear):  # noqa: F811
    db = postgres.new_database()
    table = "vpopmail" if many else "ex_ample_test"
    create(db, f"users:{table}", many=many, clear=clear)
    create(db, f"users:{table}", many=many, clear=clear)  # IF NOT EXISTS: a second vadddomain works
    want = {"pw_name": (VC, 64, "NO", None)}
    if many:
        want["pw_domain"] = (VC, 96, "NO", None)
    want.update(USER_COLS)
    if clear:
        want["pw_clear_passwd"] = (VC, 128, "YES", None)
    assert columns(db, table) == want
    assert key(db, table) == (["pw_name"] if not many else ["pw_domain", "pw_name"] if clear
                              else ["pw_name", "pw_domain"])
    idx = indexes(db, table)
    if many and not clear:  # the listing index the (pw_name, pw_domain) key cannot serve
        assert "(pw_domain, pw_name)" in idx["vpopmail_pw_domain_idx"]
    else:
        assert len(idx) == 1


def test_i13_04_fixed_tables_ddl(postgres):  # noqa: F811
    db = postgres.new_database()
    create(db, *pgsql.TABLES)
    create(db, *pgsql.TABLES)
    i4 = (INT, None, "YES", None)
    assert columns(db, "dir_control") == {
        "domain": (VC, 96, "NO", None), "cur_users": i4, "level_cur": i4, "level_max": i4,
        **{f"level_{k}{n}": i4 for k in ("start", "end", "mod", "index") for n in range(3)},
        "the_dir": (VC, 160, "YES", None)}
    assert list(columns(db, "dir_control"))[4:7] == ["level_start0", "level_start1", "level_start2"]
    assert key(db, "dir_control") == ["domain"]
    assert columns(db, "lastauth") == {"userid": (VC, 32, "NO", None), "domain": (VC, 96, "NO", None),
                                       "remote_ip": (VC, 39, "NO", None), "timestamp": (BIG, None, "NO", "0")}
    assert key(db, "lastauth") == ["userid", "domain"]
    assert columns(db, "valias") == {"alias": (VC, 32, "NO", None), "domain": (VC, 96, "NO", None),
                                     "valias_line": (VC, 160, "NO", None)}
    assert "(alias, domain)" in indexes(db, "valias")["valias_idx"]
    assert columns(db, "ip_alias_map") == {"ip_addr": (VC, 39, "NO", None), "domain": (VC, 96, "YES", None)}
    assert key(db, "ip_alias_map") == ["ip_addr"]
    assert columns(db, "aliasdomains") == {"alias": (VC, 100, "NO", None), "domain": (VC, 100, "NO", None)}
    assert key(db, "aliasdomains") == ["alias"]
    lim = columns(db, "limits")
    assert list(lim) == ["domain", *pgsql._LIMIT_INTS, *pgsql._LIMIT_BIGS, *pgsql._LIMIT_FLAGS]
    assert lim["domain"] == (VC, 96, "NO", None)
    assert {lim[c] for c in pgsql._LIMIT_INTS} == {(INT, None, "NO", "'-1'::integer")}
    assert {lim[c] for c in pgsql._LIMIT_BIGS} == {(BIG, None, "NO", "0")}
    assert {lim[c] for c in pgsql._LIMIT_FLAGS} == {(SMALL, None, "NO", "0")}
    assert key(db, "limits") == ["domain"]


def test_i13_04_what_the_c_schema_cannot_do_works(postgres):  # noqa: F811
    """A digit-leading per-domain table, an IPv6 lastauth/ip map row, a combined perm_maillist,
    and the upsert/insert-ignore forms."""
    db = postgres.new_database()
    table = "123_com"
    create(db, f"users:{table}", "lastauth", "ip_alias_map", "limits", "aliasdomains", many=False)
    conn = db.connect()
    try:
        ip6 = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
        up = pgsql.upsert("lastauth", ("userid", "domain", "remote_ip", "timestamp"), ("userid", "domain"))
        conn.execute(up, ("bob", "123.com", "0.0.0.0", 1))
        conn.execute(up, ("bob", "123.com", ip6, 2))
        up2 = pgsql.upsert("lastauth", ("userid", "domain", "remote_ip", "timestamp"), ("userid", "domain"), 2)
        conn.execute(up2, ("ann", "123.com", "0.0.0.0", 3, "cy", "123.com", "::1", 4))
        conn.execute(pgsql.upsert("ip_alias_map", ("ip_addr", "domain"), ("ip_addr",)), (ip6, "123.com"))
        conn.execute(pgsql.upsert("limits", ("domain", "perm_maillist"), ("domain",)), ("123.com", 511))
        ins = pgsql.insert_ignore("aliasdomains", ("domain", "alias"))
        conn.execute(ins, ("123.com", "alias.test"))
        conn.execute(ins, ("other.test", "alias.test"))  # keeps the first, as INSERT IGNORE
        conn.execute(f"INSERT INTO {pgsql.quote_ident(table)} (pw_name) VALUES (%s)", ("bob",))
    finally:
        conn.close()
    assert db.query("SELECT userid, domain, remote_ip, timestamp FROM lastauth ORDER BY userid") == [
        ("ann", "123.com", "0.0.0.0", 3), ("bob", "123.com", ip6, 2), ("cy", "123.com", "::1", 4)]
    assert db.query("SELECT ip_addr, domain FROM ip_alias_map") == [(ip6, "123.com")]
    assert db.query("SELECT perm_maillist, maxpopaccounts FROM limits") == [(511, -1)]
    assert db.query("SELECT alias, domain FROM aliasdomains") == [("alias.test", "123.com")]
    assert db.query('SELECT pw_name FROM "123_com"') == [("bob",)]


def test_i13_04_identifiers_quoted_and_bounded():
    assert pgsql.quote_ident('a"b') == '"a""b"'
    assert pgsql.quote_ident("x" * 63) == '"' + "x" * 63 + '"'
    from vcli.errors import InvalidDomain

    for bad in ("", "x" * 64, "a\0b", "é" * 32):
        with pytest.raises(InvalidDomain):
            pgsql.quote_ident(bad)


def test_i13_04_bound_values_exact_under_standard_conforming_strings(postgres):  # noqa: F811
    """vpgsql.c's backslash escaping doubles `\\` and breaks on `'` under the default
    standard_conforming_strings=on; bound parameters store every byte as given."""
    db = postgres.new_database()
    create(db, "users", clear=True)
    assert db.query("SHOW standard_conforming_strings") == [("on",)]
    nasty = ["o'brien", "a\\b", "100%", "a_b", "\\'; DROP TABLE vpopmail; --", "é😀", '"q"']
    server = DbServer(db.host, db.port, None, db.user, db.password, db.database)
    conn = pgsql.connect(server)
    try:
        for i, v in enumerate(nasty):
            conn.execute("INSERT INTO vpopmail (pw_name, pw_domain, pw_gecos, pw_clear_passwd) "
                         "VALUES (%s, %s, %s, %s)", (f"u{i}", "d.test", v, v))
        conn.commit()
        cur = conn.execute("SELECT pw_gecos FROM vpopmail WHERE pw_gecos LIKE %s", ("a\\_b",))
        assert cur.fetchall() == [("a_b",)]
    finally:
        conn.close()
    got = db.query("SELECT pw_gecos, pw_clear_passwd, octet_length(pw_gecos) FROM vpopmail ORDER BY pw_name")
    assert [(g, c) for g, c, _ in got] == [(v, v) for v in nasty]
    assert got[1][2] == 3  # a\b: three bytes, not vpgsql.c's four


def test_i13_04_connection_failure_is_classified(postgres):  # noqa: F811
    import psycopg
    from sqlservers import free_port

    down = DbServer("127.0.0.1", free_port(), None, "nobody", "x", "nodb")
    with pytest.raises(psycopg.OperationalError) as exc:
        pgsql.connect(down, timeout=2)
    assert pgsql.where(down) == f"127.0.0.1:{down.port}"
    assert pgsql.dialect.classify(exc.value) == ("down", "Connection refused")
    assert pgsql.where(down) == f"127.0.0.1:{down.port}"
    db = postgres.new_database()
    wrong = DbServer(db.host, db.port, None, db.user, "wrong-password", db.database)
    with pytest.raises(psycopg.OperationalError) as exc:
        pgsql.connect(wrong)
    kind, text = pgsql.dialect.classify(exc.value)
    assert (kind, text) == ("denied", f'password authentication failed for user "{db.user}"'), exc.value
    assert pgsql.where(DbServer("localhost", 0, None, "u", "", "d")) == "localhost:5432"
