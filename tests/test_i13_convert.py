"""Issue 13 item 6: `vcli convert --to mysql|pgsql|cdb` (vpopmail's vconvert).

The parts that need no SQL server run on real cdb stores: the config switch (vcli/configfile.py),
the cdb module's whole-domain import (records, counter, lastauth files) and the verify step, on
a cdb store copied into another tree.  The SQL round trips, the crash-and-rerun and the
database-down cases run against the session's private MariaDB (tests/sqlservers.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import tomllib

import pytest
from cli_helpers import CliStore

from vcli.config import load_settings
from vcli.configfile import edit_text, set_values
from vcli.store import convert as C
from vcli.store.store import Store

HASH = "$6$saltsalt$" + "A" * 86


def _store(st: CliStore) -> Store:
    return Store(load_settings({"vpopmail_dir": str(st.vp), "qmail_dir": str(st.qm)}))


def _fill(st: CliStore, domain: str, n: int) -> None:
    """`n` users by bulk import (hashed), with a quota, a comment and flags on some."""
    lines = "".join(f"u{i:05d}@{domain},{HASH}\n" for i in range(n))
    st.ok("vcli", "vadduser", "--from-file", "-", "--hashed", input=lines)
    st.ok("vmoduser", "-c", "Carol C", "-q", "5M", f"u00003@{domain}")
    st.ok("vmoduser", "-a", "-p", f"u00004@{domain}")


@pytest.fixture()
def cfg(st):
    """The store of `st` with a real config file of its own (VCLI_CONFIG)."""
    path = st.base / "config.toml"
    path.write_text("# vcli settings\n")
    st.env["VCLI_CONFIG"] = str(path)
    return path


# --- the config switch ----------------------------------------------------------------------------


def test_i13_06_config_edit_keeps_everything_else():
    text = ('# top comment\nlock_wait = 5.0\n\n[profiles.mx]\nremote = "mx:89"  # the MX\n')
    out = edit_text(text, {"auth_module": "mysql", "db_file": '/etc/a "b"\\c'})
    data = tomllib.loads(out)
    assert data["auth_module"] == "mysql" and data["db_file"] == '/etc/a "b"\\c'
    assert data["lock_wait"] == 5.0 and data["profiles"] == {"mx": {"remote": "mx:89"}}
    assert out.startswith("# top comment\nlock_wait = 5.0\n") and "# the MX" in out
    # a second edit replaces the line instead of adding one
    again = edit_text(out, {"auth_module": "cdb"})
    assert again.count("auth_module") == 1 and tomllib.loads(again)["auth_module"] == "cdb"
    # settings in a [store] table stay there
    store = edit_text('[store]\nvpopmail_dir = "/x"\n\n[profiles.a]\nremote = "h"\n', {"auth_module": "pgsql"})
    assert tomllib.loads(store)["store"] == {"vpopmail_dir": "/x", "auth_module": "pgsql"}


def test_i13_06_config_file_replaced_atomically_mode_kept(tmp_path):
    path = tmp_path / "sub" / "config.toml"
    set_values(str(path), {"auth_module": "mysql"})  # created with its directory
    assert tomllib.loads(path.read_text()) == {"auth_module": "mysql"}
    os.chmod(path, 0o640)
    ino = os.stat(path).st_ino
    set_values(str(path), {"auth_module": "cdb"})
    st_ = os.stat(path)
    assert stat.S_IMODE(st_.st_mode) == 0o640 and st_.st_ino != ino  # a new file renamed in
    assert os.listdir(path.parent) == ["config.toml"]  # no temp file left


def test_i13_06_config_never_replaces_a_device():
    from vcli.errors import ConfigError

    with pytest.raises(ConfigError, match="not a regular file"):
        set_values(os.devnull, {"auth_module": "mysql"})
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_i13_06_switch_is_what_later_commands_read(st, cfg):
    """After the switch `vcli config show` names the config file as the module's source, and
    every command follows it (a cdb-only build of vcli refuses a MySQL site rather than
    reading the stale vpasswd)."""
    dbf = st.base / "elsewhere.mysql"
    dbf.write_text("127.0.0.1|1|u|p|d\n")
    set_values(str(cfg), {"auth_module": "mysql", "db_file": str(dbf)})
    r = st.ok("vcli", "config", "show")
    lines = r.out.splitlines()
    assert [x.split("#")[-1].strip() for x in lines if x.startswith(("auth_module ", "db_file "))] == [str(cfg)] * 2
    assert any(x.startswith("[db.read]") and str(dbf) in x for x in lines)


# --- the cdb side: whole-domain import and verify ------------------------------------------------


def _lastauths(ddir):
    out = {}
    for root, _dirs, files in os.walk(ddir):
        if "lastauth" in files:
            p = os.path.join(root, "lastauth")
            out[p] = (open(p, "rb").read(), int(os.stat(p).st_mtime))
    return out


def test_i13_06_cdb_import_rebuilds_byte_identical_files(st):
    """The records, counter and lastauth records read from a domain and imported again give the
    same vpasswd and vpasswd.cdb bytes, the same counter and the same lastauth files."""
    _fill(st, "example.test", 250)  # past 100 users: hashed dirs
    ddir = st.ddir("example.test")
    os.utime(ddir / "u00001" / "lastauth", (1_700_000_000, 1_700_000_000))
    before = {n: (ddir / n).read_bytes() for n in ("vpasswd", "vpasswd.cdb", ".dir-control")}
    auths = _lastauths(ddir)
    s = _store(st)
    entry = s.real_entry("example.test")
    records = list(s.auth.list_users(entry))
    dc = s.auth.dir_control(entry)
    rows = list(s.auth.list_lastauth(entry))
    assert len(rows) == 251 and dc.cur_users == 251
    for n in before:
        os.unlink(ddir / n)
    for p in auths:
        os.unlink(p)
    assert s.auth.replace_records(entry, reversed(records), dc) == 251
    assert s.auth.import_lastauth(entry, rows) == 251
    assert {n: (ddir / n).read_bytes() for n in before} == before
    assert _lastauths(ddir) == {p: (data, t) for p, (data, t) in auths.items()}
    # a second import of the same changes nothing (not even an mtime)
    mtimes = {n: os.stat(ddir / n).st_mtime_ns for n in before}
    s.auth.replace_records(entry, records, dc)
    assert s.auth.import_lastauth(entry, rows) == 0
    assert {n: os.stat(ddir / n).st_mtime_ns for n in before} == mtimes


def _copy_site(st: CliStore, other) -> CliStore:
    """The store of `st` copied into `other`, users/assign pointing at the copy, and the user
    database of the copy removed (vpasswd, vpasswd.cdb, .dir-control): an empty cdb target."""
    shutil.copytree(st.base / "vpopmail", other / "vpopmail", symlinks=True)
    shutil.copytree(st.base / "qmail", other / "qmail", symlinks=True)
    dst = CliStore.__new__(CliStore)
    dst.base, dst.vp, dst.qm = other, other / "vpopmail", other / "qmail"
    dst.env = dict(st.env, VPOPMAIL_DIR=str(dst.vp), QMAIL_DIR=str(dst.qm))
    assign = (dst.qm / "users" / "assign").read_text().replace(str(st.vp), str(dst.vp))
    (dst.qm / "users" / "assign").write_text(assign)
    _store(dst).qmail.compile_assign()
    for root, _dirs, files in os.walk(dst.vp / "domains"):
        for name in files:
            if name in ("vpasswd", "vpasswd.cdb", ".dir-control"):
                os.unlink(os.path.join(root, name))
    return dst


def test_i13_06_copy_and_verify_cdb_to_cdb_in_another_tree(st, tmp_path):
    _fill(st, "example.test", 120)
    dst = _copy_site(st, tmp_path / "copy")
    src, tgt = _store(st), _store(dst)
    e_src, e_dst = src.real_entry("example.test"), tgt.real_entry("example.test")
    assert e_src.dir != e_dst.dir
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst)  # empty target: differs
    assert C.copy_domain(src.auth, tgt.auth, e_src, target_entry=e_dst) == 121
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst) == []
    assert (st.ddir("example.test") / "vpasswd").read_bytes() == (dst.ddir("example.test") / "vpasswd").read_bytes()
    # each kind of difference is named
    vp = dst.ddir("example.test") / "vpasswd"
    good = vp.read_bytes()
    vp.write_bytes(good.replace(b":Carol C:", b":Carol:"))
    tgt.rebuild_cdb("example.test")
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst) == ["record of u00003 differs in cdb"]
    vp.write_bytes(b"".join(x for x in good.splitlines(keepends=True) if not x.startswith(b"u00007:")))
    tgt.rebuild_cdb("example.test")
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst)[0].startswith("u00007 missing in cdb")
    vp.write_bytes(good)
    tgt.rebuild_cdb("example.test")
    dc = dst.ddir("example.test") / ".dir-control"
    dc.write_bytes(dc.read_bytes().replace(b"121\n", b"120\n", 1))
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst)[0].startswith("dir_control differs")
    # and a rerun of the copy puts it right
    C.copy_domain(src.auth, tgt.auth, e_src, target_entry=e_dst)
    assert C.verify_domain(src.auth, tgt.auth, e_src, False, e_dst) == []


def test_i13_06_uid_keeps_its_meaning():
    """cdb's 1 (POP) / 2 (APOP) are SQL's 0 / 1 (spec/sql.md §5): a converted row is what the
    target's vadduser writes, and the way back gives the cdb digits again."""
    for cdb_uid, sql_uid in (("1", "0"), ("2", "1")):
        assert C.uid_for(cdb_uid, "cdb", "mysql") == sql_uid
        assert C.uid_for(sql_uid, "pgsql", "cdb") == cdb_uid
    assert C.uid_for("7", "cdb", "mysql") == "7" and C.uid_for("1", "mysql", "pgsql") == "1"


