#!/usr/bin/env python3
"""Domain-wide changes against one vadduser (issue 11, build item 1).

    python bench/bench_domainwide.py [--users 100000] [--runs 3]

Builds a domain of --users users (bulk import, pre-encrypted) and prints the whole-process wall
time of `vmoduser -p DOMAIN`, `vsetuserquota DOMAIN 50M` and `vmoduser -q 20M DOMAIN` (the quota
forms also rewrite every maildirsize) against one `vadduser` on the same domain, with the ratio.
Goal: each domain-wide change <= 2x one vadduser (both rewrite vpasswd and its cdb once; the
quota forms also write one maildirsize per user, which a vadduser does not).
With VPOPMAIL_REF=/path/to/vpopmail/bin the C vmoduser is timed too where it can run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_store import make_store, tool  # noqa: E402


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from vcli.store.passwords import hash_password

    print(f"vcli domain-wide bench: {args.users} users, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="vcli-bench-") as root:
        env = make_store(root)
        d = "big.test"
        subprocess.run([tool("vadddomain"), d, "Pm-pass1"], env=env, check=True)
        one_hash = hash_password("secret")
        feed = os.path.join(root, "users.txt")
        with open(feed, "w") as f:
            for i in range(args.users - 1):
                f.write(f"u{i:06d}@{d},{one_hash}\n")
        subprocess.run([tool("vcli"), "vadduser", "--from-file", feed, "--hashed"], env=env, check=True)

        add = statistics.median(wall([tool("vadduser"), f"new{i}@{d}", "Newpass-1"], env) for i in range(args.runs))
        print(f"{'vadduser one user':<36} {add:8.3f} s  (median of {args.runs})")
        rows = [("vmoduser -p DOMAIN", ["vmoduser", "-p", d]),
                ("vsetuserquota DOMAIN 50M", ["vsetuserquota", d, "50M"]),
                ("vmoduser -q 20M DOMAIN", ["vmoduser", "-q", "20M", d])]
        worst = 0.0
        for label, cmd in rows:
            t = statistics.median(wall([tool(cmd[0]), *cmd[1:]], env) for _ in range(args.runs))
            worst = max(worst, t / add)
            print(f"{label:<36} {t:8.3f} s  ratio {t / add:5.2f} x vadduser   "
                  f"goal <= 2: {'ok' if t / add <= 2 else 'MISSED'}", flush=True)
        ref = os.environ.get("VPOPMAIL_REF")
        if ref and os.access(os.path.join(ref, "vmoduser"), os.X_OK):
            try:
                t = wall([os.path.join(ref, "vmoduser"), "-p", d], env)
                print(f"{'reference C vmoduser -p DOMAIN':<36} {t:8.3f} s")
            except SystemExit as exc:
                print(f"reference C vmoduser could not run on this store: {exc}")
        elif not ref:
            print("VPOPMAIL_REF not set: no side-by-side figure for the C vmoduser (it rewrites once per user)")
        print(f"worst ratio {worst:.2f}")
    return 0 if worst <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
