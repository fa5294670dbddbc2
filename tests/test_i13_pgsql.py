"""Issue 13 item 4: the PostgreSQL auth module, against the real PostgreSQL 15 of tests/sqlservers.py.

The schema is vpgsql.h's, fixed where the C module cannot work on a default server (sql.md §7):
the first tests create it on the server and read the columns back from information_schema.
The rest run the installed commands on a PostgreSQL-built site (tests/sqlenv.py) and, where the
behaviour is the module's business only, on the same site built for cdb: the same stdout,
stderr and exit codes, and the rows vpgsql.c writes.
"""

from __future__ import annotations

import os
import re
import time
from types import SimpleNamespace

import pytest
from sqlenv import make_sql_env, write_site
from sqlservers import free_port, postgres, sql_servers  # noqa: F401 - session fixtures
from storeenv import run

from vcli.config import load_settings
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
    from vcli.errors import DatabaseError

    for bad in ("", "x" * 64, "a\0b", "é" * 32):
        with pytest.raises(DatabaseError):
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


# --- through the installed commands ------------------------------------------------------------

D = "example.test"


@pytest.fixture(params=["cdb", "pgsql"])
def site(request, tmp_path, postgres):  # noqa: F811
    """(module, env, db): the same fresh site on cdb and on PostgreSQL (db None for cdb)."""
    db = postgres.new_database() if request.param == "pgsql" else None
    return request.param, make_sql_env(tmp_path, db), db


def norm(text: str) -> str:
    return re.sub(r"\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+", "{HASH}", text)


def check(env, argv, code=0, out="", err=""):
    r = run(env, *argv)
    assert (r.returncode, norm(r.stdout), r.stderr) == (code, out, err), argv


def created(module, env, db, user) -> str:
    """When the account was made: the lastauth file's mtime (cdb), the 0.0.0.0 row (SQL)."""
    if db is None:
        ts = os.stat(f"{env['VPOPMAIL_DIR']}/domains/{D}/{user}/lastauth").st_mtime
    else:
        ((ts,),) = db.query("SELECT timestamp FROM lastauth WHERE userid = %s AND domain = %s", (user, D))
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(ts))


def ids() -> tuple[int, int]:
    s = load_settings({"vpopmail_dir": "/"})
    return s.vpopmail_uid, s.vpopmail_gid


def test_i13_04_commands_same_as_cdb(site):
    module, env, db = site
    vp = env["VPOPMAIL_DIR"]
    uid = "1" if module == "cdb" else "0"  # vpopmail's SQL INSERT writes pw_uid 0 (sql.md §8 item 1)
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", "-c", "Bob Smith", f"bob@{D}", "Bob-pass1"])
    check(env, ["vadduser", f"carol@{D}", "Carol-pw1"])
    check(env, ["vmoduser", "-p", "-s", "-w", "-d", "-q", "7000000", f"bob@{D}"])
    check(env, ["vuserinfo", f"bob@{D}"], out=(
        f"name:   bob\npasswd: {{HASH}}\nclear passwd: \ncomment/gecos: Bob Smith\nuid:    {uid}\ngid:    2055\n"
        "flags:  2055\ngecos: Bob Smith\nlimits:\n        password can not be changed by user\n"
        "        pop access closed\n        webmail access closed\n        smtp access is closed\n"
        f"dir:       {vp}/domains/{D}/bob\nquota:     7000000S\nusage:     0%\n"
        f"account created: {created(module, env, db, 'bob')}\nlast auth: Never logged in\n"))
    check(env, ["vuserinfo", "-n", "-q", "-D", D], out=(
        "------------------------------------------\nbob\n7000000S\n"
        "------------------------------------------\ncarol\nNOQUOTA\n"
        "------------------------------------------\npostmaster\nNOQUOTA\n"))
    check(env, ["vmoduser", "-x", "-a", f"carol@{D}"])
    check(env, ["vuserinfo", "-g", f"carol@{D}"], out="4096\n")
    check(env, ["vpasswd", f"carol@{D}", "New-pass1"])
    check(env, ["vsetuserquota", D, "10M"])
    check(env, ["vuserinfo", "-q", f"postmaster@{D}"], out="10485760S\n")
    check(env, ["vsetuserquota", f"carol@{D}", "5M"])
    check(env, ["vuserinfo", "-q", f"carol@{D}"], out="5242880S\n")
    uid_n, gid_n = ids()
    check(env, ["vdominfo", D], out=f"domain: {D}\nuid:    {uid_n}\ngid:    {gid_n}\ndir:    {vp}/domains/{D}\n"
                                    "users:  3\n")
    if db is not None:  # the rows as vpopmail's pgsql module writes them
        rows = db.query("SELECT pw_name, pw_domain, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell FROM vpopmail "
                        "ORDER BY pw_name")
        assert rows == [("bob", D, 0, 2055, "Bob Smith", f"{vp}/domains/{D}/bob", "10485760S"),
                        ("carol", D, 0, 4096, "carol", f"{vp}/domains/{D}/carol", "5242880S"),
                        ("postmaster", D, 0, 0, "Postmaster", f"{vp}/domains/{D}/postmaster", "10485760S")]
        assert all(p.startswith("$6$") and len(p) == 98 for (p,) in db.query("SELECT pw_passwd FROM vpopmail"))
        assert db.query("SELECT cur_users, level_cur, level_max, level_start0, level_end0, level_mod0, level_mod1, "
                        "level_mod2, level_index0, the_dir FROM dir_control WHERE domain = %s", (D,)) == [
            (3, 0, 3, 0, 61, 0, 2, 4, 0, "")]
        assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (f"dom_{uid_n}",)) == [(1,)]
        assert db.query("SELECT userid, domain, remote_ip FROM lastauth ORDER BY userid") == [
            ("bob", D, "0.0.0.0"), ("carol", D, "0.0.0.0"), ("postmaster", D, "0.0.0.0")]
        assert not os.path.exists(f"{vp}/domains/{D}/bob/lastauth")  # SQL: the row, not the file
        assert not os.path.exists(f"{vp}/domains/{D}/vpasswd")
    check(env, ["vdeluser", f"carol@{D}"])
    assert not os.path.exists(f"{vp}/domains/{D}/carol")
    check(env, ["vuserinfo", f"carol@{D}"], code=255, err=f"no such user carol@{D}\n")
    check(env, ["vdominfo", "-n", D], out=f"{D}\n")
    if db is not None:
        assert db.query("SELECT count(*) FROM vpopmail WHERE pw_name = 'carol'") == [(0,)]
        assert db.query("SELECT count(*) FROM lastauth WHERE userid = 'carol'") == [(0,)]
        assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(2,)]
    check(env, ["vdeldomain", D])
    check(env, ["vdominfo", "-n"], out="What now - Success\n")  # vpopmail's text for no domains
    assert not os.path.exists(f"{vp}/domains/{D}")
    if db is not None:
        for table in ("vpopmail", "lastauth"):
            assert db.query(f"SELECT count(*) FROM {table}") == [(0,)], table
        assert db.query("SELECT domain, cur_users FROM dir_control") == [(f"dom_{uid_n}", 0)]