# --- the command ------------------------------------------------------------------------------------


def test_i13_06_convert_to_the_module_in_force_is_refused(st, cfg):
    r = st.run("vcli", "convert", "--to", "cdb")
    assert (r.rc, r.out) == (64, "") and r.err == "Error: the site already uses the cdb module\n"
    assert cfg.read_text() == "# vcli settings\n"


def test_i13_06_convert_without_connection_file(st, cfg):
    """No etc/vpopmail.mysql and no --db-file: one line, exit 78, nothing changed."""
    before = st.snapshot()
    r = st.run("vcli", "convert", "--to", "mysql")
    assert r.rc == 78 and r.out == "" and len(r.err_lines) == 1 and "vpopmail.mysql" in r.err
    assert st.snapshot() == before


def test_i13_06_convert_refuses_an_environment_override(st, cfg):
    r = st.run("vcli", "convert", "--to", "mysql", env={"VCLI_AUTH_MODULE": "cdb"})
    assert r.rc == 64 and "VCLI_AUTH_MODULE" in r.err and len(r.err_lines) == 1
    assert cfg.read_text() == "# vcli settings\n"


def test_i13_06_convert_unknown_domain(st, cfg, tmp_path):
    dbf = tmp_path / "db"
    dbf.write_text("127.0.0.1|1|u|p|d\n")
    r = st.run("vcli", "convert", "--to", "cdb", "nowhere.test")
    assert r.rc == 64  # the module check comes first
    r = st.run("vcli", "convert", "--to", "cdb", "--db-file", str(dbf))
    assert r.rc == 64 and "--db-file goes with" in r.err


