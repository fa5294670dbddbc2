"""The PostgreSQL auth module: vpopmail's vpgsql.c schema over psycopg 3 (spec/sql.md §2.5, §7).

The statements are the shared SQL module's (vcli/store/auth/sql.py); this file is what differs
on PostgreSQL: the connection (`vpopmail.pgsql`, one server for everything), the DDL, the
upsert and insert-ignore forms, identifier quoting and the SQLSTATE classes of errors.

The schema is vpgsql.h's, fixed where the C module cannot work on a default server (sql.md §7
and §8 item 18), each fix a superset a C tool still reads and writes:

* a table is created only when it is missing (a `DO` block testing `to_regclass`), with the
  name double-quoted: vpgsql.c sends `CREATE TABLE name` unquoted every time, so a second
  vadddomain fails and the per-domain table of a domain starting with a digit, `123_com`, is a
  syntax error; and `CREATE TABLE IF NOT EXISTS` would need the CREATE right on the schema even
  when the table exists, which a role that only reads and writes rows lacks;
* `remote_ip` (lastauth) and `ip_addr` (ip_alias_map) are varchar(39), not 18: an IPv6
  address does not fit 18;
* valias gets its (alias, domain) index (vpgsql.c's `create index ... ( (alias, domain) )` is
  a syntax error, so its table has none);
* aliasdomains and limits, which configure offers for MySQL only, get PostgreSQL layouts for
  a site that turns them on by hand (limits' `perm_maillist` is a smallint: the combined
  value, up to 511, overflows MySQL's TINYINT);
* the many-domains table without CLEAR_PASS gets an index on (pw_domain, pw_name): the key is
  (pw_name, pw_domain), so a domain listing would otherwise scan every domain's users.

Values are always bound parameters (vpgsql.c backslash-escapes them, which under
`standard_conforming_strings=on`, the default since 9.1, stores `a\\b` doubled and turns a
quote into a syntax error); lastauth's user column is `userid`, as vpgsql.c creates it (its
user delete compares the SQL keyword `user` and so never removes the row; ours does).

psycopg is imported on the first connection only: a cdb site never loads it.
"""

from __future__ import annotations

from .sql import SqlAuth

NAME = "pgsql"
LABEL = "PostgreSQL"
PLACEHOLDER = "%s"  # psycopg's server-side binding placeholder (values never enter the text)
MAX_IDENTIFIER = 63  # NAMEDATALEN - 1 bytes: PostgreSQL silently truncates longer names
DEFAULT_PORT = 5432

