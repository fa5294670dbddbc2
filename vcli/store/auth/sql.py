"""The SQL auth modules' shared half: vpopmail's tables (spec/sql.md §3, §4) over a small dialect.

`SqlAuth` implements the AuthModule interface once, for MySQL and PostgreSQL; what differs
between the servers -- the driver and how it connects, identifier quoting, the upsert and
insert-ignore spellings, the DDL options, how an error is classified -- is the dialect object
(vcli/store/auth/mysql.py, pgsql.py), so a new server is a dialect and a connect function.

Every value reaches the server as a bound parameter; table names are validated and quoted by
the dialect's one `quote()`.  Every change is one transaction on the update connection: the
domain's dir_control row read FOR UPDATE (that row serialises the writers of a domain, as the
vpasswd lock does on cdb), the rows, then the trees made under temp names *before* COMMIT and
renamed in after it.  A failure rolls back and removes the trees: nothing half-written.

The dialect contract (MysqlDialect in mysql.py is the reference; every statement uses `%s`
placeholders, which MySQLdb and psycopg both take):

* attributes: `name` ("mysql"), `label` ("MySQL", for messages), `has_aliasdomains`,
  `has_limits` (MySQL-only build options), `lastauth_user` (the lastauth user column: `user`,
  vpgsql's `userid`), `columns_query` (table, column, character width; `+ " IN (%s, ...)"`);
* `errors()` the driver's base exception class, imported on first use; `classify(exc)` ->
  (kind, message), kind one of down, denied, duplicate, too_long, bad_value, no_table, other;
* `quote(name)` the only way a table/database name enters SQL text (validated, quoted);
  `ddl(kind, settings)` the column list of a table ("users" for the user table);
  `create_table(qname, columns, temporary=False)`; `upsert(table, cols, keys, n=1)` (n rows);
  `insert_ignore(table, cols, keys)`;
* `connect(server, create_db=False)` a connection in autocommit mode (a change is an explicit
  transaction: `begin(cur)`, then the connection's commit/rollback); `alive(conn)`;
  `stream_cursor(conn)` a server-side cursor and `end_stream(conn, cur)`; `where(server)` the
  server as a message names it (host:port or the socket).

Connections follow vpopmail.mysql (sql.md §2.3): the update server (line 2, else line 1) for
every change and -- as vpopmail without replication -- single-record reads; line 1 for the
listings, on a connection of their own (they stream through a server-side cursor, so a million
rows are never one list, and the caller may look other things up meanwhile); with
MYSQL_REPLICATION line 1 also serves the single-record reads.
"""

from __future__ import annotations

import os
import time
from _thread import _local

from ...errors import (
    BadCharacter,
    DatabaseDenied,
    DatabaseError,
    DatabaseUnavailable,
    TooLong,
    UserExists,
    UserNotFound,
)
from ...model import AssignEntry, NewUser, VUser
from .. import fsutil, intent
from .. import store as _disk
from ..dircontrol import DirControl, place_new_users
from ..fsutil import Owner, contextmanager, discard, fsync_dir, journal

TYPE_CHECKING = False  # typing, threading, contextlib and collections stay off the lookup path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# dir_control's 16 value columns, in vpopmail's order (sql.md §3.3)
DC_COLS = ("cur_users", "level_cur", "level_max", "level_start0", "level_start1", "level_start2",
           "level_end0", "level_end1", "level_end2", "level_mod0", "level_mod1", "level_mod2",
           "level_index0", "level_index1", "level_index2", "the_dir")
# limits columns (sql.md §3.6) -> Limits fields; perm_maillist also carries the users/moderators bits
LIMIT_COLS = (("maxpopaccounts", "maxpopaccounts"), ("maxaliases", "maxaliases"), ("maxforwards", "maxforwards"),
              ("maxautoresponders", "maxautoresponders"), ("maxmailinglists", "maxmailinglists"),
              ("diskquota", "quota"), ("maxmsgcount", "maxmsgcount"), ("defaultquota", "default_quota"),
              ("defaultmaxmsgcount", "default_maxmsgcount"), ("disable_pop", "disable_pop"),
              ("disable_imap", "disable_imap"), ("disable_dialup", "disable_dialup"),
              ("disable_passwordchanging", "disable_password_changing"), ("disable_webmail", "disable_webmail"),
              ("disable_relay", "disable_external_relay"), ("disable_smtp", "disable_smtp"),
              ("disable_spamassassin", "disable_spamassassin"), ("delete_spam", "delete_spam"),
              ("disable_maildrop", "disable_maildrop"), ("perm_account", "perm_account"),
              ("perm_alias", "perm_alias"), ("perm_forward", "perm_forward"),
              ("perm_autoresponder", "perm_autoresponder"), ("perm_maillist", "perm_maillist"),
              ("perm_quota", "perm_quota"), ("perm_defaultquota", "perm_defaultquota"))
BATCH = 500  # rows per multi-row INSERT / per IN (...) list
STREAM = 1000  # rows fetched at a time from a listing's server-side cursor
IDLE_PING = 30.0  # a connection unused this long is pinged (and reopened) before its next use

# what vpopmail's length checks call each column (errors.py texts) and their codes
_FIELD = {"pw_name": ("user name", -25), "user": ("user name", -25), "pw_domain": ("domain name", -26),
          "domain": ("domain name", -26), "alias": ("domain name", -26), "pw_passwd": ("password", -27),
          "pw_gecos": ("gecos", -28), "pw_shell": ("quota", -29), "pw_dir": ("dir", -30),
          "pw_clear_passwd": ("clear password", -31), "userid": ("user name", -25), "remote_ip": ("ip", -34), "ip_addr": ("ip", -34), "the_dir": ("dir", -30)}


def munch(domain: str) -> str:
    """vauth_munch_domain: the per-domain table name (every '.' and '-' becomes '_', sql.md §3.1)."""
    return domain.replace(".", "_").replace("-", "_")



OVERLAP = 1000  # new users from which an add sends its INSERTs while the trees are being built


class _PerThread(_local):
    """One thread's connections (role -> connection), their last use, and its listing state."""

    def __init__(self):
        self.conns: dict[str, object] = {}
        self.used: dict[str, float] = {}
        self.streaming = False


