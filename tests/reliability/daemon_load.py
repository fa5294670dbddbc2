"""Daemon under load: many clients, a slowloris, a password-guessing flood; nothing lost.

A real `vcli vpopmaild` process (two worker processes, a short idle timeout) serves:

* `clients` threads from 127.0.0.1, half logged in as the system admin and half as the
  domain's postmaster, each running a random mix of reads (user_info, list_users,
  user_count) and writes (add_user, mod_user comment and password, del_user) on accounts
  of its own for `seconds`, logging every operation that succeeded and its latency;
* slowloris clients that trickle one byte of a login line at a time and never end it:
  each must be disconnected after the idle timeout while the others are served;
* an attacker at 127.0.0.2 that sends `failed_logins` wrong-password logins for a real
  account as fast as it can, most on connections it drops without waiting for the answer.
  The per-address throttle must engage (its answers slow down to the cap), and the normal
  clients' latency during the flood is compared with their latency before it.

Afterwards the store must hold exactly what the logs of successful operations imply (no
lost update) and `vcli check` must be clean.

`write_storm` is the write-heavy trial of issue 11 item 3: `writers` clients doing nothing but
add_user/mod_user/del_user on one domain while a reader times user_info and whole new-connection
logins; the daemon runs commands off its event loop and commits one domain's waiting writes
together, so the reads must stay fast (the full run reports p99 against 50 ms).

Full version: `python tests/reliability/daemon_load.py` (200 clients, 10 s, 10,000 failed
logins); the CI test runs a smaller one.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from daemon_helpers import Client, Daemon  # noqa: E402
from storeenv import make_env, missing_writes, tool, trial_store  # noqa: E402

from vcli.config import load_settings  # noqa: E402
from vcli.store.store import Store  # noqa: E402

DOMAIN = "example.test"
ATTACKER = "127.0.0.2"
SEED_USERS = [f"seed{j}" for j in range(50)]
OK = b"+OK \r\n"


def _setup(root: str) -> dict:
    env = make_env(pathlib.Path(root))
    trial_store(env, DOMAIN, SEED_USERS, "Seed-pw1")
    return env


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


class LoadClient(threading.Thread):
    """One connection doing a random mix of reads and writes on accounts of its own."""

    def __init__(self, i: int, port: int, until: list[float], seed: int, writes_only: bool = False):
        super().__init__(daemon=True)
        self.i, self.port, self.until = i, port, until
        self.writes_only = writes_only
        self.rng = random.Random(seed * 1000 + i)
        self.model: dict[str, dict] = {}  # user -> {"gecos", "pw"} after the last successful write
        self.deleted: set[str] = set()
        self.lat: list[tuple[float, float, str]] = []  # (start, seconds, kind)
        self.errors: list[str] = []
        self.writes = 0

    def timed(self, kind: str, fn, *args):
        t0 = time.monotonic()
        out = fn(*args)
        self.lat.append((t0, time.monotonic() - t0, kind))
        return out

    def run(self) -> None:
        try:
            self._run()
        except (OSError, ConnectionError) as exc:
            self.errors.append(f"client {self.i}: connection: {exc!r}")

    def _run(self) -> None:
        c = Client(self.port, timeout=60)
        login = ("slogin sysadmin@admin.test SysPass1" if self.i % 2
                 else f"slogin postmaster@{DOMAIN} Pm-pass1")
        if self.timed("login", c.cmd, login) != OK:
            self.errors.append(f"client {self.i}: login refused")
            return
        k = 0
        while time.monotonic() < self.until[0]:
            k += 1
            mine = sorted(self.model)
            r = self.rng.random()
            if self.writes_only:  # into the write branches below: add 36%, mod_user 51%, del_user 13%
                r = 0.45 + r * 0.55
            if r < 0.35:
                who = self.rng.choice(SEED_USERS + mine)
                reply = self.timed("user_info", c.cmd, f"user_info {who}@{DOMAIN}")
                if not reply.startswith(b"+OK+"):
                    self.errors.append(f"user_info {who}: {reply[:80]!r}")
            elif r < 0.40:
                reply = self.timed("list_users", c.cmd, f"list_users {DOMAIN}")
                if not reply.startswith(b"+OK+"):
                    self.errors.append(f"list_users: {reply[:80]!r}")
            elif r < 0.45:
                reply = self.timed("user_count", c.cmd, f"user_count {DOMAIN}")
                if not reply.startswith(b"+OK+"):
                    self.errors.append(f"user_count: {reply[:80]!r}")
            elif r < 0.65 or not mine:
                name, pw = f"c{self.i}u{k}", f"Pw-{self.i}-{k}"
                reply = self.timed("add_user", c.cmd, f"add_user {name}@{DOMAIN} {pw}")
                if reply == OK:
                    self.model[name] = {"gecos": name, "pw": pw}
                    self.writes += 1
                else:
                    self.errors.append(f"add_user {name}: {reply!r}")
            elif r < 0.93:
                who = self.rng.choice(mine)
                if r < 0.80:
                    change, key, value = "comment", "gecos", f"C {self.i} {k}"
                else:
                    change, key, value = "clear_text_password", "pw", f"New-{self.i}-{k}"
                reply = self.timed("mod_user", c.mod_user, f"{who}@{DOMAIN}", f"{change} {value}")
                if reply == OK:
                    self.model[who][key] = value
                    self.writes += 1
                else:
                    self.errors.append(f"mod_user {who}: {reply!r}")
            else:
                who = self.rng.choice(mine)
                reply = self.timed("del_user", c.cmd, f"del_user {who}@{DOMAIN}")
                if reply == OK:
                    del self.model[who]
                    self.deleted.add(who)
                    self.writes += 1
                else:
                    self.errors.append(f"del_user {who}: {reply!r}")
        c.cmd("quit")
        c.close()


class Slowloris(threading.Thread):
    """Trickles a login line one byte at a time and never ends it; notes when it was cut off."""

    def __init__(self, port: int, interval: float, give_up: float):
        super().__init__(daemon=True)
        self.port, self.interval, self.give_up = port, interval, give_up
        self.connected_for: float | None = None  # seconds until the daemon closed it
        self.error: str | None = None

    def run(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=self.give_up)
        except OSError as exc:
            self.error = repr(exc)
            return
        t0 = time.monotonic()
        s.settimeout(self.interval)
        payload = b"login sysadmin@admin.test " + b"x" * 10_000
        try:
            for b in payload:
                if time.monotonic() - t0 > self.give_up:
                    return
                s.sendall(bytes([b]))
                try:
                    data = s.recv(4096)
                    while data:  # the greeting, then (once cut off) the timeout line and EOF
                        data = s.recv(4096)
                    self.connected_for = time.monotonic() - t0
                    return
                except TimeoutError:
                    continue
        except OSError:
            self.connected_for = time.monotonic() - t0
        finally:
            s.close()


class Newcomer(threading.Thread):
    """Opens a new connection and logs in every `every` seconds until stopped: a flood must
    not use up the connections a new client needs."""

    def __init__(self, port: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.refused: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            t0 = time.monotonic()
            try:
                c = Client(self.port, timeout=30)
                reply = c.cmd("slogin sysadmin@admin.test SysPass1")
                c.close()
            except (OSError, ConnectionError, AssertionError) as exc:
                self.refused.append(repr(exc))
                continue
            if reply != OK:
                self.refused.append(repr(reply))
            self.latencies.append(time.monotonic() - t0)


class Attacker(threading.Thread):
    """Wrong-password logins for a real account from one address, as fast as it can.

    Most attempts are fire-and-forget (connect, send, close); every `probe_every`-th waits
    for the answer, so the throttle's delay can be seen from outside."""

    def __init__(self, port: int, attempts: int, counter: list[int], lock: threading.Lock, probe_every: int = 50):
        super().__init__(daemon=True)
        self.port, self.attempts, self.counter, self.lock = port, attempts, counter, lock
        self.probe_every = probe_every
        self.probes: list[tuple[float, float, bytes]] = []  # (start, seconds until answered, answer)
        self.refused = 0

    def run(self) -> None:
        while True:
            with self.lock:
                if self.counter[0] >= self.attempts:
                    return
                self.counter[0] += 1
                n = self.counter[0]
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=30, source_address=(ATTACKER, 0))
            except OSError:
                self.refused += 1
                continue
            try:
                line = f"login postmaster@{DOMAIN} guess{n}\r\n".encode()
                t0 = time.monotonic()
                s.sendall(line)
                if n % self.probe_every == 0:
                    buf = b""
                    while buf.count(b"\n") < 2:  # greeting, then the answer
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    if buf.startswith(b"-ERR"):  # refused instead of greeted (the per-address cap)
                        self.refused += 1
                        continue
                    self.probes.append((t0, time.monotonic() - t0, buf.split(b"\r\n")[1] if b"\r\n" in buf else buf))
            except OSError:
                self.refused += 1
            finally:
                s.close()


