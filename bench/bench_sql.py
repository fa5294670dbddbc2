#!/usr/bin/env python3
"""SQL-site figures (issue 13, "Performance"): the MySQL module against cdb on the same users.

    python bench/bench_sql.py [--users 1000000] [--quick] [--runs 15] [--seconds 5]

Starts a private MariaDB (tests/sqlservers.py's MariaDB class, with a 256 MB buffer pool as a
site's server would have) and builds, in one temporary directory, a cdb store and a MySQL store
(vpopmail_config.h + etc/vpopmail.mysql, as tests/sqlenv.py lays a site out) with the same
--users pre-encrypted users in big.test.  Whole processes, medians, same run:
  * classic `vuserinfo user@domain` on MySQL / on cdb              goal <= 1.2x
  * `vadduser` of one user on MySQL                                 goal <= 50 ms
  * bulk `vcli vadduser --from-file --hashed` of --users on MySQL / the filesystem floor (the
    same trees made by a plain mkdir loop in as many processes as the import uses, 4)  goal <= 1.3x
  * vpopmaild `slogin` rate (8 clients) on MySQL / on cdb           goal >= 1.0x
  * `vcli convert --to mysql` of the cdb store: figure.
The lookups, vadduser and slogin are measured once the imports are on disk (sync, and InnoDB's
dirty pages flushed: the wait is printed), as on a site at rest.
--quick: 20,000 users.  With VPOPMAIL_REF=/path/to/a/MySQL-built/vpopmail/bin the C tools are
timed too where they can run (they read their compiled-in ~vpopmail/etc/vpopmail.mysql, so only
when the reference install points at a database holding these users).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Process

from benchlib import empty_store, scratch_dir, tool

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

DOMAIN = "big.test"
PASSWORD = "Secret-1"
TREE_PROCS = 4  # the worker processes of a bulk import (Store._make_user_dirs)


def site(root: str, name: str, module: str, db=None) -> dict:
    """A store under root/name laid out as a site built for `module`; its environment."""
    from sqlenv import write_site

    base = os.path.join(root, name)
    vp, qm = empty_store(base)
    from pathlib import Path

    write_site(Path(vp), module, db)
    cfg = os.path.join(base, "config.toml")
    with open(cfg, "w") as f:
        f.write("# bench\n")
    # a site's install has its bytecode: without it every process compiles vcli again (~70 ms)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCLI_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(VPOPMAIL_DIR=vp, QMAIL_DIR=qm, VCLI_CONFIG=cfg)
    return env


def run(cmd: list[str], env: dict, stdin: str | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall


def median_ms(walls: list[float]) -> float:
    return statistics.median(walls) * 1000


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _trees(homes: list[str], ids: tuple[int, int] | None) -> None:
    for home in homes:
        for path in (home, *(os.path.join(home, sub) for sub in ("Maildir", "Maildir/new", "Maildir/cur",
                                                                   "Maildir/tmp"))):
            os.mkdir(path, 0o700)
            if ids:
                os.lchown(path, *ids)


def floor(root: str, n: int) -> float:
    """The user trees of an n-user domain (hashed dirs as vpopmail picks them) made by a plain
    loop in TREE_PROCS processes: the filesystem's share of a bulk import.  The same trees: the
    five directories, owned (when root) by the vpopmail ids as the import's are."""
    ids = None
    if os.geteuid() == 0:
        from vcli.config import _ids

        uid, gid = _ids()
        ids = (uid, gid) if uid is not None else None
    from vcli.store.dircontrol import DirControl

    ddir = os.path.join(root, "floor", DOMAIN)
    os.makedirs(ddir)
    dc = DirControl()
    homes = []
    for i in range(n):
        d = dc.next_dir()
        homes.append(os.path.join(ddir, d, f"u{i:07d}") if d else os.path.join(ddir, f"u{i:07d}"))
    t0 = time.perf_counter()
    for parent in sorted({os.path.dirname(h) for h in homes}):
        os.makedirs(parent, 0o700, exist_ok=True)
    size = (len(homes) + TREE_PROCS - 1) // TREE_PROCS
    procs = [Process(target=_trees, args=(homes[i:i + size], ids)) for i in range(0, len(homes), size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    took = time.perf_counter() - t0
    subprocess.run(["rm", "-rf", os.path.join(root, "floor")])  # several times faster than shutil.rmtree
    return took


def settle(server, limit: float = 300.0) -> float:
    """Wait until the imports are on disk: the filesystem synced and InnoDB's dirty pages flushed
    (at most `limit` seconds), so that the lookups below measure a site at rest, not the minutes
    after a million-row import when both still write back.  Returns the seconds waited."""
    t0 = time.perf_counter()
    os.sync()
    conn = server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
            was = cur.fetchone()[0]
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")  # the page cleaner flushes them all now
            try:
                while time.perf_counter() - t0 < limit:
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                    if int(cur.fetchone()[1]) < 100:
                        break
                    time.sleep(1)
            finally:
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (was,))
    finally:
        conn.close()
    os.sync()
    return time.perf_counter() - t0


def daemon_rate(env: dict, seconds: float) -> float:
    from bench_daemon import free_port, slogin_rate

    port = free_port()
    d = subprocess.Popen([sys.executable, "-m", "vcli.daemon", "--listen", f"127.0.0.1:{port}",
                          "--audit-log", os.devnull, "--user", "root"], env=env, stderr=subprocess.PIPE)
    try:
        d.stderr.readline()
        return slogin_rate("127.0.0.1", port, f"u0000001@{DOMAIN}", PASSWORD, seconds)
    finally:
        d.terminate()
        d.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="20,000 users")
    ap.add_argument("--runs", type=int, default=15, help="runs per whole-process median")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each slogin measurement")
    ap.add_argument("--socket", action="store_true", help="reach MariaDB over its unix socket (default: TCP 127.0.0.1)")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.users
    import compileall

    from sqlservers import MariaDB

    compileall.compile_dir(os.path.join(HERE, "..", "vcli"), quiet=1)

    from vcli.store.passwords import hash_password

    print(f"vcli SQL bench: {n} users in {DOMAIN}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"MariaDB over {'its socket' if args.socket else 'TCP'}",
          flush=True)
    # the floor (removed again), the cdb and the MySQL trees: ~12 inodes a user at most at once
    with scratch_dir("vcli-sqlbench-", inodes=max(1_000_000, n * 16), size_gb=max(16, n // 12_000)) as (root, where):
        print(f"stores and database on {where}", flush=True)
        server = MariaDB(root, extra=["--innodb-buffer-pool-size=256M"]).start()
        try:
            db_bulk, db_conv = server.new_database("bulk"), server.new_database("conv")
            if args.socket:  # as a site on the database host has it: `localhost|/path/to/socket|...`
                for db in (db_bulk, db_conv):
                    conn = server.admin()
                    with conn.cursor() as cur:
                        cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (db.user, db.password))
                        cur.execute(f"GRANT ALL ON `{db.database}`.* TO %s@'localhost'", (db.user,))
                    conn.close()
                    db.db_line = (lambda db=db: f"localhost|{server.socket}|{db.user}|{db.password}|{db.database}\n")
            cdb_env = site(root, "cdb", "cdb")
            sql_env = site(root, "mysql", "mysql", db_bulk)
            h = hash_password(PASSWORD)
            feed = "".join(f"u{i:07d}@{DOMAIN},{h}\n" for i in range(n))
            for env in (cdb_env, sql_env):
                run([tool("vadddomain"), DOMAIN, "Pm-pass1"], env)

            t_floor = floor(root, n)  # first, and removed again: three trees of a million users need 16M inodes
            print(f"{'filesystem floor: ' + str(n) + ' user trees, ' + str(TREE_PROCS) + ' processes':<48} "
                  f"{t_floor:9.2f} s", flush=True)
            t_cdb = run([tool("vcli"), "vadduser", "--from-file", "-", "--hashed"], cdb_env, feed)
            print(f"{'bulk import on cdb (information)':<48} {t_cdb:9.2f} s", flush=True)
            t_sql = run([tool("vcli"), "vadduser", "--from-file", "-", "--hashed"], sql_env, feed)
            ratio = t_sql / t_floor
            print(f"{'bulk import on MySQL':<48} {t_sql:9.2f} s   floor {t_floor:.2f} s "
                  f"({TREE_PROCS} processes)   ratio {ratio:.2f}   goal <= 1.3: {verdict(ratio <= 1.3)}", flush=True)

            settled = settle(server)
            print(f"{'settled after the imports (sync, InnoDB dirty pages)':<48} {settled:9.2f} s", flush=True)

            target = f"u{n // 2:07d}@{DOMAIN}"
            w_cdb, w_sql = [], []
            for _ in range(args.runs):  # interleaved: both see the same machine
                w_cdb.append(run([tool("vuserinfo"), target], cdb_env))
                w_sql.append(run([tool("vuserinfo"), target], sql_env))
            m_cdb, m_sql = median_ms(w_cdb), median_ms(w_sql)
            ratio = m_sql / m_cdb
            print(f"{'vuserinfo user@domain':<48} MySQL {m_sql:7.1f} ms   cdb {m_cdb:7.1f} ms   "
                  f"ratio {ratio:.2f}   goal <= 1.2: {verdict(ratio <= 1.2)}", flush=True)

            walls = [run([tool("vadduser"), f"new{i}@{DOMAIN}", "Newpass-1x"], sql_env) for i in range(max(5, args.runs // 3))]
            m = median_ms(walls)
            print(f"{'vadduser one user on MySQL':<48} {m:9.1f} ms   goal <= 50 ms: {verdict(m <= 50)}", flush=True)
            walls = [run([tool("vadduser"), f"new{i}@{DOMAIN}", "Newpass-1x"], cdb_env) for i in range(3)]
            print(f"{'vadduser one user on cdb (information)':<48} {median_ms(walls):9.1f} ms", flush=True)

            r_cdb = daemon_rate(cdb_env, args.seconds)
            r_sql = daemon_rate(sql_env, args.seconds)
            ratio = r_sql / r_cdb
            print(f"{'vpopmaild slogin, 8 clients':<48} MySQL {r_sql:7.1f}/s   cdb {r_cdb:7.1f}/s   "
                  f"ratio {ratio:.2f}   goal >= 1.0: {verdict(ratio >= 1.0)}", flush=True)

            dbf = os.path.join(root, "conv.mysql")
            with open(dbf, "w") as f:
                f.write(db_conv.db_line())
            os.chmod(dbf, 0o600)
            t = run([tool("vcli"), "convert", "--to", "mysql", "--db-file", dbf], cdb_env)
            rows = db_conv.query("SELECT COUNT(*) FROM vpopmail")[0][0]
            print(f"{'vcli convert cdb -> MySQL':<48} {t:9.2f} s   ({rows} rows, verified, switched)", flush=True)

            ref = os.environ.get("VPOPMAIL_REF")
            if ref:
                for name, argv in (("vuserinfo", [target]), ("vadduser", [f"ref0@{DOMAIN}", "Newpass-1x"])):
                    path = os.path.join(ref, name)
                    if not os.access(path, os.X_OK):
                        print(f"VPOPMAIL_REF: no {name} in {ref}")
                        continue
                    try:
                        walls = [run([path, *argv], sql_env) for _ in range(args.runs if name == "vuserinfo" else 1)]
                        print(f"{'reference C ' + name:<48} {median_ms(walls):9.1f} ms")
                    except SystemExit as exc:
                        print(f"reference C {name} could not run on these users: {exc}")
            else:
                print("VPOPMAIL_REF not set: no figures for the C tools (spec/sql.md: vadduser ~13 ms on MySQL)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
