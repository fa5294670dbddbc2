#!/usr/bin/env python3
"""vpopmaild figures: slogin throughput, user_info latency on a big domain, RSS of idle connections,
and the cost of the remote backend against the local one (whole processes).

    python bench/bench_daemon.py [--users 100000] [--seconds 5]

With VPOPMAILD_REF=host:port the slogin throughput of a real vpopmaild (e.g. under tcpserver) with
the same accounts is measured too and the ratio printed.
Goals: slogin >= 1.0x the real daemon; user_info p99 <= 5 ms; 1,000 idle connections <= 100 MB RSS.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import empty_store, tool

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, os.path.join(HERE, ".."))


def make_store(root: str, users: int) -> dict:
    from vcli import flags as F
    from vcli.config import load_settings
    from vcli.store.passwords import hash_password
    from vcli.store.store import NewUser, Store, UserChanges

    vp, qm = empty_store(root)
    st = Store(load_settings({"vpopmail_dir": vp, "qmail_dir": qm}))
    st.add_domain("admin.test", "Admin-pm1")
    st.add_user("admin.test", NewUser("sysadmin", "SysPass1"))
    st.mod_user("sysadmin", "admin.test", UserChanges(set_flags=F.SA_ADMIN))
    st.add_domain("big.test", "Pm-pass1")
    h = hash_password("Secret-1")
    st.add_users("big.test", [NewUser(f"u{i:06d}", hashed=h) for i in range(users)])
    st.add_domain("small.test", "Pm-pass1")
    st.add_users("small.test", [NewUser(f"s{i:04d}", hashed=h) for i in range(1000)])
    env = dict(os.environ, VPOPMAIL_DIR=vp, QMAIL_DIR=qm)
    env.pop("VCLI_REMOTE", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    def __init__(self, host: str, port: int):
        self.s = socket.create_connection((host, port), timeout=30)
        self.f = self.s.makefile("rb")
        self.f.readline()

    def cmd(self, line: str) -> list[bytes]:
        self.s.sendall(line.encode() + b"\r\n")
        first = self.f.readline()
        out = [first]
        if first.startswith(b"+OK+"):
            while True:
                ln = self.f.readline()
                out.append(ln)
                if ln == b".\r\n":
                    break
        return out


def slogin_rate(host: str, port: int, address: str, password: str, seconds: float, clients: int = 8) -> float:
    count = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            c = Conn(host, port)
            assert c.cmd(f"slogin {address} {password}")[0] == b"+OK \r\n"
            c.s.close()
            count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.monotonic() - t0)


def rss_kib(pid: int) -> int:
    """RSS of the daemon: the process and its worker processes."""
    total = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(x) for x in f.read().split()]
    except OSError:
        children = []
    return total + sum(rss_kib(c) for c in children)


def whole(cmd: list[str], env: dict, runs: int) -> float:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True)
        walls.append(time.perf_counter() - t0)
        if r.returncode:
            raise SystemExit(f"{cmd} failed: {r.stderr.decode()}")
    return statistics.median(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vcli-dbench-", dir=os.environ.get("TMPDIR")) as root:
        t0 = time.perf_counter()
        env = make_store(root, args.users)
        print(f"store: {args.users} users in big.test, 1000 in small.test ({time.perf_counter() - t0:.1f} s to build)")
        port = free_port()
        d = subprocess.Popen([sys.executable, "-m", "vcli.daemon", "--listen", f"127.0.0.1:{port}",
                              "--audit-log", os.devnull, "--user", "root"], env=env, stderr=subprocess.PIPE)
        d.stderr.readline()
        try:
            rate = slogin_rate("127.0.0.1", port, "u000001@big.test", "Secret-1", args.seconds)
            print(f"slogin, 8 clients, SHA-512:        {rate:8.1f} logins/s")
            ref = os.environ.get("VPOPMAILD_REF")
            if ref:
                host, _, rport = ref.rpartition(":")
                ref_rate = slogin_rate(host, int(rport), "u000001@big.test", "Secret-1", args.seconds)
                print(f"real vpopmaild slogin:             {ref_rate:8.1f} logins/s   ratio {rate / ref_rate:.2f}"
                      f"   goal >= 1.0: {'ok' if rate >= ref_rate else 'MISSED'}")
            else:
                print("VPOPMAILD_REF not set: no ratio against the real vpopmaild")
            c = Conn("127.0.0.1", port)
            c.cmd("slogin sysadmin@admin.test SysPass1")
            lat = []
            for i in range(3000):
                t = time.perf_counter()
                reply = c.cmd(f"user_info u{(i * 7919) % args.users:06d}@big.test")
                lat.append(time.perf_counter() - t)
                assert reply[0] == b"+OK+\r\n", reply
            lat.sort()
            p99 = lat[int(len(lat) * 0.99)] * 1000
            print(f"user_info on {args.users} users:    p50 {statistics.median(lat) * 1000:6.2f} ms   "
                  f"p99 {p99:6.2f} ms   goal p99 <= 5 ms: {'ok' if p99 <= 5 else 'MISSED'}")
            base = rss_kib(d.pid)
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
            time.sleep(1.0)
            rss = rss_kib(d.pid)
            print(f"1,000 idle connections:            RSS {rss / 1024:6.1f} MB (was {base / 1024:.1f} MB idle)   "
                  f"goal <= 100 MB: {'ok' if rss / 1024 <= 100 else 'MISSED'}")
            for s in idle:
                s.close()

            remote = dict(env, VCLI_REMOTE=f"127.0.0.1:{port}", VCLI_LOGIN="sysadmin@admin.test",
                          VCLI_PASSWORD="SysPass1")
            print("remote backend against local (whole process, median):")
            for label, cmd, runs in (
                ("vuserinfo user@domain", [tool("vuserinfo"), "s0500@small.test"], 15),
                ("vuserinfo -D (1,000 users)", [tool("vuserinfo"), "-n", "-D", "small.test"], 5),
            ):
                loc, rem = whole(cmd, env, runs), whole(cmd, remote, runs)
                print(f"  {label:<30} local {loc * 1000:8.1f} ms   remote {rem * 1000:8.1f} ms   x{rem / loc:.1f}")
            feed = os.path.join(root, "bulk.csv")
            for tag, e in (("local", env), ("remote", remote)):
                with open(feed, "w") as f:
                    f.writelines(f"{tag}{i:04d}@small.test,Pw-{i:04d}x\n" for i in range(1000))
                t = time.perf_counter()
                subprocess.run([tool("vcli"), "vadduser", "--from-file", feed], env=e, check=True)
                print(f"  bulk add 1,000 users ({tag:<6})   {time.perf_counter() - t:8.2f} s")
        finally:
            d.terminate()
            d.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
