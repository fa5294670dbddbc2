"""Issue 13 item 2: the site says which auth module and build options, with no setting.

The vpopmail_config.h fixtures are written from what configure produces (spec/sql.md §1,
store.md §0): `#define NAME 1` for a choice made, `/* #undef NAME */` for one not made, string
values quoted.  They are not copies of a real header.
"""

from __future__ import annotations

import json
import os

import pytest
from cli_helpers import CliStore

from vcli.config import load_settings
from vcli.errors import ConfigError
from vcli.site import parse_config_h, parse_db_file, read_db_file, site_settings

D = "example.test"


def header(*defines: str, undef: tuple[str, ...] = (), strings: dict | None = None) -> str:
    lines = ["/* config.h.  Generated from config.h.in by configure.  */", ""]
    lines += [f'/* "" */\n#define {name} 1\n' for name in defines]
    lines += [f'/* "" */\n/* #undef {name} */\n' for name in undef]
    lines += [f'/* "" */\n#define {k} "{v}"\n' for k, v in (strings or {}).items()]
    return "\n".join(lines)


# what a default cdb configure run decides (sha512 on, many-domains on, auth-logging on)
CDB_DEFAULT = ("USE_CDB", "MANY_DOMAINS", "ENABLE_AUTH_LOGGING", "SHA512_PASSWORDS", "USERS_BIG_DIR")
CDB_UNDEF = ("CLEAR_PASS", "VALIAS", "ENABLE_MYSQL_LIMITS", "SQL_ALIASDOMAINS", "IP_ALIAS_DOMAINS", "MD5_PASSWORDS")
MYSQL_DEFAULT = ("USE_SQL", "USE_MYSQL", "MANY_DOMAINS", "ENABLE_AUTH_LOGGING", "SHA512_PASSWORDS", "SQL_ALIASDOMAINS")


def write_header(vp, text: str) -> None:
    (vp / "include").mkdir(exist_ok=True)
    (vp / "include" / "vpopmail_config.h").write_text(text)


# --- the header ---------------------------------------------------------------------------------

def test_i13_02_parse_config_h_defines_only():
    """#define lines count, `/* #undef X */` and other text do not; quotes come off; CRLF ok."""
    text = header("USE_CDB", undef=("CLEAR_PASS",), strings={"QMAILDIR": "/var/qmail"}) + "# define VALIAS\r\n"
    m = parse_config_h(text.encode())
    assert m == {"USE_CDB": "1", "QMAILDIR": "/var/qmail", "VALIAS": ""}


def test_i13_02b_define_lines_read_by_hand_as_the_pattern_reads_them():
    """vcli/site.py reads #define lines without `re` (start-up); over lines built from the tokens
    that matter (blanks, '#', 'define', names, values, comments, quotes, other text) it gives the
    pattern's answer for every one."""
    import itertools
    import random
    import re

    from vcli.site import define_line

    pattern = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_][A-Za-z0-9_]*)(?:[ \t]+(.*?))?[ \t]*(?:/\*.*)?$")

    def by_pattern(line: bytes):
        m = pattern.match(line)
        if not m:
            return None
        value = (m.group(2) or b"").strip().decode("latin-1")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return m.group(1).decode("ascii"), value

    tokens = [b"", b" ", b"\t", b"  ", b"#", b"define", b"defined", b"undef", b"USE_CDB", b"_X9", b"9AB", b"A(x)",
              b"1", b'"/var/qmail"', b'"', b"/*", b"*/", b" /* c */", b"/", b"*", b"x y", b"\x0b", b"\xe9", b"\x00"]
    rng = random.Random(13)
    lines = [b"".join(p) for p in itertools.product([b"", b" ", b"#"], [b"define", b"# define"], [b" ", b"\t", b""],
                                                    [b"NAME", b"N1", b"1N", b""], [b"", b" 1", b"/*c*/", b" 1 /* c */"])]
    lines += [b"".join(rng.choice(tokens) for _ in range(rng.randint(1, 9))) for _ in range(20000)]
    lines += [b"#define " + b"".join(rng.choice(tokens) for _ in range(rng.randint(0, 6))) for _ in range(20000)]
    for line in lines:
        assert define_line(line) == by_pattern(line), line


