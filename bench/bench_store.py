#!/usr/bin/env python3
"""Whole-process figures for the store commands (issue: "the local store and the account commands").

    python bench/bench_store.py [--users 100000] [--runs 30] [--skip-clear]

Builds a store in a temporary directory and prints, for the installed commands:
  * classic `vuserinfo user@domain` and `vcli vuserinfo` on a domain of --users users:
    median / p90 wall time and peak RSS of the whole process;
  * `vadduser` of one user into that domain (median of 5);
  * bulk `vcli vadduser --from-file` of --users users into an empty domain with
    pre-encrypted passwords, and with clear-text ones against the hashing floor
    (SHA-512 crypt cost per password measured here x users / cores).
With VPOPMAIL_REF=/path/to/vpopmail/bin the same figures are printed for the real
C tools where they can run (they need their compiled-in ~vpopmail, so this works
only when the reference install lives where its build says).
Goals: vuserinfo <= 50 ms and <= 30 MB; vcli vuserinfo <= 120 ms; vadduser <= 1.5 s;
bulk pre-encrypted <= 15 s; bulk clear-text <= 1.25 x the hashing floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import empty_store, tool

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def make_store(root: str) -> dict:
    vp, qm = empty_store(root)
    env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm)
    env.pop("VCLI_CONFIG", None)
    return env


def timed(cmd: list[str], env: dict, runs: int) -> tuple[list[float], int]:
    """Wall times of `runs` runs and the peak RSS (KiB) seen, via wait4()."""
    walls, peak = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t0)
        err = p.stderr.read()
        p.stderr.close()
        if status != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {err.decode(errors='replace').strip()}")
        peak = max(peak, ru.ru_maxrss)
    return walls, peak


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def hash_cost(n: int = 2000) -> float:
    from vcli.store.passwords import hash_password

    t0 = time.perf_counter()
    for i in range(n):
        hash_password(f"password{i}")
    return (time.perf_counter() - t0) / n


def report(label: str, walls: list[float], peak_kib: int | None = None, goal_ms: float | None = None) -> None:
    med = statistics.median(walls) * 1000
    line = f"{label:<44} median {med:8.1f} ms   p90 {pct(walls, 0.9) * 1000:8.1f} ms"
    if peak_kib:
        line += f"   peak RSS {peak_kib / 1024:6.1f} MB"
    if goal_ms:
        line += f"   goal <= {goal_ms:g} ms: {'ok' if med <= goal_ms else 'MISSED'}"
    print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-clear", action="store_true", help="skip the clear-text bulk add (the longest part)")
    args = ap.parse_args()
    from vcli.store.passwords import hash_password

    cores = os.cpu_count() or 1
    print(f"vcli store bench: {args.users} users, {cores} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="vcli-bench-") as root:
        env = make_store(root)
        subprocess.run([tool("vadddomain"), "big.test", "Pm-pass1"], env=env, check=True)
        subprocess.run([tool("vadddomain"), "bulk.test", "Pm-pass1"], env=env, check=True)
        one_hash = hash_password("secret")
        feed = os.path.join(root, "users.txt")
        with open(feed, "w") as f:
            for i in range(args.users):
                f.write(f"u{i:06d}@big.test,{one_hash}\n")

        t0 = time.perf_counter()
        subprocess.run([tool("vcli"), "vadduser", "--from-file", feed, "--hashed"], env=env, check=True)
        pre = time.perf_counter() - t0
        print(f"{'bulk add, pre-encrypted (' + str(args.users) + ' users)':<44} {pre:8.2f} s"
              f"   goal <= 15 s: {'ok' if pre <= 15 else 'MISSED'}", flush=True)

        target = f"u{args.users // 2:06d}@big.test"
        walls, peak = timed([tool("vuserinfo"), target], env, args.runs)
        report("vuserinfo user@domain (classic)", walls, peak, 50)
        print(f"{'':<44} peak RSS goal <= 30 MB: {'ok' if peak / 1024 <= 30 else 'MISSED'}")
        walls, peak = timed([tool("vcli"), "vuserinfo", target], env, max(5, args.runs // 3))
        report("vcli vuserinfo user@domain", walls, peak, 120)
        walls = []
        for i in range(5):
            w, _ = timed([tool("vadduser"), f"new{i}@big.test", "Newpass-1"], env, 1)
            walls += w
        report(f"vadduser one user ({args.users}-user domain)", walls, None, 1500)

        ref = os.environ.get("VPOPMAIL_REF")
        if ref:
            for name in ("vuserinfo", "vadduser"):
                if not os.access(os.path.join(ref, name), os.X_OK):
                    print(f"VPOPMAIL_REF: no {name} in {ref}")
            if os.access(os.path.join(ref, "vuserinfo"), os.X_OK):
                try:
                    walls, peak = timed([os.path.join(ref, "vuserinfo"), target], env, args.runs)
                    report("reference C vuserinfo", walls, peak)
                except SystemExit as exc:
                    print(f"reference C vuserinfo could not run on this store: {exc}")
        else:
            print("VPOPMAIL_REF not set: no side-by-side figures for the C tools "
                  "(measured earlier on this machine: vuserinfo 1.0 ms, vadduser 149 ms at 10,000 users)")

        if not args.skip_clear:
            per = hash_cost()
            floor = per * args.users / cores
            with open(feed, "w") as f:
                for i in range(args.users):
                    f.write(f"c{i:06d}@bulk.test,Pw-{i:06d}\n")
            t0 = time.perf_counter()
            subprocess.run([tool("vcli"), "vadduser", "--from-file", feed], env=env, check=True)
            clear = time.perf_counter() - t0
            ratio = clear / floor
            print(f"{'bulk add, clear text (' + str(args.users) + ' users)':<44} {clear:8.2f} s   "
                  f"floor {floor:.2f} s ({per * 1000:.2f} ms/hash x {args.users} / {cores} cores)   "
                  f"ratio {ratio:.2f}   goal <= 1.25: {'ok' if ratio <= 1.25 else 'MISSED'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
