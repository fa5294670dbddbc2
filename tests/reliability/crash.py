"""Crash trials: SIGKILL a real command at chosen moments, then prove old-or-new state.

Each trial copies a base store to the same absolute path (paths are inside vpasswd),
runs one real command and kills it with SIGKILL:

* "step" trials kill it exactly before its Nth file-system change (an audit hook in
  the command's own interpreter counts mkdir/open-for-write/rename/unlink/rmdir/chmod/
  chown events), so every step of the command is hit in turn;
* "time" trials kill it from outside after a random delay (the parent only, so pool
  workers of a bulk add must die with it).

Then: what readers see (vpasswd) must be the old or the new state; `vcli check --repair`
must fix everything (the interrupted change is replayed) and end in exactly the old or the
new state; `vcli check` must then be clean.  Password hashes are salted, so the hash of
the user an operation sets is compared by verifying the password.

Run standalone for the full version: `python tests/reliability/crash.py [--full]`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from storeenv import make_env, tool  # noqa: E402

from vcli.config import load_settings  # noqa: E402
from vcli.store import passwords  # noqa: E402
from vcli.store.store import NewUser, Store  # noqa: E402

# Runs a console script with an audit hook that SIGKILLs the process before its Nth change.
WRAPPER = r"""
import os, signal, sys
stop = int(os.environ.get("CRASH_AT", "0"))
count_file = os.environ.get("CRASH_COUNT_FILE")
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.chmod", "os.chown", "shutil.rmtree"}
count = 0
me = os.getpid()
def hook(event, args):
    global count
    if event == "open":
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        if not flags & WRITE and not (isinstance(args[1], str) and set(args[1]) & set("wax+")):
            return
    elif event not in EVENTS:
        return
    if os.getpid() != me:
        return
    count += 1
    if count == stop:
        fault = os.environ.get("CRASH_FAULT", "kill")
        if fault == "kill":
            os.kill(me, signal.SIGKILL)
        import errno
        code = errno.ENOSPC if fault == "enospc" else errno.EIO
        raise OSError(code, os.strerror(code))
sys.addaudithook(hook)
def report():
    if count_file:
        os.write(os.open(count_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), str(count).encode())
import atexit
atexit.register(report)
import runpy
name = sys.argv[1]
sys.argv = sys.argv[1:]
script = os.path.join(os.path.dirname(sys.executable), name)  # the installed command (bin/ script)
try:
    if os.path.exists(script):
        runpy.run_path(script, run_name="__main__")
    else:
        from importlib.metadata import entry_points
        (ep,) = [e for e in entry_points(group="console_scripts") if e.name == name]
        ep.load()()
finally:
    report()
"""

DOMAIN = "example.test"


class Scenario:
    """One operation: the command line and the users whose hash is set by it."""

    def __init__(self, name: str, argv: list[str], passwords_set: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.passwords_set = passwords_set or {}


def _base_store(root: str, users: int, bulk: int) -> tuple[dict, list[Scenario]]:
    env = make_env(_P(root))
    st = Store(load_settings({"vpopmail_dir": env["VPOPMAIL_DIR"], "qmail_dir": env["QMAIL_DIR"]}))
    st.add_domain(DOMAIN, "Pm-pass1")
    h = passwords.hash_password("Base-pw1")
    st.add_users(DOMAIN, [NewUser(f"u{i:04d}", hashed=h, quota="10M" if i % 2 else None) for i in range(users)])
    victim = st.get_user("u0001", DOMAIN)
    for i in range(40):  # a mailbox with mail, so deleting it takes many steps
        with open(os.path.join(victim.dir, "Maildir", "cur", f"{1700000000 + i}.M1P1.host:2,S"), "wb") as f:
            f.write(b"Subject: x\n\n" + b"y" * 2000)
    feed = os.path.join(os.path.dirname(root), "bulk.csv")
    with open(feed, "w") as f:
        f.write("address,hash,quota,comment\n")
        for i in range(bulk):
            f.write(f"b{i:05d}@{DOMAIN},{h},{'5M' if i % 3 == 0 else ''},Bulk {i}\n")
    scenarios = [
        Scenario("add", ["vadduser", "-q", "5M", "-c", "New Kid", f"newkid@{DOMAIN}", "Kid-pass-1"],
                 {"newkid": "Kid-pass-1"}),
        Scenario("delete", ["vdeluser", f"u0001@{DOMAIN}"]),
        Scenario("modify", ["vmoduser", "-q", "20M", "-c", "Changed Name", "-p", "-a", f"u0003@{DOMAIN}"]),
        Scenario("password", ["vpasswd", f"u0004@{DOMAIN}", "Other-pw-9"], {"u0004": "Other-pw-9"}),
        Scenario("bulk", ["vcli", "--quiet", "vadduser", "--from-file", feed]),
        Scenario("adddomain", ["vadddomain", "new.test", "Pm-pass2"], {"postmaster": "Pm-pass2"}),
        Scenario("quota", ["vsetuserquota", f"u0006@{DOMAIN}", "30M"]),
        # domain-wide: one intent naming a few of the changed lines, every maildirsize rewritten
        Scenario("domainquota", ["vsetuserquota", DOMAIN, "40M"]),
        Scenario("domainmod", ["vmoduser", "-p", DOMAIN]),
        Scenario("alias", ["valias", "-i", "someone@elsewhere.test", f"info@{DOMAIN}"]),
    ]
    return env, scenarios


class _P(str):
    """make_env wants a pathlib-like object with '/'."""

    def __truediv__(self, other):
        import pathlib

        return pathlib.Path(self) / other


def state(root: str, passwords_set: dict[str, str]) -> dict[str, tuple]:
    """Every path below root -> (mode, content); lock files and vpasswd.cdb left out (check covers
    the cdb); the hash of a user the operation sets becomes OLD/NEW by verification."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if name.endswith(".lock") or name == "vpasswd.cdb":
                continue
            st = os.lstat(p)
            content = None
            if not os.path.isdir(p) or os.path.islink(p):
                with open(p, "rb") as f:
                    content = f.read()
                if name == "vpasswd":
                    content = _mask_vpasswd(content, passwords_set)
            out[os.path.relpath(p, root)] = (st.st_mode, content)
    return out