def test_i13_04_errors_same_as_cdb(site):
    _module, env, _db = site
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", f"bob@{D}", "Bob-pass1"])
    check(env, ["vadduser", f"bob@{D}", "Bob-pass1"], code=255, err="Error: User already exists\n")
    check(env, ["vadduser", "zed@nodomain.test", "Zed-pass1"], code=255, err="Error: Domain does not exist\n")
    check(env, ["vuserinfo", f"nobody@{D}"], code=255, err=f"no such user nobody@{D}\n")
    check(env, ["vmoduser", "-a", f"nobody@{D}"], code=255, err=f"no such user nobody@{D}\n")
    check(env, ["vdeluser", f"nobody@{D}"], code=246, err="Error: User does not exist\n")
    check(env, ["vpasswd", f"nobody@{D}", "Xyz-pass1"], code=255, err="Error: Illegal username\n")
    check(env, ["vadddomain", D, "Pm-pass1"], code=243, err="Error: Domain already exists\n")
    check(env, ["vdeldomain", "nodomain.test"], code=245, err="Error: Domain does not exist\n")
    check(env, ["vadduser", "-c", "a:b", f"colon@{D}", "Pw-pass12"], code=236, err="Error: bad character\n")
    check(env, ["vadduser", "-c", "x" * 65, f"long@{D}", "Pw-pass12"], code=228,
          err="Error: gecos too long (max=64)\n")


NASTY = ["O'Brien", "back\\slash", "100% sure", "a_b", "\\'; DROP TABLE vpopmail; --", 'say "hi"', "é😀"]


