#!/usr/bin/env python3
"""Whole-process figures for vdeloldusers and vpopbull on one big domain (issue 12, items 4-5).

    python bench/bench_domtools.py [--users 100000] [--dir /dev/shm] [--keep]

Builds a store with one domain of --users users (bulk `vcli vadduser --from-file --hashed`), gives
half of them a lastauth a year old, then times the installed commands:
  * vdeloldusers -d DOMAIN (the C tool's default: list only) and -V (names every old user);
  * vdeloldusers -D on a second store built the same way (its building is not timed);
  * vpopbull -n (listing), vpopbull -f (copy: tmp/ + fsync + link into new/), vpopbull -h (hard links).
Prints wall seconds and users per second for each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import empty_store, tool

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
DOMAIN = "big.test"
HASH = "$6$saltsalt$" + "h" * 86


def make_store(root: str) -> dict:
    vp, qm = empty_store(root, ("vlimits.default",))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCLI_")}
    env.update(VPOPMAIL_DIR=vp, QMAIL_DIR=qm, VCLI_CONFIG=os.devnull)
    return env


def run(env: dict, *argv: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([tool(argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()[:300]}")
    return wall, p.stdout


def build(root: str, users: int) -> tuple[dict, int, int]:
    """A store with DOMAIN of `users` users (+ postmaster), every other one last seen a year ago."""
    env = make_store(root)
    run(env, "vadddomain", DOMAIN, "Pm-pass1")
    feed = os.path.join(root, "users.csv")
    with open(feed, "w") as f:
        f.writelines(f"u{i:06d}@{DOMAIN},{HASH}\n" for i in range(users))
    run(env, "vcli", "-q", "vadduser", "--from-file", feed, "--hashed")
    old = time.time() - 365 * 86400
    total = n_old = 0
    with open(os.path.join(env["VPOPMAIL_DIR"], "domains", DOMAIN, "vpasswd")) as f:
        for i, line in enumerate(f):
            fields = line.split(":")
            total += 1
            if fields[0] != "postmaster" and i % 2 == 0:
                os.utime(os.path.join(fields[5], "lastauth"), (old, old))
                n_old += 1
    return env, total, n_old


def report(label: str, wall: float, n: int) -> None:
    print(f"{label:<44} {wall:8.2f} s  {n / wall if wall else 0:10.0f} users/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                    help="where to build the store (default /dev/shm when writable)")
    ap.add_argument("--keep", action="store_true", help="leave the store behind")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="vcli-bench-dom-", dir=a.dir)
    try:
        print(f"store: {root}  users: {a.users}")
        t0 = time.perf_counter()
        env, total, n_old = build(os.path.join(root, "a"), a.users)
        print(f"set up in {time.perf_counter() - t0:.1f} s ({n_old} users with a year-old lastauth)")

        wall, out = run(env, "vdeloldusers", "-d", DOMAIN, "-a", "180")
        report("vdeloldusers -a 180 (list only)", wall, total)
        wall, out = run(env, "vdeloldusers", "-d", DOMAIN, "-a", "180", "-V")
        assert len(out.splitlines()) >= n_old, "not every old user listed"
        report("vdeloldusers -a 180 -V", wall, total)
        wall, out = run(env, "vcli", "-q", "vdeloldusers", "--domain", DOMAIN, "--delete", "--dry-run")
        report("vcli vdeloldusers --delete --dry-run", wall, total)

        t1 = time.perf_counter()
        cenv, _, _ = build(os.path.join(root, "b"), a.users)  # a second store, built the same way
        print(f"(built a copy for the real run in {time.perf_counter() - t1:.1f} s, not counted)")
        wall, _ = run(cenv, "vdeloldusers", "-d", DOMAIN, "-a", "180", "-D")
        report(f"vdeloldusers -a 180 -D (deletes {n_old})", wall, total)
        left = sum(1 for _ in open(os.path.join(cenv["VPOPMAIL_DIR"], "domains", DOMAIN, "vpasswd")))
        assert left == total - n_old, f"{left} users left, want {total - n_old}"
        shutil.rmtree(os.path.join(root, "b"), ignore_errors=True)

        msg = os.path.join(root, "a", "bulletin")
        with open(msg, "w") as f:
            f.write("From: admin@big.test\nSubject: maintenance\n\nTonight at 22:00.\n")
        wall, out = run(env, "vpopbull", "-n", DOMAIN)
        report("vpopbull -n (list)", wall, len(out.splitlines()))
        wall, _ = run(env, "vpopbull", "-f", msg, DOMAIN)
        report("vpopbull -f (copy, fsync each)", wall, total)
        wall, _ = run(env, "vpopbull", "-h", "-f", msg, DOMAIN)
        report("vpopbull -h (hard links)", wall, total)
        nlink = os.stat(msg).st_nlink
        assert nlink == total + 1, f"hard links: {nlink}, want {total + 1}"
    finally:
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
