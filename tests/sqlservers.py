"""Real database servers for the SQL tests: a private MariaDB and a private PostgreSQL per test
session, started from Debian's packages (mariadb-server, postgresql) on loopback ports of their
own, in data directories of their own, and stopped when the session ends.

No mock and no system service: the tests run against the same server binaries a site runs, and
a machine without them fails the SQL tests loudly (`.ci/run` installs both packages).

Each test gets a database of its own with a user of its own (`new_database`), so tests never see
each other's rows.  `db_line()` gives the vpopmail.mysql/pgsql line that reaches it.

`mariadb_replicated` is a primary + replica pair with real GTID replication (a scaled-out site's
read and update servers): its databases are made on the primary and replicate.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ready, what: str, log: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(0.1)
    tail = ""
    try:
        with open(log, errors="replace") as f:
            tail = f.read()[-2000:]
    except OSError:
        pass
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s ({last}); log:\n{tail}")


class Database:
    """One test database and the user that owns it."""

    def __init__(self, kind: str, host: str, port: int, user: str, password: str, database: str, server):
        self.kind, self.host, self.port = kind, host, port
        self.user, self.password, self.database = user, password, database
        self.server = server

    def db_line(self) -> str:
        """The vpopmail.mysql / vpopmail.pgsql line for this database."""
        return f"{self.host}|{self.port}|{self.user}|{self.password}|{self.database}\n"

    def connect(self):
        """A connection as the test user (autocommit), for looking at what vcli wrote."""
        return self.server.connect(self.database, self.user, self.password)

    def query(self, sql: str, params=()) -> list[tuple]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


class MariaDB:
    """A private mariadbd: `start()` once, `new_database()` per test, `stop()` at the end."""

    kind = "mysql"

    def __init__(self, base: str, name: str = "mariadb", extra: list[str] | None = None):
        self.dir = os.path.join(base, name)
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "error.log")
        self.port = free_port()
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.root_password = secrets.token_hex(8)
        self._n = 0

    def start(self) -> MariaDB:
        if not MARIADBD or not INSTALL_DB:
            raise RuntimeError("mariadbd / mariadb-install-db not found: install Debian's mariadb-server "
                               "(.ci/run does)")
        fresh = not os.path.isdir(self.datadir)
        if fresh:
            os.makedirs(self.dir, exist_ok=True)
            r = subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", f"--user={_me()}",
                                "--auth-root-authentication-method=normal", "--skip-test-db"],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"mariadb-install-db failed: {r.stderr[-2000:]}")
        # Debian's server config as a site has it: utf8mb4 (spec/sql.md §10 item 2), strict mode
        args = [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={self.dir}/pid",
                f"--log-error={self.log}", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci", "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M", "--max-connections=400", "--skip-name-resolve",
                *self.extra]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}")
            self._admin_conn(password="" if fresh else None).close()
            return True

        _wait(ready, "mariadbd", self.log)
        if fresh:
            conn = self._admin_conn(password="")
            with conn.cursor() as cur:
                cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self.root_password,))
            conn.close()
        return self

    def _admin_conn(self, password: str | None = None, database: str | None = None):
        import MySQLdb

        kw = {"database": database} if database else {}  # MySQLdb takes no None for a str argument
        return MySQLdb.connect(unix_socket=self.socket, user="root",
                               password=self.root_password if password is None else password,
                               autocommit=True, connect_timeout=2, charset="utf8mb4", **kw)

    def admin(self, database: str | None = None):
        """A root connection (autocommit) over the socket."""
        return self._admin_conn(database=database)

    def connect(self, database: str, user: str, password: str):
        import MySQLdb

        return MySQLdb.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                               database=database, autocommit=True, charset="utf8mb4")

    def new_database(self, prefix: str = "vp", create: bool = True) -> Database:
        """A fresh database (unless `create` is false: vpopmail creates it itself, sql.md §2.4) and
        a user with every right on it, reachable over TCP on 127.0.0.1."""
        self._n += 1
        name = f"{prefix}{os.getpid()}_{self._n}"
        user, password = f"u{name}"[:32], secrets.token_hex(8)
        conn = self.admin()
        with conn.cursor() as cur:
            if create:
                cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL ON `{name}`.* TO %s@'127.0.0.1'", (user,))
        conn.close()
        return Database("mysql", "127.0.0.1", self.port, user, password, name, self)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Postgres:
    """A private PostgreSQL cluster (initdb + postgres), run as the `postgres` user when the
    tests run as root (the server refuses root)."""

    kind = "pgsql"

    def __init__(self, base: str, name: str = "postgres"):
        self.dir = os.path.join(base, name)
        self.datadir = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.root_password = secrets.token_hex(8)
        self._n = 0

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise RuntimeError("setpriv (util-linux) is needed to run PostgreSQL as postgres")
        return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def start(self) -> Postgres:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if not initdb or not postgres:
            raise RuntimeError("initdb / postgres not found: install Debian's postgresql (.ci/run does)")
        fresh = not os.path.isdir(self.datadir)
        if fresh:
            os.makedirs(self.dir, exist_ok=True)
            pwfile = os.path.join(self.dir, "pw")
            with open(pwfile, "w") as f:
                f.write(self.root_password + "\n")
            if os.geteuid() == 0:
                import pwd

                pg = pwd.getpwnam("postgres")
                os.chown(self.dir, pg.pw_uid, pg.pw_gid)
                os.chown(pwfile, pg.pw_uid, pg.pw_gid)
            r = subprocess.run([*self._as_server_user(), initdb, "-D", self.datadir, "-U", "postgres",
                                f"--pwfile={pwfile}", "--auth-local=scram-sha-256",
                                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                               capture_output=True, text=True, cwd="/")
            os.unlink(pwfile)
            if r.returncode:
                raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        args = [*self._as_server_user(), postgres, "-D", self.datadir, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                "-c", "fsync=on", "-c", "max_connections=400", "-c", "shared_buffers=64MB"]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True, cwd="/")
        logf.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            self.admin().close()
            return True

        _wait(ready, "postgres", self.log)
        return self

    def admin(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.root_password,
                               dbname=database, autocommit=True, connect_timeout=2)

    def connect(self, database: str, user: str, password: str):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                               dbname=database, autocommit=True)

    def new_database(self, prefix: str = "vp", create: bool = True) -> Database:
        """A fresh database owned by a fresh user (vpopmail never creates a pgsql database, so
        `create` is always honoured as true here)."""
        self._n += 1
        name = f"{prefix}{os.getpid()}_{self._n}"
        user, password = f"u{name}"[:32], secrets.token_hex(8)
        from psycopg import sql

        conn = self.admin()
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user)))
        conn.close()
        return Database("pgsql", "127.0.0.1", self.port, user, password, name, self)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class ReplicatedMariaDB:
    """A primary and a replica MariaDB on loopback ports with real replication, as a scaled-out
    vpopmail site runs them: binary log + GTID on the primary, the replica following it with
    `MASTER_USE_GTID=slave_pos` and read_only (so a write that reached it by mistake fails).

    Databases and users are made on the primary and reach the replica through replication;
    `sync()` waits (bounded) until the replica has applied everything the primary logged."""

    kind = "mysql"

    def __init__(self, base: str):
        self.primary = MariaDB(base, "primary", ["--server-id=1", "--log-bin=binlog", "--binlog-format=ROW"])
        self.replica = MariaDB(base, "replica", ["--server-id=2", "--read-only=1", "--relay-log=relay"])
        self.repl_password = secrets.token_hex(8)

    def start(self) -> ReplicatedMariaDB:
        self.primary.start()
        self.replica.start()
        conn = self.primary.admin()
        with conn.cursor() as cur:
            cur.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY %s", (self.repl_password,))
            cur.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
            cur.execute("SELECT @@gtid_binlog_pos")
            (pos,) = cur.fetchone()
        conn.close()
        # the replica starts from here: the primary's own set-up (its root password) is not replayed
        conn = self.replica.admin()
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL gtid_slave_pos = %s", (pos,))
            cur.execute("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='repl', "
                        "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                        (self.primary.port, self.repl_password))
            cur.execute("START SLAVE")
        conn.close()
        self.sync()
        return self

    def slave_status(self) -> dict:
        import MySQLdb.cursors

        conn = self.replica.admin()
        try:
            cur = conn.cursor(MySQLdb.cursors.DictCursor)
            cur.execute("SHOW SLAVE STATUS")
            return cur.fetchone() or {}
        finally:
            conn.close()

    def sync(self, timeout: float = 20.0) -> None:
        """Wait until the replica has applied the primary's whole binary log (MASTER_GTID_WAIT:
        bounded, no sleep loop); a stopped or broken replica fails with its own error."""
        conn = self.primary.admin()
        with conn.cursor() as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            (pos,) = cur.fetchone()
        conn.close()
        conn = self.replica.admin()
        with conn.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
            (done,) = cur.fetchone()
        conn.close()
        if done != 0:
            st = self.slave_status()
            raise RuntimeError(f"replica did not reach {pos} in {timeout:.0f} s: IO {st.get('Slave_IO_Running')} "
                               f"SQL {st.get('Slave_SQL_Running')} {st.get('Last_IO_Error')} {st.get('Last_SQL_Error')}")

    def pause(self) -> None:
        """STOP SLAVE: the replica keeps serving reads but stops applying the primary's changes."""
        conn = self.replica.admin()
        conn.cursor().execute("STOP SLAVE")
        conn.close()

    def resume(self) -> None:
        conn = self.replica.admin()
        conn.cursor().execute("START SLAVE")
        conn.close()
        self.sync()

    def new_database(self, prefix: str = "vr") -> ReplicatedDatabase:
        """A database and its user made on the primary, present on the replica on return."""
        db = self.primary.new_database(prefix)
        self.sync()
        return ReplicatedDatabase(db, self)

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


