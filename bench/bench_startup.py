#!/usr/bin/env python3
"""Start-up of the classic lookup path (issue 11 item 4): whole-process time of the installed
`vuserinfo user@domain` (and `vdominfo DOMAIN`) on a one-user store against `python -c pass` of
the same interpreter, run side by side (alternating), median of --runs each, bytecode present.

    python bench/bench_startup.py [--runs 21]

Target: vuserinfo <= 2x python -c pass.  PYTHONPATH=<another checkout> times that checkout's code
(the "before" figure); the line `code:` says which vcli the commands ran.
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

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))


def make_store(root: str) -> dict:
    vp, qm = empty_store(root)
    env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with .pyc files, as an installed site runs
    for var in ("VCLI_CONFIG", "VCLI_REMOTE", "VCLI_PROFILE", "VPOPMAIL_DOMAIN"):
        env.pop(var, None)
    for argv in (["vadddomain", "bench.test", "Bench-pm1"], ["vadduser", "bench@bench.test", "Bench-pw1"]):
        subprocess.run([tool(argv[0]), *argv[1:]], env=env, check=True, capture_output=True)
    return env


def timed(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{argv}: exit {r.returncode}: {r.stderr.decode()}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        env = make_store(root)
        where = subprocess.run([sys.executable, "-c", "import vcli, os; print(os.path.dirname(vcli.__file__))"],
                               env=env, capture_output=True, text=True, check=True, cwd=root).stdout.strip()
        subprocess.run([sys.executable, "-m", "compileall", "-q", where], env=env, check=True)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "vuserinfo user@domain": [sys.executable, tool("vuserinfo"), "bench@bench.test"],
            "vdominfo DOMAIN": [sys.executable, tool("vdominfo"), "bench.test"],
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for argv in cases.values():  # warm the page cache and write any missing .pyc
            timed(argv, env)
        for _ in range(args.runs):
            for name, argv in cases.items():  # side by side: one of each in turn
                times[name].append(timed(argv, env))
        base = statistics.median(times["python -c pass"])
        print(f"code: {where}")
        print(f"interpreter: {sys.executable} ({sys.version.split()[0]}), {args.runs} runs each, median")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:24s} {med * 1000:7.1f} ms   x{med / base:4.2f} of python -c pass")
        ratio = statistics.median(times["vuserinfo user@domain"]) / base
        print(f"vuserinfo / python -c pass = {ratio:.2f} (target <= 2.00): {'OK' if ratio <= 2 else 'OVER'}")


if __name__ == "__main__":
    main()
