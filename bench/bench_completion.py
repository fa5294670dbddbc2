#!/usr/bin/env python3
"""Dynamic completion speed on 1,000 domains x 1,000 users (whole `vcli-complete` process).

    python bench/bench_completion.py          goal: <= 150 ms a lookup
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    from vcli.store.qmail import users_cdb

    with tempfile.TemporaryDirectory(prefix="vcli-cbench-") as root:
        vp, qm = os.path.join(root, "vpopmail"), os.path.join(root, "qmail")
        os.makedirs(os.path.join(qm, "users"))
        os.makedirs(os.path.join(vp, "etc"))
        lines = []
        for d in range(1000):
            name = f"d{d:04d}.test"
            ddir = os.path.join(vp, "domains", name)
            os.makedirs(ddir)
            lines.append(f"+{name}-:{name}:89:89:{ddir}:-::\n")
            with open(os.path.join(ddir, "vpasswd"), "w") as f:
                f.writelines(f"u{u:04d}:x:1:0:u:{ddir}/u{u:04d}:NOQUOTA\n" for u in range(1000))
        assign = "".join(sorted(lines)) + ".\n"
        with open(os.path.join(qm, "users", "assign"), "w") as f:
            f.write(assign)
        with open(os.path.join(qm, "users", "cdb"), "wb") as f:
            f.write(users_cdb(assign.encode()))
        env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm)
        tool = os.path.join(BIN, "vcli-complete") if os.path.exists(os.path.join(BIN, "vcli-complete")) else \
            shutil.which("vcli-complete")
        for label, argv in (("domains 'd05'", ["domains", "d05"]),
                            ("addresses 'u12@d0500.test'", ["addresses", "u12@d0500.test"]),
                            ("addresses 'bob@d09'", ["addresses", "bob@d09"])):
            walls = []
            for _ in range(20):
                t = time.perf_counter()
                out = subprocess.run([tool, *argv], env=env, capture_output=True, check=True).stdout
                walls.append(time.perf_counter() - t)
            med = statistics.median(walls) * 1000
            print(f"{label:<30} {len(out.splitlines()):4d} candidates   median {med:6.1f} ms   "
                  f"p90 {sorted(walls)[17] * 1000:6.1f} ms   goal <= 150 ms: {'ok' if med <= 150 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