# --- against a real MariaDB ------------------------------------------------------------------------


def _sql_site(base, db=None) -> CliStore:
    """A CliStore laid out as a site built for db's module (None: cdb), with a config file."""
    from sqlenv import write_site

    st = CliStore(base)
    write_site(st.vp, db.kind if db is not None else "cdb", db)
    cfg = st.base / "config.toml"
    cfg.write_text("# vcli settings\n")
    st.env["VCLI_CONFIG"] = str(cfg)
    st.cfg = cfg
    return st


def _db_file(st: CliStore, db) -> None:
    """etc/vpopmail.mysql of a cdb site about to move (0640, as `make install` leaves it)."""
    path = st.vp / "etc" / "vpopmail.mysql"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(db.db_line())


def _module(st: CliStore) -> str:
    r = st.ok("vcli", "config", "show", "-o", "json")
    import json

    return json.loads(r.out)["auth_module"]


def _cdb_files(st: CliStore) -> dict:
    out = {}
    for root, _dirs, files in os.walk(st.vp / "domains"):
        for name in files:
            if name in ("vpasswd", "vpasswd.cdb"):
                out[os.path.join(root, name)] = open(os.path.join(root, name), "rb").read()
    return out


@pytest.fixture()
def two(tmp_path):
    """A cdb site with two domains (one past 100 users: hashed dirs), an alias domain, flags,
    quotas, comments and a login recorded."""
    from cli_helpers import fast_base

    with fast_base(tmp_path / "two") as b:
        st = _sql_site(b)
        st.ok("vadddomain", "alpha.test", "Pm-pass1")
        st.ok("vadddomain", "example.test", "Pm-pass1")
        st.ok("vaddaliasdomain", "example.test", "alias.test")
        _fill(st, "example.test", 150)
        st.ok("vadduser", "-c", "Zoe Z", "zoe@alpha.test", "Zoe-pass1")
        st.ok("vmoduser", "-S", "zoe@alpha.test")
        st.ok("vadduser", "l" * 40 + "@alpha.test", "Long-pass1")  # too long for an SQL lastauth row
        la = st.ddir("example.test") / "u00002" / "lastauth"
        la.write_bytes(b"192.0.2.7")
        os.utime(la, (1_700_000_123, 1_700_000_123))
        yield st