def test_i13_04_quotes_backslashes_percent_underscore_round_trip(tmp_path, postgres):  # noqa: F811
    """Under standard_conforming_strings=on (the server default) every byte comes back as given:
    vpgsql.c's backslash escaping would double the backslash and break on the quote."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db, add=("CLEAR_PASS",))
    check(env, ["vadddomain", D, "Pm-pass1"])
    for i, text in enumerate(NASTY):
        check(env, ["vadduser", "-c", text, f"u{i}@{D}", f"Pw{i}-{text}"])
        check(env, ["vuserinfo", "-c", f"u{i}@{D}"], out=text + "\n")
        check(env, ["vuserinfo", "-C", f"u{i}@{D}"], out=f"Pw{i}-{text}\n")
    check(env, ["vmoduser", "-c", "it's 50%_off\\", f"u0@{D}"])
    check(env, ["vuserinfo", "-c", f"u0@{D}"], out="it's 50%_off\\\n")
    check(env, ["vpasswd", f"u1@{D}", "new'pw\\%_1"])
    check(env, ["vuserinfo", "-C", f"u1@{D}"], out="new'pw\\%_1\n")
    rows = dict(db.query("SELECT pw_name, pw_gecos FROM vpopmail WHERE pw_domain = %s", (D,)))
    assert [rows[f"u{i}"] for i in range(1, len(NASTY))] == NASTY[1:]
    assert db.query("SELECT octet_length(pw_gecos) FROM vpopmail WHERE pw_name = 'u1'") == [(10,)]  # back\\slash: one backslash
    # LIKE metacharacters in a name are not wildcards in the lookups: a_b is not axb
    check(env, ["vadduser", f"a_b@{D}", "Pw-pass12"])
    check(env, ["vuserinfo", "-n", f"axb@{D}"], code=255, err=f"no such user axb@{D}\n")
    check(env, ["vuserinfo", "-n", f"a_b@{D}"], out="a_b\n")


def test_i13_04_non_utf8_refused_before_the_query(tmp_path, postgres):  # noqa: F811
    import subprocess

    from storeenv import tool

    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    before = db.query("SELECT * FROM vpopmail ORDER BY pw_name")
    r = subprocess.run([tool("vadduser"), b"-c", b"caf\xe9", f"bob@{D}".encode(), b"Bob-pass1"], env=env,
                       capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (236, b"", b"Error: bad character: the gecos is not UTF-8 text\n")
    assert db.query("SELECT * FROM vpopmail ORDER BY pw_name") == before
    assert not os.path.exists(f"{env['VPOPMAIL_DIR']}/domains/{D}/bob")
    # NUL cannot travel in argv; it can in a bulk file
    feed = tmp_path / "users.csv"
    feed.write_bytes(b"address,password,comment\n" + f"ann@{D},Ann-pass1,ok\n".encode()
                     + f"nul@{D},Nul-pass1,a\0b\n".encode())
    r = run(env, "vcli", "vadduser", "--from-file", str(feed))
    assert (r.returncode, r.stderr) == (236, f"Error: {feed}:3: nul@{D}: bad character\n")
    assert db.query("SELECT pw_name FROM vpopmail ORDER BY pw_name") == [("postmaster",)]
    assert sorted(os.listdir(f"{env['VPOPMAIL_DIR']}/domains/{D}")) == [".qmail-default", "postmaster"]


def test_i13_04_server_down_one_clear_line(tmp_path, postgres):  # noqa: F811
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    vp = tmp_path / "vpopmail"
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", f"bob@{D}", "Bob-pass1"])
    port = free_port()
    write_site(vp, "pgsql", db_text=f"127.0.0.1|{port}|{db.user}|{db.password}|{db.database}\n")
    snap = sorted(os.walk(vp))
    for argv in (["vuserinfo", f"bob@{D}"], ["vadduser", f"carol@{D}", "Carol-pw1"],
                 ["vmoduser", "-c", "x", f"bob@{D}"], ["vpasswd", f"bob@{D}", "New-pass1"],
                 ["vsetuserquota", f"bob@{D}", "5M"], ["vdeluser", f"bob@{D}"], ["vdominfo", D],
                 ["vuserinfo", "-D", D]):
        r = run(env, *argv)
        assert r.returncode == 69, (argv, r.returncode, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and f"127.0.0.1:{port}" in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr and db.password not in r.stderr
    assert sorted(os.walk(vp)) == snap  # nothing made or removed on disk
    write_site(vp, "pgsql", db)
    check(env, ["vuserinfo", "-n", f"bob@{D}"], out="bob\n")


def test_i13_04_wrong_password_is_denied(tmp_path, postgres):  # noqa: F811
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    write_site(tmp_path / "vpopmail", "pgsql", db_text=f"{db.host}|{db.port}|{db.user}|wrong|{db.database}\n")
    r = run(env, "vuserinfo", f"postmaster@{D}")
    assert r.returncode == 77 and len(r.stderr.splitlines()) == 1 and "wrong" not in r.stderr, r.stderr


def test_i13_04_failed_batch_add_leaves_nothing(tmp_path, postgres):  # noqa: F811
    """A server-side failure in the middle of a bulk import (a trigger refusing one row): no row of
    the batch, the dir_control count unchanged, no Maildir."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    conn = db.connect()
    conn.execute("CREATE FUNCTION refuse_u017() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 "IF NEW.pw_name = 'u017' THEN RAISE EXCEPTION 'refused by the site'; END IF; RETURN NEW; END $$")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON vpopmail FOR EACH ROW EXECUTE FUNCTION refuse_u017()")
    conn.close()
    before = (db.query("SELECT * FROM vpopmail"), db.query("SELECT * FROM dir_control ORDER BY domain"),
              db.query("SELECT * FROM lastauth"))
    feed = tmp_path / "users.csv"
    feed.write_text("address,password,quota,comment\n" +
                    "".join(f"u{i:03d}@{D},Pw-{i:04d}x,1M,User {i}\n" for i in range(30)))
    r = run(env, "vcli", "vadduser", "--from-file", str(feed))
    assert r.returncode == 69 and len(r.stderr.splitlines()) == 1 and "refused by the site" in r.stderr, r.stderr
    assert (db.query("SELECT * FROM vpopmail"), db.query("SELECT * FROM dir_control ORDER BY domain"),
            db.query("SELECT * FROM lastauth")) == before
    assert sorted(os.listdir(f"{env['VPOPMAIL_DIR']}/domains/{D}")) == [".qmail-default", "postmaster"]


def test_i13_04_lastauth_ipv6_and_a_c_made_narrow_table(tmp_path, postgres):  # noqa: F811
    """vchkpw's record of a login: an IPv6 address fits our 39-wide remote_ip; in a lastauth table
    a real vpgsql.c made (remote_ip varchar(18)) it is refused before the query, the row intact."""
    from vcli.errors import TooLong
    from vcli.store.store import Store

    ip6 = "2001:db8:85a3::8a2e:370:7334"
    for narrow in (False, True):
        db = postgres.new_database()
        if narrow:  # vpgsql.h's LASTAUTH_TABLE_LAYOUT, as vpgsql.c creates it
            db.query("CREATE TABLE lastauth (userid varchar(32) NOT NULL, domain varchar(96) NOT NULL, "
                     "remote_ip varchar(18) NOT NULL, timestamp bigint default 0 NOT NULL, "
                     "PRIMARY key (userid, domain))")
        (tmp_path / str(narrow)).mkdir()
        env = make_sql_env(tmp_path / str(narrow), db)
        check(env, ["vadddomain", D, "Pm-pass1"])
        st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
        pm = st.get_user("postmaster", D)
        if narrow:
            before = db.query("SELECT * FROM lastauth ORDER BY domain")
            with pytest.raises(TooLong):
                st.set_lastauth(pm, D, ip6)
            assert db.query("SELECT * FROM lastauth ORDER BY domain") == before
            st.set_lastauth(pm, D, "192.0.2.7")
        else:
            st.set_lastauth(pm, D, ip6)
        r = run(env, "vuserinfo", f"postmaster@{D}")
        assert r.returncode == 0 and f"last auth ip: {'192.0.2.7' if narrow else ip6}\n" in r.stdout, r.stdout
        assert "account created" not in r.stdout