# --- identifiers ---------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """"name" with embedded quotes doubled; refuses what PostgreSQL would truncate or reject
    (a longer name would be cut to 63 bytes, so two long domains could share one table)."""
    raw = name.encode("utf-8", "surrogateescape")
    if not name or b"\0" in raw or len(raw) > MAX_IDENTIFIER:
        from ...errors import DatabaseError

        raise DatabaseError(f"{name!r} cannot be a PostgreSQL table name (1 to {MAX_IDENTIFIER} bytes, no NUL: "
                            "a longer name would be cut, and two domains could share a table)")
    return '"' + name.replace('"', '""') + '"'


# --- DDL -----------------------------------------------------------------------------------------

_USER_COLUMNS = ("pw_passwd varchar(128), pw_uid int4, pw_gid int4, pw_gecos varchar(64), "
                 "pw_dir varchar(160), pw_shell varchar(20)")

_DIR_CONTROL = ("domain varchar(96) NOT NULL, cur_users int4, level_cur int4, level_max int4, "
                "level_start0 int4, level_start1 int4, level_start2 int4, "
                "level_end0 int4, level_end1 int4, level_end2 int4, "
                "level_mod0 int4, level_mod1 int4, level_mod2 int4, "
                "level_index0 int4, level_index1 int4, level_index2 int4, the_dir varchar(160), "
                "PRIMARY KEY (domain)")

# vpgsql.h's layout with remote_ip widened from 18 to 39 (IPv6)
_LASTAUTH = ("userid varchar(32) NOT NULL, domain varchar(96) NOT NULL, remote_ip varchar(39) NOT NULL, "
             "timestamp bigint DEFAULT 0 NOT NULL, PRIMARY KEY (userid, domain)")

_VALIAS = "alias varchar(32) NOT NULL, domain varchar(96) NOT NULL, valias_line varchar(160) NOT NULL"

_IP_ALIAS_MAP = "ip_addr varchar(39) NOT NULL, domain varchar(96), PRIMARY KEY (ip_addr)"

# vmysql.h's layout (configure has no pgsql variant): alias is the key, one real domain per alias
_ALIASDOMAINS = "alias varchar(100) NOT NULL, domain varchar(100) NOT NULL, PRIMARY KEY (alias)"

# vmysql.h's limits, in PostgreSQL types: INT -> integer, BIGINT UNSIGNED -> bigint >= 0,
# TINYINT -> smallint (perm_maillist carries users<<3 | moderators<<6: up to 511)
_LIMIT_INTS = ("maxpopaccounts", "maxaliases", "maxforwards", "maxautoresponders", "maxmailinglists")
_LIMIT_BIGS = ("diskquota", "maxmsgcount", "defaultquota", "defaultmaxmsgcount")
_LIMIT_FLAGS = ("disable_pop", "disable_imap", "disable_dialup", "disable_passwordchanging", "disable_webmail",
                "disable_relay", "disable_smtp", "disable_spamassassin", "delete_spam", "disable_maildrop",
                "perm_account", "perm_alias", "perm_forward", "perm_autoresponder", "perm_maillist",
                "perm_quota", "perm_defaultquota")
_LIMITS = ", ".join(["domain varchar(96) NOT NULL PRIMARY KEY"]
                    + [f"{c} integer NOT NULL DEFAULT -1" for c in _LIMIT_INTS]
                    + [f"{c} bigint NOT NULL DEFAULT 0 CHECK ({c} >= 0)" for c in _LIMIT_BIGS]
                    + [f"{c} smallint NOT NULL DEFAULT 0" for c in _LIMIT_FLAGS])


def user_table_layout(many_domains: bool, clear_passwords: bool) -> str:
    """vpgsql.h's TABLE_LAYOUT for the build (many-domains + CLEAR_PASS keys on (pw_domain, pw_name))."""
    cols = "pw_name varchar(64) NOT NULL, " + ("pw_domain varchar(96) NOT NULL, " if many_domains else "")
    cols += _USER_COLUMNS + (", pw_clear_passwd varchar(128)" if clear_passwords else "")
    if not many_domains:
        return cols + ", PRIMARY KEY (pw_name)"
    return cols + (", PRIMARY KEY (pw_domain, pw_name)" if clear_passwords else ", PRIMARY KEY (pw_name, pw_domain)")


TABLES = {
    "dir_control": _DIR_CONTROL,
    "lastauth": _LASTAUTH,
    "valias": _VALIAS,
    "ip_alias_map": _IP_ALIAS_MAP,
    "aliasdomains": _ALIASDOMAINS,
    "limits": _LIMITS,
}

# --- statements that differ from MySQL ----------------------------------------------------------