@pytest.mark.parametrize("defines, undef, want", [
    (CDB_DEFAULT, CDB_UNDEF, {"auth_module": "cdb", "clear_passwords": False, "hash": "sha512",
                              "many_domains": True, "auth_logging": True, "sql_aliasdomains": False}),
    (("USE_CDB", "CLEAR_PASS", "MD5_PASSWORDS"), ("SHA512_PASSWORDS",),
     {"auth_module": "cdb", "clear_passwords": True, "hash": "md5", "many_domains": False, "auth_logging": False}),
    (("USE_CDB",), ("SHA512_PASSWORDS", "MD5_PASSWORDS"), {"hash": "des"}),
    (MYSQL_DEFAULT + ("ENABLE_MYSQL_LIMITS", "VALIAS", "IP_ALIAS_DOMAINS", "MYSQL_REPLICATION"), (),
     {"auth_module": "mysql", "sql_aliasdomains": True, "mysql_limits": True, "valias": True,
      "ip_alias_domains": True, "mysql_replication": True}),
    (("USE_SQL", "USE_POSTGRES", "CLEAR_PASS"), ("MANY_DOMAINS",),
     {"auth_module": "pgsql", "clear_passwords": True, "many_domains": False}),
    (("USE_LDAP",), (), {"auth_module": "ldap"}),
    ((), (), {"auth_module": "cdb"}),  # an old header without USE_*: configure's default
], ids=["cdb-default", "cdb-clear-md5", "des", "mysql-all", "pgsql", "ldap", "no-module"])
def test_i13_02_site_settings_from_header(defines, undef, want):
    got = site_settings(parse_config_h(header(*defines, undef=undef).encode()))
    assert {k: got[k] for k in want} == want


def test_i13_02_header_dirs_and_ids():
    text = header("USE_CDB", strings={"QMAILDIR": "/opt/qmail", "VPOPMAILDIR": "/home/vpopmail"})
    text += "#define VPOPMAILUID 1089\n#define VPOPMAILGID 2089\n"
    got = site_settings(parse_config_h(text.encode()))
    assert (got["qmail_dir"], got["built_vpopmail_dir"], got["vpopmail_uid"], got["vpopmail_gid"]) == (
        "/opt/qmail", "/home/vpopmail", 1089, 2089)


# --- precedence and sources ---------------------------------------------------------------------

@pytest.fixture()
def site(tmp_path, monkeypatch):
    vp = tmp_path / "vpopmail"
    (vp / "etc").mkdir(parents=True)
    for k in list(os.environ):
        if k.startswith("VCLI_") or k in ("QMAIL_DIR",):
            monkeypatch.delenv(k)
    monkeypatch.setenv("VPOPMAIL_DIR", str(vp))
    monkeypatch.setenv("VCLI_CONFIG", os.devnull)
    return vp


def test_i13_02_sources_header_env_config(site, tmp_path, monkeypatch):
    """The header decides what nobody set; the environment and the config file win over it."""
    hpath = str(site / "include" / "vpopmail_config.h")
    write_header(site, header("USE_CDB", "CLEAR_PASS", "MD5_PASSWORDS", strings={"QMAILDIR": "/q"}))
    s = load_settings()
    assert (s.clear_passwords, s.hash, s.qmail_dir, s.auth_module) == (True, "md5", "/q", "cdb")
    assert s.sources["clear_passwords"] == s.sources["hash"] == s.sources["qmail_dir"] == hpath
    assert s.sources["vpopmail_dir"] == "env VPOPMAIL_DIR" and s.sources["max_user"] == "default"
    assert s.site_file == hpath
    monkeypatch.setenv("VCLI_CLEAR_PASSWORDS", "0")
    conf = tmp_path / "c.toml"
    conf.write_text('hash = "sha512"\nqmail_dir = "/other"\n')
    monkeypatch.setenv("VCLI_CONFIG", str(conf))
    s = load_settings({"qmail_dir": "/opt"})
    assert (s.clear_passwords, s.hash, s.qmail_dir) == (False, "sha512", "/opt")
    assert s.sources["clear_passwords"] == "env VCLI_CLEAR_PASSWORDS"
    assert s.sources["hash"] == str(conf) and s.sources["qmail_dir"] == "option"


