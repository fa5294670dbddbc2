"""What this site's vpopmail was built with: `~vpopmail/include/vpopmail_config.h` and the
database connection file `~vpopmail/etc/vpopmail.mysql` (or `vpopmail.pgsql`).

configure writes every build choice into vpopmail_config.h as `#define NAME value` (a choice
not made stays `/* #undef NAME */`), so reading the header tells vcli which auth module holds
the users, whether records carry the clear-text password, the hash scheme, and the compiled-in
directories -- the settings a real site would otherwise have to repeat by hand.  Nothing here
prints: warnings go through the `warn` callable.  (spec/sql.md §1, §2; store.md §0.)
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigError

CONFIG_H = os.path.join("include", "vpopmail_config.h")

# configure's auth-module symbols -> our module names (USE_SQL accompanies mysql/pgsql)
_MODULE_MACROS = (("USE_MYSQL", "mysql"), ("USE_POSTGRES", "pgsql"), ("USE_LDAP", "ldap"),
                  ("USE_ORACLE", "oracle"), ("USE_SYBASE", "sybase"), ("USE_SQLITE", "sqlite"),
                  ("USE_CDB", "cdb"))
# boolean build options: setting name -> macro
FLAG_MACROS = {
    "clear_passwords": "CLEAR_PASS",
    "many_domains": "MANY_DOMAINS",
    "sql_aliasdomains": "SQL_ALIASDOMAINS",
    "mysql_limits": "ENABLE_MYSQL_LIMITS",
    "valias": "VALIAS",
    "auth_logging": "ENABLE_AUTH_LOGGING",
    "ip_alias_domains": "IP_ALIAS_DOMAINS",
    "mysql_replication": "MYSQL_REPLICATION",
}


_BLANK = b" \t"
_NAME_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset(b"0123456789")


def define_line(line: bytes) -> tuple[str, str] | None:
    """(NAME, value) of one `#define NAME value /* comment */` line, else None.

    By hand rather than with `re`: every real site has this header, and importing re (with
    enum) costs a lookup ~4 ms of its start-up (issue 11 item 4).  The rule, as a pattern:
    `^[ \t]*#[ \t]*define[ \t]+NAME([ \t]+value)?[ \t]*(/[*].*)?$` with the value ending at
    the first comment; tests/test_i13_site.py holds the two to the same answers."""
    s = line.lstrip(_BLANK)
    if s[:1] != b"#":
        return None
    s = s[1:].lstrip(_BLANK)
    if s[:6] != b"define" or s[6:7] not in (b" ", b"\t"):
        return None
    s = s[6:].lstrip(_BLANK)
    if not s or s[0] not in _NAME_START:
        return None
    i = 1
    while i < len(s) and s[i] in _NAME_CHARS:
        i += 1
    name, rest = s[:i], s[i:]
    if rest and rest[:1] not in (b" ", b"\t") and rest[:2] != b"/*":
        return None
    value = rest.split(b"/*", 1)[0].strip().decode("latin-1")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return name.decode("ascii"), value


def parse_config_h(data: bytes) -> dict[str, str]:
    """NAME -> value (quotes removed; '' for a bare `#define NAME`) of every #define line."""
    out = {}
    for raw in data.splitlines():
        found = define_line(raw.rstrip(b"\r"))
        if found:
            out[found[0]] = found[1]
    return out


def site_settings(macros: dict[str, str]) -> dict:
    """The settings a vpopmail_config.h implies (only those it decides)."""
    values: dict = {}
    for macro, module in _MODULE_MACROS:
        if macro in macros:
            values["auth_module"] = module
            break
    else:
        values["auth_module"] = "cdb"  # configure's default; a header without USE_* is an old build
    for name, macro in FLAG_MACROS.items():
        values[name] = macro in macros
    if "SHA512_PASSWORDS" in macros:
        values["hash"] = "sha512"
    elif "MD5_PASSWORDS" in macros:
        values["hash"] = "md5"
    else:
        values["hash"] = "des"
    if macros.get("QMAILDIR"):
        values["qmail_dir"] = macros["QMAILDIR"]
    if macros.get("VPOPMAILDIR"):
        values["built_vpopmail_dir"] = macros["VPOPMAILDIR"]
    for name, macro in (("vpopmail_uid", "VPOPMAILUID"), ("vpopmail_gid", "VPOPMAILGID")):
        if macros.get(macro, "").isdigit():
            values[name] = int(macros[macro])
    return values


def read_site(vpopmail_dir: str) -> tuple[dict, str | None]:
    """(settings, path) from the vpopmail_config.h under `vpopmail_dir`; ({}, None) if absent."""
    path = os.path.join(vpopmail_dir, CONFIG_H)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return site_settings(parse_config_h(data)), path


# --- the database connection file ----------------------------------------------------------------

FIELDS = ("host", "port", "user", "password", "database")
_LINE_MAX = 255  # vpopmail reads lines with a 256-byte buffer