def test_i13_04_alias_domain_lookups_reach_the_real_rows(tmp_path, postgres):  # noqa: F811
    """vpgsql.c's getpw does not resolve an alias domain; here every lookup goes to the real one."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", f"bob@{D}", "Bob-pass1"])
    check(env, ["vaddaliasdomain", D, "alias.test"])
    check(env, ["vuserinfo", "-n", "bob@alias.test"], out="bob\n")
    check(env, ["vmoduser", "-c", "via alias", "bob@alias.test"])
    assert db.query("SELECT pw_domain, pw_gecos FROM vpopmail WHERE pw_name = 'bob'") == [(D, "via alias")]
    assert db.query("SELECT count(*) FROM vpopmail WHERE pw_domain = 'alias.test'") == [(0,)]


def test_i13_04_json_bulk_and_the_daemon_on_a_pgsql_site(tmp_path, postgres):  # noqa: F811
    """The vcli subcommands, a bulk import large enough for the parallel tree builder, and a real
    vpopmaild process serving the PostgreSQL site to the remote backend."""
    import json

    from daemon_helpers import Daemon

    from vcli import flags as F
    from vcli.store.store import NewUser, Store, UserChanges

    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    vp = env["VPOPMAIL_DIR"]
    st = Store(load_settings({"vpopmail_dir": vp, "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain("admin.test", "Admin-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
    check(env, ["vadddomain", D, "Pm-pass1"])
    feed = tmp_path / "users.csv"
    feed.write_text("address,password,quota,comment\n" +
                    "".join(f"u{i:03d}@{D},Pw-{i:04d}x,1M,User {i}\n" for i in range(250)))
    r = run(env, "vcli", "vadduser", "--from-file", str(feed))
    assert (r.returncode, r.stderr) == (0, "")
    assert db.query("SELECT count(*) FROM vpopmail WHERE pw_domain = %s", (D,)) == [(251,)]
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(251,)]
    homes = [h for (h,) in db.query("SELECT pw_dir FROM vpopmail WHERE pw_domain = %s", (D,))]
    assert len(set(homes)) == 251 and all(os.path.isdir(f"{h}/Maildir/new") for h in homes)
    assert sum(1 for h in homes if os.path.dirname(h) != f"{vp}/domains/{D}") == 251 - 99  # hashed dirs
    doc = json.loads(run(env, "vcli", "vuserinfo", f"u017@{D}", "-o", "json").stdout)
    assert (doc["uid"], doc["gid"], doc["gecos"], doc["quota"], doc["last_auth"]) == ("0", 0, "User 17", "1048576S", None)
    assert doc["created"]
    listing = json.loads(run(env, "vcli", "vuserinfo", "-D", D, "-o", "json").stdout)
    assert [u["name"] for u in listing] == sorted(u["name"] for u in listing) and len(listing) == 251
    with Daemon(env) as d:
        remote = dict(env, VCLI_REMOTE=f"127.0.0.1:{d.port}", VCLI_LOGIN="sysadmin@admin.test",
                      VCLI_PASSWORD="SysPass1")
        check(remote, ["vadduser", "-c", "Remote O'Hara", f"remote@{D}", "Remote-pw1"])
        check(remote, ["vuserinfo", "-c", f"remote@{D}"], out="Remote O'Hara\n")
        check(remote, ["vsetuserquota", f"remote@{D}", "2M"])
        check(remote, ["vdeluser", f"u017@{D}"])
        check(remote, ["vuserinfo", f"u017@{D}"], code=255, err=f"no such user u017@{D}\n")
    assert db.query("SELECT pw_gecos, pw_shell, pw_uid FROM vpopmail WHERE pw_name = 'remote'") == [
        ("Remote O'Hara", "2097152S", 0)]
    assert db.query("SELECT count(*) FROM vpopmail WHERE pw_name = 'u017'") == [(0,)]
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(251,)]


def test_i13_04_concurrent_adds_serialise_on_the_dir_control_row(tmp_path, postgres):  # noqa: F811
    """Two writers at once: the domain's dir_control row, read FOR UPDATE, orders them, so the
    count is exact and no two users share a home (PostgreSQL's row lock, READ COMMITTED)."""
    from concurrent.futures import ThreadPoolExecutor

    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])

    def adds(prefix: str) -> list[int]:
        return [run(env, "vadduser", f"{prefix}{i:02d}@{D}", "Pw-pass12").returncode for i in range(12)]

    with ThreadPoolExecutor(2) as pool:
        codes = [c for got in pool.map(adds, ["a", "b"]) for c in got]
    assert codes == [0] * 24
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(25,)]
    homes = db.query("SELECT pw_dir FROM vpopmail WHERE pw_domain = %s", (D,))
    assert len({h for (h,) in homes}) == 25


def test_i13_04_server_down_vadddomain_makes_nothing(tmp_path, postgres):  # noqa: F811
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    vp = tmp_path / "vpopmail"
    port = free_port()
    write_site(vp, "pgsql", db_text=f"127.0.0.1|{port}|{db.user}|{db.password}|{db.database}\n")
    r = run(env, "vadddomain", "other.test", "Pm-pass1")
    assert r.returncode == 69 and r.stderr.splitlines() == [
        f"Error: PostgreSQL server 127.0.0.1:{port} unreachable: Connection refused"], r.stderr
    assert not os.path.exists(f"{vp}/domains/other.test")
    assert "other.test" not in (tmp_path / "qmail" / "users" / "assign").read_text()