def test_i13_02_no_header_defaults(site):
    s = load_settings()
    assert (s.site_file, s.auth_module, s.clear_passwords, s.hash) == (None, "cdb", False, "sha512")
    assert s.sources["auth_module"] == s.sources["clear_passwords"] == "default"


def test_i13_02_unknown_module_by_hand_is_config_error(site, monkeypatch):
    monkeypatch.setenv("VCLI_AUTH_MODULE", "oracle")
    with pytest.raises(ConfigError, match="unknown auth module 'oracle'"):
        load_settings()


# --- through the commands -------------------------------------------------------------------------

@pytest.fixture()
def st(base):
    return CliStore(base)


def test_i13_02_clear_pass_header_makes_clear_field_automatic(st):
    """A CLEAR_PASS build's header alone makes vadduser write the 8th field and vuserinfo print it
    (before: `(null)` unless VCLI_CLEAR_PASSWORDS was set by hand)."""
    write_header(st.vp, header(*CDB_DEFAULT, "CLEAR_PASS"))
    st.ok("vadddomain", D, "Pm-pass1")
    st.ok("vadduser", f"bob@{D}", "Bob-pw1")
    assert st.fields(D, "bob")[7:] == ["Bob-pw1"]
    assert "\nclear passwd: Bob-pw1\n" in st.ok("vuserinfo", f"bob@{D}").out
    r = st.ok("vcli", "config", "show", "-o", "json")
    doc = json.loads(r.out)
    assert doc["clear_passwords"] is True
    assert doc["sources"]["clear_passwords"] == str(st.vp / "include" / "vpopmail_config.h")


def test_i13_02_default_header_keeps_seven_fields(st):
    write_header(st.vp, header(*CDB_DEFAULT, undef=CDB_UNDEF))
    st.ok("vadddomain", D, "Pm-pass1")
    st.ok("vadduser", f"bob@{D}", "Bob-pw1")
    assert len(st.fields(D, "bob")) == 7
    assert "\nclear passwd: \n" in st.ok("vuserinfo", f"bob@{D}").out


@pytest.mark.parametrize("module, label", [("USE_LDAP", "ldap"), ("USE_ORACLE", "oracle")])
def test_i13_02_unsupported_module_refused_in_one_line_exit_78(st, module, label):
    """A site built with a module vcli does not have (ldap, oracle): every command that opens the
    store says so in one line, exit 78, and writes nothing (it must not quietly work on a cdb store
    that is not the site's database).  MySQL sites work (tests/test_i13_mysql.py)."""
    st.ok("vadddomain", D, "Pm-pass1")
    write_header(st.vp, header(module, "MANY_DOMAINS"))
    before = st.snapshot()
    hpath = st.vp / "include" / "vpopmail_config.h"
    for argv in (["vuserinfo", f"postmaster@{D}"], ["vadduser", f"bob@{D}", "Bob-pw1"],
                 ["vcli", "vuserinfo", f"postmaster@{D}"], ["vdominfo", D]):
        r = st.run(*argv)
        assert r.t == (78, "", f"Error: {label} auth module not available in this version of vcli "
                               f"(the site's {hpath} says {module[4:].lower()})\n"), argv
    assert st.snapshot() == before
    # the environment (or config file) still overrides the header
    assert st.run("vuserinfo", "-n", f"postmaster@{D}", env={"VCLI_AUTH_MODULE": "cdb"}).out == "postmaster\n"