class DbServer:
    """One line of vpopmail.mysql/pgsql.  A plain class, not a dataclass: this module is imported
    by every command (load_settings), and dataclass creation costs start-up time."""

    __slots__ = ("host", "port", "socket", "user", "password", "database")

    def __init__(self, host: str, port: int = 0, socket: str | None = None, user: str = "",
                 password: str = "", database: str = ""):
        self.host, self.port, self.socket = host, port, socket  # port 0: the library default
        self.user, self.password, self.database = user, password, database

    def __eq__(self, other) -> bool:
        return isinstance(other, DbServer) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:  # never the password (tracebacks, logs)
        return f"DbServer({self.user}@{self.host}:{self.socket or self.port}/{self.database})"

    def shown(self) -> dict:
        """For `vcli config show`: everything but the password."""
        return {"host": self.host, "port": self.port, "socket": self.socket, "user": self.user,
                "password": "********" if self.password else "", "database": self.database}


class DbSettings:
    """The file and its two servers: read (line 1: listings, and with replication every read),
    update (line 2, else line 1: every change)."""

    __slots__ = ("path", "read", "update")

    def __init__(self, path: str, read: DbServer, update: DbServer):
        self.path, self.read, self.update = path, read, update

    def shown(self) -> dict:
        return {"file": self.path, "read": self.read.shown(), "update": self.update.shown()}


def parse_db_file(data: bytes, path: str, kind: str = "mysql",
                  warn=lambda m: None) -> DbSettings:
    """vpopmail.mysql / vpopmail.pgsql: `host|port-or-socket|user|password|database` lines.

    As vpopmail: a line whose first byte is '#' and an empty line are skipped; the first data
    line is the read server, the second (mysql only) the update server, the rest ignored.
    Unlike vpopmail, every field must be there and non-empty (mysql) and no sixth field may
    follow: vpopmail's tokenizer silently shifts the fields then (`h|0|u||db` makes the password
    "db"), and a `|` in a password cannot be written.  CRLF line ends are accepted (the C tools
    would take the `\\r` into the database name) with a warning.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    servers: list[DbServer] = []
    crlf = False
    for n, raw in enumerate(lines, 1):
        if raw.startswith(b"#") or raw == b"":
            continue
        if len(raw) + 1 > _LINE_MAX:
            raise ConfigError(f"{path} line {n}: longer than {_LINE_MAX} bytes (vpopmail would split it)")
        if raw.endswith(b"\r"):
            raw, crlf = raw[:-1], True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path} line {n}: not UTF-8") from None
        parts = text.split("|")
        if len(parts) != 5:
            extra = " (a '|' inside a field cannot be written)" if len(parts) > 5 else ""
            raise ConfigError(f"{path} line {n}: {len(parts)} fields, want 5: "
                              f"host|port|user|password|database{extra}")
        host, port, user, password, database = parts
        if kind == "mysql":
            for name, value in zip(FIELDS, parts, strict=True):
                if value == "":
                    raise ConfigError(f"{path} line {n}: empty {name} field (vpopmail's tools cannot read "
                                      f"an empty field: they would shift the fields after it)")
        else:  # vpgsql.c: empty fields take defaults
            host, port, user, database = host or "localhost", port or "0", user or "postgres", database or "vpopmail"
        socket = None
        if port.startswith("/"):
            socket, port_no = port, 0
        elif port.isascii() and port.isdigit() and int(port) <= 65535:
            port_no = int(port)
        else:
            raise ConfigError(f"{path} line {n}: bad port {port!r} (a number, 0 for the default, or a socket path)")
        servers.append(DbServer(host, port_no, socket, user, password, database))
        if len(servers) == (2 if kind == "mysql" else 1):
            break
    if not servers:
        raise ConfigError(f"{path}: no valid settings (want host|port|user|password|database)")
    if crlf:
        warn(f"Warning: {path} has CRLF line ends; vpopmail's own tools read the database name with a '\\r'")
    return DbSettings(path, servers[0], servers[-1])


def db_file_path(vpopmail_dir: str, module: str) -> str:
    """Where the site's vpopmail (and vcli, unless `db_file` says otherwise) reads the settings."""
    return os.path.join(vpopmail_dir, "etc", "vpopmail.mysql" if module == "mysql" else "vpopmail.pgsql")


def read_db_file(vpopmail_dir: str, module: str, warn=lambda m: None, path: str | None = None) -> DbSettings:
    """The connection settings of an SQL site (from `path` when given); warns when a file holding
    a password is readable by everyone (vpopmail installs it 0640 vpopmail:vchkpw)."""
    path = path or db_file_path(vpopmail_dir, module)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: can't read the database settings: {exc.strerror}") from None
    db = parse_db_file(data, path, module, warn)
    mode = stat.S_IMODE(st.st_mode)
    if (db.read.password or db.update.password) and mode & 0o004:
        warn(f"Warning: {path} holds a database password and is readable by everyone (mode {mode:04o}); "
             f"chmod 640 {path}")
    return db