def test_i13_06_round_trip_cdb_mysql_cdb(two, mariadb):
    """cdb -> MySQL -> cdb leaves vpasswd and vpasswd.cdb byte for byte as they were; in
    between every command reads the MySQL rows."""
    st, db = two, mariadb.new_database()
    before = _cdb_files(st)
    info = st.ok("vuserinfo", "u00003@example.test").out
    _db_file(st, db)
    r = st.ok("vcli", "convert", "--to", "mysql")
    assert r.out.splitlines()[:3] == ["alpha.test: 3 users copied to mysql", "example.test: 151 users copied to mysql",
                                      "verified 2 of 2 domains in mysql"]
    assert 'switched: vcli now uses the mysql module (auth_module = "mysql" in ' + str(st.cfg) + ")" in r.out
    assert "vpopmail's own tools" in r.out and "--enable-auth-module=mysql" in r.out
    assert _module(st) == "mysql"
    assert db.query("SELECT COUNT(*) FROM vpopmail")[0][0] == 154
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = 'example.test'") == [(151,)]
    assert db.query("SELECT remote_ip, timestamp FROM lastauth WHERE user = 'u00002'") == [("192.0.2.7", 1_700_000_123)]
    assert db.query("SELECT alias, domain FROM aliasdomains") == [("alias.test", "example.test")]
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = 'dom_89'") == [(2,)]  # the domain counter
    # the cdb files are no longer read: with them gone every command still works (through the alias too)
    for path in before:
        os.unlink(path)
    assert st.ok("vuserinfo", "u00003@example.test").out == info.replace("\nuid:    1\n", "\nuid:    0\n")
    st.ok("vuserinfo", "u00003@alias.test")
    assert db.query("SELECT pw_uid FROM vpopmail WHERE pw_name = 'u00003'") == [(0,)]
    r = st.ok("vcli", "convert", "--to", "cdb")
    assert "switched: vcli now uses the cdb module" in r.out
    assert _cdb_files(st) == before
    assert _module(st) == "cdb"
    assert st.ok("vuserinfo", "u00003@example.test").out == info
    la = st.ddir("example.test") / "u00002" / "lastauth"
    assert (la.read_bytes(), int(os.stat(la).st_mtime)) == (b"192.0.2.7", 1_700_000_123)
    assert (st.ddir("alpha.test") / ("l" * 40) / "lastauth").read_bytes() == b"0.0.0.0"  # kept all along


def test_i13_06_rows_are_what_vadduser_writes_on_mysql(tmp_path, mariadb):
    """The rows a converted cdb site has are the rows the same commands write on a MySQL site
    (homes relative to each site; lastauth times are creation times, so only their IPs)."""
    from cli_helpers import fast_base

    script = [("vadddomain", "example.test", "Pm-pass1"), ("vmoduser", "-e", HASH, "postmaster@example.test"),
              ("vadduser", "-e", HASH, "alice@example.test"),
              ("vadduser", "-q", "5M", "-c", "Bob B", "-e", HASH, "bob@example.test"),
              ("vmoduser", "-a", "-p", "alice@example.test")]
    sites = []
    with fast_base(tmp_path / "a") as a, fast_base(tmp_path / "b") as b:
        db_conv, db_native = mariadb.new_database(), mariadb.new_database()
        cdb_site, sql_site = _sql_site(a), _sql_site(b, db_native)
        for cmd in script:
            cdb_site.ok(*cmd)
            sql_site.ok(*cmd)
        _db_file(cdb_site, db_conv)
        cdb_site.ok("vcli", "convert", "--to", "mysql")
        for st, db in ((cdb_site, db_conv), (sql_site, db_native)):
            base = str(st.base)
            sites.append((
                db.query("SELECT pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, REPLACE(pw_dir, %s, ''), "
                         "pw_shell FROM vpopmail ORDER BY pw_name", (base,)),
                db.query("SELECT * FROM dir_control ORDER BY domain"),
                db.query("SELECT user, domain, remote_ip FROM lastauth ORDER BY user")))
    assert sites[0] == sites[1]
    assert len(sites[0][0]) == 3 and {r[3] for r in sites[0][0]} == {0}