def _mask_vpasswd(data: bytes, passwords_set: dict[str, str]) -> bytes:
    out = []
    for line in data.split(b"\n"):
        parts = line.split(b":")
        name = parts[0].decode()
        if name in passwords_set and len(parts) > 1:
            parts[1] = b"NEW" if passwords.verify_password(passwords_set[name], parts[1].decode()) else b"OLD"
        out.append(b":".join(parts))
    return b"\n".join(out)


def _vpasswd_of(st: dict) -> bytes | None:
    for path, (_, content) in st.items():
        if path.endswith(os.path.join(DOMAIN, "vpasswd")):
            return content
    return None


def _diff(a: dict, b: dict, limit: int = 8) -> str:
    lines = []
    for p in sorted(set(a) | set(b)):
        if a.get(p) != b.get(p):
            lines.append(f"  {p}: {'missing' if p not in a else 'differs'}{' / extra' if p not in b else ''}")
    return "\n".join(lines[:limit]) + (f"\n  ... {len(lines) - limit} more" if len(lines) > limit else "")


class Runner:
    def __init__(self, workdir: str, users: int = 120, bulk: int = 10_000, log=print):
        self.workdir = workdir
        self.live = os.path.join(workdir, "live")
        self.log = log
        os.makedirs(self.live)
        self.env, self.scenarios = _base_store(self.live, users, bulk)
        self.by_name = {s.name: s for s in self.scenarios}
        self.reference: dict[str, tuple[dict, dict, int, float]] = {}

    def _live_env(self) -> dict:
        env = dict(self.env)
        env["VPOPMAIL_DIR"] = os.path.join(self.live, "vpopmail")
        env["QMAIL_DIR"] = os.path.join(self.live, "qmail")
        return env

    def _reset(self) -> None:
        if os.path.exists(self.live):
            shutil.rmtree(self.live)
        # the store's paths are absolute, so every trial runs at the same place
        _copy(self._frozen, self.live)

    def prepare(self) -> None:
        """Freeze the base store, and record old/new state for each scenario."""
        self._frozen = os.path.join(self.workdir, "frozen")
        _copy(self.live, self._frozen)
        for sc in self.scenarios:
            self._reset()
            old = state(self.live, sc.passwords_set)
            count_file = os.path.join(self.workdir, "count")
            t0 = time.monotonic()
            r = self._run(sc, 0, count_file)
            took = time.monotonic() - t0
            if r.returncode != 0:
                raise RuntimeError(f"{sc.name}: reference run failed: {r.stderr}")
            with open(count_file) as f:
                steps = int(f.read())
            new = state(self.live, sc.passwords_set)
            if old == new:
                raise RuntimeError(f"{sc.name}: reference run changed nothing")
            self.reference[sc.name] = (old, new, steps, took)

    def _run(self, sc: Scenario, crash_at: int, count_file: str | None = None,
             kill_after: float | None = None, fault: str = "kill") -> subprocess.CompletedProcess:
        env = self._live_env()
        env["CRASH_AT"] = str(crash_at)
        env["CRASH_FAULT"] = fault
        if count_file:
            env["CRASH_COUNT_FILE"] = count_file
        else:
            env.pop("CRASH_COUNT_FILE", None)
        argv = [sys.executable, "-c", WRAPPER, *sc.argv]
        if kill_after is None:
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # the command only: its pool workers must follow it
            out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def trial(self, name: str, crash_at: int = 0, kill_after: float | None = None, fault: str = "kill") -> dict:
        """One run with a fault: "kill" (SIGKILL), or "eio"/"enospc" (that error raised at step crash_at)."""
        sc = self.by_name[name]
        old, new, _, _ = self.reference[name]
        self._reset()
        r = self._run(sc, crash_at, kill_after=kill_after, fault=fault)
        killed = r.returncode == -signal.SIGKILL
        after_kill = state(self.live, sc.passwords_set)
        visible = _vpasswd_of(after_kill)
        problems = []
        if visible not in (_vpasswd_of(old), _vpasswd_of(new)):
            problems.append("vpasswd right after the fault is neither the old nor the new one")
        if fault != "kill":
            err = [x for x in r.stderr.splitlines() if not x.startswith(("Note:", "Warning:"))]
            if r.returncode == 0 and visible != _vpasswd_of(new):
                problems.append("exit 0 but the change is not there")
            if r.returncode != 0:
                if len(err) != 1 or "Traceback" in r.stderr:
                    problems.append(f"not a one-line error: {r.stderr!r}")
                if r.returncode != 74:
                    problems.append(f"exit {r.returncode} for an I/O error (EX_IOERR is 74)")
                committed = "is committed" in r.stderr
                if visible != (_vpasswd_of(new) if committed else _vpasswd_of(old)):
                    problems.append(f"exit {r.returncode} ({err[:1]}) but vpasswd is the "
                                    f"{'new' if visible == _vpasswd_of(new) else 'old'} one")
        pending = any(p.endswith(".vcli-intent") for p in after_kill)
        env = self._live_env()
        rep = subprocess.run([tool("vcli"), "check", "--repair"], env=env, capture_output=True, text=True)
        if rep.returncode != 0:
            problems.append(f"check --repair exit {rep.returncode}: {rep.stdout.strip()[-500:]}")
        final = state(self.live, sc.passwords_set)
        outcome = "old" if final == old else "new" if final == new else "mixed"
        if outcome == "mixed":
            near = old if len(_diff(final, old)) <= len(_diff(final, new)) else new
            problems.append("final state is neither old nor new:\n" + _diff(final, near))
        chk = subprocess.run([tool("vcli"), "check"], env=env, capture_output=True, text=True)
        if chk.returncode != 0:
            problems.append(f"check after repair exit {chk.returncode}: {chk.stdout.strip()[-500:]}")
        return {"scenario": name, "crash_at": crash_at, "kill_after": kill_after, "killed": killed,
                "fault": fault, "exit": r.returncode, "message": r.stderr.strip().splitlines()[-1:],
                "pending": pending, "outcome": outcome, "problems": problems,
                "repaired": [x for x in rep.stdout.splitlines() if x.startswith("repaired:")]}