def run(clients: int = 200, seconds: float = 10.0, failed_logins: int = 10_000, slowloris: int = 20,
        idle_timeout: float = 2.0, attackers: int = 20, workers: int = 2, seed: int = 1, log=print) -> dict:
    """Run the trial; returns its figures (see the module docstring)."""
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="vcli-dload-", dir=parent)
    try:
        env = _setup(root)
        daemon = Daemon(env, "--workers", str(workers), "--idle-timeout", str(idle_timeout),
                        "--audit-log", os.path.join(root, "audit.log"))
        try:
            start = time.monotonic()
            until = [start + seconds]
            load = [LoadClient(i, daemon.port, until, seed) for i in range(clients)]
            for t in load:
                t.start()
            lorises = [Slowloris(daemon.port, interval=idle_timeout / 8, give_up=idle_timeout * 5 + 5)
                       for _ in range(slowloris)]
            for t in lorises:
                t.start()
            # the flood starts once the normal clients have a baseline
            time.sleep(seconds * 0.4)
            flood_start = time.monotonic()
            counter, lock = [0], threading.Lock()
            attack = [Attacker(daemon.port, failed_logins, counter, lock) for _ in range(attackers)]
            newcomer = Newcomer(daemon.port)
            for t in attack + [newcomer]:
                t.start()
            for t in attack:
                t.join()
            flood_end = time.monotonic()
            newcomer.stop.set()
            newcomer.join()
            until[0] = max(until[0], flood_end + 1.0)  # normal clients keep going through the flood
            for t in load + lorises:
                t.join(timeout=120)
            took = time.monotonic() - start
            # a normal client from another address gets in at once after the flood
            t0 = time.monotonic()
            c = Client(daemon.port, timeout=30)
            after_login = c.cmd("slogin sysadmin@admin.test SysPass1")
            after_latency = time.monotonic() - t0
            c.close()
        finally:
            daemon_log = daemon.stop()
        return _verify(env, root, load, lorises, attack, newcomer, counter[0], start, flood_start, flood_end, took,
                       after_login, after_latency, idle_timeout, daemon_log, log)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _verify(env, root, load, lorises, attack, newcomer, attempts, start, flood_start, flood_end, took,
            after_login, after_latency, idle_timeout, daemon_log, log) -> dict:
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    present = {u.name: u for u in st.list_users(DOMAIN)}
    lost: list[str] = []
    for cl in load:
        lost += missing_writes(present, cl.model, f"client {cl.i}")
        for name in cl.deleted - set(cl.model):
            if name in present:
                lost.append(f"{name}: deleted by client {cl.i} but present")
    expected = set(SEED_USERS) | {"postmaster"} | {n for cl in load for n in cl.model}
    for name in sorted(set(present) - expected - {n for cl in load for n in cl.deleted}):
        lost.append(f"{name}: present, but no client added it")
    chk = subprocess.run([tool("vcli"), "check"], env=env, capture_output=True, text=True)

    ops = [x for cl in load for x in cl.lat if x[2] != "login"]
    before = [s for t0, s, _ in ops if t0 < flood_start]
    during = [s for t0, s, _ in ops if flood_start <= t0 < flood_end]
    probes = [p for a in attack for p in a.probes]
    probe_lat = [s for _, s, _ in probes]
    audit_failed = 0
    audit_path = os.path.join(root, "audit.log")
    if os.path.exists(audit_path):
        with open(audit_path, errors="replace") as f:
            audit_failed = sum("result=failed 8." in ln for ln in f)
    loris_cut = [t.connected_for for t in lorises if t.connected_for is not None]
    errors = [e for cl in load for e in cl.errors]
    figs = {
        "clients": len(load), "seconds": round(took, 1),
        "ops": len(ops), "writes": sum(cl.writes for cl in load), "errors": errors,
        "ops_per_second": round(len(ops) / took, 1),
        "latency_before_p50_ms": round(pct(before, 50) * 1000, 1),
        "latency_before_p99_ms": round(pct(before, 99) * 1000, 1),
        "latency_during_p50_ms": round(pct(during, 50) * 1000, 1),
        "latency_during_p99_ms": round(pct(during, 99) * 1000, 1),
        "ops_during_flood": len(during), "flood_seconds": round(flood_end - flood_start, 1),
        "failed_logins_attempted": attempts,
        "failed_logins_checked": audit_failed,
        "attacker_refused": sum(a.refused for a in attack),
        "attacker_probe_p50_s": round(pct(probe_lat, 50), 2),
        "attacker_probes": len(probes),
        "newcomer_logins": len(newcomer.latencies), "newcomer_refused": newcomer.refused,
        "newcomer_p99_ms": round(pct(newcomer.latencies, 99) * 1000, 1),
        "attacker_probe_answers": sorted({p[2][:40].decode(errors="replace") for p in probes}),
        "slowloris": len(lorises), "slowloris_cut": len(loris_cut),
        "slowloris_cut_after_max_s": round(max(loris_cut), 2) if loris_cut else None,
        "idle_timeout": idle_timeout,
        "login_after_flood": after_login.decode(errors="replace").strip(),
        "login_after_flood_ms": round(after_latency * 1000, 1),
        "users_at_end": len(present), "lost_updates": lost,
        "check_exit": chk.returncode, "check_output": chk.stdout.strip()[-1000:],
        "check_clean": chk.returncode == 0, "daemon_log": daemon_log,
    }
    log(f"{figs['clients']} clients, {figs['ops']} ops ({figs['writes']} writes) in {figs['seconds']} s, "
        f"errors {len(errors)}; latency p50/p99 before the flood {figs['latency_before_p50_ms']}/"
        f"{figs['latency_before_p99_ms']} ms, during {figs['latency_during_p50_ms']}/{figs['latency_during_p99_ms']} ms "
        f"({len(during)} ops); {attempts} failed logins sent in {figs['flood_seconds']} s, "
        f"{audit_failed} checked by the daemon, attacker answer p50 {figs['attacker_probe_p50_s']} s; "
        f"new connections during it {len(newcomer.latencies)} logged in (p99 {figs['newcomer_p99_ms']} ms), "
        f"{len(newcomer.refused)} refused; "
        f"slowloris cut {len(loris_cut)}/{len(lorises)} after <= {figs['slowloris_cut_after_max_s']} s; "
        f"lost updates {len(lost)}, vcli check exit {chk.returncode}")
    return figs


