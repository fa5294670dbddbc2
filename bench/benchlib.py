"""What the benchmarks share: the installed commands and an empty store laid out as tests/storeenv.py does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager

BIN = os.path.dirname(sys.executable)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vcli", "data")


def as_installed() -> None:
    """Run the commands as a site's install runs them: with bytecode.  pip compiles what it
    installs, but an editable checkout under PYTHONDONTWRITEBYTECODE=1 (this machine's default)
    has none, and every whole-process figure would then include compiling vcli (~40 ms: the
    classic lookup measured 3.2x `python -c pass` instead of 1.5x)."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(os.path.join(os.path.dirname(DATA)), quiet=1)


as_installed()  # every bench imports this module before it starts a command


def tool(name: str) -> str:
    """The command of this interpreter's venv, else the one on PATH."""
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


def empty_store(root: str, etc_files: tuple[str, ...] = ("vlimits.default", "password_strength.conf")) -> tuple[str, str]:
    """`root/vpopmail/etc/` with the shipped files and `root/qmail/users/assign` = `.`; (vpopmail, qmail)."""
    vp, qm = os.path.join(root, "vpopmail"), os.path.join(root, "qmail")
    os.makedirs(os.path.join(vp, "etc"))
    os.makedirs(os.path.join(qm, "users"))
    for name in etc_files:
        shutil.copy(os.path.join(DATA, name), os.path.join(vp, "etc", name))
    with open(os.path.join(qm, "users", "assign"), "w") as f:
        f.write(".\n")
    return vp, qm


@contextmanager
def scratch_dir(prefix: str, inodes: int = 4_000_000, size_gb: int = 64):
    """A directory for a bench's stores and floors, on a fresh journaled ext4 of its own when it
    can (root, a loop device): a sparse image file on a direct-I/O loop device, with `inodes` inodes.

    Why: this machine's root filesystem is ext4 without a journal, and there the kernel's inode
    allocator skips (and scans) the inodes deleted in the last minutes (ext4 recently_deleted(),
    checked only without a journal).  After a mass deletion, making user trees runs 2-5x slower
    for two to four minutes (20,000 trees by 4 processes: 2.1 s on a quiet disk, 10.2 s right
    after deleting 60,000 trees, 5.3 s two minutes later, 2.1 s after four), so a ratio of two
    tree-making runs said more about what was deleted before each than about either.  A mail
    partition on a site has a journal; so has this one, and nothing was deleted on it before.
    VCLI_BENCH_FS=plain (or not root, or no loop device): a plain temporary directory.
    Yields (path, description)."""
    import signal

    base = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR", "/var/tmp"))
    img = base + ".img"
    # SIGTERM is held off while the file system is set up and taken down (a half-attached loop
    # device or a mount that is not known yet would be left behind) and, while the bench runs,
    # stops it through this function's cleanup
    was = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    device = _private_fs(img, base, inodes, size_gb)
    where = (f"a fresh journaled ext4 ({size_gb} GB sparse image, {inodes:,} inodes, direct-I/O loop)"
             if device else f"a plain directory in {os.path.dirname(base)}")
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        yield base, where
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if device:
            if subprocess.run(["umount", base], capture_output=True).returncode:
                subprocess.run(["umount", "-l", base], capture_output=True)
            subprocess.run(["losetup", "-d", device], capture_output=True)
        else:
            subprocess.run(["rm", "-rf", base])  # several times faster than shutil.rmtree
        if os.path.exists(img):
            os.unlink(img)
        if os.path.isdir(base) and not os.path.ismount(base):
            os.rmdir(base)
        signal.signal(signal.SIGTERM, was)


def _private_fs(img: str, base: str, inodes: int, size_gb: int) -> str | None:
    """The loop device of a fresh ext4 in `img`, mounted on `base`; None (and nothing left
    behind but `base`) when this machine cannot, or VCLI_BENCH_FS=plain."""
    if (os.environ.get("VCLI_BENCH_FS") == "plain" or os.geteuid() != 0 or not os.path.exists("/dev/loop-control")
            or not all(shutil.which(c) for c in ("mkfs.ext4", "losetup", "mount"))):
        return None
    device = None
    why = "mkfs/losetup/mount failed"
    try:
        with open(img, "wb") as f:
            f.truncate(size_gb << 30)  # sparse: blocks are taken as they are written
        # the inode tables of a sparse file read as zeros: no initialisation needed (noinit_itable),
        # so no background zeroing competes with the bench; discard gives freed blocks back
        steps = [["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inodes),
                  "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", img],
                 # direct I/O: the image's pages are not cached a second time under the file
                 # system's own (a million users' directories would not fit twice in memory)
                 ["losetup", "--direct-io=on", "--find", "--show", img]]
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode:
                why = (r.stderr.strip().splitlines() or [why])[-1]
                raise OSError(why)
        device = r.stdout.strip()
        r = subprocess.run(["mount", "-o", "noinit_itable,discard", device, base], capture_output=True, text=True)
        if r.returncode:
            why = (r.stderr.strip().splitlines() or [why])[-1]
            raise OSError(why)
        return device
    except OSError as exc:
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True)
        if os.path.exists(img):
            os.unlink(img)
        print(f"bench: no private file system ({exc}); a plain directory instead", file=sys.stderr)
        return None