def test_i13_02_mysql_site_opens_the_mysql_module(st):
    """A MySQL-built site is no longer refused: the store opens the MySQL module (which reads
    vpopmail.mysql; without it, one line naming the file, exit 78, nothing written)."""
    st.ok("vadddomain", D, "Pm-pass1")
    write_header(st.vp, header("USE_SQL", "USE_MYSQL", "MANY_DOMAINS"))
    before = st.snapshot()
    r = st.run("vuserinfo", f"postmaster@{D}")
    dbf = st.vp / "etc" / "vpopmail.mysql"
    assert r.t == (78, "", f"Error: {dbf}: can't read the database settings: No such file or directory\n")
    assert st.snapshot() == before


# --- vpopmail.mysql / vpopmail.pgsql --------------------------------------------------------------

def test_i13_02_mysql_file_two_lines():
    data = b"# read server\n\nro-host|3306|ro|pw1|vpopmail\n#\nlocalhost|/run/mysqld/mysqld.sock|root|pw2|vp\nx|1|2|3|4\n"
    db = parse_db_file(data, "f", "mysql")
    assert (db.read.host, db.read.port, db.read.socket, db.read.user, db.read.password, db.read.database) == (
        "ro-host", 3306, None, "ro", "pw1", "vpopmail")
    assert (db.update.host, db.update.port, db.update.socket, db.update.password, db.update.database) == (
        "localhost", 0, "/run/mysqld/mysqld.sock", "pw2", "vp")
    one = parse_db_file(b"localhost|0|root|secret|vpopmail", "f", "mysql")  # no final newline
    assert one.read == one.update and one.read.password == "secret"


def test_i13_02_mysql_file_crlf_warns_and_strips():
    warned = []
    db = parse_db_file(b"localhost|0|root|secret|vpopmail\r\n", "f", "mysql", warned.append)
    assert db.read.database == "vpopmail" and len(warned) == 1 and "CRLF" in warned[0]


@pytest.mark.parametrize("data, message", [
    (b"localhost|0|root||vpopmail\n", "line 1: empty password field"),
    (b"localhost||root|pw|vpopmail\n", "line 1: empty port field"),
    (b"localhost|0|root|p|w|vpopmail\n", "line 1: 6 fields, want 5: host|port|user|password|database "
                                         "(a '|' inside a field cannot be written)"),
    (b"localhost|0|root|pw\n", "line 1: 4 fields, want 5"),
    (b"localhost|33o6|root|pw|db\n", "line 1: bad port '33o6'"),
    (b"localhost|99999|root|pw|db\n", "line 1: bad port '99999'"),
    (b"# only comments\n\n", "f: no valid settings"),
    (b"", "f: no valid settings"),
    (b"   \n", "line 1: 1 fields, want 5"),  # a line of blanks is data, as in vpopmail
    (b"h|0|u|" + b"p" * 250 + b"|db\n", "line 1: longer than 255 bytes"),
    (b"ok|0|u|p|db\nh|0|u|p|\n", "line 2: empty database field"),
    (b"h|0|u|\xff|db\n", "line 1: not UTF-8"),
], ids=["empty-password", "empty-port", "pipe-in-field", "four-fields", "port-letters", "port-range",
        "comments-only", "empty", "blanks", "too-long", "line2-empty-db", "not-utf8"])
def test_i13_02_mysql_file_bad_inputs(data, message):
    with pytest.raises(ConfigError) as exc:
        parse_db_file(data, "f", "mysql")
    assert message in exc.value.message and "\n" not in exc.value.message


def test_i13_02_pgsql_file_defaults_and_first_line_only():
    db = parse_db_file(b"#c\n||||\nother|1|u|p|d\n", "f", "pgsql")
    assert (db.read.host, db.read.port, db.read.user, db.read.password, db.read.database) == (
        "localhost", 0, "postgres", "", "vpopmail")
    assert db.update is db.read