class SqlAuth:
    """User records in vpopmail's tables.  `disk` is the Store; `dialect` says how to talk to the server."""

    lastauth_by_domain = True  # the lastauth row is keyed by (user, domain): the Store passes the entry

    def __init__(self, disk, dialect):
        self.disk = disk
        self.d = dialect
        self.name = dialect.name
        s = disk.s
        db = getattr(s, "db", None)
        if db is None:
            from ...site import read_db_file

            db = read_db_file(s.vpopmail_dir, dialect.name, disk.warn, path=getattr(s, "db_file", None))
        self.db = db
        self._t = _PerThread()
        self._ready: set[str] = set()  # tables known to exist (CREATE TABLE IF NOT EXISTS done)
        self._widths: dict[str, dict[str, int]] = {}
        self._pid = os.getpid()
        self._inherited: list = []

    # The connections are per thread: the daemon's listener runs commands in threads, and a
    # driver connection (MySQLdb, psycopg) must not be used by two at once.
    @property
    def _conns(self) -> dict:
        return self._t.conns

    @property
    def _used(self) -> dict:
        return self._t.used

    @property
    def _streaming(self) -> bool:
        """This thread's listing connection is in the middle of a result."""
        return self._t.streaming

    @_streaming.setter
    def _streaming(self, value: bool) -> None:
        self._t.streaming = value

    @property
    def s(self):
        return self.disk.s

    # --- connections ---------------------------------------------------------------------------

    def _server(self, role: str):
        if role == "getall" or (role == "read" and self.s.mysql_replication):
            return self.db.read
        return self.db.update

    def _role(self, role: str) -> str:
        """Connections actually kept: 'update', 'getall', and 'read' only with replication."""
        return "read" if role == "read" and self.s.mysql_replication else ("update" if role == "read" else role)

    def where(self, role: str = "update") -> str:
        return self.d.where(self._server(role))

    def _conn(self, role: str):
        """The live connection of `role`, opened on first use; one unused for a while is pinged first
        (a daemon's connection may have been dropped by the server meanwhile)."""
        role = self._role(role)
        if self._pid != os.getpid():  # a forked worker never shares its parent's sockets
            # kept, never closed: closing would say goodbye to the server on the parent's socket
            self._inherited.extend(self._conns.values())
            self._conns.clear()
            self._streaming = False
            self._pid = os.getpid()
        conn = self._conns.get(role)
        now = time.monotonic()
        if conn is not None and now - self._used.get(role, now) > IDLE_PING and not self.d.alive(conn):
            self._drop(role)
            conn = None
        if conn is None:
            server = self._server(role)
            try:
                conn = self.d.connect(server, create_db=role == "update")
            except ImportError as exc:
                from . import driver_missing

                raise driver_missing(self.d.name, exc) from None
            except self.d.errors() as exc:
                raise self._translate(exc, role) from None
            self._conns[role] = conn
        self._used[role] = now
        return conn

    def _drop(self, role: str) -> None:
        conn = self._conns.pop(self._role(role), None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001, S110 - it is being thrown away
                pass

    def close(self) -> None:
        for role in list(self._conns):
            self._drop(role)

    def _translate(self, exc, role: str = "update") -> Exception:
        """A driver error as one of ours, in one line naming the server."""
        kind, msg = self.d.classify(exc)
        where = f"{self.d.label} server {self.where(role)}"
        if kind == "down":
            return DatabaseUnavailable(f"{where} unreachable: {msg}")
        if kind == "denied":
            return DatabaseDenied(f"{where}: {msg}")
        if kind == "duplicate":
            return UserExists()
        return DatabaseError(f"{where}: {msg}")

    def _read(self, role: str, fn):
        """Run a read `fn(cursor)`; a connection found dropped is reopened and the read tried once more."""
        for attempt in (1, 2):
            conn = self._conn(role)
            try:
                cur = conn.cursor()
                try:
                    return fn(cur)
                finally:
                    cur.close()
            except self.d.errors() as exc:
                kind, _ = self.d.classify(exc)
                if kind == "down" and attempt == 1:
                    self._drop(role)
                    continue
                if kind == "no_table":
                    return None
                raise self._translate(exc, role) from None
        return None  # not reached

    @contextmanager
    def _txn(self):
        """One transaction on the update connection; rolled back on any failure, and in a dry run
        (the statements were recorded in the journal: the server checked them, nothing stays)."""
        conn = self._conn("update")
        cur = conn.cursor()
        try:
            try:
                self.d.begin(cur)
            except self.d.errors() as exc:  # dropped while idle (a daemon's connection): once more
                if self.d.classify(exc)[0] != "down":
                    raise
                self._drop("update")
                conn = self._conn("update")
                cur = conn.cursor()
                self.d.begin(cur)
            yield _Cursor(cur, self)
            if journal() is None:
                conn.commit()
            else:
                conn.rollback()
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - a dropped connection rolled back on the server
                self._drop("update")
            if isinstance(exc, self.d.errors()):
                kind, _ = self.d.classify(exc)
                if kind == "down":
                    self._drop("update")
                raise self._translate(exc) from None
            raise
        finally:
            try:
                cur.close()
            except Exception:  # noqa: BLE001, S110
                pass

    # --- tables --------------------------------------------------------------------------------

    def user_table(self, entry: AssignEntry) -> str:
        """The table holding the domain's users: `vpopmail`, or the munched domain (sql.md §3.1)."""
        return "vpopmail" if self.s.many_domains else munch(entry.real)

    def _cols(self) -> str:
        return "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell" + (
            ", pw_clear_passwd" if self.s.clear_passwords else "")

    def _dom(self, entry: AssignEntry) -> tuple[str, tuple]:
        """(' AND pw_domain = %s', (domain,)) on the shared table; nothing on a per-domain one."""
        return (" AND pw_domain = %s", (entry.real,)) if self.s.many_domains else ("", ())

    def _ensure(self, cur, table: str, kind: str | None = None) -> None:
        """CREATE TABLE IF NOT EXISTS, once per process and table (outside any transaction:
        DDL commits implicitly on MySQL).  A dry run makes a TEMPORARY table instead (gone with
        the session), so the statements after it can be checked by the server all the same."""
        if table in self._ready:
            return
        sql = self.d.create_table(self.d.quote(table), self.d.ddl(kind or table, self.s),
                                  temporary=journal() is not None)
        j = journal()
        if j is not None:
            j.note("sql", sql.replace("CREATE TEMPORARY TABLE", "CREATE TABLE", 1))
        cur.execute(sql)
        if j is None:
            self._ready.add(table)

    def ensure_tables(self, entry: AssignEntry) -> None:
        """The tables a change of this domain writes, created when missing (as vpopmail does).
        Only the missing ones: CREATE TABLE IF NOT EXISTS needs the CREATE right even for a
        table that is there, and a site's login may have no more than SELECT/INSERT/UPDATE/DELETE."""
        need = [(self.user_table(entry), "users"), ("dir_control", None)]
        if self.s.auth_logging:
            need.append(("lastauth", None))
        if self.s.sql_aliasdomains and self.d.has_aliasdomains:
            need.append(("aliasdomains", None))
        if self.has_limits_table:
            need.append(("limits", None))
        if self.s.valias:
            need.append(("valias", None))
        self._ensure_all(need)

    def _ensure_all(self, need: list[tuple[str, str | None]]) -> None:
        """One information_schema query tells which of the tables exist and their column widths;
        only the missing ones are created."""
        need = [(t, k) for t, k in need if t not in self._ready]
        if not need:
            return
        conn = self._conn("update")
        try:
            cur = conn.cursor()
            self._load_columns(cur, [t for t, _ in need])
            for table, kind in need:
                self._ensure(cur, table, kind)
            cur.close()
        except self.d.errors() as exc:
            raise self._translate(exc) from None

    def _load_columns(self, cur, tables: list[str]) -> None:
        """Widths of the tables that exist (marked ready); the others are left unknown."""
        cur.execute(self.d.columns_query + f" IN ({', '.join(['%s'] * len(tables))})", tables)
        found: dict[str, dict[str, int]] = {}
        for table, name, width in cur.fetchall():
            cols = found.setdefault(str(_text(table)), {})
            if width is not None:
                cols[str(_text(name)).lower()] = int(width)
        self._widths.update(found)
        self._ready |= set(found)

    def widths(self, table: str) -> dict[str, int]:
        """Column -> character width of an existing table (a legacy table may be narrower than
        what vpopmail creates today, sql.md §3.10); read once per process."""
        if table not in self._widths:
            self._read("update", lambda c: self._load_columns(c, [table]))
            self._widths.setdefault(table, {})
        return self._widths[table]

    def check_values(self, table: str, values: dict[str, object]) -> None:
        """Refuse before the query what the server would refuse or silently mangle: NUL, text that
        is not UTF-8, a value wider than its column (the C tools lose the lastauth row of a
        33-character name and still exit 0)."""
        widths = self.widths(table)
        for col, value in values.items():
            if not isinstance(value, str):
                continue
            label, code = _FIELD.get(col, (col, -20))
            if "\0" in value:
                raise BadCharacter(f"bad character: NUL in the {label}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadCharacter(f"bad character: the {label} is not UTF-8 text") from None
            w = widths.get(col)
            if w is not None and len(value) > w:
                raise TooLong(f"{label} too long for {table}.{col} (max={w})", code)

    # --- rows ----------------------------------------------------------------------------------

    def _user(self, row) -> VUser:
        row = [_text(x) for x in row]
        clear = (row[7] or "") if self.s.clear_passwords else None
        return VUser(row[0] or "", row[1] or "", str(row[2] if row[2] is not None else 0),
                     int(row[3] or 0), row[4] or "", row[5] or "", row[6] or "", clear)

    def _user_values(self, entry: AssignEntry, vu: VUser) -> dict[str, object]:
        v: dict[str, object] = {"pw_name": vu.name}
        if self.s.many_domains:
            v["pw_domain"] = entry.real
        v.update(pw_passwd=vu.passwd, pw_uid=_atoi(vu.uid), pw_gid=int(vu.gid), pw_gecos=vu.gecos,
                 pw_dir=vu.dir, pw_shell=vu.quota)
        if self.s.clear_passwords:
            v["pw_clear_passwd"] = vu.clear or ""
        return v

    def _dc_read(self, cur, domain: str, lock: bool) -> tuple[DirControl, bool]:
        """(counter, row exists) of dir_control row `domain` (absent: vpopmail's defaults)."""
        cur.execute(f"SELECT {', '.join(DC_COLS)} FROM {self.d.quote('dir_control')} WHERE domain = %s"
                    + (" FOR UPDATE" if lock else ""), (domain,))
        row = cur.fetchone()
        if row is None:
            return DirControl(), False
        return _dc_from_row(row), True

    def _dc_write(self, cur, domain: str, dc: DirControl) -> None:
        values = {"domain": domain, **dict(zip(DC_COLS, _dc_values(dc), strict=True))}
        self.check_values("dir_control", values)
        cur.execute(self.d.upsert("dir_control", list(values), ["domain"]), tuple(values.values()))

    def _lastauth_values(self, entry: AssignEntry, user: str, ip: str, when: int) -> dict[str, object]:
        return {self.d.lastauth_user: user, "domain": entry.real, "remote_ip": ip, "timestamp": when}

    def _lastauth_upsert(self, cols: list[str], n: int = 1) -> str:
        return self.d.upsert("lastauth", cols, [self.d.lastauth_user, "domain"], n)

    # --- the AuthModule interface: reads ---------------------------------------------------------

    def get_user(self, entry: AssignEntry, user: str) -> VUser:
        dom, params = self._dom(entry)
        sql = f"SELECT {self._cols()} FROM {self.d.quote(self.user_table(entry))} WHERE pw_name = %s{dom}"

        def one(cur):
            cur.execute(sql, (user, *params))
            return cur.fetchone()

        row = self._read("read", one)
        if row is None:
            raise UserNotFound()
        return self._user(row)

    def list_users(self, entry: AssignEntry) -> Iterator[VUser]:
        """Every user, `ORDER BY pw_name` as vuserinfo -D asks it (the server's collation decides
        the order, sql.md §4.9), streamed from a server-side cursor on the listing connection."""
        dom, params = self._dom(entry)
        sql = (f"SELECT {self._cols()} FROM {self.d.quote(self.user_table(entry))}"
               f"{' WHERE pw_domain = %s' if dom else ''} ORDER BY pw_name")
        for row in self._stream(sql, params):
            yield self._user(row)

    def _stream(self, sql: str, params: tuple) -> Iterator[tuple]:
        """The rows of a listing query, from a server-side cursor on the listing connection
        (one of its own when another listing is still being read); a dropped connection is
        opened again once; a missing table is no rows."""
        # a listing started while another is still being read gets a connection of its own
        own = self._streaming
        for attempt in (1, 2):
            try:
                if own:
                    conn = self.d.connect(self._server("getall"))
                else:
                    conn = self._conn("getall")
                cur = self.d.stream_cursor(conn)
                cur.execute(sql, params)
                break
            except self.d.errors() as exc:
                kind, _ = self.d.classify(exc)
                if own:
                    _close(locals().get("conn"))
                else:
                    self._drop("getall")
                if kind == "down" and attempt == 1:
                    continue
                if kind == "no_table":
                    return
                raise self._translate(exc, "getall") from None
        if not own:
            self._streaming = True
        done = False
        try:
            while True:
                try:
                    rows = cur.fetchmany(STREAM)
                except self.d.errors() as exc:
                    raise self._translate(exc, "getall") from None
                if not rows:
                    done = True
                    break
                yield from rows
        finally:
            if own:
                _close(conn)
            else:
                self._streaming = False
                if done:
                    self.d.end_stream(conn, cur)
                else:  # abandoned half-way: the rest of the result is not worth reading
                    self._drop("getall")

    def user_count(self, entry: AssignEntry) -> int:
        return self.dir_control(entry).cur_users

    def dir_control(self, entry: AssignEntry) -> DirControl:
        return self._dir_control_of(entry.real)

    def _dir_control_of(self, key: str) -> DirControl:
        got = self._read("read", lambda cur: self._dc_read(cur, key, False))
        return got[0] if got else DirControl()

    def lastauth(self, entry: AssignEntry | None, user: VUser) -> tuple[float, str] | None:
        """(timestamp, remote_ip) of the lastauth row; None without one (or without auth logging).
        vadduser's row has 0.0.0.0 and the creation time, as on cdb the lastauth file has."""
        if entry is None or not self.s.auth_logging:
            return None
        sql = (f"SELECT timestamp, remote_ip FROM {self.d.quote('lastauth')} "
               f"WHERE {self.d.lastauth_user} = %s AND domain = %s")

        def one(cur):
            cur.execute(sql, (user.name, entry.real))
            return cur.fetchone()

        row = self._read("read", one)
        if row is None:
            return None
        return float(row[0] or 0), _text(row[1]) or ""

    def set_lastauth(self, entry: AssignEntry, user: VUser, ip: str) -> None:
        """vchkpw's REPLACE of the lastauth row (sql.md §4.10)."""
        if not self.s.auth_logging:
            return
        self.ensure_tables(entry)
        values = self._lastauth_values(entry, user.name, ip, int(time.time()))
        self.check_values("lastauth", values)
        with self._txn() as cur:
            cur.execute(self._lastauth_upsert(list(values)), tuple(values.values()))

    # --- domains -------------------------------------------------------------------------------

    def check_new_domain(self, domain: str, others: list[str]) -> None:
        """Before vadddomain makes anything: a per-domain table name must be a valid identifier and
        not the table of another domain (`a-b.com` and `a.b.com` are both `a_b_com`)."""
        if self.s.many_domains:
            return
        table = munch(domain)
        self.d.quote(table)  # refuses a name the server cannot take
        clash = [o for o in others if o != domain and munch(o) == table]
        if clash:
            raise DatabaseError(f"{domain} and {clash[0]} would share the table {table} "
                                "(a site without MANY_DOMAINS keeps one table per domain)")

    def take_domain_dir(self, domains: str, owner: Owner, make: Callable[[str], str]) -> tuple[str, object]:
        """The domain hashing counter is dir_control row `dom_<uid>` (sql.md §4.2): read FOR UPDATE,
        advanced, the directory made, the row written, one transaction (a failure removes the dir)."""
        key = f"dom_{owner.uid if owner.uid is not None else os.geteuid()}"
        self._ensure_counter()
        ddir = None
        try:
            with self._txn() as cur:
                dc, _ = self._dc_read(cur, key, True)
                before = _dc_values(dc)
                ddir = make(dc.next_dir())
                self._dc_write(cur, key, dc)
        except BaseException:
            if ddir is not None and journal() is None:
                try:
                    os.rmdir(ddir)
                except OSError:
                    pass
            raise
        return ddir, (key, before, _dc_values(dc))

    def release_domain_dir(self, domains: str, owner: Owner, undo: object = None) -> None:
        """vdeldomain: row `dom_<uid>` one down; `undo` (a failed vadddomain): the row as it was,
        when nobody counted since."""
        key = undo[0] if undo else f"dom_{owner.uid if owner.uid is not None else os.geteuid()}"
        self._ensure_counter()
        with self._txn() as cur:
            dc, exists = self._dc_read(cur, key, True)
            if not exists:
                return
            if undo and _dc_values(dc) == undo[2]:
                dc = _dc_from_row(undo[1])
            else:
                dc.remove_one()
            self._dc_write(cur, key, dc)

    def _ensure_counter(self) -> None:
        self._ensure_one("dir_control")

    def alias_domain_added(self, real: str, alias: str) -> None:
        """SQL_ALIASDOMAINS: INSERT IGNORE INTO aliasdomains (domain, alias) (sql.md §6): a row
        already there for the alias is kept as it is, as vpopmail does."""
        if not self.d.has_aliasdomains:
            return
        self._ensure_one("aliasdomains")
        values = {"domain": real, "alias": alias}
        self.check_values("aliasdomains", values)
        with self._txn() as cur:
            cur.execute(self.d.insert_ignore("aliasdomains", list(values), ["alias"]), tuple(values.values()))

    def alias_domains_removed(self, names: list[str]) -> None:
        """vdeldomain / vdelaliasdomain: DELETE FROM aliasdomains WHERE alias = each name."""
        if not self.d.has_aliasdomains or not names:
            return
        self._ensure_one("aliasdomains")
        with self._txn() as cur:
            for name in names:
                cur.execute(f"DELETE FROM {self.d.quote('aliasdomains')} WHERE alias = %s", (name,))

    def _ensure_one(self, table: str) -> None:
        self._ensure_all([(table, None)])

    # --- ENABLE_MYSQL_LIMITS: the limits table instead of .qmailadmin-limits (sql.md §3.6, §4.11) ---

    @property
    def has_limits_table(self) -> bool:
        return self.s.mysql_limits and self.d.has_limits

    def limits_get(self, entry: AssignEntry):
        """The domain's row as Limits, None without one (the Store then reads vlimits.default).
        Each column is read as its name says (vmysql.c reads three perm columns one off, §8.3)."""
        from ...model import Limits

        sql = (f"SELECT {', '.join(c for c, _ in LIMIT_COLS)} FROM {self.d.quote('limits')} "
               "WHERE domain = %s")
        row = self._read("read", lambda cur: (cur.execute(sql, (entry.real,)), cur.fetchone())[1])
        if row is None:
            return None
        lim = Limits()
        for (col, field), value in zip(LIMIT_COLS, row, strict=True):
            v = int(value or 0)
            if col == "perm_maillist":
                lim.perm_maillist, lim.perm_maillist_users, lim.perm_maillist_moderators = v & 7, (v >> 3) & 7, (v >> 6) & 7
            elif field.startswith(("disable_", "delete_")):
                setattr(lim, field, bool(v))
            else:
                setattr(lim, field, v)
        return lim

    def limits_set(self, entry: AssignEntry, lim) -> None:
        """vset_limits: REPLACE INTO limits with all 26 values."""
        values: dict[str, object] = {"domain": entry.real}
        for col, field in LIMIT_COLS:
            if col == "perm_maillist":
                v = lim.perm_maillist | (lim.perm_maillist_users << 3) | (lim.perm_maillist_moderators << 6)
                top = getattr(self.d, "perm_maillist_max", 127)  # MySQL: a signed TINYINT (pgsql: smallint)
                if v > top:  # vpopmail's value does not fit, refuse rather than cut
                    raise TooLong(f"perm_maillist with its users/moderators bits is {v}: limits.perm_maillist "
                                  f"holds at most {top}", -36)
                values[col] = v
            else:
                values[col] = int(getattr(lim, field))
        self._ensure_one("limits")
        self.check_values("limits", values)
        with self._txn() as cur:
            cur.execute(self.d.upsert("limits", list(values), ["domain"]), tuple(values.values()))

    def limits_delete(self, entry: AssignEntry) -> None:
        self._ensure_one("limits")
        with self._txn() as cur:
            cur.execute(f"DELETE FROM {self.d.quote('limits')} WHERE domain = %s", (entry.real,))

    # --- VALIAS: aliases in the valias table instead of .qmail-<alias> files (§3.5, §4.12) ------------

    def valias_names(self, entry: AssignEntry) -> list[str]:
        """select distinct alias ... order by alias (the server's collation orders them)."""
        sql = f"SELECT DISTINCT alias FROM {self.d.quote('valias')} WHERE domain = %s ORDER BY alias"
        rows = self._read("read", lambda cur: (cur.execute(sql, (entry.real,)), cur.fetchall())[1])
        return [_text(r[0]) for r in rows or ()]

    def valias_lines(self, entry: AssignEntry, alias: str) -> list[str] | None:
        """The alias's lines in the order they were added; None when it has none."""
        order = getattr(self.d, "valias_order", "id")  # pgsql: vpgsql.h's valias has no id column
        sql = f"SELECT valias_line FROM {self.d.quote('valias')} WHERE alias = %s AND domain = %s ORDER BY {order}"
        rows = self._read("read", lambda cur: (cur.execute(sql, (alias, entry.real)), cur.fetchall())[1])
        return [_text(r[0]) for r in rows] if rows else None

    def valias_add(self, entry: AssignEntry, alias: str, line: str, allow_duplicate: bool = False) -> None:
        """valias_insert (leading blanks dropped); an exact duplicate refused as the valias tool does."""
        from ...errors import AliasExists

        line = line.lstrip(" \t")
        values = {"alias": alias, "domain": entry.real, "valias_line": line}
        self._ensure_one("valias")
        self.check_values("valias", values)
        with self._txn() as cur:
            if not allow_duplicate:
                cur.execute(f"SELECT valias_line FROM {self.d.quote('valias')} WHERE alias = %s AND domain = %s "
                            "FOR UPDATE", (alias, entry.real))
                if any(_text(r[0]) == line for r in cur.fetchall()):
                    raise AliasExists(f"alias {alias}@{entry.real} -> {line} already exists.")
            cur.execute(f"INSERT INTO {self.d.quote('valias')} (alias, domain, valias_line) VALUES (%s, %s, %s)",
                        tuple(values.values()))

    def valias_remove(self, entry: AssignEntry, alias: str, line: str) -> None:
        """valias_remove: the rows whose line equals `line` (an exact match, as vpopmail's DELETE;
        the file module matches a prefix); AliasNotFound when the alias has no line at all."""
        self._valias_delete(entry, alias, line)

    def valias_delete(self, entry: AssignEntry, alias: str) -> None:
        self._valias_delete(entry, alias, None)

    def _valias_delete(self, entry: AssignEntry, alias: str, line: str | None) -> None:
        from ...errors import AliasNotFound

        self._ensure_one("valias")
        qt = self.d.quote("valias")
        with self._txn() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {qt} WHERE alias = %s AND domain = %s", (alias, entry.real))
            if not cur.fetchone()[0]:
                raise AliasNotFound(f"No aliases {alias}@{entry.real} found")
            if line is None:
                cur.execute(f"DELETE FROM {qt} WHERE alias = %s AND domain = %s", (alias, entry.real))
            else:
                cur.execute(f"DELETE FROM {qt} WHERE alias = %s AND valias_line = %s AND domain = %s",
                            (alias, line, entry.real))

    # --- IP_ALIAS_DOMAINS: the ip_alias_map table instead of etc/ip_alias_map (§3.8, §4.14) ----------
    # One domain per address (the key is ip_addr): adding a mapping for an address replaces its domain.

    def ipmap_list(self) -> list[tuple[str, str]]:
        sql = f"SELECT ip_addr, domain FROM {self.d.quote('ip_alias_map')} ORDER BY ip_addr"
        rows = self._read("read", lambda cur: (cur.execute(sql), cur.fetchall())[1])
        return [(_text(a), _text(b) or "") for a, b in rows or ()]

    def ipmap_get(self, ip: str) -> str | None:
        sql = f"SELECT domain FROM {self.d.quote('ip_alias_map')} WHERE ip_addr = %s"
        row = self._read("read", lambda cur: (cur.execute(sql, (ip,)), cur.fetchone())[1])
        return _text(row[0]) if row else None

    def ipmap_add(self, ip: str, domain: str) -> None:
        values = {"ip_addr": ip, "domain": domain}
        self._ensure_one("ip_alias_map")
        self.check_values("ip_alias_map", values)
        with self._txn() as cur:
            cur.execute(self.d.upsert("ip_alias_map", list(values), ["ip_addr"]), tuple(values.values()))

    def ipmap_delete(self, ip: str, domain: str) -> bool:
        """DELETE by ip and domain; whether a row went."""
        self._ensure_one("ip_alias_map")
        with self._txn() as cur:
            cur.execute(f"DELETE FROM {self.d.quote('ip_alias_map')} WHERE ip_addr = %s AND domain = %s",
                        (ip, domain))
            return cur.rowcount > 0

    def create_domain(self, entry: AssignEntry) -> None:
        """vauth_adddomain: the tables (created when missing, InnoDB utf8mb4 on MySQL) and the
        domain's dir_control row (vpopmail's defaults)."""
        self.ensure_tables(entry)
        with self._txn() as cur:
            self._dc_write(cur, entry.real, DirControl())

    def delete_domain(self, entry: AssignEntry) -> None:
        """vauth_deldomain: the domain's user rows (or its table), lastauth and dir_control rows,
        the aliasdomains row of the real name -- one transaction (vpopmail stops at the first
        failure and leaves the rest)."""
        dom, params = self._dom(entry)
        self.ensure_tables(entry)
        with self._txn() as cur:
            if dom:
                cur.execute(f"DELETE FROM {self.d.quote('vpopmail')} WHERE pw_domain = %s", params)
            if self.s.auth_logging:
                cur.execute(f"DELETE FROM {self.d.quote('lastauth')} WHERE domain = %s", (entry.real,))
            cur.execute(f"DELETE FROM {self.d.quote('dir_control')} WHERE domain = %s", (entry.real,))
            if self.has_limits_table:
                cur.execute(f"DELETE FROM {self.d.quote('limits')} WHERE domain = %s", (entry.real,))
            if self.s.valias:
                cur.execute(f"DELETE FROM {self.d.quote('valias')} WHERE domain = %s", (entry.real,))
        if not dom:
            with self._txn() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {self.d.quote(self.user_table(entry))}")
            self._ready.discard(self.user_table(entry))
            self._widths.pop(self.user_table(entry), None)

    # --- the AuthModule interface: writes --------------------------------------------------------

    def add_users(self, entry: AssignEntry, new_users: list[NewUser], default_quota: str, exist_ok: bool,
                  progress: Callable[[int], None] | None = None) -> list[VUser]:
        """One transaction: dir_control row FOR UPDATE, homes from .dir_control_free else the next
        hashed dirs, multi-row INSERTs, the lastauth rows (0.0.0.0, now), the counter; the trees
        built at temp homes before COMMIT and renamed in after it."""
        if not new_users:
            return []
        table = self.user_table(entry)
        self.ensure_tables(entry)
        owner = Owner(entry.uid, entry.gid)
        qt = self.d.quote(table)
        dom, params = self._dom(entry)
        made: list[str] = []
        created: list[VUser] = []
        free_tmp = None
        now = int(time.time())
        try:
            with fsutil.ContextStack() as locks, self._txn() as cur:
                dc, _ = self._dc_read(cur, entry.real, True)
                todo = []
                existing = self._names_in(cur, entry, [n.user for n in new_users])
                for n in new_users:
                    if n.user in existing:
                        if exist_ok:
                            continue
                        raise UserExists()
                    todo.append(n)
                if not todo:
                    return []
                free_path = os.path.join(entry.dir, ".dir_control_free")
                free = _disk._read_free(free_path)
                if free:  # taken after the row lock, as every writer of the domain does
                    locks.enter_context(fsutil.locked(free_path + ".lock", self.disk.lock_wait, owner))
                    free = _disk._read_free(free_path)
                placed, used_free = place_new_users(entry.dir, todo, dc, free, default_quota, 0,
                                                    self.s.clear_passwords)
                created.extend(placed)
                rows = [self._user_values(entry, vu) for vu in created]
                for v in rows:
                    self.check_values(table, v)
                auth_rows = []
                if self.s.auth_logging:
                    auth_rows = [self._lastauth_values(entry, vu.name, "0.0.0.0", now) for vu in created]
                    for v in auth_rows:
                        self.check_values("lastauth", v)
                def insert_rows() -> None:
                    cols = list(rows[0])
                    for i in range(0, len(rows), BATCH):
                        chunk = rows[i:i + BATCH]
                        cur.execute(_insert(qt, cols, len(chunk)), tuple(x for v in chunk for x in v.values()))
                    if auth_rows:
                        acols = list(auth_rows[0])
                        for i in range(0, len(auth_rows), BATCH):
                            chunk = auth_rows[i:i + BATCH]
                            cur.execute(self._lastauth_upsert(acols, len(chunk)),
                                        tuple(x for v in chunk for x in v.values()))

                if len(created) >= OVERLAP and journal() is None:
                    # a bulk import: the rows go to the server while the workers build the trees
                    # (the driver waits on the server without the GIL); still one transaction,
                    # committed only once both are done
                    fsutil.overlapped(insert_rows, lambda: self.disk._make_user_dirs(created, owner, made, progress,
                                                                              lastauth=False))
                else:
                    self.disk._make_user_dirs(created, owner, made, progress, lastauth=False)
                    insert_rows()
                for parent in {os.path.dirname(h) for h in made}:
                    fsync_dir(parent)
                self._dc_write(cur, entry.real, dc)
                if used_free:
                    data = "".join(x + "\n" for x in free[used_free:]).encode()
                    free_tmp = fsutil.write_staged(free_path, data, 0o644, owner, ".dir_control_free.vcli-new")
        except BaseException:
            discard(free_tmp)
            self._undo_trees(entry, made, created)
            raise
        # committed: the trees and the free list into place
        if journal() is None:
            try:
                fsutil.rename_all([(intent.tmp_home(home), home) for home in made])
                if free_tmp:
                    os.rename(free_tmp, free_path)
                for parent in {os.path.dirname(h) for h in made}:
                    fsync_dir(parent)
            except OSError as exc:
                from ...errors import StoreIOError

                raise StoreIOError(f"{entry.dir}: the users are committed but their trees could not be "
                                   f"renamed in ({exc.strerror}); `vcli check --repair` finishes it") from None
        return created

    def _undo_trees(self, entry: AssignEntry, made: list[str], users: list[VUser]) -> None:
        if journal() is not None:
            return
        for home in made:
            _disk._rmtree(intent.tmp_home(home), ignore_errors=True)
        _disk._drop_empty_hash_dirs(entry.dir, [vu.dir for vu in users])

    def _select_for_update(self, cur, entry: AssignEntry, names: list[str] | None):
        """The records of `names` (None: every user, in pw_name order), locked, streamed in batches."""
        qt = self.d.quote(self.user_table(entry))
        dom, params = self._dom(entry)
        if names is not None:
            for i in range(0, len(names), BATCH):
                chunk = names[i:i + BATCH]
                cur.execute(f"SELECT {self._cols()} FROM {qt} WHERE pw_name IN ({', '.join(['%s'] * len(chunk))})"
                            f"{dom} ORDER BY pw_name FOR UPDATE", (*chunk, *params))
                yield from (self._user(r) for r in cur.fetchall())
            return
        last = None
        while True:
            after = "" if last is None else " AND pw_name > %s"
            where = f"WHERE 1 = 1{dom}{after}"
            cur.execute(f"SELECT {self._cols()} FROM {qt} {where} ORDER BY pw_name LIMIT {BATCH} FOR UPDATE",
                        (*params, *(() if last is None else (last,))))
            rows = cur.fetchall()
            if not rows:
                return
            for r in rows:
                yield self._user(r)
            last = _text(rows[-1][0])

    def _update_user(self, cur, entry: AssignEntry, stored: str, new: VUser) -> None:
        """SETPW: every field of the record (sql.md §4.1), keyed by the stored name."""
        table = self.user_table(entry)
        v = self._user_values(entry, new)
        self.check_values(table, v)
        v.pop("pw_name")
        v.pop("pw_domain", None)
        dom, params = self._dom(entry)
        sets = ", ".join(f"{c} = %s" for c in v)
        cur.execute(f"UPDATE {self.d.quote(table)} SET {sets} WHERE pw_name = %s{dom}",
                    (*v.values(), stored, *params))

    def modify_user(self, entry: AssignEntry, user: str, change: Callable[[VUser], VUser], mode: int,
                    rebuild_index: bool = True, maildirsize: bool = False) -> VUser:
        got = self.modify_users(entry, {user: change}, mode, rebuild_index, maildirsize)
        if not got:
            raise UserNotFound()
        return got[0]

    def modify_users(self, entry: AssignEntry, changes, mode: int, rebuild_index: bool = True,
                     maildirsize: bool = False) -> list[VUser]:
        """One transaction: each record read FOR UPDATE, changed, written back; maildirsize staged
        before COMMIT and renamed in after it."""
        owner = Owner(entry.uid, entry.gid)
        names = None if callable(changes) else list(changes)
        out: list[VUser] = []
        staged: list[tuple[str | None, str]] = []
        batch = False
        try:
            with self._txn() as cur:
                seen: set[str] = set()
                for old in list(self._select_for_update(cur, entry, names)):
                    key = old.name.lower()
                    if key in seen:
                        continue
                    seen.add(key)
                    change = changes if callable(changes) else changes.get(key)
                    if change is None:
                        continue
                    stored = old.name
                    new = change(old)
                    self._update_user(cur, entry, stored, new)
                    out.append(new)
                if maildirsize:
                    batch = len(out) > 1
                    for vu in out:
                        staged.extend(self.disk._stage_maildirsize(vu, owner, entry.dir, durable=not batch))
        except BaseException:
            for tmp, _ in staged:
                discard(tmp or None)
            raise
        for tmp, path in staged:
            if tmp is None:
                continue
            if tmp == "":
                discard(path)
            else:
                os.rename(tmp, path)
        if batch and journal() is None:
            fsutil.sync_fs(entry.dir)
        return out

    def delete_user(self, entry: AssignEntry, user: str) -> VUser:
        gone = self.delete_users(entry, [user])
        if not gone:
            raise UserNotFound()
        return gone[0]

    def delete_users(self, entry: AssignEntry, users: list[str]) -> list[VUser]:
        """One transaction: the rows out (user, lastauth), the counter down; after COMMIT the hash
        slots onto .dir_control_free and the homes removed (sql.md §4.5)."""
        owner = Owner(entry.uid, entry.gid)
        qt = self.d.quote(self.user_table(entry))
        dom, params = self._dom(entry)
        self.ensure_tables(entry)
        with self._txn() as cur:
            dc, exists = self._dc_read(cur, entry.real, True)
            old = list(self._select_for_update(cur, entry, [u.lower() for u in users]))
            if not old:
                return []
            for i in range(0, len(old), BATCH):
                chunk = [vu.name for vu in old[i:i + BATCH]]
                marks = ", ".join(["%s"] * len(chunk))
                cur.execute(f"DELETE FROM {qt} WHERE pw_name IN ({marks}){dom}", (*chunk, *params))
                if self.s.auth_logging:
                    cur.execute(f"DELETE FROM {self.d.quote('lastauth')} WHERE {self.d.lastauth_user} IN ({marks})"
                                " AND domain = %s", (*chunk, entry.real))
            for _ in old:
                dc.remove_one()
            if exists:
                self._dc_write(cur, entry.real, dc)
        prefix = entry.dir.rstrip("/") + "/"
        freed = b""
        for vu in old:
            parent = os.path.dirname(vu.dir.rstrip("/"))
            if parent.startswith(prefix) and parent[len(prefix):]:
                freed += parent[len(prefix):].encode() + b"\n"
        if freed:
            free_path = os.path.join(entry.dir, ".dir_control_free")
            with fsutil.locked(free_path + ".lock", self.disk.lock_wait, owner):
                fsutil.atomic_write(free_path, (fsutil.read_bytes(free_path) or b"") + freed, 0o644, owner)
        for vu in old:
            self.disk._remove_tree(vu.dir, entry.dir)
        return old

    def rebuild_index(self, entry: AssignEntry) -> str:
        """Nothing to rebuild: the server keeps the table's index (vmkpasswd is a no-op on SQL)."""
        return ""

    def import_records(self, entry: AssignEntry, records: list[VUser], dir_control: DirControl | None) -> int:
        """vconvert's target side: the records stored verbatim (their homes exist already) and the
        domain's dir_control row set, in one transaction; a name already there -> UserExists."""
        table = self.user_table(entry)
        self.ensure_tables(entry)
        rows = [self._user_values(entry, vu) for vu in records]
        for v in rows:
            self.check_values(table, v)
        qt = self.d.quote(table)
        with self._txn() as cur:
            if rows:
                cols = list(rows[0])
                for i in range(0, len(rows), BATCH):
                    chunk = rows[i:i + BATCH]
                    cur.execute(_insert(qt, cols, len(chunk)), tuple(x for v in chunk for x in v.values()))
            if dir_control is not None:
                self._dc_write(cur, entry.real, dir_control)
        return len(rows)


    # --- vcli convert and vcli check (w-convert): lastauth rows in bulk, recount, stored domains ---

    def list_lastauth(self, entry: AssignEntry) -> Iterator[tuple[str, int, str]]:
        """(user, timestamp, remote_ip) of the domain's lastauth rows, streamed from the listing
        connection (nothing without auth logging)."""
        if not self.s.auth_logging:
            return
        sql = (f"SELECT {self.d.lastauth_user}, timestamp, remote_ip FROM {self.d.quote('lastauth')} "
               "WHERE domain = %s")
        for user, when, ip in self._stream(sql, (entry.real,)):
            yield str(_text(user)), int(when or 0), _text(ip) or ""

    def lastauth_fits(self, user: str, ip: str) -> bool:
        """Whether a lastauth row can hold this user and IP (`user` is 32 wide where names may be
        64: vpopmail loses those rows, sql.md §8.4); vcli convert skips the others."""
        widths = self.widths("lastauth")
        return (len(user) <= widths.get(self.d.lastauth_user.strip('"`').lower(), 32)
                and len(ip) <= widths.get("remote_ip", 39))

    def import_lastauth(self, entry: AssignEntry, rows) -> int:
        """vconvert's lastauth rows: upserted in batches, one transaction; rows the table cannot
        hold are skipped (see lastauth_fits)."""
        if not self.s.auth_logging:
            return 0
        self.ensure_tables(entry)
        values = []
        for user, when, ip in rows:
            if self.lastauth_fits(user, ip):
                values.append(self._lastauth_values(entry, user, ip, int(when)))
        if not values:
            return 0
        cols = list(values[0])
        with self._txn() as cur:
            for i in range(0, len(values), BATCH):
                chunk = values[i:i + BATCH]
                cur.execute(self._lastauth_upsert(cols, len(chunk)), tuple(x for v in chunk for x in v.values()))
        return len(values)

    def recount_users(self, entry: AssignEntry) -> tuple[int, int]:
        """vcli check --repair: cur_users of the domain's dir_control row := its row count, in one
        transaction holding the row (FOR UPDATE, as every writer of the domain does); (was, now)."""
        dom, params = self._dom(entry)
        self.ensure_tables(entry)
        with self._txn() as cur:
            dc, _ = self._dc_read(cur, entry.real, True)
            cur.execute(f"SELECT COUNT(*) FROM {self.d.quote(self.user_table(entry))}"
                        f"{' WHERE pw_domain = %s' if dom else ''}", params)
            was, dc.cur_users = dc.cur_users, int(cur.fetchone()[0])
            self._dc_write(cur, entry.real, dc)
        return was, dc.cur_users

    def domain_counter(self, domains: str, owner: Owner) -> DirControl | None:
        """Row `dom_<uid>` of dir_control, None when there is none."""
        key = f"dom_{owner.uid if owner.uid is not None else os.geteuid()}"
        got = self._read("read", lambda cur: self._dc_read(cur, key, False))
        return got[0] if got and got[1] else None

    def set_domain_counter(self, domains: str, owner: Owner, dc: DirControl) -> None:
        key = f"dom_{owner.uid if owner.uid is not None else os.geteuid()}"
        self._ensure_counter()
        with self._txn() as cur:
            self._dc_write(cur, key, dc)

    def existing_users(self, entry: AssignEntry, names: list[str]) -> set[str]:
        """The names the table has, BATCH names a query (a bulk import of a million users asked
        one SELECT a name: a third of its time)."""
        return self._read("read", lambda cur: self._names_in(cur, entry, names)) or set()

    def _names_in(self, cur, entry: AssignEntry, names: list[str]) -> set[str]:
        """Which of `names` the domain's table holds, BATCH names a SELECT, on `cur` (add_users:
        inside its transaction, after the row lock)."""
        dom, params = self._dom(entry)
        qt = self.d.quote(self.user_table(entry))
        found: set[str] = set()
        for i in range(0, len(names), BATCH):
            chunk = names[i:i + BATCH]
            cur.execute(f"SELECT pw_name FROM {qt} WHERE pw_name IN ({', '.join(['%s'] * len(chunk))}){dom}",
                        (*chunk, *params))
            found |= {str(_text(r[0])).lower() for r in cur.fetchall()}
        return found

    def stored_domains(self) -> list[str]:
        """The domains of the user rows (many-domains) and of the dir_control rows (not the
        `dom_<uid>` domain counters), for vcli check against users/assign."""
        def q(cur):
            out = set()
            if self.s.many_domains:
                cur.execute(f"SELECT DISTINCT pw_domain FROM {self.d.quote('vpopmail')}")
                out |= {str(_text(r[0])) for r in cur.fetchall()}
            cur.execute(f"SELECT domain FROM {self.d.quote('dir_control')}")
            out |= {str(_text(r[0])) for r in cur.fetchall() if not str(_text(r[0])).startswith("dom_")}
            return out

        got = self._read("read", q)
        return sorted(got or ())

class _Cursor:
    """The transaction's cursor: in a dry run each statement is also recorded in the journal."""

    def __init__(self, cur, auth: SqlAuth):
        self.cur, self.auth = cur, auth

    def execute(self, sql: str, params=()):
        j = journal()
        if j is not None:
            j.note("sql", _shown(sql, params))
        return self.cur.execute(sql, params)

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount

    def fetchone(self):
        return self.cur.fetchone()

    def fetchall(self):
        return self.cur.fetchall()


def _close(conn) -> None:
    try:
        if conn is not None:
            conn.close()
    except Exception:  # noqa: BLE001, S110 - it is being thrown away
        pass


def _insert(qtable: str, cols: list[str], n: int) -> str:
    row = "(" + ", ".join(["%s"] * len(cols)) + ")"
    return f"INSERT INTO {qtable} ({', '.join(cols)}) VALUES " + ", ".join([row] * n)


def _shown(sql: str, params) -> str:
    """A statement for a dry run's listing: the values after it (hashes shown, a clear-text
    password as ********)."""
    params = list(params)
    secret = _secret_slots(sql, len(params))
    vals = ", ".join("'********'" if i in secret else repr(p) for i, p in enumerate(params))
    if len(vals) > 400:
        vals = vals[:400] + f"... ({len(params)} values)"
    return f"{sql} <- ({vals})" if params else sql


def _secret_slots(sql: str, n: int) -> set[int]:
    """Which of a statement's n parameters are pw_clear_passwd values (INSERT column lists and
    UPDATE ... SET col = %s, the two shapes that write it)."""
    if "pw_clear_passwd" not in sql:
        return set()
    if " VALUES " in sql and "(" in sql:
        cols = [c.strip() for c in sql.split("(", 1)[1].split(")", 1)[0].split(",")]
        k = cols.index("pw_clear_passwd") if "pw_clear_passwd" in cols else -1
        return {i for i in range(n) if k >= 0 and i % len(cols) == k}
    head = sql.split("pw_clear_passwd = %s", 1)[0]
    return {head.count("%s")}


def _text(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "surrogateescape")
    return v


def _atoi(text) -> int:
    text = str(text).strip()
    digits = ""
    for ch in text.lstrip("+-"):
        if not ch.isdigit():
            break
        digits += ch
    return (-1 if text.startswith("-") else 1) * int(digits) if digits else 0


def _dc_from_row(row) -> DirControl:
    v = [0 if x is None else x for x in row[:15]]
    return DirControl(cur_users=int(v[0]), level_cur=int(v[1]), level_max=int(v[2]),
                      start=[int(x) for x in v[3:6]], end=[int(x) for x in v[6:9]],
                      mod=[int(x) for x in v[9:12]], index=[int(x) for x in v[12:15]],
                      the_dir=_text(row[15]) or "")


def _dc_values(dc: DirControl) -> tuple:
    return (dc.cur_users, dc.level_cur, dc.level_max, *dc.start, *dc.end, *dc.mod, *dc.index, dc.the_dir)
