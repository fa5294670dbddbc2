"""The MySQL / MariaDB auth module: vmysql.c's tables through mysqlclient (`MySQLdb`).

mysqlclient wraps MariaDB Connector/C / libmysqlclient, the library the C tools link: the same
connection behaviour, and an import of ~5 ms against PyMySQL's ~55 ms on the lookup path (whose
start-up budget is twice `python -c pass`): the module talks to its C layer through
mysqlconn.py, not through MySQLdb's Python classes.  It is imported here only, so a cdb site
never loads it.  Everything not specific to the server is vcli/store/auth/sql.py.

The session is utf8mb4 (as Connector/C connects, sql.md §10 item 2) with
`sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'`: whatever the server's default, a value
too long or not valid for its column fails the statement instead of being cut or mangled (the
Store checks widths before the query anyway), and ANSI_QUOTES / NO_BACKSLASH_ESCAPES of a
server default cannot change how a statement reads.
"""

from __future__ import annotations

from .sql import SqlAuth

SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"

# the layouts vpopmail creates (sql.md §3.1-§3.8); MariaDB normalises the spelling
_USERS_MANY = ("pw_name VARCHAR(64) NOT NULL, pw_domain VARCHAR(96) NOT NULL, pw_passwd VARCHAR(128), "
               "pw_uid INT, pw_gid INT, pw_gecos VARCHAR(64), pw_dir VARCHAR(160), pw_shell VARCHAR(20), "
               "{clear}PRIMARY KEY (pw_name, pw_domain)")
_USERS_ONE = ("pw_name VARCHAR(64) NOT NULL, pw_passwd VARCHAR(128), pw_uid INT, pw_gid INT, "
              "pw_gecos VARCHAR(64), pw_dir VARCHAR(160), pw_shell VARCHAR(20), {clear}PRIMARY KEY (pw_name)")
DDL = {
    "dir_control": ("domain VARCHAR(96) NOT NULL, cur_users INT, level_cur INT, level_max INT, "
                    "level_start0 INT, level_start1 INT, level_start2 INT, level_end0 INT, level_end1 INT, "
                    "level_end2 INT, level_mod0 INT, level_mod1 INT, level_mod2 INT, level_index0 INT, "
                    "level_index1 INT, level_index2 INT, the_dir VARCHAR(160), PRIMARY KEY (domain)"),
    "lastauth": ("user VARCHAR(32) NOT NULL, domain VARCHAR(96) NOT NULL, remote_ip VARCHAR(39) NOT NULL, "
                 "timestamp INT DEFAULT 0 NOT NULL, PRIMARY KEY (user, domain)"),
    "aliasdomains": "alias VARCHAR(100) NOT NULL, domain VARCHAR(100) NOT NULL, PRIMARY KEY (alias)",
    "limits": ("domain VARCHAR(96) PRIMARY KEY, maxpopaccounts INT(10) NOT NULL DEFAULT -1, "
               "maxaliases INT(10) NOT NULL DEFAULT -1, maxforwards INT(10) NOT NULL DEFAULT -1, "
               "maxautoresponders INT(10) NOT NULL DEFAULT -1, maxmailinglists INT(10) NOT NULL DEFAULT -1, "
               "diskquota BIGINT UNSIGNED NOT NULL DEFAULT 0, maxmsgcount BIGINT UNSIGNED NOT NULL DEFAULT 0, "
               "defaultquota BIGINT UNSIGNED NOT NULL DEFAULT 0, "
               "defaultmaxmsgcount BIGINT UNSIGNED NOT NULL DEFAULT 0, "
               "disable_pop TINYINT(1) NOT NULL DEFAULT 0, disable_imap TINYINT(1) NOT NULL DEFAULT 0, "
               "disable_dialup TINYINT(1) NOT NULL DEFAULT 0, "
               "disable_passwordchanging TINYINT(1) NOT NULL DEFAULT 0, "
               "disable_webmail TINYINT(1) NOT NULL DEFAULT 0, disable_relay TINYINT(1) NOT NULL DEFAULT 0, "
               "disable_smtp TINYINT(1) NOT NULL DEFAULT 0, disable_spamassassin TINYINT(1) NOT NULL DEFAULT 0, "
               "delete_spam TINYINT(1) NOT NULL DEFAULT 0, disable_maildrop TINYINT(1) NOT NULL DEFAULT 0, "
               "perm_account TINYINT(2) NOT NULL DEFAULT 0, perm_alias TINYINT(2) NOT NULL DEFAULT 0, "
               "perm_forward TINYINT(2) NOT NULL DEFAULT 0, perm_autoresponder TINYINT(2) NOT NULL DEFAULT 0, "
               "perm_maillist TINYINT(4) NOT NULL DEFAULT 0, perm_quota TINYINT(2) NOT NULL DEFAULT 0, "
               "perm_defaultquota TINYINT(2) NOT NULL DEFAULT 0"),
    "valias": ("id INT(11) PRIMARY KEY AUTO_INCREMENT, alias VARCHAR(32) NOT NULL, domain VARCHAR(96) NOT NULL, "
               "valias_line TEXT NOT NULL, INDEX (alias, domain)"),
    "ip_alias_map": "ip_addr VARCHAR(39) NOT NULL, domain VARCHAR(96), PRIMARY KEY (ip_addr)",
}