def _kill_after_first_domain(st: CliStore, *args: str) -> None:
    """Run `vcli convert ARGS` and SIGKILL it once it says one domain is copied."""
    import signal
    import subprocess

    from cli_helpers import tool

    p = subprocess.Popen([tool("vcli"), "convert", *args], env=st.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert "users copied" in line, (line, p.stderr.read())
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL


def test_i13_06_killed_convert_keeps_the_old_module_and_reruns(two, mariadb):
    st, db = two, mariadb.new_database()
    before = _cdb_files(st)
    _db_file(st, db)
    cfg = st.cfg.read_bytes()
    _kill_after_first_domain(st, "--to", "mysql")
    assert st.cfg.read_bytes() == cfg and _module(st) == "cdb"
    assert db.query("SELECT COUNT(*) FROM vpopmail WHERE pw_domain = 'alpha.test'")[0][0] == 3  # a half run
    assert _cdb_files(st) == before
    st.ok("vuserinfo", "u00003@example.test")
    st.ok("vadduser", "late@alpha.test", "Late-pass1")  # the cdb site goes on meanwhile
    r = st.ok("vcli", "convert", "--to", "mysql")
    assert "alpha.test: 4 users copied to mysql" in r.out and "switched" in r.out
    assert db.query("SELECT COUNT(*) FROM vpopmail")[0][0] == 155
    # and back, killed half-way into cdb too: the MySQL module stays in force
    after = _cdb_files(st)
    for path in after:
        os.unlink(path)
    _kill_after_first_domain(st, "--to", "cdb")
    assert _module(st) == "mysql"
    st.ok("vuserinfo", "late@alpha.test")
    st.ok("vcli", "convert", "--to", "cdb")
    assert _cdb_files(st) == after and _module(st) == "cdb"


def test_i13_06_target_database_down(two):
    """The target's server not there: one line naming it, its exit status, nothing changed."""
    from sqlservers import free_port

    st = two
    port = free_port()
    dbf = st.base / "down.mysql"
    dbf.write_text(f"127.0.0.1|{port}|vpopmail|secret|vpopmail\n")
    os.chmod(dbf, 0o600)
    before = st.snapshot()
    r = st.run("vcli", "convert", "--to", "mysql", "--db-file", str(dbf))
    assert r.rc == 69 and r.out == "" and len(r.err_lines) == 1, r
    assert f"127.0.0.1:{port}" in r.err
    assert st.snapshot() == before and _module(st) == "cdb"


def test_i13_06_named_domains_switch_once_all_are_in(two, mariadb):
    st, db = two, mariadb.new_database()
    _db_file(st, db)
    r = st.ok("vcli", "convert", "--to", "mysql", "example.test")
    assert "example.test: 151 users copied to mysql" in r.out and "alpha.test" in r.out
    assert "not switching" in r.out and _module(st) == "cdb"
    r = st.ok("vcli", "convert", "--to", "mysql", "alpha.test")
    assert "verified 2 of 2 domains" in r.out and "switched" in r.out and _module(st) == "mysql"


def test_i13_06_switched_config_keeps_the_lookup_lean(tmp_path):
    """The file the switch writes is read without tomllib (and so without re): a converted site's
    vuserinfo starts as lean as before (tests/test_i11_lean.py)."""
    from storeenv import make_env, run
    from test_i11_lean import BANNED, _probe

    env = make_env(tmp_path)
    assert run(env, "vadddomain", "lean.test", "Pm-pass1x").returncode == 0
    cfg = tmp_path / "config.toml"
    cfg.write_text("# vcli\n")
    set_values(str(cfg), {"auth_module": "cdb", "db_file": "/x/y"})
    env["VCLI_CONFIG"] = str(cfg)
    r, imported = _probe(env, "vuserinfo", "postmaster@lean.test")
    assert r.returncode == 0 and "postmaster" in r.stdout
    assert not imported & (BANNED | {"tomllib"}), imported & (BANNED | {"tomllib"})


def test_i13_06_sql_target_takes_the_records_in_chunks(two, mariadb, monkeypatch):
    """Into SQL the records go IMPORT_CHUNK at a time (memory stays bounded on a million-user
    domain; progress counts committed rows), and the result verifies as one import does."""
    st, db = two, mariadb.new_database()
    _db_file(st, db)
    monkeypatch.setattr(C, "IMPORT_CHUNK", 40)
    src = _store(st)
    tgt = C.open_target(src, "mysql")
    entry = src.real_entry("example.test")
    seen: list[int] = []
    assert C.copy_domain(src.auth, tgt.auth, entry, seen.append) == 151
    assert seen == [40, 80, 120, 151]
    assert C.verify_domain(src.auth, tgt.auth, entry, False) == []
    assert C.copy_domain(src.auth, tgt.auth, entry) == 151  # again: replaced, not UserExists
    assert db.query("SELECT COUNT(*) FROM vpopmail")[0][0] == 151


def test_i13_06_db_file_is_what_later_commands_use(two, mariadb):
    """--db-file: the connection file is recorded as db_file, and every later command (and vcli
    config show) reaches the database through it; the site's etc/ has no vpopmail.mysql."""
    st, db = two, mariadb.new_database()
    dbf = st.base / "moved.mysql"
    dbf.write_text(db.db_line())
    os.chmod(dbf, 0o600)
    st.ok("vcli", "convert", "--to", "mysql", "--db-file", str(dbf))
    assert not (st.vp / "etc" / "vpopmail.mysql").exists()
    assert tomllib.loads(st.cfg.read_text()) == {"auth_module": "mysql", "db_file": str(dbf)}
    st.ok("vadduser", "after@alpha.test", "After-pass1")
    assert db.query("SELECT pw_name FROM vpopmail WHERE pw_name = 'after'") == [("after",)]
    assert "after" in st.ok("vuserinfo", "-n", "-D", "alpha.test").out.splitlines()
    assert str(dbf) in st.ok("vcli", "config", "show").out


def test_i13_06_tables_beyond_users_are_refused(tmp_path):
    """A build that keeps aliases, limits or the ip map in tables on SQL (files on cdb): convert
    says it does not move those, exit 64, nothing changed."""
    from cli_helpers import fast_base
    from sqlenv import write_site

    with fast_base(tmp_path / "t") as b:
        st = _sql_site(b)
        write_site(st.vp, "cdb", add=("IP_ALIAS_DOMAINS",))
        st.ok("vadddomain", "example.test", "Pm-pass1")
        (st.vp / "etc" / "vpopmail.mysql").write_text("127.0.0.1|1|u|p|d\n")
        os.chmod(st.vp / "etc" / "vpopmail.mysql", 0o640)
        before = st.snapshot()
        r = st.run("vcli", "convert", "--to", "mysql")
        assert r.rc == 64 and len(r.err_lines) == 1 and "the ip map (IP_ALIAS_DOMAINS)" in r.err, r
        assert st.snapshot() == before


def test_i13_06_round_trip_cdb_pgsql_cdb(two, postgres):
    """The same round trip through PostgreSQL (vpopmail.pgsql): rows, the counters, lastauth
    (userid), and back to byte-identical cdb files."""
    st, db = two, postgres.new_database()
    before = _cdb_files(st)
    info = st.ok("vuserinfo", "u00003@example.test").out
    path = st.vp / "etc" / "vpopmail.pgsql"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(db.db_line())
    r = st.ok("vcli", "convert", "--to", "pgsql")
    assert "verified 2 of 2 domains in pgsql" in r.out and _module(st) == "pgsql"
    assert db.query("SELECT COUNT(*) FROM vpopmail")[0][0] == 154
    assert db.query("SELECT cur_users FROM dir_control WHERE domain = 'example.test'") == [(151,)]
    assert db.query("SELECT remote_ip, timestamp FROM lastauth WHERE userid = 'u00002'") == [("192.0.2.7", 1_700_000_123)]
    for p in before:
        os.unlink(p)
    assert st.ok("vuserinfo", "u00003@example.test").out == info.replace("\nuid:    1\n", "\nuid:    0\n")
    st.ok("vcli", "convert", "--to", "cdb")
    assert _cdb_files(st) == before and _module(st) == "cdb"
    assert st.ok("vuserinfo", "u00003@example.test").out == info