def test_i13_04_per_domain_tables_digit_leading_and_shared_names(tmp_path, postgres):  # noqa: F811
    """--disable-many-domains: one table per domain.  vpgsql.c cannot create `1a_test` (unquoted
    DDL); two domains that munch to one table are refused before anything is made."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db, drop=("MANY_DOMAINS",))
    vp = env["VPOPMAIL_DIR"]
    check(env, ["vadddomain", "1a.test", "Pm-pass1"])
    check(env, ["vadduser", "-c", "O'Neil", "bob@1a.test", "Bob-pass1"])
    check(env, ["vuserinfo", "-n", "-c", "-d", "bob@1a.test"], out=f"bob\nO'Neil\n{vp}/domains/1a.test/bob\n")
    assert db.query('SELECT pw_name, pw_gecos, pw_uid, pw_shell FROM "1a_test" ORDER BY pw_name') == [
        ("bob", "O'Neil", 0, "NOQUOTA"), ("postmaster", "Postmaster", 0, "NOQUOTA")]
    cols = [r[0] for r in db.query("SELECT column_name FROM information_schema.columns WHERE table_name = '1a_test'")]
    assert "pw_domain" not in cols
    check(env, ["vadddomain", "a-b.test", "Pm-pass1"])
    r = run(env, "vadddomain", "a.b.test", "Pm-pass1")
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1 and "a_b_test" in r.stderr, r.stderr
    assert not os.path.exists(f"{vp}/domains/a.b.test")
    check(env, ["vuserinfo", "-n", "postmaster@a-b.test"], out="postmaster\n")
    check(env, ["vdeldomain", "1a.test"])
    assert db.query("SELECT count(*) FROM information_schema.tables WHERE table_name = '1a_test'") == [(0,)]
    check(env, ["vuserinfo", "-n", "postmaster@a-b.test"], out="postmaster\n")


# vpgsql.h's layouts, as a real vpgsql.c build creates them (many-domains, no CLEAR_PASS)
C_LAYOUTS = {
    "vpopmail": ("pw_name varchar(64) NOT NULL, pw_domain varchar(96) NOT NULL, pw_passwd varchar(128), "
                 "pw_uid int4, pw_gid int4, pw_gecos varchar(64), pw_dir varchar(160), pw_shell varchar(20), "
                 "PRIMARY KEY (pw_name, pw_domain )"),
    "dir_control": pgsql._DIR_CONTROL,
    "lastauth": ("userid varchar(32) NOT NULL, domain varchar(96) NOT NULL, remote_ip varchar(18) NOT NULL, "
                 "timestamp bigint default 0 NOT NULL, PRIMARY key (userid, domain)"),
}


def test_i13_04_tables_of_another_role_with_row_rights_only(tmp_path, postgres):  # noqa: F811
    """A site whose tables a real vpopmail (or its admin) made, and whose mail role may only read and
    write rows: PostgreSQL 15 gives no role CREATE in `public` by default, and CREATE TABLE IF NOT
    EXISTS asks for it even when the table is there.  vcli touches no DDL then, adds no index to
    a table it did not make, and every command works."""
    from psycopg import sql as psql

    db = postgres.new_database()
    for name, layout in C_LAYOUTS.items():
        db.query(f"CREATE TABLE {name} ( {layout} )")
    role, password = f"dml_{db.database}"[:60], "Dml-pass1"
    admin = postgres.admin()
    admin.execute(psql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(psql.Identifier(role), psql.Literal(password)))
    admin.close()
    db.query(f'GRANT SELECT, INSERT, UPDATE, DELETE ON vpopmail, dir_control, lastauth TO "{role}"')
    env = make_sql_env(tmp_path, db)
    write_site(tmp_path / "vpopmail", "pgsql", db_text=f"{db.host}|{db.port}|{role}|{password}|{db.database}\n")
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", "-c", "Bob", f"bob@{D}", "Bob-pass1"])
    check(env, ["vmoduser", "-c", "Bob B", f"bob@{D}"])
    check(env, ["vuserinfo", "-n", "-c", f"bob@{D}"], out="bob\nBob B\n")
    check(env, ["vuserinfo", "-n", "-D", D], out=f"{'-' * 42}\nbob\n{'-' * 42}\npostmaster\n")
    check(env, ["vdeluser", f"bob@{D}"])
    assert db.query("SELECT pw_name FROM vpopmail") == [("postmaster",)]
    assert db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'vpopmail'") == [("vpopmail_pkey",)]
    r = run(env, "vadddomain", "other.test", "Pm-pass1")  # needs no new table: works too
    assert r.returncode == 0, r.stderr
    db.query("DROP TABLE lastauth")  # a missing table it may not create: one clear line
    r = run(env, "vadduser", f"carol@{D}", "Carol-pw1")
    assert r.returncode == 77 and r.stderr.splitlines() == [
        f"Error: PostgreSQL server {db.host}:{db.port}: permission denied for schema public"], r.stderr
    assert not os.path.exists(f"{env['VPOPMAIL_DIR']}/domains/{D}/carol")


def test_i13_04_dry_run_keeps_nothing_on_postgresql(tmp_path, postgres):  # noqa: F811
    """--dry-run: the statements, checked by the server in a transaction that is rolled back (the
    tables a fresh database lacks made TEMPORARY), a clear password masked; nothing stays."""
    from storeenv import snapshot

    db = postgres.new_database()
    env = make_sql_env(tmp_path, db, add=("CLEAR_PASS",))
    before = snapshot(tmp_path)
    r = run(env, "vcli", "vadddomain", "--dry-run", D, "Pm-pass1")
    assert r.returncode == 0, r.stderr
    assert 'CREATE TABLE "vpopmail" ( pw_name varchar(64) NOT NULL' in r.stdout, r.stdout
    assert db.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    assert snapshot(tmp_path) == before
    check(env, ["vadddomain", D, "Pm-pass1"])
    before, data = snapshot(tmp_path), db.query("SELECT * FROM vpopmail")
    r = run(env, "vcli", "vadduser", "--dry-run", "-q", "5M", f"bob@{D}", "Secret-Bob1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    ins = [x for x in lines if x.startswith('would run: INSERT INTO "vpopmail"')]
    assert len(ins) == 1 and "Secret-Bob1" not in r.stdout and "'5242880S'" in ins[0], r.stdout
    assert any(x.startswith('would run: INSERT INTO "lastauth"') and "ON CONFLICT" in x for x in lines)
    assert any("FOR UPDATE" in x for x in lines)
    assert snapshot(tmp_path) == before and db.query("SELECT * FROM vpopmail") == data


def test_i13_04_limits_and_aliasdomains_tables_when_turned_on(tmp_path, postgres):  # noqa: F811
    """configure offers ENABLE_MYSQL_LIMITS and SQL_ALIASDOMAINS for MySQL only; a PostgreSQL site
    that turns them on gets the tables in PostgreSQL types, read as the files are on cdb."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db, add=("ENABLE_MYSQL_LIMITS", "SQL_ALIASDOMAINS"))
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vmoddomlimits", "-P", "10", "-A", "5", "-Q", "100", "-q", "10M", "-g", "ps", D])
    assert db.query("SELECT maxpopaccounts, maxaliases, diskquota, defaultquota, disable_pop, disable_smtp, "
                    "disable_imap FROM limits WHERE domain = %s", (D,)) == [(10, 5, 100, 10485760, 1, 1, 0)]
    assert not os.path.exists(f"{env['VPOPMAIL_DIR']}/domains/{D}/.qmailadmin-limits")
    check(env, ["vadduser", f"carol@{D}", "Carol-pw1"])
    check(env, ["vuserinfo", "-q", f"carol@{D}"], out="10485760S\n")
    check(env, ["vaddaliasdomain", D, "alias1.test"])
    assert db.query("SELECT alias, domain FROM aliasdomains") == [("alias1.test", D)]
    check(env, ["vdeldomain", "-f", D], out="Warning: Alias domains deleted:\n   alias1.test\n")
    assert db.query("SELECT count(*) FROM limits") == [(0,)]
    assert db.query("SELECT count(*) FROM aliasdomains") == [(0,)]
    # the combined perm_maillist (users<<3 | moderators<<6) fits the smallint: vpopmail's 511
    from vcli.store.store import Store

    check(env, ["vadddomain", D, "Pm-pass1"])
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    lim = st.limits(D)
    lim.perm_maillist, lim.perm_maillist_users, lim.perm_maillist_moderators = 7, 7, 7
    st.set_limits(D, lim)
    assert db.query("SELECT perm_maillist FROM limits WHERE domain = %s", (D,)) == [(511,)]
    got = st.limits(D)
    assert (got.perm_maillist, got.perm_maillist_users, got.perm_maillist_moderators) == (7, 7, 7)