# server error numbers (mysqld_error.h / errmsg.h) by what they mean to us
_DOWN = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2012, 2013, 2026, 2055, 4031}
_DENIED = {1044, 1045, 1142, 1143, 1227, 1370, 1698}
_KINDS = {1062: "duplicate", 1406: "too_long", 1366: "bad_value", 1146: "no_table", 1049: "unknown_db"}
_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


class MysqlDialect:
    name = "mysql"
    label = "MySQL"
    has_aliasdomains = True  # SQL_ALIASDOMAINS exists for vmysql.c only (sql.md §6)
    has_limits = True  # so does ENABLE_MYSQL_LIMITS (§1)
    lastauth_user = "user"
    # (table, column, character width) of some tables of the database: `+ " IN (%s, ...)"`
    columns_query = ("SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS "
                     "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME")

    _errors = None

    def errors(self):
        """The driver's error base class (imported on first use)."""
        if self._errors is None:
            from .mysqlconn import Error

            MysqlDialect._errors = Error
        return self._errors

    # --- identifiers and statement shapes ------------------------------------------------------

    @staticmethod
    def quote(name: str) -> str:
        """The one way a table (or database) name enters SQL text: checked, then back-quoted."""
        from ...errors import DatabaseError

        if not name or len(name) > 64 or not set(name) <= _IDENT_OK:
            raise DatabaseError(f"{name!r} cannot be a MySQL table name (letters, digits, '_', '$'; at most 64)")
        return f"`{name}`"

    def ddl(self, kind: str, s) -> str:
        if kind == "users":
            clear = "pw_clear_passwd VARCHAR(128), " if s.clear_passwords else ""
            return (_USERS_MANY if s.many_domains else _USERS_ONE).format(clear=clear)
        return DDL[kind]

    @staticmethod
    def create_table(qname: str, columns: str, temporary: bool = False) -> str:
        kind = "TEMPORARY TABLE" if temporary else "TABLE"
        return f"CREATE {kind} IF NOT EXISTS {qname} ({columns}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

    def upsert(self, table: str, cols: list[str], keys: list[str], n: int = 1) -> str:
        """vpopmail's REPLACE INTO (the row with the same key is replaced whole)."""
        row = "(" + ", ".join(["%s"] * len(cols)) + ")"
        return f"REPLACE INTO {self.quote(table)} ({', '.join(cols)}) VALUES " + ", ".join([row] * n)

    def insert_ignore(self, table: str, cols: list[str], keys: list[str]) -> str:
        return f"INSERT IGNORE INTO {self.quote(table)} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"

    @staticmethod
    def begin(cur) -> None:
        cur.execute("START TRANSACTION")

    # --- connections -----------------------------------------------------------------------------

    @staticmethod
    def where(server) -> str:
        if server.socket:
            return server.socket
        if server.host == "localhost" and not server.port:
            return "localhost (the default socket)"
        return f"{server.host}:{server.port or 3306}"

    def connect(self, server, create_db: bool = False):
        """A session as vmysql.c opens one (2 s connect timeout), utf8mb4, strict, autocommit on
        (a change is an explicit transaction).  The update connection creates the database when
        it can log in but not select it (sql.md §2.4)."""
        from .mysqlconn import Connection, OperationalError

        kw = {"user": server.user, "password": server.password, "charset": "utf8mb4", "connect_timeout": 2,
              "init_command": f"SET SESSION sql_mode = '{SQL_MODE}'"}
        if server.socket:
            kw.update(host="localhost", unix_socket=server.socket)
        else:
            kw["host"] = server.host
            if server.port:
                kw["port"] = server.port
        try:
            return Connection(database=server.database, **kw)
        except OperationalError as exc:
            if not (create_db and exc.args[0] == 1049):
                raise
        conn = Connection(**kw)  # logged in, no database yet: make it
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {self.quote(server.database)}")
            conn.select_db(server.database)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def alive(conn) -> bool:
        try:
            conn.ping()
            return True
        except Exception:  # noqa: BLE001 - any failure: reopen
            return False

    @staticmethod
    def stream_cursor(conn):
        """A server-side (unbuffered) cursor: rows arrive as they are fetched."""
        return conn.cursor(stream=True)

    @staticmethod
    def end_stream(conn, cur) -> None:
        cur.close()

    def classify(self, exc) -> tuple[str, str]:
        """(kind, message): down, denied, duplicate, too_long, bad_value, no_table, unknown_db, other."""
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        msg = str(args[1]) if len(args) > 1 else str(exc)
        if code in _DOWN:
            return "down", msg
        if code in _DENIED:
            return "denied", msg
        return _KINDS.get(code, "other"), msg


def preload_driver() -> None:
    """The daemon imports the driver before it drops its privileges (the venv may be unreadable
    afterwards): everything a connection, a cursor and a streamed listing load on first use."""
    from . import mysqlconn  # noqa: F401 - the C layer and the constants it converts by

    MysqlDialect().errors()


class MysqlAuth(SqlAuth):
    """vmysql.c's module: SqlAuth over the MySQL dialect."""

    def __init__(self, disk):
        super().__init__(disk, MysqlDialect())
