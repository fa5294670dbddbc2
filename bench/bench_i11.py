#!/usr/bin/env python3
"""Issue 11's table in one run: every row as a figure and a ratio against its side-by-side reference.

    python bench/bench_i11.py [--users 100000] [--quick]

The reference is the real C tool where VPOPMAIL_REF=/path/to/vpopmail/bin names one that can run on
this store, else the floor or the other command measured in the same run:

  vmoduser -p / vsetuserquota DOMAIN       vs one vadduser on the same domain         goal <= 2x
  vsetuserquota DOMAIN                     vs its floor: every maildirsize written    goal <= 1.5x
                                           and renamed by a plain loop, one sync
  vcli vuserinfo -D -o json                time and peak RSS                          goal <= 3 s, <= 60 MB
  vuserinfo -D (classic)                   time and peak RSS (vs the C tool)          goal <= 2 s, <= 60 MB
  vcli vuserinfo -D -o csv at 20,000       time                                       goal <= 1 s
  vcli check DOMAIN                        vs lstat of every user's tree (one process) goal <= 1.5x
  remote bulk add of 1,000 (daemon)        vs the same bulk add locally               goal <= 3x
  vuserinfo user@domain (classic)          vs python -c pass, side by side            goal <= 2x
  bulk import, pre-encrypted, --users      vs the filesystem floor: the same trees made by a plain
                                           loop in 4 processes (as the domain's owner) goal <= 1.3x
                                           (and, for information, vs that floor + one sync)

--quick: 5,000 users, one run each (a smoke test of the bench itself).  The other bench_*.py
files measure more of each area; this one is the issue's closing table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import free_port  # noqa: E402
from benchlib import empty_store, scratch_dir, tool  # noqa: E402

ROWS: list[tuple[str, str, str, str, bool | None]] = []  # (operation, vcli, reference, ratio, goal met)

# A fresh small interpreter starts the command and reports its wall time and peak RSS: a child
# forked from this (bigger) process would carry this one's resident size in its ru_maxrss.
LAUNCH = """
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(p.pid, 0)
took = time.perf_counter() - t
err = p.stderr.read().decode(errors="replace").strip()
sys.stderr.write(f"RESULT {took} {usage.ru_maxrss}\\n" + (err[-500:] + "\\n" if status else ""))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one whole process."""
    r = subprocess.run([sys.executable, "-c", LAUNCH, *argv], env=env, capture_output=True, text=True)
    res = [ln for ln in r.stderr.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not res:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.strip()[-800:]}")
    _, took, peak = res[0].split()
    return float(took), int(peak) / 1024


def median_run(argv: list[str], env: dict, runs: int) -> tuple[float, float]:
    got = [run(argv, env) for _ in range(runs)]
    return statistics.median(t for t, _ in got), max(p for _, p in got)


def row(op: str, vcli: str, ref: str, ratio: float | None, goal: bool | None) -> None:
    ROWS.append((op, vcli, ref, "-" if ratio is None else f"{ratio:.2f}", goal))
    mark = "" if goal is None else ("   ok" if goal else "   MISSED")
    print(f"{op:<44} {vcli:<26} ref {ref:<34} ratio {ROWS[-1][3]:>5}{mark}", flush=True)


def ref_tool(name: str) -> str | None:
    ref = os.environ.get("VPOPMAIL_REF")
    path = os.path.join(ref, name) if ref else None
    return path if path and os.access(path, os.X_OK) else None


# --- floors -----------------------------------------------------------------------------------


def _floor_trees(args: tuple[list[str], int | None, int | None]) -> int:
    """A plain loop: home, Maildir/{new,cur,tmp}, lastauth, as the domain owner (no chown)."""
    homes, uid, gid = args
    if uid is not None and os.geteuid() == 0:
        os.setegid(gid)
        os.seteuid(uid)
    for h in homes:
        os.mkdir(h, 0o700)
        for sub in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
            os.mkdir(os.path.join(h, sub), 0o700)
        fd = os.open(os.path.join(h, "lastauth"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"0.0.0.0")
        os.close(fd)
    return len(homes)


def tree_floor(ddir: str, homes: list[str], procs: int = 4) -> tuple[float, float]:
    """Seconds to make the same trees under a sibling directory by a plain loop in `procs`
    processes; and the seconds one sync then takes to make them durable, as an import must."""
    st = os.stat(ddir)
    twin = ddir.rstrip("/") + ".floor"
    mapped = [twin + h[len(ddir.rstrip("/")):] for h in homes]
    t = time.perf_counter()
    for parent in sorted({os.path.dirname(h) for h in mapped}):
        os.makedirs(parent, exist_ok=True)
        os.chown(parent, st.st_uid, st.st_gid)
    n = -(-len(mapped) // procs)
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_floor_trees, [(mapped[i : i + n], st.st_uid, st.st_gid) for i in range(0, len(mapped), n)]))
    took = time.perf_counter() - t
    os.sync()
    synced = time.perf_counter() - t - took
    shutil.rmtree(twin)
    return took, synced


STAT_FLOOR = """
import os, sys
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        home = line.split(b":")[5].decode()
        for sub in ("", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"):
            os.lstat(home + sub)
        n += 1
"""


# What a domain-wide quota cannot do without (store.md 9.2): each user's maildirsize written in
# Maildir/tmp and renamed over the old one, by a plain loop in one process, then one sync.
QUOTA_FLOOR = """
import os, sys
with open(sys.argv[1], "rb") as f:
    homes = [line.split(b":")[5].decode() for line in f]
for home in homes:
    tmp = home + "/Maildir/tmp/floor.maildirsize"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"52428800S\\n0 0\\n")
    os.close(fd)