def test_i13_04_sql_ascii_database_rows_the_c_tools_wrote(tmp_path, postgres):  # noqa: F811
    """A SQL_ASCII database (initdb under the C locale; many vpgsql.c sites): the server keeps the
    bytes the C tools sent, latin1 included.  A UTF-8 session would fail every read of such a row;
    vcli reads it (as cdb reads vpasswd), and what it writes is UTF-8."""
    import subprocess

    from psycopg import sql as psql
    from sqlservers import Database
    from storeenv import tool

    base = postgres.new_database()
    name = base.database + "_ascii"
    admin = postgres.admin()
    admin.execute(psql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                           "TEMPLATE template0").format(psql.Identifier(name), psql.Identifier(base.user)))
    admin.close()
    db = Database("pgsql", base.host, base.port, base.user, base.password, name, postgres)
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadduser", "-c", "é😀", f"bob@{D}", "Bob-pass1"])
    conn = postgres.connect(name, base.user, base.password)
    conn.execute("SET client_encoding = 'SQL_ASCII'")
    conn.execute("UPDATE vpopmail SET pw_gecos = convert_from('\\x436166e9'::bytea, 'SQL_ASCII') "
                 "WHERE pw_name = 'postmaster'")  # 'Caf' + latin1 e-acute, as a C tool stores it
    assert conn.execute("SELECT octet_length(pw_gecos) FROM vpopmail ORDER BY pw_name").fetchall() == [(6,), (4,)]
    conn.close()
    r = subprocess.run([tool("vuserinfo"), "-c", f"postmaster@{D}"], env=env, capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"Caf\xe9\n", b"")
    check(env, ["vuserinfo", "-c", f"bob@{D}"], out="é😀\n")
    check(env, ["vuserinfo", "-n", "-D", D], out=f"{'-' * 42}\nbob\n{'-' * 42}\npostmaster\n")