def _copy(src: str, dst: str) -> None:
    """The whole tree with owners and modes (cp -a): on a machine with a vpopmail user the
    store belongs to it, and a copy owned by root would fail `vcli check`."""
    subprocess.run(["cp", "-a", "--", src, dst], check=True)


def run(step_trials: dict[str, int] | None = None, time_trials: dict[str, int] | None = None,
        fault_trials: dict[str, int] | None = None, bulk: int = 10_000, users: int = 120, seed: int = 1, log=print, workdir: str | None = None) -> dict:
    """Run the trials; returns figures and every failing trial (must be none)."""
    step_trials = step_trials if step_trials is not None else {"add": 0, "delete": 0, "modify": 0, "password": 0}
    time_trials = time_trials if time_trials is not None else {"bulk": 25, "add": 10, "delete": 10}
    rng = random.Random(seed)
    own = workdir is None
    parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    workdir = workdir or tempfile.mkdtemp(prefix="vcli-crash-", dir=parent)
    try:
        runner = Runner(workdir, users=users, bulk=bulk, log=log)
        runner.prepare()
        results = []
        for name, n in step_trials.items():
            _, _, steps, _ = runner.reference[name]
            points = list(range(1, steps + 1))
            if n and n < len(points):  # a sample that always includes the first and last steps
                points = sorted({1, steps, *rng.sample(points, n - 2)})
            log(f"{name}: {steps} file-system steps, killing at {len(points)} of them")
            for k in points:
                results.append(runner.trial(name, crash_at=k))
        for name, n in (fault_trials or {}).items():
            _, _, steps, _ = runner.reference[name]
            points = list(range(1, steps + 1))
            if n and n < len(points):
                points = sorted({1, steps, *rng.sample(points, n - 2)})
            log(f"{name}: injecting EIO/ENOSPC at {len(points)} of {steps} steps")
            for k in points:
                results.append(runner.trial(name, crash_at=k, fault="enospc" if k % 2 else "eio"))
        for name, n in time_trials.items():
            _, _, _, took = runner.reference[name]
            log(f"{name}: reference run {took:.2f} s, {n} random SIGKILLs")
            for _ in range(n):
                results.append(runner.trial(name, kill_after=rng.uniform(0.05, took * 1.1)))
        failures = [r for r in results if r["problems"]]
        io = [r for r in results if r["fault"] != "kill"]
        io_figures = {"injected": len(io),
                      "failed_cleanly": sum(r["exit"] == 74 and not r["problems"]
                                            and "is committed" not in " ".join(r["message"]) for r in io),
                      "succeeded_anyway": sum(r["exit"] == 0 for r in io),
                      "committed_then_failed": sum("is committed" in " ".join(r["message"]) for r in io),
                      "messages": sorted({m for r in io for m in r["message"]})[:12]}
        results = [r for r in results if r["fault"] == "kill"] + io
        figures = {
            "trials": len(results) - len(io),
            "killed": sum(r["killed"] for r in results),
            "pending_intent": sum(r["pending"] for r in results),
            "old": sum(r["outcome"] == "old" for r in results),
            "new": sum(r["outcome"] == "new" for r in results),
            "mixed": sum(r["outcome"] == "mixed" for r in results),
            "failures": failures,
            "io_faults": io_figures,
            "steps": {n: runner.reference[n][2] for n in runner.reference},
            "per_scenario": {},
        }
        for name in {r["scenario"] for r in results if r["fault"] == "kill"}:
            rs = [r for r in results if r["scenario"] == name and r["fault"] == "kill"]
            figures["per_scenario"].setdefault(name, {})
            figures["per_scenario"][name] = {
                "trials": len(rs), "killed": sum(r["killed"] for r in rs), "old": sum(r["outcome"] == "old" for r in rs),
                "new": sum(r["outcome"] == "new" for r in rs), "replayed": sum(r["pending"] for r in rs),
                "failures": sum(bool(r["problems"]) for r in rs),
            }
        return figures
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="every step of each command, 10,000-user bulk adds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.full:
        figs = run(fault_trials={"add": 0, "delete": 0, "modify": 0, "password": 0, "bulk": 60}, seed=args.seed)
    else:
        figs = run(step_trials={"add": 12, "delete": 12, "modify": 8, "password": 8},
                   time_trials={"bulk": 5, "add": 3}, fault_trials={"add": 10, "delete": 10, "modify": 8},
                   bulk=1000, seed=args.seed)
    print_figures(figs)
    return 1 if figs["failures"] else 0


def print_figures(figs: dict) -> None:
    print(f"trials {figs['trials']}, killed {figs['killed']}, replayed {figs['pending_intent']}, "
          f"old {figs['old']}, new {figs['new']}, mixed {figs['mixed']}, failures {len(figs['failures'])}")
    for name, f in sorted(figs["per_scenario"].items()):
        print(f"  {name:9} steps {figs['steps'].get(name, '-'):>6}  " + ", ".join(f"{k} {v}" for k, v in f.items()))
    io = figs["io_faults"]
    if io["injected"]:
        print(f"injected I/O errors {io['injected']}: failed cleanly (exit 74, old state) {io['failed_cleanly']}, "
              f"succeeded anyway {io['succeeded_anyway']}, committed then failed {io['committed_then_failed']}")
        for m in io["messages"]:
            print(f"    {m}")
    for fail in figs["failures"][:5]:
        print(f"FAILED {fail['scenario']} crash_at={fail['crash_at']} kill_after={fail['kill_after']}:")
        for p in fail["problems"]:
            print("   " + p)


if __name__ == "__main__":
    sys.exit(main())