def upsert(table: str, columns, key, n: int = 1) -> str:
    """MySQL's REPLACE INTO as PostgreSQL says it, for n rows (vpgsql.c: UPDATE then INSERT, or
    BEGIN; DELETE; INSERT; END)."""
    cols = ", ".join(columns)
    row = "(" + ", ".join([PLACEHOLDER] * len(columns)) + ")"
    rest = [c for c in columns if c not in key]
    action = ("DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)) if rest else "DO NOTHING"
    return (f"INSERT INTO {quote_ident(table)} ({cols}) VALUES {', '.join([row] * n)} "
            f"ON CONFLICT ({', '.join(key)}) {action}")


def insert_ignore(table: str, columns, keys=None, n: int = 1) -> str:
    """MySQL's INSERT IGNORE (an existing row for the key stays as it is)."""
    row = "(" + ", ".join([PLACEHOLDER] * len(columns)) + ")"
    target = f" ({', '.join(keys)})" if keys else ""
    return (f"INSERT INTO {quote_ident(table)} ({', '.join(columns)}) VALUES {', '.join([row] * n)} "
            f"ON CONFLICT{target} DO NOTHING")


# --- the connection ------------------------------------------------------------------------------


def where(server) -> str:
    """host:port (or the socket directory) of a DbServer, for error messages."""
    if server.socket:
        return server.socket
    return f"{server.host}:{server.port or DEFAULT_PORT}"


def connect_args(server, timeout: float = 5.0) -> dict:
    """psycopg.connect keywords for one vpopmail.pgsql line.  psycopg quotes each value in the
    conninfo it builds, so blanks and quotes in a password work (vpgsql.c pastes them unquoted
    into `host=%s port=%d ...`); port 0 means the default port, as for MySQL (vpgsql.c sends
    `port=0`); a port field naming a directory is the Unix-socket directory."""
    args = {"host": server.socket or server.host, "user": server.user, "dbname": server.database,
            "connect_timeout": max(1, int(round(timeout))), "client_encoding": "UTF8",
            "application_name": "vcli", "autocommit": True}
    if server.port:
        args["port"] = server.port
    if server.password:
        args["password"] = server.password
    return args


def connect(server, create_db: bool = False, timeout: float = 5.0):
    """A psycopg connection in autocommit mode: a read is one statement, a change is the explicit
    transaction `begin` opens (so a failed read never leaves an aborted transaction behind, and
    an idle daemon holds no snapshot).  `create_db` is ignored: vpgsql.c never creates one.

    The session speaks UTF-8, except to a SQL_ASCII database (what initdb makes under the C
    locale, and what many vpgsql.c sites run): the server stores bytes unchecked there, rows the
    C tools wrote may hold latin1, and a UTF-8 session would fail every read of such a row.  Then
    the session stays SQL_ASCII: text comes back as bytes (decoded as the cdb module decodes
    vpasswd) and goes out as UTF-8."""
    import psycopg

    conn = psycopg.connect(**connect_args(server, timeout))
    if conn.info.parameter_status("server_encoding") == "SQL_ASCII":
        conn.execute("SET client_encoding = 'SQL_ASCII'")
    return conn


def preload_driver() -> None:
    """The daemon imports the driver before it drops its privileges (the venv may be unreadable
    afterwards).  psycopg loads everything a connection, a query, a server-side cursor and an
    error need at import (checked: a session against a real server imports nothing more)."""
    import psycopg

    psycopg.pq.version()
    del psycopg


# SQLSTATE classes (PostgreSQL appendix A) -> what the shared module does about them
_KINDS = {
    "08": "down",  # connection exception
    "57P01": "down", "57P02": "down", "57P03": "down",  # shutdown, cannot connect now
    "53300": "down",  # too many connections
    "28": "denied",  # invalid authorization (28P01: bad password)
    "42501": "denied",  # insufficient privilege (one table refused)
    "3D000": "denied",  # no such database (vpopmail never creates a pgsql database)
    "42P01": "no_table",  # undefined table: create it, as vpopmail does
    "23505": "duplicate",  # unique violation
    "22001": "too_long",  # string data right truncation
    "22021": "bad_value", "22P05": "bad_value",  # not in the database's encoding
}
_BUSY = ("too many connections", "starting up", "shutting down", "in recovery mode", "terminating connection")


def error_kind(exc: BaseException) -> str | None:
    """What a driver exception means, in sql.py's kinds: down, denied, no_table, duplicate,
    too_long, bad_value; "other" for another server error; None if it is not a driver error."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return None
    state = getattr(exc, "sqlstate", None) or ""
    if not state:
        if not isinstance(exc, psycopg.OperationalError):
            return "other"
        # a failed connect carries no SQLSTATE (libpq has no result to take it from): a FATAL
        # from the server is a refused login or database, unless the server is not taking any
        text = str(exc)
        if "FATAL:" in text and not any(x in text for x in _BUSY):
            return "denied"
        return "down"  # refused, timed out, closed, starting up, too many connections
    return _KINDS.get(state) or _KINDS.get(state[:2]) or "other"


def error_text(exc: BaseException) -> str:
    """The server's one-line message; for a failed connect, libpq's reason without the
    "connection to server at ..., port ... failed:" preamble (the caller names the server)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc)
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    line = lines[0] if lines else type(exc).__name__
    if not primary and " failed: " in line:
        line = line.rsplit(" failed: ", 1)[1]
    for prefix in ("FATAL:", "ERROR:"):
        if line.startswith(prefix):
            line = line[len(prefix):].strip()
    return line


