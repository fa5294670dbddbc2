"""What the benchmarks share: the installed commands and an empty store laid out as tests/storeenv.py does."""

from __future__ import annotations

import os
import shutil
import sys

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