class Reader:
    """Times user_info on one logged-in connection, and whole logins (connect, greeting, slogin)
    on new connections, from a process of its own (forked before the writers' threads start, so
    the clients' own GIL does not count against the daemon), until stopped."""

    def __init__(self, port: int, warmup: float):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=self._main, args=(child, port, warmup), daemon=True)
        self.proc.start()
        self.info: list[float] = []
        self.logins: list[float] = []
        self.errors: list[str] = []

    def begin(self) -> None:
        self.conn.send("go")

    def finish(self) -> None:
        self.conn.send("stop")
        if self.conn.poll(60):
            self.info, self.logins, self.errors = self.conn.recv()
        else:
            self.errors.append("reader: no figures")
        self.proc.join(timeout=10)

    @staticmethod
    def _main(conn, port: int, warmup: float) -> None:
        info: list[float] = []
        logins: list[float] = []
        errors: list[str] = []
        conn.recv()
        start_after = time.monotonic() + warmup
        try:
            c = Client(port, timeout=60)
            if c.cmd("slogin sysadmin@admin.test SysPass1") != OK:
                errors.append("reader: login refused")
            k = 0
            while not errors and not conn.poll(0):
                k += 1
                who = SEED_USERS[k % len(SEED_USERS)]
                t0 = time.monotonic()
                if k % 5 == 0:
                    n = Client(port, timeout=60)
                    reply = n.cmd(f"slogin {who}@{DOMAIN} Seed-pw1")
                    n.close()
                    took, into = time.monotonic() - t0, logins
                else:
                    reply = c.cmd(f"user_info {who}@{DOMAIN}")
                    took, into = time.monotonic() - t0, info
                if not reply.startswith(b"+OK"):
                    errors.append(f"reader: {who}: {reply[:80]!r}")
                if t0 >= start_after:
                    into.append(took)
                time.sleep(0.005)
            c.close()
        except (OSError, ConnectionError) as exc:
            errors.append(f"reader: connection: {exc!r}")
        conn.send((info, logins, errors))


