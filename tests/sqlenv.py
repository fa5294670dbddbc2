"""A store laid out as an SQL-built vpopmail site has it: `include/vpopmail_config.h` naming the
module and build options (as configure writes them), `etc/vpopmail.mysql` / `vpopmail.pgsql`
(0640, as `make install` leaves it) pointing at a test database of tests/sqlservers.py.

`make_sql_env(tmp_path, db)` is `storeenv.make_env` for such a site; `db=None` gives the cdb
site with the same header style, so one test can run on every module (the backend matrix)."""

from __future__ import annotations

import os

from storeenv import make_env

# what a default configure run decides per module (spec/sql.md §1): sha512, many-domains and
# auth-logging on; sql-aliasdomains on for --enable-auth-module=mysql only
BASE_DEFINES = ("MANY_DOMAINS", "ENABLE_AUTH_LOGGING", "SHA512_PASSWORDS", "USERS_BIG_DIR")
MODULE_DEFINES = {"cdb": ("USE_CDB",), "mysql": ("USE_SQL", "USE_MYSQL", "SQL_ALIASDOMAINS"),
                  "pgsql": ("USE_SQL", "USE_POSTGRES")}
OPTIONAL = ("CLEAR_PASS", "VALIAS", "ENABLE_MYSQL_LIMITS", "IP_ALIAS_DOMAINS", "MYSQL_REPLICATION",
            "MD5_PASSWORDS", "SQL_ALIASDOMAINS", "MANY_DOMAINS", "ENABLE_AUTH_LOGGING")


def config_h(module: str, add: tuple[str, ...] = (), drop: tuple[str, ...] = (), vpopmail_dir: str = "",
             qmail_dir: str = "") -> str:
    """vpopmail_config.h text as configure writes it: `#define X 1`, `/* #undef X */`."""
    defines = [d for d in (*MODULE_DEFINES[module], *BASE_DEFINES, *add) if d not in drop]
    lines = ["/* config.h.  Generated from config.h.in by configure.  */", ""]
    for name in dict.fromkeys(defines):
        lines += ['/* "" */', f"#define {name} 1", ""]
    for name in OPTIONAL:
        if name not in defines:
            lines += ['/* "" */', f"/* #undef {name} */", ""]
    for name, value in (("QMAILDIR", qmail_dir), ("VPOPMAILDIR", vpopmail_dir)):
        if value:
            lines += [f'#define {name} "{value}"', ""]
    return "\n".join(lines)


def write_site(vp, module: str, db=None, add: tuple[str, ...] = (), drop: tuple[str, ...] = (),
               db_text: str | None = None) -> None:
    """The site files under the vpopmail dir `vp`: the header, and for SQL the connection file."""
    (vp / "include").mkdir(exist_ok=True)
    (vp / "include" / "vpopmail_config.h").write_text(config_h(module, add, drop))
    if module != "cdb":
        path = vp / "etc" / ("vpopmail.mysql" if module == "mysql" else "vpopmail.pgsql")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as f:
            f.write("# host|port|user|password|database\n" + (db_text if db_text is not None else db.db_line()))


def make_sql_env(tmp_path, db=None, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> dict:
    """make_env on a site built for db's module (db: a tests.sqlservers.Database; None = cdb)."""
    env = make_env(tmp_path)
    write_site(tmp_path / "vpopmail", db.kind if db is not None else "cdb", db, add, drop)
    return env
