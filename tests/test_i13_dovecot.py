"""Issue 13 item 7: Dovecot authenticates vpopmail users from the SQL table, through its `sql`
passdb with the password_query real sites use (tests/dovecot_helpers.py: the private Dovecot,
and how it is asked).  A failure here means an IMAP/POP front end of the site would lock users
out, whatever vcli itself says about them."""

from __future__ import annotations

import pytest
from dovecot_helpers import Dovecot
from sqlenv import make_sql_env
from storeenv import run

from vcli.store.passwords import hash_password

# vpopmail's own table layouts (spec/sql.md §3.1, §3.2), as the C tools create them
VPOPMAIL_TABLE = ("CREATE TABLE vpopmail (pw_name VARCHAR(64) not null, pw_domain VARCHAR(96) not null, "
                  "pw_passwd VARCHAR(128), pw_uid int, pw_gid int, pw_gecos VARCHAR(64), pw_dir VARCHAR(160), "
                  "pw_shell VARCHAR(20), primary key (pw_name, pw_domain))")
ALIASDOMAINS_TABLE = ("CREATE TABLE aliasdomains (alias VARCHAR(100) NOT NULL, domain VARCHAR(100) NOT NULL, "
                      "PRIMARY KEY (alias))")
HOME = "/home/vpopmail/domains/example.test/bob"


@pytest.mark.parametrize("kind", ["mysql", "pgsql"])
def test_i13_07_dovecot_harness_on_rows_the_c_tools_would_write(kind, request):
    """The harness itself, on rows laid out by hand as vpopmail writes them: a good password is
    accepted (directly and through an alias domain, under the real name), a wrong one and an
    unknown user refused, the home comes from pw_dir."""
    db = request.getfixturevalue({"mysql": "mariadb", "pgsql": "postgres"}[kind]).new_database()
    db.query(VPOPMAIL_TABLE)
    db.query(ALIASDOMAINS_TABLE)
    db.query("INSERT INTO vpopmail VALUES ('bob', 'example.test', %s, 0, 0, 'Bob', %s, 'NOQUOTA')",
             (hash_password("Bob-pass1"), HOME))
    db.query("INSERT INTO aliasdomains (domain, alias) VALUES ('example.test', 'alias.test')")
    with Dovecot(db) as dv:
        assert dv.auth("bob@example.test", "Bob-pass1") == (True, "bob@example.test")
        assert dv.auth("bob@alias.test", "Bob-pass1") == (True, "bob@example.test")
        assert dv.auth("bob@example.test", "Bob-pass2")[0] is False
        assert dv.auth("zed@example.test", "Bob-pass1")[0] is False
        assert dv.auth("bob@other.test", "Bob-pass1")[0] is False
        assert dv.home("bob@example.test") == HOME
        assert dv.home("bob@alias.test") == HOME
        assert dv.home("zed@example.test") is None


def ok(env, *argv):
    r = run(env, *argv)
    assert (r.returncode, r.stderr) == (0, ""), (argv, r.stdout, r.stderr)
    return r


@pytest.mark.parametrize("kind", ["mysql", "pgsql"])
def test_i13_07_dovecot_authenticates_the_users_vcli_writes(kind, request, tmp_path):
    """Users made by the installed vcli commands on an SQL site log in through Dovecot: directly
    and through an alias domain (vaddaliasdomain's aliasdomains row), a bulk-imported one too;
    a wrong password, the old password after vpasswd, and a deleted user are refused."""
    db = request.getfixturevalue({"mysql": "mariadb", "pgsql": "postgres"}[kind]).new_database()
    env = make_sql_env(tmp_path, db)
    if kind == "pgsql":
        # vpopmail's configure offers sql-aliasdomains for MySQL only; a PostgreSQL site whose
        # Dovecot resolves alias domains turns vcli's aliasdomains table on (docs/pgsql.md)
        env["VCLI_SQL_ALIASDOMAINS"] = "1"
    home = f"{env['VPOPMAIL_DIR']}/domains/example.test/bob"
    ok(env, "vadddomain", "example.test", "Pm-pass1")
    ok(env, "vadduser", "bob@example.test", "Bob-pass1")
    ok(env, "vaddaliasdomain", "example.test", "alias.test")
    feed = tmp_path / "users.csv"
    feed.write_text("address,password\ncarol@example.test,Qu'ote\\%_1\n")
    ok(env, "vcli", "vadduser", "--from-file", str(feed))
    with Dovecot(db) as dv:
        assert dv.auth("bob@example.test", "Bob-pass1") == (True, "bob@example.test")
        assert dv.auth("bob@alias.test", "Bob-pass1") == (True, "bob@example.test")
        assert dv.auth("carol@alias.test", "Qu'ote\\%_1") == (True, "carol@example.test")
        assert dv.auth("postmaster@example.test", "Pm-pass1") == (True, "postmaster@example.test")
        assert dv.auth("bob@example.test", "Bob-pass2")[0] is False
        assert dv.home("bob@alias.test") == home
        ok(env, "vpasswd", "bob@example.test", "Bob-newpass1")
        assert dv.auth("bob@example.test", "Bob-newpass1") == (True, "bob@example.test")
        assert dv.auth("bob@alias.test", "Bob-newpass1") == (True, "bob@example.test")
        assert dv.auth("bob@example.test", "Bob-pass1")[0] is False
        ok(env, "vdeluser", "bob@example.test")
        assert dv.auth("bob@example.test", "Bob-newpass1")[0] is False
        assert dv.auth("bob@alias.test", "Bob-newpass1")[0] is False
        assert dv.home("bob@example.test") is None
        assert dv.auth("carol@example.test", "Qu'ote\\%_1")[0] is True