# --- the dialect object of vcli/store/auth/sql.py -------------------------------------------------


class PgsqlDialect:
    """What SqlAuth asks of a server kind, for PostgreSQL (see the module docstring)."""

    name = NAME
    label = LABEL
    lastauth_user = "userid"  # vpgsql.h's column (vmysql.h: `user`)
    has_aliasdomains = True  # not in vpgsql.c; kept when a site turns sql_aliasdomains on by hand
    has_limits = True  # the same for mysql_limits (ENABLE_MYSQL_LIMITS)
    # vpgsql.h's valias has no id (vmysql.h's AUTO_INCREMENT): the lines in the order they were
    # stored, as vpgsql.c's unordered SELECT returns them (valias rows are never updated in place)
    valias_order = "ctid"
    perm_maillist_max = 32767  # a smallint: vpopmail's combined value (up to 511) fits
    # (table, column, character width) of some tables of the schema: `+ " IN (%s, ...)"`
    columns_query = ("SELECT table_name, column_name, character_maximum_length FROM information_schema.columns "
                     "WHERE table_schema = current_schema() AND table_name")

    quote = staticmethod(quote_ident)
    where = staticmethod(where)
    upsert = staticmethod(upsert)
    insert_ignore = staticmethod(insert_ignore)

    @staticmethod
    def connect(server, create_db: bool = False):
        return connect(server, create_db)

    @staticmethod
    def errors() -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)

    @staticmethod
    def classify(exc: BaseException) -> tuple[str, str]:
        return error_kind(exc) or "other", error_text(exc)

    @staticmethod
    def alive(conn) -> bool:
        try:
            conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "reopen it"
            return False

    @staticmethod
    def begin(cur) -> None:
        """The connection is autocommit: a change opens its transaction explicitly."""
        cur.execute("BEGIN")

    @staticmethod
    def ddl(kind: str, settings) -> str:
        """The column layout of a table ("users": the user table of the site's build)."""
        if kind == "users":
            return user_table_layout(settings.many_domains, settings.clear_passwords)
        return TABLES[kind]

    @staticmethod
    def create_table(quoted: str, layout: str, temporary: bool = False) -> str:
        """The table (with the indexes its layout needs) if it does not exist yet -- and nothing
        at all if it does.  Not `CREATE TABLE IF NOT EXISTS`: PostgreSQL checks the CREATE right
        on the schema before it looks, so on a site whose tables belong to another role and whose
        vpopmail role may only read and write rows (PostgreSQL 15 no longer lets every role create
        in `public`) every command would fail; and an index is never added to a table vcli did
        not make.  Two processes creating it at once: the loser's duplicate is ignored.
        `temporary` (a dry run): a TEMPORARY table, gone with the session."""
        out = [f"CREATE {'TEMPORARY TABLE' if temporary else 'TABLE'} {quoted} ( {layout} )"]
        raw = quoted[1:-1].replace('""', '"')
        if layout == user_table_layout(True, False):
            out.append(f"CREATE INDEX {quote_ident(raw[:MAX_IDENTIFIER - 14] + '_pw_domain_idx')} "
                       f"ON {quoted} (pw_domain, pw_name)")
        elif layout == _VALIAS:
            out.append(f"CREATE INDEX valias_idx ON {quoted} (alias, domain)")
        name = quoted.replace("'", "''")
        return (f"DO $vcli$ BEGIN IF to_regclass('{name}') IS NULL THEN {'; '.join(out)}; END IF; "
                "EXCEPTION WHEN duplicate_table OR unique_violation THEN NULL; END $vcli$")

    @staticmethod
    def stream_cursor(conn):
        """A server-side cursor (DECLARE ... FETCH): it needs a transaction of its own."""
        conn.execute("BEGIN")
        return conn.cursor(name="vcli_getall")

    @staticmethod
    def end_stream(conn, cur) -> None:
        cur.close()
        conn.execute("COMMIT")


dialect = PgsqlDialect()


class PgsqlAuth(SqlAuth):
    """vpgsql.c's module: SqlAuth over the PostgreSQL dialect."""

    def __init__(self, disk):
        super().__init__(disk, PgsqlDialect())
