"""The MySQL module's connection: mysqlclient's C layer (`MySQLdb._mysql`, MariaDB Connector/C)
with the small cursor the module uses.

Why not `MySQLdb.connect`: its Connection and Cursor classes import `re`, `decimal` and the
converters module, ~7 ms of a 30 ms `vuserinfo` on a MySQL site.  The C layer underneath is the
same library, so the same wire behaviour, and `execute` fills its `%s` marks exactly as
MySQLdb's Cursor does: every value becomes a literal made by the server library's own escaping
(`string_literal`, i.e. mysql_real_escape_string for the connection's character set); a value
never enters SQL text any other way.  Results are converted as MySQLdb's defaults convert the
column types vpopmail's tables have (integers to int, text to str, binary to bytes).
"""

from __future__ import annotations

import sys


def _c_layer():
    """(MySQLdb._mysql, FIELD_TYPE, FLAG), without running MySQLdb/__init__.py if the package is
    not imported yet: it imports MySQLdb.times and so datetime (~1.5 ms of a 20 ms lookup), and
    the C module needs only MySQLdb._exceptions.  While the submodules load, a stand-in for the
    package (the real one's spec and path, none of its code) is in sys.modules; it is taken out
    again, so a later `import MySQLdb` (a test, a site's script in the same process) runs the real
    package, which finds the same submodules, classes and all, already loaded."""
    stand_in = None
    if "MySQLdb" not in sys.modules:
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find("MySQLdb", None) if find is not None else None
            if spec is not None:
                break
        if spec is not None and spec.submodule_search_locations:
            stand_in = type(sys)("MySQLdb")
            stand_in.__spec__, stand_in.__package__ = spec, "MySQLdb"
            stand_in.__path__ = list(spec.submodule_search_locations)
            sys.modules["MySQLdb"] = stand_in
    try:
        from MySQLdb import _mysql
        from MySQLdb.constants import FIELD_TYPE, FLAG
    finally:
        if stand_in is not None and sys.modules.get("MySQLdb") is stand_in:
            del sys.modules["MySQLdb"]
    return _mysql, FIELD_TYPE, FLAG


_mysql, T, FLAG = _c_layer()
Error, OperationalError = _mysql.Error, _mysql.OperationalError  # MySQLdb.Error, MySQLdb.OperationalError

_TEXT = [(FLAG.BINARY, bytes), (None, str)]  # MySQLdb's use_unicode rule: binary charset -> bytes
CONV = {t: int for t in (T.TINY, T.SHORT, T.LONG, T.LONGLONG, T.INT24, T.YEAR)}
CONV.update({t: _TEXT for t in (T.STRING, T.VAR_STRING, T.VARCHAR, T.TINY_BLOB, T.MEDIUM_BLOB,
                                T.LONG_BLOB, T.BLOB)})


class Connection(_mysql.connection):
    """A connection in autocommit mode (a change is an explicit START TRANSACTION ... COMMIT)."""

    def __init__(self, **kw):
        super().__init__(conv=CONV, **kw)
        if not self.get_autocommit():  # the server's default is on: usually no round trip
            self.autocommit(True)

    def cursor(self, stream: bool = False) -> Cursor:
        return Cursor(self, stream)

    def literal(self, value) -> bytes:
        """A value as SQL text, as MySQLdb's Connection.literal makes it."""
        if value is None:
            return b"NULL"
        if isinstance(value, str):
            return self.string_literal(value.encode("utf-8"))
        if isinstance(value, (bytes, bytearray)):
            return self.string_literal(bytes(value))
        if isinstance(value, bool):
            return b"1" if value else b"0"
        if isinstance(value, int):
            return str(value).encode()
        if isinstance(value, float):
            return repr(value).encode()
        raise TypeError(f"no SQL literal for a {type(value).__name__}")


class Cursor:
    """execute / fetchone / fetchall / fetchmany / rowcount / close; `stream` reads the rows as
    they arrive (mysql_use_result) instead of buffering the whole result."""

    def __init__(self, conn: Connection, stream: bool = False):
        self.conn, self.stream = conn, stream
        self.result = None
        self.rowcount = -1

    def execute(self, sql: str, params=None) -> int:
        self.result = None
        query = sql.encode("utf-8")
        if params is not None:  # as MySQLdb: with parameters (even none), `%%` is a literal %
            query = query % tuple(map(self.conn.literal, params))
        conn = self.conn
        conn.query(query)
        self.result = conn.use_result() if self.stream else conn.store_result()
        self.rowcount = -1 if self.stream and self.result is not None else conn.affected_rows()
        return self.rowcount

    def fetchone(self):
        if self.result is None:
            return None
        rows = self.result.fetch_row(1)
        return rows[0] if rows else None

    def fetchmany(self, size: int = 1) -> tuple:
        return self.result.fetch_row(size) if self.result is not None else ()

    def fetchall(self) -> tuple:
        return self.result.fetch_row(0) if self.result is not None else ()

    def close(self) -> None:
        self.result = None  # freed: an unbuffered result's remaining rows are read off the wire

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