class ReplicatedDatabase(Database):
    """The primary's Database (query/connect go there), with `replica` the same database as the
    replica serves it, and `db_lines()` the two-line vpopmail.mysql of a replicated site."""

    def __init__(self, db: Database, pair: ReplicatedMariaDB):
        super().__init__("mysql", db.host, db.port, db.user, db.password, db.database, pair.primary)
        self.pair = pair
        self.replica = Database("mysql", db.host, pair.replica.port, db.user, db.password, db.database,
                                pair.replica)

    def db_lines(self) -> str:
        """Line 1 = the read server (the replica), line 2 = the update server (the primary), as
        spec/sql.md §2.1/§2.3 have it."""
        return self.replica.db_line() + self.db_line()


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class Servers:
    """The session's servers, started on first use (a run without SQL tests starts none)."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="vcli-sql-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
        os.chmod(self.base, 0o711)  # postgres must reach its data dir below it
        self._started: dict[str, object] = {}

    def get(self, kind: str):
        if kind not in self._started:
            server = {"mysql": MariaDB, "pgsql": Postgres, "mysql-replicated": ReplicatedMariaDB}[kind](self.base)
            try:
                server.start()
            except Exception as exc:
                server.stop()
                pytest.fail(f"the {kind} test server could not be started: {exc}", pytrace=False)
            self._started[kind] = server
        return self._started[kind]

    def close(self) -> None:
        # every server told to shut down first, then waited for: they shut down side by side
        for server in self._started.values():
            for one in getattr(server, "primary", None) and (server.replica, server.primary) or (server,):
                if one.proc and one.proc.poll() is None:
                    one.proc.terminate()
        for server in self._started.values():
            server.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def sql_servers():
    servers = Servers()
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def mariadb(sql_servers) -> MariaDB:
    return sql_servers.get("mysql")


@pytest.fixture(scope="session")
def postgres(sql_servers) -> Postgres:
    return sql_servers.get("pgsql")


@pytest.fixture(scope="session")
def mariadb_replicated(sql_servers) -> ReplicatedMariaDB:
    """A primary + replica pair (started on first use, like the others)."""
    return sql_servers.get("mysql-replicated")