for home in homes:
    os.rename(home + "/Maildir/tmp/floor.maildirsize", home + "/Maildir/maildirsize")
os.sync()
"""


def homes_of(vpasswd: str) -> list[str]:
    """The homes of every user but postmaster (made by vadddomain, not by the import)."""
    with open(vpasswd, "rb") as f:
        return [line.split(b":")[5].decode() for line in f if not line.startswith(b"postmaster:")]


def bulk_feed(path: str, domain: str, n: int, secret: str, prefix: str = "u") -> None:
    with open(path, "w") as f:
        f.writelines(f"{prefix}{i:06d}@{domain},{secret}\n" for i in range(n))


# --- the rows ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="5,000 users, one run each")
    ap.add_argument("--runs", type=int, default=3, help="runs of each timed command (median)")
    args = ap.parse_args()
    users = 5000 if args.quick else args.users
    runs = 1 if args.quick else args.runs
    csv_users = min(20_000, users)
    from vcli.store.passwords import hash_password

    print(f"issue 11 bench: {users} users, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"VPOPMAIL_REF={os.environ.get('VPOPMAIL_REF') or '(not set)'}", flush=True)
    # the store, the floors' twins and the feeds: ~8 inodes a user at most at once
    with scratch_dir("vcli-i11-", inodes=max(1_000_000, users * 12), size_gb=max(16, users // 2000)) as (root, where):
        print(f"store on {where}", flush=True)
        os.chmod(root, 0o711)  # as a site's ~vpopmail: the domain owner can reach its domains
        vp, qm = empty_store(root)
        env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm)
        for var in ("VCLI_CONFIG", "VCLI_REMOTE", "VCLI_PROFILE", "VPOPMAIL_DOMAIN"):
            env.pop(var, None)
        for d in ("admin.test", "big.test", "mid.test", "small.test"):
            subprocess.run([tool("vadddomain"), d, "Pm-pass1"], env=env, check=True, capture_output=True)
        subprocess.run([tool("vadduser"), "sysadmin@admin.test", "SysPass1"], env=env, check=True)
        subprocess.run([tool("vmoduser"), "-S", "sysadmin@admin.test"], env=env, check=True)
        one_hash = hash_password("Bench-pw1")
        big = "big.test"
        ddir = os.path.join(vp, "domains", big)

        # 8. bulk import against the filesystem floor (the same trees, same run)
        feed = os.path.join(root, "feed.csv")
        bulk_feed(feed, big, users - 1, one_hash)  # with postmaster: `users` accounts
        took, _ = run([tool("vcli"), "--quiet", "vadduser", "--from-file", feed, "--hashed"], env)
        os.sync()  # the import's own writeback is not the floor's to pay
        floor, synced = tree_floor(ddir, homes_of(os.path.join(ddir, "vpasswd")))
        row(f"bulk import, {users - 1} pre-encrypted", f"{took:.2f} s", f"floor {floor:.2f} s (4 procs)",
            took / floor, took / floor <= 1.3)
        # information: the floor's trees are not on disk when it stops, the import's are (it syncs
        # before and after its commit); the same trees made durable by one sync
        row("  bulk import vs the floor + one sync", f"{took:.2f} s", f"floor + sync {floor + synced:.2f} s",
            took / (floor + synced), None)

        # 2./3. the listings: time and peak RSS (on the domain as imported: before the domain-wide
        # quota below gives every user a maildirsize that a listing showing usage must read)
        t, mb = median_run([tool("vcli"), "vuserinfo", "-o", "json", "-D", big], env, runs)
        row("vcli vuserinfo -D -o json", f"{t:.2f} s, {mb:.0f} MB", "goal 3 s, 60 MB", t / 3, t <= 3 and mb <= 60)
        t, mb = median_run([tool("vuserinfo"), "-D", big], env, runs)
        c_info = ref_tool("vuserinfo")
        ref, ratio = "goal 2 s, 60 MB", None
        if c_info:
            try:
                ct, cmb = run([c_info, "-D", big], env)
                ref, ratio = f"C {ct:.2f} s, {cmb:.1f} MB", t / ct
            except SystemExit as exc:
                print(f"  real C vuserinfo -D could not run on this store: {exc}")
        row("vuserinfo -D (classic)", f"{t:.2f} s, {mb:.0f} MB", ref, ratio, t <= 2 and mb <= 60)

        # 4. CSV at 20,000 (a domain of that size)
        mid_feed = os.path.join(root, "mid.csv")
        bulk_feed(mid_feed, "mid.test", csv_users - 1, one_hash, prefix="m")
        run([tool("vcli"), "--quiet", "vadduser", "--from-file", mid_feed, "--hashed"], env)
        t, mb = median_run([tool("vcli"), "vuserinfo", "-o", "csv", "-D", "mid.test"], env, runs)
        row(f"vcli vuserinfo -D -o csv at {csv_users}", f"{t:.2f} s, {mb:.0f} MB", "goal 1 s", t, t <= 1)

        # 5. vcli check against lstat of every tree
        t, _ = median_run([tool("vcli"), "check", big], env, runs)
        floor = statistics.median(run([sys.executable, "-c", STAT_FLOOR, os.path.join(ddir, "vpasswd")], env)[0]
                                  for _ in range(runs))
        row("vcli check DOMAIN", f"{t:.2f} s", f"stat floor {floor:.2f} s", t / floor, t / floor <= 1.5)

        # 7. the classic lookup against python -c pass, side by side
        target = f"u{users // 2:06d}@{big}"
        pairs = []
        for _ in range(5 if args.quick else 21):
            pairs.append((run([sys.executable, "-c", "pass"], env)[0],
                          run([sys.executable, tool("vuserinfo"), target], env)[0]))
        base, look = statistics.median(p for p, _ in pairs), statistics.median(v for _, v in pairs)
        ref = f"python -c pass {base * 1000:.1f} ms"
        if c_info:
            try:
                ref += f", C {run([c_info, target], env)[0] * 1000:.1f} ms"
            except SystemExit as exc:
                print(f"  real C vuserinfo could not run on this store: {exc}")
        row("vuserinfo user@domain (classic)", f"{look * 1000:.1f} ms", ref, look / base, look / base <= 2)

        # 1. domain-wide changes against one vadduser
        adds = [run([tool("vadduser"), f"new{i}@{big}", "Newpass-1"], env)[0] for i in range(runs)]
        add = statistics.median(adds)
        for label, argv in (("vmoduser -p DOMAIN", ["vmoduser", "-p", big]),
                            ("vsetuserquota DOMAIN 50M", ["vsetuserquota", big, "50M"])):
            t, _ = median_run([tool(argv[0]), *argv[1:]], env, runs)
            row(label, f"{t:.2f} s", f"vadduser {add:.2f} s", t / add, t / add <= 2)
            if argv[0] == "vsetuserquota":
                # the 2x one vadduser leaves out the maildirsize of every user: its floor
                vp_file = os.path.join(ddir, "vpasswd")
                qfloor = statistics.median(run([sys.executable, "-c", QUOTA_FLOOR, vp_file], env)[0]
                                           for _ in range(runs))
                subprocess.run([tool("vsetuserquota"), big, "50M"], env=env, check=True)  # its own bytes back
                row("  vsetuserquota DOMAIN vs its maildirsize floor", f"{t:.2f} s",
                    f"plain loop {qfloor:.2f} s", t / qfloor, t / qfloor <= 1.5)
        c_mod = ref_tool("vmoduser")
        if c_mod:
            try:
                t, _ = run([c_mod, "-p", big], env)
                row("  real C vmoduser -p DOMAIN", f"{t:.2f} s", "(C: one rewrite per user)", None, None)
            except SystemExit as exc:
                print(f"  real C vmoduser could not run on this store: {exc}")

        # 6. remote bulk add of 1,000 through the daemon against the same locally
        port = free_port()
        d = subprocess.Popen([sys.executable, "-m", "vcli.daemon", "--listen", f"127.0.0.1:{port}",
                              "--audit-log", os.devnull] + (["--user", "root"] if os.geteuid() == 0 else []),
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        d.stderr.readline()
        try:
            remote = dict(env, VCLI_REMOTE=f"127.0.0.1:{port}", VCLI_LOGIN="sysadmin@admin.test",
                          VCLI_PASSWORD="SysPass1")
            times = {}
            for tag, e in (("l", env), ("r", remote)):
                f1000 = os.path.join(root, f"{tag}.csv")
                with open(f1000, "w") as f:
                    f.writelines(f"{tag}{i:04d}@small.test,Pw-{i:04d}-bulk\n" for i in range(1000))
                times[tag] = run([tool("vcli"), "--quiet", "vadduser", "--from-file", f1000], e)[0]
        finally:
            d.terminate()
            d.wait(timeout=20)
        row("remote bulk add of 1,000 (vcli daemon)", f"{times['r']:.2f} s", f"local {times['l']:.2f} s",
            times["r"] / times["l"], times["r"] / times["l"] <= 3)

        chk = subprocess.run([tool("vcli"), "check"], env=env, capture_output=True, text=True)
        print(f"vcli check of the whole store afterwards: exit {chk.returncode}")
    print(f"\n| operation ({users} users) | vcli | reference | ratio | goal |")
    print("|---|---|---|---|---|")
    for op, v, ref, ratio, goal in ROWS:
        print(f"| {op.strip()} | {v} | {ref} | {ratio} | {'-' if goal is None else ('ok' if goal else 'MISSED')} |")
    return 0 if all(g is not False for *_, g in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
