"""MySQL module figures against cdb, whole process, median of runs (issue 13 "Performance").

    .venv/bin/python bench/bench_sql.py [USERS] [RUNS]

Starts a private MariaDB (tests/sqlservers.py), builds one domain of USERS users (default 20000)
on a MySQL site and on a cdb site with the same bulk import, then times `python -c pass`,
`vuserinfo user@domain` and one `vadduser` on each.  Prints the figures and the ratios the issue
asks for (vuserinfo MySQL/cdb <= 1.2; vadduser on MySQL <= 50 ms).  Byte-compiles vcli and the
driver first (compileall), as an installed package is.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]

from benchlib import empty_store, tool  # noqa: E402


def timed(argv: list[str], env: dict, runs: int) -> float:
    """Median wall time (ms) of `argv`, each run checked for exit 0."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
        if r.returncode:
            raise SystemExit(f"{argv}: exit {r.returncode}: {r.stderr.decode()[-300:]}")
    return statistics.median(out)


def build(root: str, module: str, db, users: int) -> dict:
    from sqlenv import write_site

    vp, qm = empty_store(root)
    from pathlib import Path

    write_site(Path(vp), module, db)
    env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm, VCLI_CONFIG=os.devnull)
    env.pop("VCLI_REMOTE", None)
    subprocess.run([tool("vadddomain"), "bench.test", "Pm-pass1"], env=env, check=True)
    path = os.path.join(root, "users.txt")
    with open(path, "w") as f:
        for i in range(users):
            f.write(f"u{i:07d}@bench.test,$1$salt$hash\n")
    t = time.perf_counter()
    subprocess.run([tool("vcli"), "vadduser", "--from-file", path, "--hashed"], env=env, check=True,
                   capture_output=True)
    env["_import_s"] = f"{time.perf_counter() - t:.1f}"
    return env


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    # bytecode for vcli and the driver: a PYTHONDONTWRITEBYTECODE environment would otherwise
    # recompile every module in every timed process
    import MySQLdb
    from sqlservers import Servers

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(HERE, "..", "vcli"),
                    os.path.dirname(MySQLdb.__file__)], check=True, capture_output=True)
    servers = Servers()
    try:
        db = servers.get("mysql").new_database()
        with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
            my = build(os.path.join(tmp, "my"), "mysql", db, users)
            cdb = build(os.path.join(tmp, "cdb"), "cdb", None, users)
            who = f"u{users // 2:07d}@bench.test"
            base = timed([sys.executable, "-c", "pass"], my, runs)
            res = {}
            for name, env in (("mysql", my), ("cdb", cdb)):
                res[name] = (timed([tool("vuserinfo"), who], env, runs),
                             statistics.median(
                                 timed([tool("vadduser"), f"n{i}_{name}@bench.test", "$1$s$h", "-e"][:2] + ["Np-pass1x"],
                                       env, 1) for i in range(max(3, runs // 3))))
            print(f"users: {users}, runs: {runs}; bulk import: mysql {my['_import_s']} s, cdb {cdb['_import_s']} s")
            print(f"python -c pass          {base:7.1f} ms")
            for name, (look, add) in res.items():
                print(f"{name:6} vuserinfo        {look:7.1f} ms  ({look / base:.2f}x python -c pass)")
                print(f"{name:6} vadduser (one)   {add:7.1f} ms")
            print(f"vuserinfo mysql/cdb: {res['mysql'][0] / res['cdb'][0]:.2f} (issue: <= 1.2)")
    finally:
        servers.close()


if __name__ == "__main__":
    main()
