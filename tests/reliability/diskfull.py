"""Disk-full trial: every changing command on a really full file system (a small tmpfs).

The store lives on a tmpfs mounted for the trial (root is needed to mount it).  For each
command and each amount of free space left (bytes, then inodes), the file system is filled
with a filler file (or empty files) up to that point, the real command runs, the filler goes,
and then:
* exit 0: the store must be exactly in the new state;
* otherwise: exit 74 (EX_IOERR) with one line on stderr, and the store exactly in the old
  state, with `vcli check` clean (no repair needed), or the command said its change was
  committed and `vcli check --repair` finishes it (never seen on a full disk: after the
  commit there are only renames and unlinks).

Full version: `python tests/reliability/diskfull.py --full`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(HERE), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from crash import Runner, _vpasswd_of, state  # noqa: E402
from storeenv import tool  # noqa: E402

SCENARIOS = ("add", "delete", "modify", "password", "quota", "alias", "adddomain", "bulk")
BYTES_FREE = (0, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 131072, 262144, 524288)
INODES_FREE = (0, 1, 2, 3, 4, 6, 8, 12)


class Mount:
    """A tmpfs of `size` bytes and `inodes` inodes, mounted for the trial (root only)."""

    def __init__(self, size: int, inodes: int):
        self.path = tempfile.mkdtemp(prefix="vcli-full-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0755",
                            "vcli-full", self.path], capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(self.path)
            raise RuntimeError(f"cannot mount a tmpfs for the disk-full trial (run as root): {r.stderr.strip()}")

    def free(self) -> tuple[int, int]:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize, st.f_favail

    def close(self) -> None:
        subprocess.run(["umount", "-l", self.path], check=False)
        os.rmdir(self.path)


def _fill_bytes(fs: Mount, leave: int) -> str:
    path = os.path.join(fs.path, "filler")
    avail, _ = fs.free()
    with open(path, "wb") as f:
        n = max(0, avail - leave)
        chunk = b"\0" * (1 << 20)
        while n > 0:
            try:
                n -= f.write(chunk[: min(n, len(chunk))])
            except OSError:
                break
    return path


def _fill_inodes(fs: Mount, leave: int) -> str:
    path = os.path.join(fs.path, "inode-filler")
    os.mkdir(path)
    _, favail = fs.free()
    for i in range(max(0, favail - leave)):
        try:
            os.close(os.open(os.path.join(path, str(i)), os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            break
    return path


def run(scenarios=SCENARIOS, bytes_free=BYTES_FREE, inodes_free=INODES_FREE, bulk: int = 300,
        users: int = 40, log=print) -> dict:
    fs = Mount(size=64 << 20, inodes=20000)
    try:
        runner = Runner(fs.path, users=users, bulk=bulk, log=log)
        runner.prepare()
        results = []
        for name in scenarios:
            sc = runner.by_name[name]
            old, new, _, _ = runner.reference[name]
            for kind, levels in (("bytes", bytes_free), ("inodes", inodes_free)):
                for leave in levels:
                    runner._reset()
                    filler = _fill_bytes(fs, leave) if kind == "bytes" else _fill_inodes(fs, leave)
                    r = runner._run(sc, 0)
                    shutil.rmtree(filler) if os.path.isdir(filler) else os.unlink(filler)
                    results.append(_judge(runner, sc, old, new, r, f"{name} with {leave} {kind} free"))
        failures = [x for x in results if x["problems"]]
        figs = {
            "runs": len(results),
            "failed_cleanly": sum(x["exit"] == 74 and x["outcome"] == "old" for x in results),
            "succeeded": sum(x["exit"] == 0 for x in results),
            "committed_then_failed": sum(x["committed"] for x in results),
            "failures": failures,
            "messages": sorted({x["message"] for x in results if x["exit"]}),
        }
        log(f"disk full: {figs['runs']} runs, {figs['failed_cleanly']} failed cleanly (exit 74, old state), "
            f"{figs['succeeded']} succeeded (new state), {figs['committed_then_failed']} committed then failed, "
            f"{len(failures)} wrong")
        return figs
    finally:
        fs.close()


def _judge(runner: Runner, sc, old: dict, new: dict, r: subprocess.CompletedProcess, what: str) -> dict:
    problems = []
    now = state(runner.live, sc.passwords_set)
    lines = [x for x in r.stderr.splitlines() if not x.startswith(("Note:", "Warning:"))]
    committed = "is committed" in r.stderr
    env = runner._live_env()
    if r.returncode == 0:
        outcome = "new" if now == new else "mixed"
    else:
        if r.returncode != 74:
            problems.append(f"exit {r.returncode}, not 74")
        if len(lines) != 1 or "Traceback" in r.stderr:
            problems.append(f"not one line on stderr: {r.stderr!r}")
        if committed:
            subprocess.run([tool("vcli"), "check", "--repair"], env=env, capture_output=True)
            now = state(runner.live, sc.passwords_set)
            outcome = "new" if now == new else "mixed"
        else:
            outcome = "old" if now == old else "mixed"
    if outcome == "mixed":
        want = new if (r.returncode == 0 or committed) else old
        problems.append("store is not in the " + ("new" if want is new else "old") + " state: " +
                        ", ".join(sorted(p for p in set(now) | set(want) if now.get(p) != want.get(p)))[:400])
    chk = subprocess.run([tool("vcli"), "check"], env=env, capture_output=True, text=True)
    if chk.returncode != 0:
        problems.append(f"vcli check exit {chk.returncode}: {chk.stdout.strip()[-300:]}")
    if _vpasswd_of(now) is None:
        problems.append("vpasswd is gone")
    return {"what": what, "exit": r.returncode, "outcome": outcome, "committed": committed,
            "message": (lines or [""])[-1].replace(runner.live, "<store>"), "problems": problems}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="a 1,000-user bulk add and finer steps of free space")
    args = ap.parse_args(argv)
    if args.full:
        figs = run(bytes_free=tuple(range(0, 65536, 4096)) + (98304, 131072, 262144, 524288, 1 << 20),
                   inodes_free=tuple(range(0, 16)) + (50, 200), bulk=1000)
    else:
        figs = run()
    for m in figs["messages"]:
        print("   " + m)
    for f in figs["failures"][:10]:
        print(f"FAILED {f['what']}: exit {f['exit']}: " + "; ".join(f["problems"]))
    return 1 if figs["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