def write_storm(writers: int = 200, seconds: float = 10.0, workers: int = 2, seed: int = 1, log=print) -> dict:
    """`writers` clients writing to one domain for `seconds` while a Reader times reads and
    logins; then no lost update and a clean `vcli check`.  Returns the figures."""
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="vcli-wstorm-", dir=parent)
    try:
        env = _setup(root)
        daemon = Daemon(env, "--workers", str(workers), "--audit-log", os.path.join(root, "audit.log"),
                        "--max-connections", str(max(1000, writers * 2)))
        try:
            reader = Reader(daemon.port, warmup=min(1.0, seconds / 4))
            start = time.monotonic()
            until = [start + seconds]
            load = [LoadClient(i, daemon.port, until, seed, writes_only=True) for i in range(writers)]
            for t in load:
                t.start()
            reader.begin()
            for t in load:
                t.join(timeout=seconds + 120)
            reader.finish()
            took = time.monotonic() - start
        finally:
            daemon_log = daemon.stop()
        st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
        present = {u.name: u for u in st.list_users(DOMAIN)}
        lost: list[str] = []
        for cl in load:
            lost += missing_writes(present, cl.model, f"client {cl.i}")
            lost += [f"{n}: deleted by client {cl.i} but present" for n in cl.deleted - set(cl.model) if n in present]
        chk = subprocess.run([tool("vcli"), "check"], env=env, capture_output=True, text=True)
        writes = [s for cl in load for t0, s, kind in cl.lat if kind != "login"]
        figs = {
            "writers": writers, "seconds": round(took, 1), "workers": workers,
            "writes": sum(cl.writes for cl in load), "writes_per_second": round(sum(cl.writes for cl in load) / took, 1),
            "write_p50_ms": round(pct(writes, 50) * 1000, 1), "write_p99_ms": round(pct(writes, 99) * 1000, 1),
            "reads": len(reader.info), "read_p50_ms": round(pct(reader.info, 50) * 1000, 1),
            "read_p99_ms": round(pct(reader.info, 99) * 1000, 1),
            "logins": len(reader.logins), "login_p50_ms": round(pct(reader.logins, 50) * 1000, 1),
            "login_p99_ms": round(pct(reader.logins, 99) * 1000, 1),
            "errors": [e for cl in load for e in cl.errors] + reader.errors, "lost_updates": lost,
            "users_at_end": len(present), "check_exit": chk.returncode, "check_output": chk.stdout.strip()[-1000:],
            "daemon_log": daemon_log,
        }
        log(f"write storm: {writers} writers on one domain, {figs['writes']} writes in {figs['seconds']} s "
            f"({figs['writes_per_second']}/s, p50/p99 {figs['write_p50_ms']}/{figs['write_p99_ms']} ms); "
            f"user_info p50/p99 {figs['read_p50_ms']}/{figs['read_p99_ms']} ms ({figs['reads']}), "
            f"login p50/p99 {figs['login_p50_ms']}/{figs['login_p99_ms']} ms ({figs['logins']}); "
            f"errors {len(figs['errors'])}, lost updates {len(lost)}, vcli check exit {chk.returncode}")
        return figs
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--failed-logins", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write-storm", action="store_true",
                    help="run the write storm instead (--clients writers on one domain, a reader timed)")
    args = ap.parse_args(argv)
    if args.write_storm:
        figs = write_storm(writers=args.clients, seconds=args.seconds, seed=args.seed)
        for e in figs["errors"][:10] + figs["lost_updates"][:10]:
            print("  " + e)
        return 1 if figs["errors"] or figs["lost_updates"] or figs["check_exit"] else 0
    figs = run(clients=args.clients, seconds=args.seconds, failed_logins=args.failed_logins, seed=args.seed)
    for e in figs["errors"][:10] + figs["lost_updates"][:10]:
        print("  " + e)
    print({k: v for k, v in figs.items() if k not in ("errors", "lost_updates", "daemon_log", "check_output")})
    if figs["errors"] and figs["daemon_log"]:
        print("daemon log:\n" + figs["daemon_log"][-3000:])
    bad = (figs["errors"] or figs["lost_updates"] or figs["check_exit"] or figs["slowloris_cut"] < figs["slowloris"]
           or figs["newcomer_refused"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
