"""PostgreSQL module figures against cdb, whole process, median of runs (for information: the
issue's ratios are asked of MariaDB, bench/bench_sql.py).

    .venv/bin/python bench/bench_pgsql.py [USERS] [RUNS]

Starts a private PostgreSQL (tests/sqlservers.py), builds one domain of USERS users (default
20000) on a PostgreSQL site and on a cdb site with the same bulk import (bench_sql.build), then
times `python -c pass`, `vuserinfo user@domain` and one `vadduser` on each.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]

import bench_sql  # noqa: E402
from benchlib import tool  # noqa: E402


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    import psycopg
    from sqlservers import Servers

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(HERE, "..", "vcli"),
                    os.path.dirname(psycopg.__file__)], check=True, capture_output=True)
    servers = Servers()
    try:
        db = servers.get("pgsql").new_database()
        with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
            pg = bench_sql.build(os.path.join(tmp, "pg"), "pgsql", db, users)
            cdb = bench_sql.build(os.path.join(tmp, "cdb"), "cdb", None, users)
            who = f"u{users // 2:07d}@bench.test"
            base = bench_sql.timed([sys.executable, "-c", "pass"], pg, runs)
            res = {}
            for name, env in (("pgsql", pg), ("cdb", cdb)):
                look = bench_sql.timed([tool("vuserinfo"), who], env, runs)
                add = statistics.median(bench_sql.timed([tool("vadduser"), f"n{i}_{name}@bench.test", "Np-pass1x"],
                                                        env, 1) for i in range(max(3, runs // 3)))
                res[name] = (look, add)
            print(f"users: {users}, runs: {runs}; bulk import: pgsql {pg['_import_s']} s, cdb {cdb['_import_s']} s")
            print(f"python -c pass          {base:7.1f} ms")
            for name, (look, add) in res.items():
                print(f"{name:6} vuserinfo        {look:7.1f} ms  ({look / base:.2f}x python -c pass)")
                print(f"{name:6} vadduser (one)   {add:7.1f} ms")
            print(f"vuserinfo pgsql/cdb: {res['pgsql'][0] / res['cdb'][0]:.2f}")
    finally:
        servers.close()


if __name__ == "__main__":
    main()
