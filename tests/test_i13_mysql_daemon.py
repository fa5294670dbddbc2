"""Issue 13 item 4 on MySQL: a real vpopmaild process on a MySQL-built site, over a real socket.

The driver is imported before the privilege drop, each worker opens its own connections after the
fork, and a connection the server dropped is opened again once."""

from __future__ import annotations

import pytest
from cli_helpers import CliStore, fast_base, patched_environ
from daemon_helpers import Client, Daemon, mask
from sqlenv import write_site

from vcli import flags as F


@pytest.fixture()
def site(tmp_path, mariadb):
    db = mariadb.new_database()
    with fast_base(tmp_path) as b:
        st = CliStore(b)
        write_site(st.vp, "mysql", db)
        st.db = db
        from vcli.config import load_settings
        from vcli.model import NewUser, UserChanges
        from vcli.store.store import Store

        with patched_environ(st.env):
            store = Store(load_settings())
            store.add_domain("admin.test", "Admin-pm1")
            store.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
            store.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
            store.add_domain("example.test", "Pm-pass1")
        yield st


def test_i13_04_daemon_serves_a_mysql_site(site, mariadb):
    with Daemon(site.env, "--workers", "2") as d:
        c = Client(d.port)
        assert c.cmd("slogin sysadmin@admin.test SysPass1") == b"+OK \r\n"
        assert c.cmd("add_user bob@example.test Bob-pass1") == b"+OK \r\n"
        info = mask(c.cmd("user_info bob@example.test"))
        assert info.startswith(b"+OK+\r\nname bob\r\ncomment bob\r\nquota NOQUOTA\r\n"), info
        assert b"encrypted_password {HASH}\r\n" in info
        assert site.db.query("SELECT pw_name, pw_uid, pw_gid FROM vpopmail WHERE pw_domain = 'example.test' "
                             "ORDER BY pw_name") == [("bob", 0, 0), ("postmaster", 0, 0)]
        b = Client(d.port)  # a plain user logs in through the same tables
        assert b.cmd("slogin bob@example.test Bob-pass1") == b"+OK \r\n"
        b.close()
        b = Client(d.port)
        assert b.cmd("login bob@example.test wrong") == b"-ERR 8.207 Invalid Login\r\n"
        b.close()
        lines = c.cmd("get_lastauth bob@example.test").split(b"\r\n")
        assert lines[2] == b"ip 0.0.0.0" and int(lines[1].split()[1]) > 0, lines
        # the server drops every connection of the site's login: the next commands reconnect once
        admin = mariadb.admin()
        with admin.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (site.db.user,))
            ids = [r[0] for r in cur.fetchall()]
            assert ids  # the workers' connections
            for i in ids:
                cur.execute(f"KILL CONNECTION {int(i)}")
        admin.close()
        assert c.cmd("user_info bob@example.test").startswith(b"+OK+\r\nname bob\r\n")
        assert c.cmd("del_user bob@example.test") == b"+OK \r\n"
        assert c.cmd("user_info bob@example.test").startswith(b"-ERR")
        assert site.db.query("SELECT COUNT(*) FROM vpopmail WHERE pw_name = 'bob'") == [(0,)]
        assert not (site.ddir("example.test") / "bob").exists()
        c.close()
        err = d.stop()
    assert "Traceback" not in err


def test_i13_04_concurrent_sessions_of_one_worker_each_get_their_answer(site):
    """The listener runs commands in threads (issue 11 item 3): sessions of one worker reading and
    writing at once on a MySQL site must not share a driver connection (MySQLdb connections are
    not thread-safe: shared, replies cross or the client library aborts)."""
    import threading

    with Daemon(site.env, "--workers", "1") as d:
        c = Client(d.port)
        assert c.cmd("slogin sysadmin@admin.test SysPass1") == b"+OK \r\n"
        for i in range(8):
            assert c.cmd(f"add_user u{i}@example.test Pw-pass{i}x") == b"+OK \r\n"
        c.close()
        bad: list = []

        def reader(i: int) -> None:
            cl = Client(d.port)
            try:
                r = cl.cmd("slogin sysadmin@admin.test SysPass1")
                if r != b"+OK \r\n":
                    bad.append((i, "slogin", r[:120]))
                    return
                for k in range(40):
                    reply = cl.cmd(f"user_info u{i}@example.test")
                    if not reply.startswith(f"+OK+\r\nname u{i}\r\n".encode()):
                        bad.append((i, k, reply[:120]))
                        return
                    if k % 10 == 0:
                        r = cl.cmd(f"add_user n{i}x{k}@example.test Pw-new{k}x")
                        if r != b"+OK \r\n":
                            bad.append((i, k, r[:120]))
                            return
            finally:
                cl.close()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not bad, bad
        assert site.db.query("SELECT COUNT(*) FROM vpopmail WHERE pw_domain = 'example.test'") == [(1 + 8 + 32,)]
