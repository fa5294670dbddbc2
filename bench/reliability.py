"""The full reliability runs, one command: `python bench/reliability.py [--only NAME,...]`.

Runs the full versions of the trials whose quick versions CI runs (tests/test_reliability_*.py,
tests/test_fuzz.py) and prints each one's figures, then a summary table in the form of
docs/reliability.md.  Exit status 1 if any trial found a lost update, a mixed state or a crash.
The disk-full trial mounts a tmpfs, so run it as root.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
for p in (TESTS, os.path.join(TESTS, "reliability")):
    if p not in sys.path:
        sys.path.insert(0, p)

TRIALS = ("crash", "concurrency", "diskfull", "daemon", "fuzz")


def crash_full() -> dict:
    import crash

    figs = crash.run(fault_trials={"add": 0, "delete": 0, "modify": 0, "password": 0, "quota": 0, "alias": 0,
                                   "bulk": 60})
    crash.print_figures(figs)
    io = figs["io_faults"]
    return {
        "rows": [
            ("SIGKILL at every file-system step of add/delete/modify/password, and at random times "
             "during add, delete and 10,000-user bulk adds",
             f"{figs['trials']} commands", f"{figs['killed']} SIGKILLs", "-",
             f"{figs['mixed']} mixed states, {len(figs['failures'])} failed trials",
             "python tests/reliability/crash.py --full"),
            ("EIO/ENOSPC raised at every file-system step (every command but domain add; 60 steps of a bulk add)",
             f"{io['injected']} commands", f"{io['injected']} I/O errors", "-",
             f"{io['failed_cleanly']} failed cleanly (exit 74, old state), {io['succeeded_anyway']} succeeded, "
             f"{io['committed_then_failed']} committed and announced",
             "python tests/reliability/crash.py --full"),
        ],
        "ok": not figs["failures"],
    }


def concurrency_full() -> dict:
    import concurrency

    ref = os.environ.get("VPOPMAIL_REF") or None
    figs = concurrency.run(workers=8, ops=500, ref=ref)
    lost = len(figs["lost_updates"])
    real = f" + {figs['ref_ops_ok']} by the real C tools" if ref else ""
    return {
        "rows": [(
            "8 processes x 500 mixed vadduser/vmoduser/vpasswd/vdeluser on one domain, "
            "a daemon client doing add_user/mod_user meanwhile",
            f"{figs['cli_ops_ok'] - figs['ref_ops_ok']} classic commands ok{real}, {figs['daemon_ops']} daemon ops, "
            f"in {figs['seconds']} s",
            "-", "-",
            f"{lost} lost updates, {len(figs['errors'])} errors, vcli check exit {figs['check_exit']}"
            + (f" (C tools' .dir-control drift repaired: {figs['ref_dir_control_drift']})"
               if figs.get("ref_dir_control_drift") else ""),
            ("VPOPMAIL_REF=/home/vpopmail/bin " if ref else "") + "python tests/reliability/concurrency.py --full",
        )],
        "ok": not lost and not figs["errors"] and figs["check_exit"] == 0,
    }


def diskfull_full() -> dict:
    import diskfull

    figs = diskfull.run(
        bytes_free=tuple(range(0, 65536, 4096)) + (98304, 131072, 262144, 524288, 1 << 20),
        inodes_free=tuple(range(0, 16)) + (50, 200), bulk=1000)
    return {
        "rows": [(
            "every changing command (8) on a full tmpfs, free space swept over 21 byte and 18 inode levels",
            f"{figs['runs']} commands", f"{figs['failed_cleanly']} ran out of space", "-",
            f"{figs['failed_cleanly']} failed cleanly (exit 74, one line, old state), {figs['succeeded']} "
            f"succeeded, {len(figs['failures'])} wrong",
            "sudo python tests/reliability/diskfull.py --full",
        )],
        "ok": not figs["failures"],
    }


def daemon_full() -> dict:
    import daemon_load

    figs = daemon_load.run(clients=200, seconds=10.0, failed_logins=10000)
    lost = len(figs["lost_updates"])
    ok = (not lost and not figs["errors"] and figs["check_clean"] and not figs["newcomer_refused"]
          and figs["slowloris_cut"] == figs["slowloris"])
    storm = daemon_load.write_storm(writers=200, seconds=10.0)
    storm_ok = not storm["errors"] and not storm["lost_updates"] and storm["check_exit"] == 0
    storm_row = (
        f"daemon: {storm['writers']} clients writing (add_user/mod_user/del_user) to one domain for 10 s "
        "while a reader times user_info and whole logins",
        f"{storm['writes']} writes ({storm['writes_per_second']}/s, p50/p99 {storm['write_p50_ms']}/"
        f"{storm['write_p99_ms']} ms); {storm['reads']} user_info p50/p99 {storm['read_p50_ms']}/"
        f"{storm['read_p99_ms']} ms, {storm['logins']} logins p50/p99 {storm['login_p50_ms']}/"
        f"{storm['login_p99_ms']} ms (goal p99 <= 50 ms: "
        f"{'ok' if max(storm['read_p99_ms'], storm['login_p99_ms']) <= 50 else 'MISSED'})",
        "-", "-",
        f"{len(storm['lost_updates'])} lost updates, {len(storm['errors'])} errors, vcli check exit {storm['check_exit']}",
        "python tests/reliability/daemon_load.py --write-storm",
    )
    return {
        "rows": [(
            f"daemon: {figs['clients']} clients of mixed reads and writes for 10 s, {figs['slowloris']} slowloris "
            f"clients, 10,000 wrong-password logins from one address",
            f"{figs['ops']} ops ({figs['writes']} writes, {figs['ops_per_second']}/s); "
            f"p50/p99 {figs['latency_before_p50_ms']}/{figs['latency_before_p99_ms']} ms before the flood, "
            f"{figs['latency_during_p50_ms']}/{figs['latency_during_p99_ms']} ms during it",
            f"{figs['failed_logins_attempted']} failed logins ({figs['failed_logins_checked']} reached a password "
            f"check), {figs['slowloris']} slowloris",
            f"{figs['failed_logins_attempted']} wrong passwords, {figs['slowloris']} endless lines",
            f"{lost} lost updates, {len(figs['errors'])} errors, slowloris cut {figs['slowloris_cut']}/"
            f"{figs['slowloris']} after <= {figs['slowloris_cut_after_max_s']} s, new clients refused "
            f"{len(figs['newcomer_refused'])}, vcli check clean: {figs['check_clean']}",
            "python tests/reliability/daemon_load.py",
        ), storm_row],
        "ok": ok and storm_ok,
    }


def fuzz_full() -> dict:
    env = dict(os.environ, VCLI_FUZZ_SCALE="20")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
                        "tests/test_fuzz.py", "tests/test_store_cdb.py", "tests/test_store_vpasswd.py",
                        "tests/test_formats.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    examples = sum(int(n) for n in re.findall(r"(\d+) passing, ", r.stdout))
    print(r.stdout[-3000:])
    return {
        "rows": [(
            "hypothesis: vpasswd codec, cdb writer/reader, address and quota parsers, daemon session "
            "(then `vcli check`)", f"{examples} examples", "-", f"{examples} generated inputs",
            "passed" if r.returncode == 0 else f"FAILED (pytest exit {r.returncode})",
            "VCLI_FUZZ_SCALE=20 pytest tests/test_fuzz.py tests/test_store_cdb.py ...",
        )],
        "ok": r.returncode == 0,
    }


RUNNERS = {"crash": crash_full, "concurrency": concurrency_full, "diskfull": diskfull_full,
           "daemon": daemon_full, "fuzz": fuzz_full}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(TRIALS), help=f"comma-separated subset of {', '.join(TRIALS)}")
    args = ap.parse_args()
    rows, ok = [], True
    for name in args.only.split(","):
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        res = RUNNERS[name]()
        print(f"== {name}: {'ok' if res['ok'] else 'FAILED'} in {time.monotonic() - t0:.0f} s", flush=True)
        rows.extend(res["rows"])
        ok &= res["ok"]
    print("\n| test | operations | faults injected | bad inputs | result | reproduce |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row[:5]) + f" | `{row[5]}` |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