def test_i13_02_world_readable_password_file_warns(tmp_path):
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "vpopmail.mysql"
    f.write_bytes(b"localhost|0|root|Sekret-9|vpopmail\n")
    for mode, warns in ((0o644, True), (0o604, True), (0o640, False), (0o600, False)):
        f.chmod(mode)
        warned: list[str] = []
        read_db_file(str(tmp_path), "mysql", warned.append)
        assert bool(warned) == warns, oct(mode)
        assert all("Sekret-9" not in w and f"mode {mode:04o}" in w for w in warned)
    pg = tmp_path / "etc" / "vpopmail.pgsql"
    pg.write_bytes(b"localhost|0|postgres||vpopmail\n")
    pg.chmod(0o644)
    warned = []
    read_db_file(str(tmp_path), "pgsql", warned.append)
    assert warned == []  # no password in it: nothing to protect


def test_i13_02_config_show_sources_and_masked_db(st):
    """`vcli config show` names each setting's source, shows the database settings of an SQL
    site with the password masked, and warns about a world-readable password file."""
    write_header(st.vp, header(*MYSQL_DEFAULT, "CLEAR_PASS", strings={"QMAILDIR": str(st.qm)}))
    dbf = st.vp / "etc" / "vpopmail.mysql"
    dbf.write_bytes(b"# read\nreplica|3307|ro|Read-pw1|vpopmail\nprimary|3306|vpopmail|Upd-pw2|vpopmail\n")
    dbf.chmod(0o644)
    hpath = str(st.vp / "include" / "vpopmail_config.h")
    env = {"QMAIL_DIR": ""}  # let the header say where qmail is
    r = st.run("vcli", "config", "show", env=env)
    assert r.rc == 0, r
    assert "Read-pw1" not in r.out + r.err and "Upd-pw2" not in r.out + r.err
    assert r.err == (f"Warning: {dbf} holds a database password and is readable by everyone (mode 0644); "
                     f"chmod 640 {dbf}\n")
    lines = r.out.splitlines()
    assert f"{'auth_module = mysql':<40} # {hpath}" in lines
    assert f"{'qmail_dir = ' + str(st.qm):<40} # {hpath}" in lines
    assert f"{'vpopmail_dir = ' + str(st.vp):<40} # env VPOPMAIL_DIR" in lines
    assert f"{'max_user = 64':<40} # default" in lines
    assert f"{'[db.read]':<40} # {dbf}" in lines and "  host = replica" in lines and "  password = ********" in lines
    doc = json.loads(st.ok("vcli", "config", "show", "-o", "json", env=env).out)
    assert doc["db"]["update"] == {"host": "primary", "port": 3306, "socket": None, "user": "vpopmail",
                                   "password": "********", "database": "vpopmail"}
    assert doc["sources"]["auth_module"] == hpath and doc["sources"]["db"] == str(dbf)
    dbf.write_bytes(b"primary|3306|vpopmail||vpopmail\n")
    r = st.run("vcli", "config", "show", env=env)
    assert r.t == (78, "", f"Error: {dbf} line 1: empty password field (vpopmail's tools cannot read an empty "
                           "field: they would shift the fields after it)\n")


def test_i13_02_daemon_on_unsupported_site_refuses_at_start(st):
    """The daemon on a site built with a module vcli lacks: one line and exit 78 at start-up (it
    used to end each session with a traceback once Store() refused the module)."""
    write_header(st.vp, header("USE_LDAP", "MANY_DOMAINS"))
    r = st.run("vpopmaild", "--stdio", input="quit\n")
    hpath = st.vp / "include" / "vpopmail_config.h"
    assert r.t == (78, "", f"vpopmaild: ldap auth module not available in this version of vcli "
                           f"(the site's {hpath} says ldap)\n")