def test_i13_04_ip_alias_map_with_full_ipv6_addresses(tmp_path, postgres):  # noqa: F811
    """IP_ALIAS_DOMAINS: vipmap on the ip_alias_map table; a full-length IPv6 address (39
    characters) fits, where vpgsql.h's varchar(18) refuses it."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db, add=("IP_ALIAS_DOMAINS",))
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vadddomain", "other.test", "Pm-pass1"])
    ip6 = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    for ip, dom in (("10.0.0.1", D), (ip6, "other.test"), ("10.0.0.1", "other.test")):
        check(env, ["vipmap", "-a", ip, dom])
    check(env, ["vipmap", "-p"], out=f"10.0.0.1 other.test\n{ip6} other.test\n")
    assert db.query("SELECT ip_addr, domain FROM ip_alias_map ORDER BY ip_addr") == [
        ("10.0.0.1", "other.test"), (ip6, "other.test")]
    check(env, ["vipmap", "-d", ip6, "other.test"])
    check(env, ["vipmap", "-p"], out="10.0.0.1 other.test\n")
    assert not os.path.exists(f"{env['VPOPMAIL_DIR']}/etc/ip_alias_map")


def test_i13_04_vpopmail_pgsql_fields_vpgsql_cannot_pass(tmp_path, postgres):  # noqa: F811
    """vpgsql.c pastes the fields unquoted into its connect string, so a password with a blank or
    a quote breaks it, and its line must end with a newline.  vcli passes each field as a value:
    such a password works, and so do a last line without a newline and, in the port field, the
    server's Unix-socket directory (port 0: libpq's default, here PGPORT)."""
    from psycopg import sql as psql

    db = postgres.new_database()
    password = "it's a \"pass\\word\" = x"
    admin = postgres.admin()
    admin.execute(psql.SQL("ALTER ROLE {} PASSWORD {}").format(psql.Identifier(db.user), psql.Literal(password)))
    admin.close()
    env = make_sql_env(tmp_path, db)
    vp = tmp_path / "vpopmail"
    write_site(vp, "pgsql", db_text=f"{db.host}|{db.port}|{db.user}|{password}|{db.database}")  # no newline
    check(env, ["vadddomain", D, "Pm-pass1"])
    check(env, ["vuserinfo", "-n", f"postmaster@{D}"], out="postmaster\n")
    write_site(vp, "pgsql", db_text=f"localhost|{postgres.dir}|{db.user}|{password}|{db.database}\n")
    check(dict(env, PGPORT=str(db.port)), ["vuserinfo", "-n", f"postmaster@{D}"], out="postmaster\n")
    r = run(env, "vuserinfo", f"postmaster@{D}")  # the socket of the default port is not there
    assert r.returncode == 69 and r.stderr.splitlines() == [
        f"Error: PostgreSQL server {postgres.dir} unreachable: No such file or directory"], r.stderr


@pytest.fixture()
def pg(tmp_path, postgres):  # noqa: F811
    """A CliStore (on tmpfs where there is one, reachable by the vpopmail user vchkpw drops to)
    whose site is PostgreSQL-built (default configure: many-domains, auth logging)."""
    from cli_helpers import CliStore, fast_base

    db = postgres.new_database()
    with fast_base(tmp_path / "pg") as b:
        st = CliStore(b)
        write_site(st.vp, "pgsql", db)
        st.db = db
        yield st


def test_i13_04_vchkpw_writes_the_lastauth_row(pg):
    """A good login through vchkpw upserts the lastauth row (userid, the real domain, the client's
    IPv6 address: too wide for vpgsql.h's 18); a wrong password writes nothing."""
    import subprocess

    from cli_helpers import tool

    pg.ok("vadddomain", D, "Pm-pass1")
    pg.ok("vadduser", f"bob@{D}", "Bob-pass1")
    pg.ok("vaddaliasdomain", D, "alias.test")

    def chk(login: str, pw: str, ip: str) -> int:
        r, w = os.pipe()
        os.write(w, login.encode() + b"\0" + pw.encode() + b"\0")
        os.close(w)
        try:
            p = subprocess.run([tool("vchkpw"), "/bin/true"], env=dict(pg.env, TCPREMOTEIP=ip),
                               capture_output=True, pass_fds=(3, r), preexec_fn=lambda: os.dup2(r, 3), timeout=30)
        finally:
            os.close(r)
        return p.returncode

    ip6 = "2001:db8:85a3:1234:5678:8a2e:370:7334"
    before = pg.db.query("SELECT remote_ip, timestamp FROM lastauth WHERE userid = 'bob'")
    assert chk(f"bob@{D}", "wrong", ip6) == 3
    assert pg.db.query("SELECT remote_ip, timestamp FROM lastauth WHERE userid = 'bob'") == before
    assert chk("bob@alias.test", "Bob-pass1", ip6) == 0
    assert pg.db.query("SELECT domain, remote_ip FROM lastauth WHERE userid = 'bob'") == [(D, ip6)]
    assert pg.ok("vuserinfo", "-l", f"bob@{D}").out.endswith(f"last auth ip: {ip6}\n")


def test_i13_04_name_wider_than_lastauth_userid_refused(pg):
    """lastauth.userid is 32 wide while names may be 64: vpgsql.c's vadduser then fails its
    lastauth INSERT (-23) after the user row is in; we refuse before anything is written."""
    pg.ok("vadddomain", D, "Pm-pass1")
    before = (pg.snapshot(), pg.db.query("SELECT * FROM vpopmail"), pg.db.query("SELECT * FROM dir_control"))
    r = pg.run("vadduser", "a" * 33 + f"@{D}", "Bob-pass1")
    assert r.t == (231, "", "Error: user name too long for lastauth.userid (max=32)\n")
    assert (pg.snapshot(), pg.db.query("SELECT * FROM vpopmail"), pg.db.query("SELECT * FROM dir_control")) == before
    pg.ok("vadduser", "a" * 32 + f"@{D}", "Bob-pass1")


def test_i13_04_daemon_serves_a_pgsql_site_and_survives_dropped_connections(tmp_path, postgres):  # noqa: F811
    """A real vpopmaild with two workers on a PostgreSQL site: each worker opens its own
    connections after the fork; when the server terminates them (pg_terminate_backend: SQLSTATE
    57P01), the next command opens them again once."""
    from cli_helpers import CliStore, fast_base, patched_environ
    from daemon_helpers import Client, Daemon, mask

    from vcli import flags as F
    from vcli.model import NewUser, UserChanges
    from vcli.store.store import Store

    db = postgres.new_database()
    with fast_base(tmp_path) as b:
        st = CliStore(b)
        write_site(st.vp, "pgsql", db)
        with patched_environ(st.env):
            store = Store(load_settings())
            store.add_domain("admin.test", "Admin-pm1")
            store.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
            store.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
            store.add_domain(D, "Pm-pass1")
        with Daemon(st.env, "--workers", "2") as d:
            c = Client(d.port)
            assert c.cmd("slogin sysadmin@admin.test SysPass1") == b"+OK \r\n"
            assert c.cmd(f"add_user bob@{D} Bob-pass1") == b"+OK \r\n"
            info = mask(c.cmd(f"user_info bob@{D}"))
            assert info.startswith(b"+OK+\r\nname bob\r\ncomment bob\r\nquota NOQUOTA\r\n"), info
            u = Client(d.port)
            assert u.cmd(f"login bob@{D} wrong") == b"-ERR 8.207 Invalid Login\r\n"
            u.close()
            admin = postgres.admin()
            gone = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                                 (db.user,)).fetchall()
            admin.close()
            assert gone and all(ok for (ok,) in gone)
            assert c.cmd(f"user_info bob@{D}").startswith(b"+OK+\r\nname bob\r\n")
            admin = postgres.admin()  # again, and this time a change comes first
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (db.user,))
            admin.close()
            assert c.cmd(f"add_user carol@{D} Carol-pw1") == b"+OK \r\n"
            assert c.cmd(f"del_user bob@{D}") == b"+OK \r\n"
            assert c.cmd(f"user_info bob@{D}").startswith(b"-ERR")
            c.close()
            err = d.stop()
        assert "Traceback" not in err
        assert db.query("SELECT count(*) FROM vpopmail WHERE pw_name = 'bob'") == [(0,)]
        assert not (st.ddir(D) / "bob").exists()


@pytest.mark.parametrize("c_made", [False, True])
def test_i13_04_valias_table_on_postgresql(tmp_path, postgres, c_made):  # noqa: F811
    """VALIAS: valias writes rows of the valias table and lists them as cdb lists its files, the
    lines in the order they were added.  vpgsql.h's valias has no id column (and, made by
    vpgsql.c, no index): ours gets the index, and either table works."""
    from cli_helpers import CliStore, fast_base

    db = postgres.new_database()
    if c_made:  # vpgsql.h's VALIAS_TABLE_LAYOUT, its index statement being a syntax error
        db.query("CREATE TABLE valias ( alias varchar(32) NOT NULL, domain varchar(96) NOT NULL, "
                 "valias_line varchar(160) NOT NULL )")
    with fast_base(tmp_path / "va") as b, fast_base(tmp_path / "cdb") as c:
        pg, cdb = CliStore(b), CliStore(c)
        write_site(pg.vp, "pgsql", db, add=("VALIAS",))
        for s in (pg, cdb):
            s.ok("vadddomain", D, "Pm-pass1")
        for argv in (("valias", "-i", f"zed@{D}", f"info@{D}"), ("valias", "-i", "&carol@elsewhere.test", f"info@{D}"),
                     ("valias", "-i", f"amy@{D}", f"info@{D}"), ("valias", "-i", f"zed@{D}", f"info@{D}"),
                     ("valias", "-i", "x@y.test", f"sales@{D}"), ("valias", D), ("valias", "-n", D),
                     ("valias", f"info@{D}"), ("valias", "-d", f"sales@{D}"), ("valias", "-d", f"sales@{D}"),
                     ("valias", D)):
            a, r = pg.run(*argv), cdb.run(*argv)
            assert (a.rc, a.out, a.err) == (r.rc, r.out, r.err), argv
        assert pg.ok("valias", f"info@{D}").out == (f"info@{D} -> zed@{D}\ninfo@{D} -> &carol@elsewhere.test\n"
                                                    f"info@{D} -> amy@{D}\n")
        assert sorted(db.query("SELECT alias, domain, valias_line FROM valias")) == sorted([
            ("info", D, f"zed@{D}"), ("info", D, "&carol@elsewhere.test"), ("info", D, f"amy@{D}")])
        idx = [n for (n,) in db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'valias'")]
        assert idx == ([] if c_made else ["valias_idx"])
        assert not list(pg.ddir(D).glob(".qmail-info*"))
        pg.ok("vdeldomain", D)
        assert db.query("SELECT count(*) FROM valias") == [(0,)]


def test_i13_04_vdeloldusers_and_a_table_name_postgresql_would_cut(tmp_path, postgres):  # noqa: F811
    """vdeloldusers reads the lastauth rows and deletes in one transaction; on a per-domain site a
    domain whose table name is over 63 bytes (PostgreSQL would cut it, and two such domains would
    share a table) is refused in one line before anything is made."""
    db = postgres.new_database()
    env = make_sql_env(tmp_path, db)
    check(env, ["vadddomain", D, "Pm-pass1"])
    for u in ("old1", "old2", "new1"):
        check(env, ["vadduser", f"{u}@{D}", "Pw-pass12"])
    db.query("UPDATE lastauth SET timestamp = %s WHERE userid LIKE 'old%%'", (int(time.time()) - 400 * 86400,))
    r = run(env, "vdeloldusers", "-a", "180", "-d", D, "-D")
    assert r.returncode == 0, r.stderr
    assert db.query("SELECT pw_name FROM vpopmail ORDER BY pw_name") == [("new1",), ("postmaster",)]
    assert db.query("SELECT userid FROM lastauth ORDER BY userid") == [("new1",), ("postmaster",)]
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = %s", (D,)) == [(2,)]
    assert not os.path.exists(f"{env['VPOPMAIL_DIR']}/domains/{D}/old1")

    db2 = postgres.new_database()
    (tmp_path / "pd").mkdir()
    env2 = make_sql_env(tmp_path / "pd", db2, drop=("MANY_DOMAINS",))
    long_domain = "a" * 60 + ".test"  # table a..a_test: 65 bytes
    r = run(env2, "vadddomain", long_domain, "Pm-pass1")
    assert r.returncode == 69 and len(r.stderr.splitlines()) == 1 and "cannot be a PostgreSQL table name" in r.stderr
    assert not os.path.exists(f"{env2['VPOPMAIL_DIR']}/domains/{long_domain}")
    assert long_domain not in (tmp_path / "pd" / "qmail" / "users" / "assign").read_text()
    check(env2, ["vadddomain", "a" * 58 + ".test", "Pm-pass1"])  # 63 bytes: fits


def test_i13_04_values_exact_with_standard_conforming_strings_off(tmp_path, postgres):  # noqa: F811
    """The one setting vpgsql.c's escaping is right for; bound values do not depend on it."""
    db = postgres.new_database()
    db.query(f'ALTER DATABASE "{db.database}" SET standard_conforming_strings = off')
    assert db.query("SHOW standard_conforming_strings") == [("off",)]
    env = make_sql_env(tmp_path, db, add=("CLEAR_PASS",))
    check(env, ["vadddomain", D, "Pm-pass1"])
    for i, text in enumerate(NASTY):
        check(env, ["vadduser", "-c", text, f"u{i}@{D}", f"Pw{i}-{text}"])
        check(env, ["vuserinfo", "-c", "-C", f"u{i}@{D}"], out=f"Pw{i}-{text}\n{text}\n")  # vpopmail's order
    rows = dict(db.query("SELECT pw_name, pw_gecos FROM vpopmail WHERE pw_domain = %s", (D,)))
    assert [rows[f"u{i}"] for i in range(len(NASTY))] == NASTY
